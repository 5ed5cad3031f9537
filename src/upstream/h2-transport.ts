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
import http2, { type ClientHttp2Session } from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { Dispatcher } from 'undici';
import { H2Request, H2TransportError, type H2Options } from './h2-request.js';

export { H2TransportError, type H2Options } from './h2-request.js';

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
  /** The connections being made, each ended by its function (destroy() cuts them too). */
  readonly #opening = new Set<(err: Error) => void>();

  constructor(options: H2Options) {
    super();
    this.#o = options;
  }

  /**
   * Streams in flight and requests waiting for one (for tests and status); `http1`: an `auto` server chose
   * HTTP/1.1 on the last connection made.
   */
  get load(): { sessions: number; streams: number; waiting: number; http1: boolean } {
    let streams = 0;
    for (const c of this.#connections) streams += c.streams;
    return { sessions: this.#connections.size, streams, waiting: this.#waiting.length, http1: this.#http1 };
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (this.#http1 && this.#o.fallback !== undefined) return this.#o.fallback.dispatch(opts, handler);
    const request = new H2Request(handler, this.#o, opts);
    // A WebSocket upgrade is HTTP/1.1's (RFC 8441's extended CONNECT is not spoken here): refused, never sent.
    if (opts.upgrade !== undefined && opts.upgrade !== null) {
      queueMicrotask(() => request.fail(new H2TransportError('no WebSocket to an HTTP/2 app server (use an http:// or https:// server)', 'PORTICO_H2_NO_UPGRADE')));
      return true;
    }
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
      this.#opening.delete(fail);
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
    this.#opening.add(fail);
    const ready = (): void => {
      if (settled) return;
      if (o.tls !== undefined && (socket as tls.TLSSocket).alpnProtocol !== 'h2') {
        if (o.fallback !== undefined) {
          settled = true;
          this.#opening.delete(fail);
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
        this.#opening.delete(fail);
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
    // A connection still being made is cut too (else its socket and timer outlive the dispatcher).
    for (const fail of [...this.#opening]) fail(new H2TransportError('the dispatcher was destroyed', 'UND_ERR_DESTROYED'));
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

