/**
 * `max_body_size`: the largest request body a route accepts, for every handler kind (nginx's
 * `client_max_body_size`; `0` = no limit). A body whose Content-Length says it is too large gets 413 before a
 * byte of it is read or anything is sent on (before any 100 Continue), and the connection is closed. A body of
 * unknown length (chunked, or HTTP/2 without Content-Length) is cut at the limit with 413 and a closed connection:
 * a handler that reads bodies (the proxy) stops at `ctx.bodyLimit` itself; for the others (static, redirect,
 * respond) this link reads and drops the body before the handler answers, so that a body past the limit never
 * gets the handler's 200 followed by a cut connection. A body a reading handler leaves unread (a cache hit) is
 * discarded by Node after the answer, and the connection is cut once that passes the limit.
 *
 * A proxy route's `proxy.max_body_size` is this same link (see `ImpliedMiddleware`): the route's own setting
 * wins over its site's, and its 10MB default applies when neither sets one.
 */
import { size } from '../../config/schema.js';
import { h2EndedWithHeaders, type ClientRequest, type RequestContext } from '../../http/context.js';
import { sendError } from '../../http/send.js';
import { defineMiddleware } from '../chain.js';

/**
 * A body the handler never claimed is read and dropped by Node once the answer is out (so that the next request
 * on the connection can be parsed), however long it is. Counting it takes a `data` listener before Node starts
 * that (on `finish`, after which nothing would be pushed to a listener): at `prefinish`, when the answer has been
 * handed to the socket. The reading then goes on as Node's would, and the connection is cut past the limit.
 */
function guardUnclaimedBody(ctx: RequestContext, limit: number): void {
  const req: ClientRequest = ctx.req;
  ctx.res.once('prefinish', function discardWithinLimit() {
    if (ctx.bodyClaimed || req.complete) return;
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) req.destroy();
    });
  });
}

/** What reading and dropping a body of unknown length came to. */
type Dropped = 'within' | 'over' | 'gone';

/**
 * Reads a body of unknown length to its end and drops it: `within` the limit, `over` it (reading goes on and drops
 * the rest, so that the 413 is not lost to a reset, until the connection closes after it), or `gone` (the client
 * left or broke the framing). Bounded by request_timeout, which covers the body too.
 */
function dropBody(req: ClientRequest, limit: number): Promise<Dropped> {
  return new Promise((resolve) => {
    let received = 0;
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) {
        req.off('data', onData);
        req.resume();
        resolve('over');
      }
    };
    req.on('data', onData);
    req.once('end', () => resolve(received > limit ? 'over' : 'within'));
    req.once('error', () => resolve('gone'));
    req.once('close', () => {
      if (!req.complete) resolve('gone');
    });
  });
}

/** The `max_body_size` middleware kind (stage `body_size`). */
export const maxBodySizeKind = defineMiddleware({
  kind: 'max_body_size',
  stage: 'body_size',
  options: size,
  create(limit, env) {
    if (limit === 0) {
      return function unlimitedBody(ctx, next) {
        return next(ctx);
      };
    }
    const readsBody = env.handlerReadsBody;
    return function bodySize(ctx, next) {
      const req = ctx.req;
      const length = req.headers['content-length'];
      if (length !== undefined) {
        // Node has already refused a Content-Length that is not a number; the body is read (or discarded) whole.
        if (Number(length) > limit) return sendError(ctx, 413, undefined, true);
        return next(ctx);
      }
      // HTTP/1.1 without Content-Length or Transfer-Encoding has no body (RFC 9112 §6.3); nor has an h2 request
      // whose HEADERS frame ended its stream.
      if (req.httpVersionMajor < 2 ? req.headers['transfer-encoding'] === undefined : h2EndedWithHeaders(ctx.res)) return next(ctx);
      ctx.bodyLimit = limit;
      if (readsBody) {
        guardUnclaimedBody(ctx, limit);
        return next(ctx);
      }
      // The body is read here, so the client may send it now (any other expectation got 417 before routing).
      if (req.headers.expect !== undefined) ctx.res.writeContinue();
      return dropBody(req, limit).then((dropped) => {
        if (dropped === 'within') return next(ctx);
        if (dropped === 'over') sendError(ctx, 413, undefined, true);
      });
    };
  },
});
