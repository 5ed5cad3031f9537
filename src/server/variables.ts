/**
 * Request variables for templates that are evaluated per request (hash keys, cache keys), compiled once into
 * a function so the hot path does no parsing.
 */
import type { RequestContext } from './context.js';

/**
 * Compiles a hash key template: `$request_uri`, `$uri`, `$args`, `$host`, `$remote_addr`, `$cookie_NAME`,
 * `$header_NAME` (dashes as underscores), `$arg_NAME`, `$scheme`, `$method`; anything else is literal.
 */
export function compileKey(template: string): (ctx: RequestContext, clientIp: string) => string {
  const parts: Array<string | ((ctx: RequestContext, clientIp: string) => string)> = [];
  let last = 0;
  for (const m of template.matchAll(/\$(request_uri|uri|args|host|remote_addr|scheme|method|cookie_[A-Za-z0-9_-]+|header_[A-Za-z0-9_]+|arg_[A-Za-z0-9_]+)/g)) {
    parts.push(template.slice(last, m.index));
    const name = m[1]!;
    if (name === 'request_uri') parts.push((ctx) => ctx.uri);
    else if (name === 'uri') parts.push((ctx) => ctx.path);
    else if (name === 'args') parts.push((ctx) => ctx.query);
    else if (name === 'host') parts.push((ctx) => ctx.host);
    else if (name === 'scheme') parts.push((ctx) => ctx.scheme);
    else if (name === 'method') parts.push((ctx) => ctx.req.method ?? '');
    else if (name === 'remote_addr') parts.push((_ctx, ip) => ip);
    else if (name.startsWith('cookie_')) {
      const cookie = name.slice(7);
      parts.push((ctx) => readCookie(ctx.req.headers.cookie, cookie) ?? '');
    } else if (name.startsWith('header_')) {
      const header = name.slice(7).replaceAll('_', '-').toLowerCase();
      parts.push((ctx) => String(ctx.req.headers[header] ?? ''));
    } else {
      const arg = name.slice(4);
      parts.push((ctx) => new URLSearchParams(ctx.query).get(arg) ?? '');
    }
    last = m.index! + m[0].length;
  }
  parts.push(template.slice(last));
  // Empty literals between variables (`$scheme$host$request_uri`) would only be concatenated per request.
  const used = parts.filter((part) => part !== '');
  return (ctx, clientIp) => {
    let out = '';
    for (const part of used) out += typeof part === 'string' ? part : part(ctx, clientIp);
    return out;
  };
}

export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

