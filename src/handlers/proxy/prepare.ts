/**
 * Preparing a request for forwarding, once per request whatever the number of attempts: the checks that answer
 * the client early (405, 417, a broken body; 413 when a chunked body passes the route's limit), the request
 * body (with `request_buffering`, read whole before an app server is chosen — in memory, or in a temporary file
 * past `request_buffer_memory` — so that a slow upload never holds one; otherwise kept in memory when small
 * enough to replay, else streamed), the header list for the app server (hop-by-hop fields dropped, forwarding
 * fields rebuilt) and the path.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { h2EndedWithHeaders, responseCut, type RequestContext } from '../../http/context.js';
import { isGrpc } from '../../http/grpc.js';
import { RETRY_SOON, sendError } from '../../http/send.js';
import type { TempSpace } from '../../http/temp-file.js';
import { compileTemplate, type Template } from '../../http/template.js';
import { buildRequestHeaders, porticoHops } from '../../upstream/headers.js';
import { bufferBody, limitBody, readBody, ReplayableBody, SpooledBody, type BufferedBody } from './body.js';
import { decodeTextBody, grpcWebOf, toGrpcHeaders } from './grpc-web.js';
import type { PreparedRequest } from './sink.js';
import { PorticoError } from '../../errors.js';

/** Methods whose requests may be sent twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
const NO_HEADERS = new Map<string, string>();

/** What preparing needs of the route and its upstream, resolved once. */
export interface PrepareOptions {
  /** `pass` sends the client's authority in canonical form (`RequestContext.canonicalAuthority`); any other template is sent as Host. */
  readonly host: string;
  readonly setHeaders: Readonly<Record<string, string>>;
  /** Route prefix removed from the path (`''` for none). */
  readonly stripPrefix: string;
  /** Largest body kept in memory for a replay. */
  readonly retryBuffer: number;
  /** Forward fields whose names contain `_`. */
  readonly underscores: boolean;
  /** Forward TRACE; otherwise it is answered 405. */
  readonly allowTrace: boolean;
  /** Read the whole body before choosing a server (`proxy.request_buffering`); false streams it. */
  readonly requestBuffering: boolean;
  /** With request buffering, bytes of a body kept in memory; past them it goes to a temporary file. */
  readonly requestBufferMemory: number;
  /** Where the temporary files go, and their bound in all. */
  readonly tempSpace: TempSpace;
  readonly logger: Logger;
  /** Build the header list for an HTTP app server (false: a php route, which sends CGI variables instead). */
  readonly httpHeaders?: boolean | undefined;
  /**
   * gRPC and gRPC-Web calls are streamed, never read whole (default). False on a php route: a client's content-type
   * must not make it skip the buffering that gives PHP its CONTENT_LENGTH and keeps a slow client off its workers.
   */
  readonly grpc?: boolean | undefined;
}

