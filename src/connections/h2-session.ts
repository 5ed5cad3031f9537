/**
 * Guards for an HTTP/2 session, beyond what Node and nghttp2 enforce. nghttp2 (Node 20) already ends a session
 * with GOAWAY on a CONTINUATION flood, and closes one whose peer floods SETTINGS or PING without reading the
 * ACKs; its rapid-reset limit (CVE-2023-44487) lets about a thousand streams be opened and cancelled first,
 * each of which reaches a handler (and, on a proxy route, the app server). Portico does two things: requests
 * start once the frames read with them are processed, so a stream reset in the same read never starts any work
 * (`h2RequestHandler`); and a client that cancels many streams before any answer began gets GOAWAY
 * ENHANCE_YOUR_CALM (`guardSession`).
 */
import { constants, type Http2SecureServer, type Http2Server, type Http2ServerRequest, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { METHODS } from 'node:http';
import { responseCut, type ClientRequest, type ClientResponse } from '../http/context.js';
import { isGrpc } from '../http/grpc.js';

/** The methods Node's HTTP/1 parser knows (RFC 9110's, WebDAV's, QUERY and the like). */
const KNOWN_METHODS: ReadonlySet<string> = new Set(METHODS);

/** Where an h2 server's requests go (the listener's dispatch, its scheme bound). */
export interface H2Target {
  request(req: ClientRequest, res: ClientResponse): void;
  /** Answers with Portico's error page for `status` (the stream only). */
  refuse(req: ClientRequest, res: ClientResponse, status: number): void;
}

/**
 * Hands an h2 server's requests to Portico, as a listener does for HTTP/1: every request (and every one with
 * `Expect: 100-continue`, which Portico answers itself after its own checks: a 413 comes before any 100) to
 * `target.request`, through `h2RequestHandler`, unless its method is unknown (501); any other expectation to
 * `target.refuse` (417, Portico's page); each new session to `guardSession`.
 */
export function serveH2(server: Http2Server | Http2SecureServer, target: H2Target): void {
  // A method HTTP/1's parser does not know gets 501 there (`clientErrorStatus`); the same here, where nghttp2
  // passes any token.
  const onRequest = h2RequestHandler((req, res) => (KNOWN_METHODS.has(req.method!) ? target.request(req, res) : target.refuse(req, res, 501)));
  server.on('request', onRequest);
  server.on('checkContinue', onRequest);
  server.on('checkExpectation', (req: ClientRequest, res: ClientResponse) => target.refuse(req, res, 417));
  server.on('session', (session: ServerHttp2Session) => guardSession(session));
}

/**
 * request_timeout for one HTTP/2 request whose body is still to come (HTTP/1's is Node's `requestTimeout`): a
 * stream whose request has not fully arrived `timeoutMs` after its head is reset (RST_STREAM CANCEL); the session
 * and its other streams go on. A request without a body (END_STREAM on its head, every GET) costs no timer, nor
 * does a gRPC call: a streaming call's requests last as long as the call (a bidirectional one's follow its
 * answers), and neither nginx nor Envoy bounds them in total; its deadline and the upstream's read timeout do.
 */
export function limitRequestTime(req: ClientRequest, res: ClientResponse, timeoutMs: number): void {
  const stream = (req as Http2ServerRequest).stream;
  if (timeoutMs <= 0 || stream === undefined || stream.endAfterHeaders || req.complete || isGrpc(req.headers)) return;
  const timer = setTimeout(() => {
    if (!req.complete && !stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
  }, timeoutMs);
  timer.unref();
  const clear = (): void => clearTimeout(timer);
  req.once('end', clear);
  res.once('close', clear);
}

/** Limits of `guardSession`. */
export interface SessionGuardLimits {
  /** Streams the client may reset early, per `windowMs`, before the session is ended (if most streams were). */
  maxEarlyResets: number;
  windowMs: number;
  /** A stream reset before its answer began counts as early only if it lived less than this (ms). */
  earlyMs: number;
}

/**
 * The default: a browser cancels a few streams when a page is left; a hundred in ten seconds, each within a second
 * and before any answer, and more than half of the streams opened, is an attack (nginx, after CVE-2023-44487,
 * closes a connection that opens twice its stream limit in one read; Envoy one whose streams were reset within a
 * second for more than half of them).
 */
export const SESSION_GUARD_DEFAULTS: SessionGuardLimits = Object.freeze({ maxEarlyResets: 100, windowMs: 10_000, earlyMs: 1000 });

/** When a stream was opened (ms since the epoch), on the stream itself: no closure per stream. */
const kOpenedAt = Symbol('portico.h2.openedAt');
type TimedStream = ServerHttp2Stream & { [kOpenedAt]?: number };

/**
 * Watches a new server session (call it from the server's 'session' event). A client's early reset (before the
 * answer began, within `earlyMs` of the stream's start) is what a rapid reset is made of; a gRPC client cancels
 * calls too (a deadline, a hedged or abandoned call), amid many answered ones, and a subscription given up after a
 * while is no attack: the session is ended only when the early resets pass `maxEarlyResets` in the window and
 * are more than half of the streams opened in it, as Envoy's premature-reset rule.
 */
export function guardSession(session: ServerHttp2Session, limits: SessionGuardLimits = SESSION_GUARD_DEFAULTS): void {
  let resets = 0;
  let opened = 0;
  let windowStart = 0;
  const roll = (now: number): void => {
    if (now - windowStart <= limits.windowMs) return;
    windowStart = now;
    resets = 0;
    opened = 0;
  };
  const onStreamClose = function (this: TimedStream): void {
    // Closed by a reset before the head went out: the client cancelled it (or the session broke).
    if (this.headersSent || this.rstCode === constants.NGHTTP2_NO_ERROR || session.destroyed) return;
    const now = Date.now();
    if (now - (this[kOpenedAt] ?? now) >= limits.earlyMs) return;
    roll(now);
    if (++resets <= limits.maxEarlyResets || resets * 2 <= opened) return;
    // The GOAWAY goes out first; destroy() then closes the socket without waiting for the streams.
    session.goaway(constants.NGHTTP2_ENHANCE_YOUR_CALM);
    session.destroy();
  };
  session.on('stream', (stream: TimedStream) => {
    const now = Date.now();
    roll(now);
    opened++;
    stream[kOpenedAt] = now;
    stream.once('close', onStreamClose);
  });
}

/**
 * The 'request' listener of an h2 server: hands each request to `dispatch`, one turn of the event loop later
 * (`setImmediate`, after all frames of the read that carried it). nghttp2 announces a stream as soon as its
 * HEADERS frame is parsed, before a RST_STREAM right behind it in the same read; waiting for the read to be
 * processed lets a stream that was opened and reset at once (rapid reset) be dropped before any handler, file
 * or app server is touched. One immediate per read, not per request: requests wait in one array.
 */
export function h2RequestHandler(dispatch: (req: ClientRequest, res: ClientResponse) => void): (req: ClientRequest, res: ClientResponse) => void {
  let pending: Array<ClientRequest | ClientResponse> = [];
  const flush = (): void => {
    const batch = pending;
    pending = [];
    for (let i = 0; i < batch.length; i += 2) {
      const res = batch[i + 1] as ClientResponse;
      if (!responseCut(res)) dispatch(batch[i] as ClientRequest, res);
    }
  };
  return function onH2Request(req, res) {
    if (pending.length === 0) setImmediate(flush);
    pending.push(req, res);
  };
}
