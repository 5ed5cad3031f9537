/**
 * HTTP/2 to an app server (`h2c://`, or `https://` with `protocol: h2 | auto`), on Node's `http2` client behind
 * undici's dispatcher contract, so that the proxy's attempts, retries and health checks use it as they use an
 * undici pool.
 *
 * Why not undici's own HTTP/2 (`allowH2`, `H2CClient`, undici 7.30): it takes a GOAWAY as the end of the
 * connection (it fails the request at the head of its queue and closes the session), where RFC 9113 §6.8 lets
 * the streams up to the last stream id finish and says the others were not processed (safe to send again); it
 * hides a stream reset's error code (gRPC needs CANCEL passed on as CANCEL), cancels with RST_STREAM NO_ERROR,
 * and sends no request trailers. Node's client gives each of these as it is.
 *
 * Each server gets up to `connections` sessions; a request takes a stream on an open session with a free one
 * (the lower of `max_concurrent_streams` and the server's SETTINGS), else a new session when allowed, else waits
 * for one (bounded by the response-header timeout, which runs from dispatch). A session that received GOAWAY
 * takes no new stream and closes once its streams ended; a stream the GOAWAY says was not processed fails with
 * `PORTICO_H2_REFUSED` (retried as a request that never left). PINGs every `ping_interval` close a session whose
 * server stopped answering.
 */