/** The methods a proxy route answers when TRACE is refused (405 must say what is allowed, RFC 9110 §15.5.6). */
const ALLOW_WITHOUT_TRACE = { Allow: 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS' };

/**
 * The times a request may have come through Portico before it is taken for a loop: an upstream server that is
 * this Portico, or leads back to it (a DNS record that names it, a typo in a port), would otherwise have each pass
 * make the next, until a header grew past its limit. Chains of Porticos in front of each other are far shorter.
 */
export const MAX_PORTICO_HOPS = 10;

/** Prepares requests for one proxy route. */
export class RequestPreparer {
  readonly #o: PrepareOptions;
  readonly #setHeaders: Array<[string, Template]>;
  readonly #hostTemplate: Template | undefined;

  constructor(options: PrepareOptions) {
    this.#o = options;
    this.#setHeaders = Object.entries(options.setHeaders).map(([name, value]) => [name.toLowerCase(), compileTemplate(value)]);
    this.#hostTemplate = options.host === 'pass' ? undefined : compileTemplate(options.host);
  }

  /** The path sent upstream (after the server's base path): the (maybe stripped) canonical path and query. */
  upstreamPath(ctx: RequestContext): string {
    let path = ctx.path;
    const prefix = this.#o.stripPrefix;
    if (prefix !== '') {
      path = path.slice(Math.min(prefix.length, path.length));
      if (path.charCodeAt(0) !== 47) path = '/' + path;
    }
    return ctx.query === '' ? path : `${path}?${ctx.query}`;
  }

  /** The header list for the app server, as a flat name/value list. */
  headers(ctx: RequestContext): string[] {
    const req = ctx.req;
    const clientHost = ctx.canonicalAuthority;
    let setHeaders: Map<string, string> = NO_HEADERS;
    if (this.#setHeaders.length > 0) {
      setHeaders = new Map();
      for (const [name, value] of this.#setHeaders) setHeaders.set(name, value(ctx));
    }
    const peer = ctx.peerAddress();
    const traceparent = ctx.traceparent;
    return buildRequestHeaders({
      rawHeaders: req.rawHeaders,
      peer,
      clientIp: ctx.clientAddress(),
      trusted: ctx.trusted?.has(peer) ?? false,
      forwarded: ctx.forwarded(),
      scheme: ctx.scheme,
      host: clientHost,
      upstreamHost: this.#hostTemplate === undefined ? clientHost : this.#hostTemplate(ctx),
      setHeaders,
      method: req.method!,
      // Via names HTTP/2 as `2` (RFC 9110 §7.6.3: the version as the protocol names it).
      httpVersion: req.httpVersionMajor === 2 ? '2' : req.httpVersion,
      underscores: this.#o.underscores,
      dropAuthorization: ctx.credentialsConsumed,
      requestId: ctx.requestId,
      traceparent,
      keepTracestate: ctx.traceStateKept,
    });
  }

  /** Whether the request is in a forwarding loop (see `MAX_PORTICO_HOPS`), said in the error log: it gets 508. */
  inLoop(ctx: RequestContext): boolean {
    const hops = porticoHops(ctx.req.headers.via);
    if (hops < MAX_PORTICO_HOPS) return false;
    this.#o.logger.warn({ url: ctx.req.url, hops }, 'forwarding loop: the request has come through Portico again and again (an upstream server that is this Portico, or leads back to it?); answered 508');
    return true;
  }

  /**
   * Checks and reads what must be known before forwarding; answers the client itself (and returns undefined) on
   * a bad request. Synchronous unless a body has to be read first, so a GET costs no promise.
   */
  prepare(ctx: RequestContext): PreparedRequest | undefined | Promise<PreparedRequest | undefined> {
    const { req, res } = ctx;
    if (req.method === 'TRACE' && !this.#o.allowTrace) return void sendError(ctx, 405, ALLOW_WITHOUT_TRACE);
    if (this.inLoop(ctx)) return void sendError(ctx, 508, undefined, true);
    // A Content-Length over the route's limit was refused by its body-size link, before this.
    const length = req.headers['content-length'];
    const declared = length === undefined ? -1 : Number(length);
    if (req.headers.expect !== undefined) {
      if (req.headers.expect.toLowerCase() !== '100-continue') return void sendError(ctx, 417, undefined, true);
    }
    // A declared body that the temporary files cannot take now is refused before 100 Continue, before it is sent:
    // 503 (try later) while others hold the space, 413 when it could never fit.
    if (this.#o.requestBuffering && declared > this.#o.requestBufferMemory && this.#o.tempSpace.wouldExceed(declared)) {
      return void (declared > this.#o.tempSpace.max ? sendError(ctx, 413, undefined, true) : sendError(ctx, 503, RETRY_SOON, true));
    }
    if (req.headers.expect !== undefined) res.writeContinue();
    // An h2 body needs no framing field: DATA frames follow unless the HEADERS frame ended the stream.
    const hasBody = declared > 0 || req.headers['transfer-encoding'] !== undefined || (declared < 0 && req.httpVersionMajor === 2 && !h2EndedWithHeaders(res));
    let body: Readable | null = null;
    let replayable = IDEMPOTENT.has(req.method!);
    if (hasBody) {
      ctx.bodyClaimed = true;
      // A gRPC call streams both ways (a bidirectional call's requests follow its answers): never read whole.
      const web = this.#o.grpc === false ? undefined : grpcWebOf(ctx);
      const grpc = web !== undefined || (this.#o.grpc !== false && isGrpc(req.headers));
      if (this.#o.requestBuffering && !grpc) {
        // A small body of known length (the usual form post) is read as before: in memory, with no file to open.
        if (declared >= 0 && declared <= this.#o.requestBufferMemory) return this.#readSmall(ctx, declared, replayable);
        return bufferBody(req, declared, ctx.bodyLimit, { memory: this.#o.requestBufferMemory, space: this.#o.tempSpace }).then((buffered) =>
          this.#buffered(ctx, buffered, declared, replayable),
        );
      }
      if (declared >= 0 && declared <= this.#o.retryBuffer && !grpc) return this.#readSmall(ctx, declared, replayable);
      body = req;
      replayable = false;
      const limited = declared < 0 && ctx.bodyLimit !== Infinity;
      const tooLarge = (): void => sendError(ctx, 413, undefined, true);
      // A gRPC call's first retry_buffer bytes are kept: a call that never reached an app goes to another. Its
      // size is counted there (no Transform between), but for gRPC-Web text's, which counts what the client sent.
      if (grpc && web !== 'text') return this.#prepared(ctx, new ReplayableBody(req, this.#o.retryBuffer, limited ? { sizeLimit: ctx.bodyLimit, onExceeded: tooLarge } : undefined), false);
      if (limited) body = limitBody(req, ctx.bodyLimit, tooLarge);
      if (web === 'text') body = decodeTextBody(body);
      if (grpc) return this.#prepared(ctx, new ReplayableBody(body, this.#o.retryBuffer), false);
    }
    return this.#prepared(ctx, body, replayable);
  }

  #readSmall(ctx: RequestContext, declared: number, replayable: boolean): Promise<PreparedRequest | undefined> {
    return readBody(ctx.req, declared).then((buffer) => {
      if (buffer === null) return void sendError(ctx, 400, undefined, true);
      return this.#prepared(ctx, buffer, replayable);
    });
  }

  /** A body read whole (or not): forwarded with its length, replayable like a small one. */
  #buffered(ctx: RequestContext, buffered: BufferedBody, declared: number, replayable: boolean): PreparedRequest | undefined {
    if (buffered === 'too-large') {
      // The 413 goes out with Connection: close; the rest of the body is read and dropped until the socket closes.
      sendError(ctx, 413, undefined, true);
      ctx.req.resume();
      return undefined;
    }
    if (buffered === 'broken') return void sendError(ctx, 400, undefined, true);
    // The rest of the body is unread: the connection closes after the answer.
    if (buffered === 'busy') return void sendError(ctx, 503, RETRY_SOON, true);
    if (!Buffer.isBuffer(buffered) && !(buffered instanceof SpooledBody)) {
      this.#o.logger.error({ err: buffered.error, dir: this.#o.tempSpace.dir }, 'cannot buffer a request body in a temporary file');
      return void sendError(ctx, 500, undefined, true);
    }
    if (buffered instanceof SpooledBody) {
      // The file lives as long as the request: every attempt re-reads it; the end of the answer (or the client
      // leaving) releases it.
      if (responseCut(ctx.res)) {
        void buffered.close();
        return undefined;
      }
      ctx.res.once('close', () => void buffered.close());
    }
    const prepared = this.#prepared(ctx, buffered, replayable);
    // A chunked (or h2 unsized) upload is sent sized: many app servers refuse chunked request bodies.
    if (declared < 0) prepared.headers.push('content-length', String(buffered.length));
    return prepared;
  }

  #prepared(ctx: RequestContext, body: Buffer | SpooledBody | ReplayableBody | Readable | null, replayable: boolean): PreparedRequest {
    const prepared: PreparedRequest = {
      ctx,
      body,
      replayable,
      headers: this.#o.httpHeaders === false ? [] : this.headers(ctx),
      path: this.upstreamPath(ctx),
      clientIp: ctx.clientAddress(),
      clientGone: false,
      abortCurrent: undefined,
    };
    // gRPC-Web goes to the app as gRPC (its answer is translated back by GrpcWebSink).
    if (ctx.req.method === 'POST' && grpcWebOf(ctx) !== undefined) toGrpcHeaders(prepared.headers);
    ctx.onClientGone(() => {
      prepared.clientGone = true;
      prepared.abortCurrent?.(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the connection'));
    });
    return prepared;
  }
}
