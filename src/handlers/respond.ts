/** `respond`: a fixed status and body, like nginx's `return 200 "ok"`. */
import type { HandlerKind } from './types.js';

/** Options of a `respond` route, as validated by the config schema. */
export interface RespondOptions {
  readonly status: number;
  readonly body: string;
  readonly content_type: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** The `respond` handler kind. */
export const respondKind: HandlerKind<RespondOptions> = {
  kind: 'respond',
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
};
