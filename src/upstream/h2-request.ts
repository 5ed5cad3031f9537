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
function resetError(session: ClientHttp2Session, code: number | undefined): H2TransportError {
  if (session.destroyed) return new H2TransportError('the connection to the server was lost', 'ECONNRESET');
  return new H2TransportError(`the server reset the stream (code ${code ?? 'unknown'})`, 'ECONNRESET', code);
}

/** One request on one stream, speaking undici's handler contract. */
export class H2Request {
  #stream: ClientHttp2Stream | undefined = undefined;
  #settled = false;
  #headersTimer: NodeJS.Timeout | undefined = undefined;
  #bodyTimer: NodeJS.Timeout | undefined = undefined;
  #trailers: string[] = [];
  #grpc = false;
  /** Set while waiting for a stream: takes the request out of the queue. */
  onCancel: (() => void) | undefined = undefined;
  /** Sends the request again on another stream (a stream the server did not process); false: it cannot. */
  onRefused: (() => boolean) | undefined = undefined;
  #resent = false;
  /** A streamed body (kept across a resend: it holds what was sent, for a replay), and its reading being sent. */
  #replay: ReplayableBody | undefined = undefined;
  #reading: Readable | undefined = undefined;

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
    if (ms > 0) this.#headersTimer = setTimeout(() => this.fail(new H2TransportError(`no response head within ${ms} ms`, 'UND_ERR_HEADERS_TIMEOUT')), ms);
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
    clearTimeout(this.#headersTimer);
    fallback.dispatch(opts, this.handler);
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
    clearTimeout(this.#headersTimer);
    clearTimeout(this.#bodyTimer);
    this.onCancel?.();
    if (this.#stream !== undefined && !this.#stream.closed) this.#stream.close(NGHTTP2_CANCEL);
    this.#stopReading();
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
    stream.once('close', () => {
      closed();
      if (this.#settled) return;
      const code = stream.rstCode ?? NGHTTP2_NO_ERROR;
      // REFUSED_STREAM, or a stream past a GOAWAY's last id: not processed by the app (RFC 9113 §8.7).
      const refused = code === NGHTTP2_REFUSED_STREAM || (this.#headersTimer !== undefined && stream.id === undefined);
      // Not processed (a GOAWAY's later stream, REFUSED_STREAM): sent again once on another stream, when its body
      // can be (none, in memory, or a stream not read yet), as a request that never left.
      if (refused && !this.#resent && (this.#replay === undefined || this.#replay.replayable) && this.onRefused !== undefined) {
        // Done before onRefused, which may run the request again at once (a session with a free stream): what is
        // dropped here is this stream's, never the new one's.
        this.#resent = true;
        this.#stream = undefined;
        this.#stopReading();
        stream.removeAllListeners('response');
        stream.removeAllListeners('data');
        stream.removeAllListeners('end');
        if (this.onRefused()) return;
      }
      this.fail(refused ? new H2TransportError('the server refused the stream (not processed)', 'PORTICO_H2_REFUSED', code) : resetError(session, code));
    });
    stream.on('error', () => undefined);
    stream.on('headers', (head: IncomingHttpHeaders) => {
      // 1xx answers: passed to the handler as undici does (the attempt forwards 103's Link fields).
      const status = Number(head[':status']);
      if (!this.#settled && status >= 100 && status < 200) this.handler.onHeaders?.(status, flatten(head) as unknown as Buffer[], resume, '');
    });
    // Paused by the handler (a slow client), the app is not idle: the read timeout waits (as undici's), and
    // starts again with the reading.
    const pause = (): void => {
      stream.pause();
      clearTimeout(this.#bodyTimer);
      this.#bodyTimer = undefined;
    };
    const resume = (): void => {
      if (this.#settled || !stream.isPaused()) return;
      this.#armBodyTimer();
      stream.resume();
    };
    stream.once('response', (head: IncomingHttpHeaders, flags: number) => {
      if (this.#settled) return;
      clearTimeout(this.#headersTimer);
      this.#headersTimer = undefined;
      const status = Number(head[':status']);
      let raw = flatten(head);
      // A gRPC trailers-only answer (its status in the one HEADERS frame that ended the stream) is passed on as
      // headers and trailers: the client side sends HEADERS and then the response's end.
      if (this.#grpc && (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0 && head['grpc-status'] !== undefined) {
        const kept: string[] = [];
        for (let i = 0; i < raw.length; i += 2) {
          const lower = raw[i]!.toLowerCase();
          if (lower === 'grpc-status' || lower === 'grpc-message' || lower === 'grpc-status-details-bin') this.#trailers.push(raw[i]!, raw[i + 1]!);
          else kept.push(raw[i]!, raw[i + 1]!);
        }
        raw = kept;
      }
      this.#armBodyTimer();
      if (this.handler.onHeaders?.(status, raw as unknown as Buffer[], resume, '') === false) pause();
    });
    stream.on('data', (chunk: Buffer) => {
      if (this.#settled) return;
      this.#armBodyTimer();
      if (this.handler.onData?.(chunk) === false) pause();
    });
    stream.once('trailers', (head: IncomingHttpHeaders) => {
      this.#trailers.push(...flatten(head));
    });
    stream.once('end', () => {
      if (this.#settled) return;
      // A reset ends the readable side too (Node pushes its end after recording the code): not a complete answer.
      const code = stream.rstCode;
      if (stream.aborted || (code !== undefined && code !== NGHTTP2_NO_ERROR)) return this.fail(resetError(session, code));
      this.#settled = true;
      clearTimeout(this.#bodyTimer);
      clearTimeout(this.#headersTimer);
      this.handler.onComplete?.(this.#trailers);
    });
    if (empty) return;
    if (typeof body === 'string' || Buffer.isBuffer(body)) {
      stream.end(body);
      return;
    }
    // The first time, the body as given (a reading of the proxy's ReplayableBody, or another stream, wrapped);
    // after a refusal, a new reading from its start.
    let reading: Readable;
    if (this.#replay === undefined) {
      const own = ReplayableBody.of(body);
      this.#replay = own ?? new ReplayableBody(body, REPLAY_LIMIT);
      reading = own === undefined ? this.#replay.stream() : body;
    } else {
      reading = this.#replay.stream();
    }
    this.#reading = reading;
    reading.once('error', (err) => {
      if (this.#reading === reading) this.abort(err);
    });
    reading.pipe(stream);
  }

  /** The stream is gone: its reading of the body is dropped (a resend or a retry makes another). */
  #stopReading(): void {
    const reading = this.#reading;
    if (reading === undefined) return;
    this.#reading = undefined;
    reading.unpipe();
    reading.destroy();
  }

  #armBodyTimer(): void {
    const ms = this.opts.bodyTimeout ?? this.o.bodyTimeout;
    if (ms <= 0) return;
    if (this.#bodyTimer !== undefined) {
      this.#bodyTimer.refresh();
      return;
    }
    this.#bodyTimer = setTimeout(() => this.fail(new H2TransportError(`nothing read for ${ms} ms`, 'UND_ERR_BODY_TIMEOUT')), ms);
  }
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
