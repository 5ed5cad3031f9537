/**
 * Access-log templates (`log.template`, nginx's `log_format`): the request variables every template has
 * (template.ts) plus those known only once the answer is out (status, sizes, times, upstream attempts, cache,
 * TLS). One list, documented in docs/operations.md ("Access log"); compiled once into a function, each value
 * escaped as nginx does (`\xHH` for `"`, `\` and bytes outside printable ASCII) or as a JSON string's content,
 * and an empty value written `-`. An unknown `$name` is a config error (`checkLogTemplate`), not literal text.
 */
import { performance } from 'node:perf_hooks';
import type { RequestContext, UpstreamAttemptLog } from './context.js';
import { requestVariable, type Template } from './template.js';

/** How values are escaped in a line. */
export type LogEscape = 'default' | 'json';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
let stampSecond = -1;
let stamp = '';

/** `25/Nov/2026:14:13:06 +0000`, recomputed at most once a second. */
export function timeLocal(now: number): string {
  const second = Math.floor(now / 1000);
  if (second !== stampSecond) {
    const d = new Date(second * 1000);
    const p = (n: number) => (n < 10 ? '0' + n : String(n));
    stamp = `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
    stampSecond = second;
  }
  return stamp;
}

/** Milliseconds as seconds with three decimals (`1234` → `1.234`), `-` when not reached; no float formatting. */
export function seconds(ms: number): string {
  if (ms < 0) return '-';
  const whole = Math.round(ms);
  const frac = whole % 1000;
  return `${(whole - frac) / 1000}.${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}`;
}

// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /["\\\x00-\x1f\x7f-\uffff]/;
// eslint-disable-next-line no-control-regex
const ESCAPED = /["\\\x00-\x1f\x7f-\uffff]/g;

/** Escapes `"`, `\` and non-printable bytes as nginx does (`\x22`), so a line can always be parsed back. */
export function escapeField(value: string): string {
  return NEEDS_ESCAPE.test(value) ? value.replace(ESCAPED, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0')) : value;
}

/** A value as the content of a JSON string (no quotes around it). */
function escapeJson(value: string): string {
  return NEEDS_ESCAPE.test(value) ? JSON.stringify(value).slice(1, -1) : value;
}

/** The per-attempt upstream lists, nginx's `, `-separated form. */
function attempts(pick: (l: UpstreamAttemptLog) => string): Template {
  return (ctx) => {
    const log = ctx.upstreamLog;
    if (log === undefined) return '';
    let out = pick(log[0]!);
    for (let i = 1; i < log.length; i++) out += ', ' + pick(log[i]!);
    return out;
  };
}

/** The Basic-auth user name the client sent (nginx's `$remote_user`), or `''`. */
function remoteUser(ctx: RequestContext): string {
  const auth = ctx.req.headers.authorization;
  if (auth === undefined || auth.length < 7 || auth.slice(0, 6).toLowerCase() !== 'basic ') return '';
  const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? '' : decoded.slice(0, colon);
}

/**
 * The nginx-style names of the cache's result, from the Cache-Status parameters Portico sent: `HIT`; `UPDATING`
 * (a stale answer while a refresh runs); `STALE` (a stale answer for an error or an unreachable app); `REVALIDATED`
 * (a 304 refreshed it); `EXPIRED` (stored, stale, fetched again); `MISS`; `BYPASS` (the request or method skipped
 * the cache).
 */
export function cacheResult(params: string): string {
  if (params === '') return '';
  if (params.startsWith('hit')) return params.includes('stale-while-revalidate') ? 'UPDATING' : 'HIT';
  if (params.includes('stale-if-error') || params.includes('unreachable-stale')) return 'STALE';
  if (params.startsWith('fwd=stale')) return params.includes('fwd-status=304') ? 'REVALIDATED' : 'EXPIRED';
  if (params.startsWith('fwd=request') || params.startsWith('fwd=method')) return 'BYPASS';
  return 'MISS';
}

const PID = String(process.pid);

/**
 * The `grpc-status` a gRPC call ended with: its trailers' (see `grpcStatus`), else its Trailers-Only head's (an
 * app's error without messages, Portico's own statuses); `''` for anything else.
 */
export function loggedGrpcStatus(ctx: RequestContext): string {
  if (ctx.grpcStatus !== '') return ctx.grpcStatus;
  const head = ctx.res.getHeader('grpc-status');
  return typeof head === 'string' ? head : '';
}

/** The variables known once the answer is out, by name. */
const LOG_ONLY: Readonly<Record<string, Template>> = {
  status: (ctx) => String(ctx.status),
  body_bytes_sent: (ctx) => String(ctx.bytesSent),
  request: (ctx) => (ctx.req.method === undefined ? '' : `${ctx.req.method} ${ctx.req.url ?? ''} HTTP/${ctx.req.httpVersion}`),
  request_method: (ctx) => ctx.req.method ?? '',
  server_protocol: (ctx) => `HTTP/${ctx.req.httpVersion}`,
  remote_user: remoteUser,
  time_local: () => timeLocal(Date.now()),
  time_iso8601: () => new Date().toISOString(),
  msec: () => seconds(Date.now()),
  request_time: (ctx) => seconds(performance.now() - ctx.start),
  upstream_addr: attempts((l) => l.addr),
  upstream_status: attempts((l) => l.status),
  upstream_connect_time: attempts((l) => seconds(l.connectMs)),
  upstream_header_time: attempts((l) => seconds(l.headerMs)),
  upstream_response_time: attempts((l) => seconds(l.responseMs)),
  cache_status: (ctx) => cacheResult(ctx.cacheStatus),
  grpc_status: loggedGrpcStatus,
  // Read when the request arrives (an h2 request's socket is gone by the time its line is written): see `usesTls`.
  tls_version: (ctx) => ctx.tlsVersion ?? '',
  http2: (ctx) => (ctx.req.httpVersionMajor === 2 ? 'h2' : ''),
  connection_peer: (ctx) => ctx.peerAddress(),
  pid: () => PID,
};

/** Every name a log template may use (`NAME` standing for any name), for documentation and errors. */
export const LOG_TEMPLATE_VARIABLES: readonly string[] = [
  '$scheme', '$host', '$method', '$request_uri', '$uri', '$args', '$remote_addr', '$pid', '$request_id', '$traceparent',
  ...Object.keys(LOG_ONLY).filter((name) => name !== 'pid').map((name) => `$${name}`),
  '$cookie_NAME', '$header_NAME', '$http_NAME', '$arg_NAME',
];

/** `$name` or `${name}`. */
const NAME = /\$(?:\{([A-Za-z_][A-Za-z0-9_-]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g;

function logVariable(name: string): Template | undefined {
  if (Object.hasOwn(LOG_ONLY, name)) return LOG_ONLY[name];
  // nginx's spelling of a request header.
  if (name.startsWith('http_') && name.length > 5) return requestVariable(`header_${name.slice(5)}`);
  return requestVariable(name);
}

/** The first unknown variable of a log template, with the list of known ones; `undefined` when all are known. */
export function checkLogTemplate(template: string): string | undefined {
  for (const match of template.matchAll(NAME)) {
    const name = match[1] ?? match[2]!;
    if (logVariable(name) === undefined) return `unknown variable $${name} in log.template; known: ${LOG_TEMPLATE_VARIABLES.join(' ')}`;
  }
  return undefined;
}

/** Whether a log template needs the connection's TLS version read when the request arrives (`$tls_version`). */
export function usesTls(template: string): boolean {
  return Array.from(template.matchAll(NAME), (match) => match[1] ?? match[2]).includes('tls_version');
}

/** Compiles a log template (checked by `checkLogTemplate`) into the function that makes one line (without its end). */
export function compileLogTemplate(template: string, escape: LogEscape = 'default'): Template {
  const esc = escape === 'json' ? escapeJson : escapeField;
  const parts: Array<string | Template> = [];
  let last = 0;
  for (const match of template.matchAll(NAME)) {
    const name = match[1] ?? match[2]!;
    const value = logVariable(name);
    if (value === undefined) throw new Error(`unknown variable $${name} in log.template`);
    if (match.index > last) parts.push(template.slice(last, match.index));
    parts.push(function logValue(ctx) {
      const text = value(ctx);
      return text === '' ? '-' : esc(text);
    });
    last = match.index + match[0].length;
  }
  if (last < template.length) parts.push(template.slice(last));
  return function logLine(ctx) {
    let out = '';
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      out += typeof part === 'string' ? part : part(ctx);
    }
    return out;
  };
}