import http2, { constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import type { Readable } from 'node:stream';
import { Dispatcher } from 'undici';

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

/** One HTTP/2 connection and its use. */
class Connection {
  session: ClientHttp2Session | undefined = undefined;
  streams = 0;
  ready = false;
  goingAway = false;
  pingTimer: NodeJS.Timeout | undefined = undefined;
  idleTimer: NodeJS.Timeout | undefined = undefined;
  readonly #local: number;
  constructor(local: number) {
    this.#local = local;
  }
  get limit(): number {
    const remote = this.session?.remoteSettings.maxConcurrentStreams;
    return remote === undefined ? this.#local : Math.min(this.#local, remote);
  }
  get usable(): boolean {
    return this.ready && !this.goingAway && this.session !== undefined && !this.session.closed && !this.session.destroyed && this.streams < this.limit;
  }
}

/** A request waiting for a stream. */
interface Waiting {
  readonly opts: Dispatcher.DispatchOptions;
  readonly request: H2Request;
}

/** The dispatcher of one HTTP/2 server (see the file's comment). */
export class H2Dispatcher extends Dispatcher {
  readonly #o: H2Options;
  readonly #connections = new Set<Connection>();
  #connecting = 0;
  readonly #waiting: Waiting[] = [];
  #closed = false;
  /** `auto`: the server chose HTTP/1.1 on the last connection made; requests go to the fallback. */
  #http1 = false;
  #closeWaiters: Array<() => void> = [];

  constructor(options: H2Options) {
    super();
    this.#o = options;
  }

  /** Streams in flight and requests waiting for one (for tests and status). */
  get load(): { sessions: number; streams: number; waiting: number } {
    let streams = 0;
    for (const c of this.#connections) streams += c.streams;
    return { sessions: this.#connections.size, streams, waiting: this.#waiting.length };
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (this.#http1 && this.#o.fallback !== undefined) return this.#o.fallback.dispatch(opts, handler);
    const request = new H2Request(handler, this.#o, opts);
    if (this.#closed) {
      queueMicrotask(() => request.fail(new H2TransportError('the dispatcher is closed', 'UND_ERR_CLOSED')));
      return true;
    }
    request.startHeadersTimer();
    if (!request.begin()) return true;
    this.#enqueue({ opts, request }, false);
    return true;
  }

  /** Queues a request for a stream (`first`: a refused stream's request, sent again before the others). */
  #enqueue(waiting: Waiting, first: boolean): void {
    if (first) this.#waiting.unshift(waiting);
    else this.#waiting.push(waiting);
    waiting.request.onCancel = () => {
      const i = this.#waiting.indexOf(waiting);
      if (i !== -1) this.#waiting.splice(i, 1);
    };
    waiting.request.onRefused = () => {
      if (this.#closed) return false;
      this.#enqueue(waiting, true);
      return true;
    };
    this.#pump();
  }

  /** Starts what waits on usable sessions, and opens sessions for the rest when allowed. */
  #pump(): void {
    while (this.#waiting.length > 0) {
      let free: Connection | undefined;
      if (!this.#o.fresh) {
        for (const c of this.#connections) {
          if (c.usable) {
            free = c;
            break;
          }
        }
      }
      if (free === undefined) break;
      const next = this.#waiting.shift()!;
      this.#start(free, next);
    }
    if (this.#http1 && this.#o.fallback !== undefined) {
      for (const next of this.#waiting.splice(0)) next.request.handOver(this.#o.fallback, next.opts);
      return;
    }
    // A connection going away counts no more: its streams finish while a new one takes the new requests.
    let open = 0;
    for (const c of this.#connections) if (!c.goingAway) open++;
    const wanted = this.#o.fresh ? this.#waiting.length - this.#connecting : Math.min(this.#waiting.length > 0 ? 1 : 0, this.#o.connections - open - this.#connecting);
    for (let i = 0; i < wanted; i++) this.#connect();
    if (this.#closed && this.#connections.size === 0 && this.#connecting === 0) {
      for (const resolve of this.#closeWaiters.splice(0)) resolve();
    }
  }

  #connect(): void {
    this.#connecting++;
    const o = this.#o;
    const url = new URL(o.origin);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port || (o.tls === undefined ? 80 : 443));
    let socket: net.Socket;
    const connection = new Connection(o.maxConcurrentStreams);
    let settled = false;
    const fail = (err: NodeJS.ErrnoException): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.#connecting--;
      socket.destroy();
      // The requests waiting for a connection are failed with its error when no other connection can take them.
      const others = [...this.#connections].some((c) => c.ready && !c.goingAway) || this.#connecting > 0;
      if (!others || o.fresh) {
        const failing = o.fresh ? this.#waiting.splice(0, 1) : this.#waiting.splice(0);
        for (const w of failing) w.request.fail(err);
      }
      this.#pump();
    };
    const timer = setTimeout(() => fail(new H2TransportError(`connect timeout after ${o.connectTimeout} ms`, 'UND_ERR_CONNECT_TIMEOUT')), o.connectTimeout);
    const ready = (): void => {
      if (settled) return;
      if (o.tls !== undefined && (socket as tls.TLSSocket).alpnProtocol !== 'h2') {
        if (o.fallback !== undefined) {
          settled = true;
          clearTimeout(timer);
          this.#connecting--;
          socket.destroy();
          this.#http1 = true;
          this.#pump();
          return;
        }
        return fail(new H2TransportError('the server does not speak HTTP/2 (ALPN offered no h2)', 'PORTICO_H2_NO_ALPN'));
      }
      this.#http1 = false;
      const session = http2.connect(o.origin, { createConnection: () => socket, settings: { enablePush: false } });
      connection.session = session;
      session.on('error', () => undefined);
      session.once('remoteSettings', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#connecting--;
        connection.ready = true;
        this.#connections.add(connection);
        this.#startPings(connection);
        if (o.fresh) {
          const next = this.#waiting.shift();
          if (next !== undefined) this.#start(connection, next);
          else session.close();
        } else {
          this.#idle(connection);
        }
        this.#pump();
      });
      session.on('goaway', () => {
        connection.goingAway = true;
        this.#pump();
      });
      session.once('close', () => {
        clearInterval(connection.pingTimer);
        clearTimeout(connection.idleTimer);
        if (!settled) fail(new H2TransportError('the server closed the connection before its SETTINGS', 'UND_ERR_SOCKET'));
        this.#connections.delete(connection);
        this.#pump();
      });
    };
    if (o.tls === undefined) {
      socket = net.connect({ host, port });
      socket.once('connect', ready);
    } else {
      const name = o.tls.servername ?? (net.isIP(host) === 0 ? host : undefined);
      socket = tls.connect({
        host,
        port,
        ...(name === undefined ? {} : { servername: name }),
        ...(o.tls.ca === undefined ? {} : { ca: o.tls.ca }),
        rejectUnauthorized: o.tls.rejectUnauthorized,
        ALPNProtocols: o.fallback === undefined ? ['h2'] : ['h2', 'http/1.1'],
      });
      socket.once('secureConnect', ready);
    }
    socket.once('error', (err) => fail(err));
  }

  #startPings(c: Connection): void {
    const every = this.#o.pingInterval;
    if (every <= 0 || this.#o.fresh) return;
    c.pingTimer = setInterval(() => {
      const session = c.session;
      if (session === undefined || session.closed || session.destroyed) return;
      const late = setTimeout(() => session.destroy(new H2TransportError('PING not answered', 'UND_ERR_SOCKET')), this.#o.pingTimeout);
      late.unref();
      session.ping((err) => {
        clearTimeout(late);
        if (err !== null) session.destroy(err);
      });
    }, every);
    c.pingTimer.unref();
  }

  /** Closes `c` once it has had no stream for the idle timeout (or at once: going away, fresh, closed). */
  #idle(c: Connection): void {
    clearTimeout(c.idleTimer);
    if (c.streams > 0) return;
    if (this.#o.fresh || c.goingAway || this.#closed) {
      c.session?.close();
      return;
    }
    c.idleTimer = setTimeout(() => c.session?.close(), this.#o.idleTimeout);
    c.idleTimer.unref();
  }

  #start(c: Connection, w: Waiting): void {
    if (!w.request.live) return this.#pump();
    c.streams++;
    clearTimeout(c.idleTimer);
    w.request.onCancel = undefined;
    w.request.run(c.session!, () => {
      c.streams--;
      this.#idle(c);
      this.#pump();
    });
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.#closed = true;
    const done = new Promise<void>((resolve) => {
      this.#closeWaiters.push(resolve);
      for (const c of this.#connections) {
        if (c.streams === 0) c.session?.close();
        else c.goingAway = true;
      }
      this.#pump();
    });
    const all = Promise.all([done, this.#o.fallback?.close()]).then(() => undefined);
    if (callback === undefined) return all;
    void all.then(callback);
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(errOrCallback?: Error | null | (() => void), callback?: () => void): Promise<void> | void {
    this.#closed = true;
    const cb = typeof errOrCallback === 'function' ? errOrCallback : callback;
    for (const w of this.#waiting.splice(0)) w.request.fail(new H2TransportError('the dispatcher was destroyed', 'UND_ERR_DESTROYED'));
    const closing = [...this.#connections].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.session === undefined || c.session.destroyed) return resolve();
          c.session.once('close', () => resolve());
          c.session.destroy();
        }),
    );
    const all = Promise.all([...closing, this.#o.fallback?.destroy()]).then(() => {
      for (const resolve of this.#closeWaiters.splice(0)) resolve();
    });
    if (cb === undefined) return all;
    void all.then(cb);
  }
}

/** One request on one stream, speaking undici's handler contract. */
class H2Request {
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
  /** A streamed body's sender (kept across a resend: it holds what was sent for a replay). */
  #sender: StreamedBody | undefined = undefined;

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
    const body = this.opts.body as Readable | null | undefined;
    this.#sender?.detach();
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
      if (refused && !this.#resent && (this.#sender === undefined || this.#sender.replayable) && this.onRefused?.() === true) {
        this.#resent = true;
        this.#stream = undefined;
        this.#sender?.detach();
        stream.removeAllListeners('response');
        stream.removeAllListeners('data');
        stream.removeAllListeners('end');
        return;
      }
      this.fail(
        refused
          ? new H2TransportError('the server refused the stream (not processed)', 'PORTICO_H2_REFUSED', code)
          : new H2TransportError(`the server reset the stream (code ${code})`, 'ECONNRESET', code),
      );
    });
    stream.on('error', () => undefined);
    stream.on('headers', (head: IncomingHttpHeaders) => {
      // 1xx answers: passed to the handler as undici does (the attempt forwards 103's Link fields).
      const status = Number(head[':status']);
      if (!this.#settled && status >= 100 && status < 200) this.handler.onHeaders?.(status, flatten(head) as unknown as Buffer[], resume, '');
    });
    const resume = (): void => void stream.resume();
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
      if (this.handler.onHeaders?.(status, raw as unknown as Buffer[], resume, '') === false) stream.pause();
    });
    stream.on('data', (chunk: Buffer) => {
      if (this.#settled) return;
      this.#armBodyTimer();
      if (this.handler.onData?.(chunk) === false) stream.pause();
    });
    stream.once('trailers', (head: IncomingHttpHeaders) => {
      this.#trailers.push(...flatten(head));
    });
    stream.once('end', () => {
      if (this.#settled) return;
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
    this.#sender ??= new StreamedBody(body, (err) => this.abort(err));
    this.#sender.attach(stream);
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

/** What of a streamed body is kept for sending it again on another stream when the server refused the first. */
const REPLAY_LIMIT = 64 * 1024;

/**
 * A streamed request body sent on a stream, with backpressure, keeping its first REPLAY_LIMIT bytes: a stream
 * the server refused unprocessed (a GOAWAY's later stream, REFUSED_STREAM) gets another stream, which is sent
 * what was kept and then the rest. A gRPC unary call's body is small and sent at once: it is always replayable.
 */
class StreamedBody {
  #kept: Buffer[] | null = [];
  #keptBytes = 0;
  #ended = false;
  #target: ClientHttp2Stream | undefined = undefined;
  #listening = false;

  constructor(
    readonly body: Readable,
    readonly onError: (err: Error) => void,
  ) {}

  /** Whether all that was read of the body is kept (it can be sent again). */
  get replayable(): boolean {
    return this.#kept !== null;
  }

  attach(stream: ClientHttp2Stream): void {
    this.#target = stream;
    if (this.#kept !== null) for (const chunk of this.#kept) stream.write(chunk);
    if (this.#ended) return void stream.end();
    stream.on('drain', () => {
      if (this.#target === stream) this.body.resume();
    });
    if (!this.#listening) {
      this.#listening = true;
      this.body.on('data', (chunk: Buffer) => this.#data(chunk));
      this.body.once('end', () => {
        this.#ended = true;
        this.#target?.end();
      });
      this.body.once('error', (err) => this.onError(err));
    }
    this.body.resume();
  }

  /** The stream is gone: nothing more is read until another one is attached. */
  detach(): void {
    this.#target = undefined;
    this.body.pause();
  }

  #data(chunk: Buffer): void {
    if (this.#kept !== null) {
      this.#keptBytes += chunk.length;
      if (this.#keptBytes <= REPLAY_LIMIT) this.#kept.push(chunk);
      else this.#kept = null;
    }
    const target = this.#target;
    if (target === undefined) {
      // Read after a detach (a chunk already on its way): only a replayable body is attached again, and it kept it.
      this.body.pause();
      return;
    }
    if (!target.write(chunk)) this.body.pause();
  }
}

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
