/** `respond`: a fixed status and body, like nginx's `return 200 "ok"`. */
import { z } from 'zod';
import { headerMap } from '../config/schema.js';
import { defineHandler } from './types.js';

const options = z.strictObject({
  status: z.number().int().min(200).max(599).default(200),
  body: z.string().default(''),
  content_type: z.string().default('text/plain; charset=utf-8'),
  headers: headerMap.default({}),
});

/** The `respond` handler kind. */
export const respondKind = defineHandler({
  kind: 'respond',
  options,
  create(options, env) {
    const body = Buffer.from(options.body);
    const headers: string[] = ['Content-Type', options.content_type, 'Content-Length', String(body.length)];
    if (env.serverHeader !== '') headers.push('Server', env.serverHeader);
    for (const [name, value] of Object.entries(options.headers)) headers.push(name, value);
    const noBody = options.status === 204 || options.status === 304;
    return {
      handle: function respond(ctx) {
        ctx.status = options.status;
        ctx.res.writeHead(options.status, headers);
        if (ctx.req.method === 'HEAD' || noBody) {
          ctx.res.end();
        } else {
          ctx.bytesSent = body.length;
          ctx.res.end(body);
        }
      },
    };
  },
});
