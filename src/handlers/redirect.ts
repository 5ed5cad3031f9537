/**
 * `redirect`: answers with a 3xx and a `Location` built from a template compiled once (any variable of
 * `http/template.ts`: `$scheme`, `$host`, `$request_uri`, `$uri`, `$args`, …).
 */
import { z } from 'zod';
import { compileTemplate } from '../http/template.js';
import { defineHandler } from './types.js';

const options = z.strictObject({
  /** Target; may use the template variables (`$scheme`, `$host`, `$request_uri`, `$uri`, `$args`, …). */
  to: z.string().min(1),
  status: z.union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)]).default(302),
});

/** The `redirect` handler kind. */
export const redirectKind = defineHandler({
  kind: 'redirect',
  options,
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
});
