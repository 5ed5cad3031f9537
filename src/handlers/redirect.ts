/**
 * `redirect`: answers with a 3xx and a `Location` built from a template compiled once. The template may use
 * `$scheme`, `$host`, `$request_uri` (canonical path and query), `$uri` (canonical path) and `$args` (query).
 */
import type { RequestContext } from '../server/context.js';
import type { HandlerKind } from './types.js';

/** Options of a `redirect` route, as validated by the config schema. */
export interface RedirectOptions {
  readonly to: string;
  readonly status: number;
}

type Part = string | ((ctx: RequestContext) => string);

const VARIABLES: Record<string, (ctx: RequestContext) => string> = {
  scheme: (ctx) => ctx.scheme,
  host: (ctx) => ctx.host,
  request_uri: (ctx) => ctx.uri,
  uri: (ctx) => ctx.path,
  args: (ctx) => ctx.query,
};

/** Splits a template into literal parts and variable getters; unknown `$names` stay literal. */
export function compileTemplate(template: string): (ctx: RequestContext) => string {
  const parts: Part[] = [];
  let last = 0;
  for (const match of template.matchAll(/\$([a-z_]+)/g)) {
    const getter = VARIABLES[match[1]!];
    if (getter === undefined) continue;
    parts.push(template.slice(last, match.index));
    parts.push(getter);
    last = match.index! + match[0].length;
  }
  parts.push(template.slice(last));
  const pieces = parts.filter((p) => p !== '');
  if (pieces.every((p) => typeof p === 'string')) {
    const fixed = pieces.join('');
    return () => fixed;
  }
  return function renderTemplate(ctx) {
    let out = '';
    for (const part of pieces) out += typeof part === 'string' ? part : part(ctx);
    return out;
  };
}

/** The `redirect` handler kind. */
export const redirectKind: HandlerKind<RedirectOptions> = {
  kind: 'redirect',
  create(options, env) {
    const location = compileTemplate(options.to);
    const server = env.serverHeader === '' ? [] : ['Server', env.serverHeader];
    return {
      handle: function redirect(ctx) {
        ctx.status = options.status;
        ctx.res.writeHead(options.status, ['Location', location(ctx), 'Content-Length', '0', ...server]);
        ctx.res.end();
      },
    };
  },
};
