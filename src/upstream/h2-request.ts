/**
 * One request on one HTTP/2 stream of an app server, speaking undici's handler contract (`H2Request`), with what
 * it needs: the options of its server (`H2Options`), its errors (`H2TransportError`) and the header conversions.
 * A streamed body is sent through a `ReplayableBody` (the proxy's own for a gRPC call), which keeps its start
 * for a resend. The connections and the queue are `h2-transport.ts`'s.
 */
import { constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { ReplayableBody } from './replayable-body.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR } = constants;

/** Fields HTTP/2 forbids in a request (RFC 9113 §8.2.2), and Host, which is `:authority` there. */
const CONNECTION_FIELDS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host', 'te']);
const GRPC = /^application\/grpc(?:[+;]|$)/i;

/** How to reach one HTTP/2 server and how to use its connections. */
export interface H2Options {
  /** `http://host:port` (h2c) or `https://host:port`. */
  readonly origin: string;
  /** TLS options (`https://`): CA, verification and the name to verify the server as. */
  readonly tls: { ca?: Buffer; rejectUnauthorized: boolean; servername: string | undefined } | undefined;
  /** `auto`: offer `http/1.1` too; a server that picks it is then spoken to through `fallback`. */
  readonly fallback: Dispatcher | undefined;
  readonly connectTimeout: number;
  readonly headersTimeout: number;
  readonly bodyTimeout: number;
  /** A session with no stream for this long is closed. */
  readonly idleTimeout: number;
  readonly connections: number;
  readonly maxConcurrentStreams: number;
  /** 0: no PINGs. */
  readonly pingInterval: number;
  readonly pingTimeout: number;
  /** A new session for each request, closed after it (the active health checks: a check must see a restart). */
  readonly fresh?: boolean;
}

/** A request's stream, which carries its request for the shared listeners. */
const kRequest = Symbol('portico.h2Request');
type RequestStream = ClientHttp2Stream & { [kRequest]?: H2Request | undefined };
const ignore = (): void => undefined;

/** The dispatch options for an HTTP/1.1 dispatcher: a `ReplayableBody` given as it is becomes a Readable reading. */
export function readableBody(opts: Dispatcher.DispatchOptions): Dispatcher.DispatchOptions {
  const body: unknown = opts.body;
  return body instanceof ReplayableBody ? { ...opts, body: body.stream() } : opts;
}

/** An error with a stable code (as undici's), and the stream's reset code when the server reset it. */
export class H2TransportError extends Error {
  constructor(
    message: string,
    readonly code: string,
    /** The RST_STREAM code the server sent (undefined: none). */
    readonly rstCode?: number,
  ) {
    super(message);
    this.name = 'H2TransportError';
  }
}

/**
 * A stream that ended in a reset: the server's own RST_STREAM (its code passed on to the client), or the whole
 * connection lost — closed, or ended by a GOAWAY with an error (Node gives each stream the session's code then):
 * no code of the stream's, so that the client is told the app was lost, not that its call was cancelled.
 */
function resetError(session: ClientHttp2Session | undefined, code: number | undefined): H2TransportError {
  if (session === undefined || session.destroyed) return new H2TransportError('the connection to the server was lost', 'ECONNRESET');
  return new H2TransportError(`the server reset the stream (code ${code ?? 'unknown'})`, 'ECONNRESET', code);
}

/** One request on one stream, speaking undici's handler contract. */
export class H2Request {
  #stream: ClientHttp2Stream | undefined = undefined;
  #settled = false;
  /**
   * One timer for both waits: the response head (from dispatch) and then the time between reads. It is set once;
   * a read only notes its time (`#readAt`), and the timer, when it fires early, is set again for what is left.
   */
  #timer: NodeJS.Timeout | undefined = undefined;
  /** The response head has arrived (the timer now watches reads). */
  #headed = false;
  #readAt = 0;
  /** Paused by the handler (a slow client holds the answer): the app is not idle, the read timeout waits. */
  #paused = false;
  #trailers: string[] = [];
  /** The transport's callback for the stream's end (see `run`), and the session of the stream. */
  #closed: (() => void) | undefined = undefined;
  #session: ClientHttp2Session | undefined = undefined;
  #grpc = false;
  /** Set while waiting for a stream: takes the request out of the queue. */
  onCancel: (() => void) | undefined = undefined;
  /** Sends the request again on another stream (a stream the server did not process); false: it cannot. */
  onRefused: (() => boolean) | undefined = undefined;
  #resent = false;
  /** A streamed body (kept across a resend: it holds what was sent, for a replay). */
  #replay: ReplayableBody | undefined = undefined;

  constructor(
    readonly handler: Dispatcher.DispatchHandler,
    readonly o: H2Options,
    readonly opts: Dispatcher.DispatchOptions,
  ) {}

  get live(): boolean {
    return !this.#settled;
  }

  startHeadersTimer(): void {
    const ms = this.opts.headersTimeout ?? this.o.headersTimeout;
    if (ms > 0) this.#timer = setTimeout(this.#timedOut, ms);
  }

  readonly #timedOut = (): void => {
    if (!this.#headed) {
      const ms = this.opts.headersTimeout ?? this.o.headersTimeout;
      return this.fail(new H2TransportError(`no response head within ${ms} ms`, 'UND_ERR_HEADERS_TIMEOUT'));
    }
    const ms = this.opts.bodyTimeout ?? this.o.bodyTimeout;
    // Paused by a slow client, the app is not idle: the wait starts again once the reading does.
    const idle = this.#paused ? 0 : Date.now() - this.#readAt;
    if (idle >= ms) return this.fail(new H2TransportError(`nothing read for ${ms} ms`, 'UND_ERR_BODY_TIMEOUT'));
    this.#timer = setTimeout(this.#timedOut, ms - idle);
  };

  /** The head arrived: the timer now watches the time between reads (set again only if it would fire too late). */
  #watchReads(): void {
    this.#headed = true;
    const ms = this.opts.bodyTimeout ?? this.o.bodyTimeout;
    this.#readAt = Date.now();
    if (ms <= 0) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      return;
    }
    // Set from dispatch for the head's timeout: it fires no later than a read timeout that is as long or longer.
    const headMs = this.opts.headersTimeout ?? this.o.headersTimeout;
    if (this.#timer !== undefined && headMs > 0 && headMs <= ms) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(this.#timedOut, ms);
  }

  /** Calls `onConnect` (the attempt may abort at once); false when it did. */
  begin(): boolean {
    try {
      this.handler.onConnect?.((err) => this.abort(err));
    } catch (err) {
      this.fail(err as Error);
    }
    return !this.#settled;
  }

  /** `auto` found an HTTP/1.1 server: the request goes there (it has called onConnect already; undici calls it again). */
  handOver(fallback: Dispatcher, opts: Dispatcher.DispatchOptions): void {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#timer);
    fallback.dispatch(readableBody(opts), this.handler);
  }

  abort(err?: Error): void {
    if (this.#settled) return;
    // RST_STREAM CANCEL: the app sees the call cancelled (a gRPC server cancels its handler).
    if (this.#stream !== undefined && !this.#stream.closed) this.#stream.close(NGHTTP2_CANCEL);
    this.fail(err ?? new H2TransportError('request aborted', 'UND_ERR_ABORTED'));
  }

  fail(err: Error): void {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#timer);
    this.onCancel?.();
    if (this.#stream !== undefined && !this.#stream.closed) this.#stream.close(NGHTTP2_CANCEL);
    if (this.#stream !== undefined) this.#replay?.detach(this.#stream);
    this.handler.onError?.(err);
  }

  /** Sends the request on `session`; `closed` is called once the stream is gone. */
  run(session: ClientHttp2Session, closed: () => void): void {
    const { opts, o } = this;
    const headers = toH2Headers(opts, o.origin, o.tls !== undefined);
    this.#grpc = GRPC.test(String(headers['content-type'] ?? ''));
    // gRPC needs `te: trailers` (its servers refuse a call without it); Portico passes the trailers on.
    if (this.#grpc) headers.te = 'trailers';
    const body = opts.body as Buffer | string | Readable | null | undefined;
    const empty = body === null || body === undefined;
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: empty });
    } catch (err) {
      closed();
      // A session that is going away takes no new stream: the request never left.
      return this.fail(new H2TransportError(`stream not opened: ${(err as Error).message}`, 'PORTICO_H2_REFUSED'));
    }
    this.#stream = stream;
    this.#session = session;
    this.#closed = closed;
    // The listeners are shared by all streams (no closures per request): each finds its request on the stream.
    (stream as RequestStream)[kRequest] = this;
    stream.on('close', H2Request.#onClose);
    stream.on('error', ignore);
    stream.on('headers', H2Request.#onInterim);
    stream.on('response', H2Request.#onResponse);
    stream.on('data', H2Request.#onData);
    stream.on('trailers', H2Request.#onTrailers);
    stream.on('end', H2Request.#onEnd);
    if (empty) return;
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      stream.end(body);
      return;
    }
    // The proxy's ReplayableBody (a gRPC call's, given as it is), or any other stream wrapped in one; after a
    // refusal, the same body read again from its start. Either way written into the stream with nothing between.
    this.#replay ??= body instanceof ReplayableBody ? body : new ReplayableBody(body, REPLAY_LIMIT);
    this.#replay.sendTo(stream, this.#bodyFailed);
  }

  readonly #bodyFailed = (err: Error): void => this.abort(err);

  static #onClose = function (this: RequestStream): void {
    const request = this[kRequest];
    if (request === undefined) return;
    this[kRequest] = undefined;
    request.#streamClosed(this);
  };

  #streamClosed(stream: RequestStream): void {
    this.#closed?.();
    this.#closed = undefined;
    if (this.#settled) return;
    const code = stream.rstCode ?? NGHTTP2_NO_ERROR;
    // REFUSED_STREAM, or a stream past a GOAWAY's last id: not processed by the app (RFC 9113 §8.7).
    const refused = code === NGHTTP2_REFUSED_STREAM || (!this.#headed && stream.id === undefined);
    // Not processed (a GOAWAY's later stream, REFUSED_STREAM): sent again once on another stream, when its body
    // can be (none, in memory, or a stream not read yet), as a request that never left.
    if (refused && !this.#resent && (this.#replay === undefined || this.#replay.replayable) && this.onRefused !== undefined) {
      // Done before onRefused, which may run the request again at once (a session with a free stream): what is
      // dropped here is this stream's, never the new one's.
      this.#resent = true;
      this.#stream = undefined;
      this.#replay?.detach(stream);
      if (this.onRefused()) return;
    }
    this.fail(refused ? new H2TransportError('the server refused the stream (not processed)', 'PORTICO_H2_REFUSED', code) : resetError(this.#session, code));
  }

  /** 1xx answers: passed to the handler as undici does (the attempt forwards 103's Link fields). */
  static #onInterim = function (this: RequestStream, head: IncomingHttpHeaders): void {
    const request = this[kRequest];
    const status = Number(head[':status']);
    if (request !== undefined && !request.#settled && status >= 100 && status < 200) request.handler.onHeaders?.(status, flatten(head) as unknown as Buffer[], request.#resume, '');
  };

  static #onResponse = function (this: RequestStream, head: IncomingHttpHeaders, flags: number): void {
    const request = this[kRequest];
    if (request === undefined || request.#settled) return;
    request.#watchReads();
    const status = Number(head[':status']);
    let raw = flatten(head);
    // A gRPC trailers-only answer (its status in the one HEADERS frame that ended the stream) is passed on as
    // headers and trailers: the client side sends HEADERS and then the response's end.
    if (request.#grpc && (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0 && head['grpc-status'] !== undefined) {
      const kept: string[] = [];
      for (let i = 0; i < raw.length; i += 2) {
        const lower = raw[i]!.toLowerCase();
        if (lower === 'grpc-status' || lower === 'grpc-message' || lower === 'grpc-status-details-bin') request.#trailers.push(raw[i]!, raw[i + 1]!);
        else kept.push(raw[i]!, raw[i + 1]!);
      }
      raw = kept;
    }
    if (request.handler.onHeaders?.(status, raw as unknown as Buffer[], request.#resume, '') === false) request.#pause(this);
  };

  static #onData = function (this: RequestStream, chunk: Buffer): void {
    const request = this[kRequest];
    if (request === undefined || request.#settled) return;
    request.#readAt = Date.now();
    if (request.handler.onData?.(chunk) === false) request.#pause(this);
  };

  static #onTrailers = function (this: RequestStream, head: IncomingHttpHeaders): void {
    const request = this[kRequest];
    if (request === undefined) return;
    for (const name in head) {
      if (name.charCodeAt(0) === 58) continue;
      const value = head[name];
      if (Array.isArray(value)) for (const v of value) request.#trailers.push(name, String(v));
      else if (value !== undefined) request.#trailers.push(name, String(value));
    }
  };

  static #onEnd = function (this: RequestStream): void {
    const request = this[kRequest];
    if (request === undefined || request.#settled) return;
    // A reset ends the readable side too (Node pushes its end after recording the code): not a complete answer.
    const code = this.rstCode;
    if (this.aborted || (code !== undefined && code !== NGHTTP2_NO_ERROR)) return request.fail(resetError(request.#session, code));
    request.#settled = true;
    clearTimeout(request.#timer);
    request.handler.onComplete?.(request.#trailers);
  };

  /** Paused by the handler (a slow client), the app is not idle: the read timeout waits (as undici's). */
  #pause(stream: ClientHttp2Stream): void {
    stream.pause();
    this.#paused = true;
  }

  /** The handler takes more: reading goes on, and the read timeout starts again from now. */
  readonly #resume = (): void => {
    const stream = this.#stream;
    if (this.#settled || stream === undefined || !stream.isPaused()) return;
    this.#paused = false;
    this.#readAt = Date.now();
    stream.resume();
  };
}

/** What of a streamed body (other than a gRPC call's, which keeps retry_buffer) is kept for a resend. */
const REPLAY_LIMIT = 64 * 1024;

/** undici's request headers (a flat list, or an object) as an HTTP/2 header object with the pseudo-fields. */
function toH2Headers(opts: Dispatcher.DispatchOptions, origin: string, secure: boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ':method': opts.method, ':path': opts.path, ':scheme': secure ? 'https' : 'http' };
  let authority: string | undefined;
  const add = (name: string, value: string): void => {
    const lower = name.toLowerCase();
    if (lower === 'host') {
      authority = value;
      return;
    }
    if (CONNECTION_FIELDS.has(lower)) return;
    const previous = out[lower];
    if (previous === undefined) out[lower] = value;
    else if (lower === 'cookie') out[lower] = `${String(previous)}; ${value}`;
    else out[lower] = Array.isArray(previous) ? [...previous, value] : [String(previous), value];
  };
  const headers = opts.headers;
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) add(String(headers[i]), String(headers[i + 1]));
  } else if (headers !== null && headers !== undefined) {
    for (const [name, value] of Object.entries(headers as Record<string, string | string[] | undefined>)) {
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) add(name, v);
      else add(name, String(value));
    }
  }
  out[':authority'] = authority ?? new URL(origin).host;
  return out;
}

/** An HTTP/2 header object as a flat name/value list, without pseudo-fields. */
function flatten(head: IncomingHttpHeaders): string[] {
  const raw: string[] = [];
  for (const name in head) {
    if (name.charCodeAt(0) === 58) continue;
    const value = head[name];
    if (Array.isArray(value)) for (const v of value) raw.push(name, String(v));
    else if (value !== undefined) raw.push(name, String(value));
  }
  return raw;
}
