/**
 * Request variables and the one template compiler that uses them: redirect targets, proxy `host` and
 * `set_headers`, hash keys, cache keys all compile here, once, into a function so the hot path does no parsing.
 * Access-log templates (log-template.ts) use these variables too (`requestVariable`), plus those known only once
 * the answer is out.
 *
 * The variables (docs/configuration.md, "Variables", lists the same):
 * - `$scheme` `http` or `https`; `$host` the request's host, lower-cased, without port; `$method`;
 * - `$request_uri` the canonical path and query; `$uri` the canonical path; `$args` the query, without `?`;
 * - `$remote_addr` the client's address (from X-Forwarded-For only when the peer is a trusted proxy);
 * - `$pid` the id of the process answering (with `workers`, the worker's);
 * - `$request_id` the request's X-Request-Id; `$traceparent` the W3C traceparent sent upstream;
 * - `$cookie_NAME` a cookie's value; `$header_NAME` a request header (`_` stands for `-`); `$arg_NAME` a query
 *   parameter.
 * Anything else after `$` is literal text.
 */
import type { RequestContext } from './context.js';

/** A compiled template: evaluated per request. */
export type Template = (ctx: RequestContext) => string;

type Part = string | Template;

const PID = String(process.pid);

const FIXED: Readonly<Record<string, Template>> = {
  scheme: (ctx) => ctx.scheme,
  host: (ctx) => ctx.host,
  method: (ctx) => ctx.req.method ?? '',
  request_uri: (ctx) => ctx.uri,
  uri: (ctx) => ctx.path,
  args: (ctx) => ctx.query,
  remote_addr: (ctx) => ctx.clientAddress(),
  // The process answering: with `workers`, which worker (also useful in logs and to an app behind the proxy).
  pid: () => PID,
  request_id: (ctx) => ctx.requestId,
  traceparent: (ctx) => ctx.traceparent,
};

/** A fixed name must end where it ends (`$hostname` is literal text, not `$host` + `name`). */
const VARIABLE = /\$((?:request_uri|request_id|uri|args|host|remote_addr|scheme|method|pid|traceparent)(?![A-Za-z0-9_])|cookie_[A-Za-z0-9_-]+|header_[A-Za-z0-9_]+|arg_[A-Za-z0-9_]+)/g;

/** The names every template may use (with `NAME` standing for any name), for documentation and errors. */
export const TEMPLATE_VARIABLES = [...Object.keys(FIXED).map((name) => `$${name}`), '$cookie_NAME', '$header_NAME', '$arg_NAME'] as const;

/** The variable `name` (without `$`) as a template, or `undefined` for a name no template knows. */
export function requestVariable(name: string): Template | undefined {
  if (Object.hasOwn(FIXED, name)) return FIXED[name];
  if (!/^(cookie|header|arg)_[A-Za-z0-9_-]+$/.test(name)) return undefined;
  return variable(name);
}

function variable(name: string): Template {
  const fixed = FIXED[name];
  if (fixed !== undefined) return fixed;
  if (name.startsWith('cookie_')) {
    const cookie = name.slice(7);
    return (ctx) => readCookie(ctx.req.headers.cookie, cookie) ?? '';
  }
  if (name.startsWith('header_')) {
    const header = name.slice(7).replaceAll('_', '-').toLowerCase();
    return (ctx) => {
      const value = ctx.req.headers[header];
      return value === undefined ? '' : String(value);
    };
  }
  const arg = name.slice(4);
  return (ctx) => new URLSearchParams(ctx.query).get(arg) ?? '';
}

/** The variables a template uses (`$host`, `$header_x_forwarded_host`, …), in order, each once. */
export function templateVariables(template: string): string[] {
  return [...new Set(Array.from(template.matchAll(VARIABLE), (match) => match[0]))];
}

/** Compiles a template once; a template without variables returns its text without any work per request. */
export function compileTemplate(template: string): Template {
  const parts: Part[] = [];
  let last = 0;
  for (const match of template.matchAll(VARIABLE)) {
    parts.push(template.slice(last, match.index), variable(match[1]!));
    last = match.index + match[0].length;
  }
  parts.push(template.slice(last));
  // Empty literals between variables (`$scheme$host$request_uri`) would only be concatenated per request.
  const pieces = parts.filter((part) => part !== '');
  if (pieces.every((part) => typeof part === 'string')) {
    const fixed = pieces.join('');
    return function fixedText() {
      return fixed;
    };
  }
  if (pieces.length === 1) return pieces[0] as Template;
  return function renderTemplate(ctx) {
    let out = '';
    for (const part of pieces) out += typeof part === 'string' ? part : part(ctx);
    return out;
  };
}

/** The value of cookie `name` in a `Cookie` header, or `undefined`. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
