/**
 * `max_body_size`: the largest request body a route accepts, for every handler kind (nginx's
 * `client_max_body_size`; `0` = no limit). A body whose Content-Length says it is too large gets 413 before a
 * byte of it is read or anything is sent on (before any 100 Continue), and the connection is closed. A body of
 * unknown length (chunked, or HTTP/2 without Content-Length) is cut at the limit: whoever reads it (the proxy)
 * stops at `ctx.bodyLimit` and answers 413 if nothing was sent yet; a body nobody reads (static, redirect,
 * respond) is discarded by Node after the answer, and the connection is cut once that passes the limit.
 *
 * A proxy route's `proxy.max_body_size` is this same link (see `ImpliedMiddleware`): the route's own setting
 * wins over its site's, and its 10MB default applies when neither sets one.
 */
import type { IncomingMessage } from 'node:http';
import { size } from '../../config/schema.js';
import type { RequestContext } from '../../http/context.js';
import { sendError } from '../../http/send.js';
import { defineMiddleware } from '../chain.js';

/**
 * A body the handler never claimed is read and dropped by Node once the answer is out (so that the next request
 * on the connection can be parsed), however long it is. Counting it takes a `data` listener before Node starts
 * that (on `finish`, after which nothing would be pushed to a listener): at `prefinish`, when the answer has been
 * handed to the socket. The reading then goes on as Node's would, and the connection is cut past the limit.
 */
function guardUnclaimedBody(ctx: RequestContext, limit: number): void {
  const req: IncomingMessage = ctx.req;
  ctx.res.once('prefinish', function discardWithinLimit() {
    if (ctx.bodyClaimed || req.complete) return;
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) req.destroy();
    });
  });
}

/** The `max_body_size` middleware kind (stage `body_size`). */
export const maxBodySizeKind = defineMiddleware({
  kind: 'max_body_size',
  stage: 'body_size',
  options: size,
  create(limit) {
    if (limit === 0) {
      return function unlimitedBody(ctx, next) {
        return next(ctx);
      };
    }
    return function bodySize(ctx, next) {
      const req = ctx.req;
      const length = req.headers['content-length'];
      if (length !== undefined) {
        // Node has already refused a Content-Length that is not a number; the body is read (or discarded) whole.
        if (Number(length) > limit) return sendError(ctx, 413, undefined, true);
        return next(ctx);
      }
      // HTTP/1.1 without Content-Length or Transfer-Encoding has no body (RFC 9112 §6.3).
      if (req.headers['transfer-encoding'] === undefined && req.httpVersionMajor < 2) return next(ctx);
      ctx.bodyLimit = limit;
      guardUnclaimedBody(ctx, limit);
      return next(ctx);
    };
  },
});
