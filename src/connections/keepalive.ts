/**
 * The keep-alive timeout: a client connection that has been idle between requests — no request being received
 * or answered, not a byte read or written — for `keepalive_timeout` is closed, as nginx's `keepalive_timeout`
 * does. What happens before the first byte and inside a request head is `header_timeout`'s business (Node
 * answers 408), not this.
 *
 * Why not Node's own `server.keepAliveTimeout`: Node arms it after every response (a new timer and a bound
 * function) and disarms it when the next request arrives, two timer-list updates per request that cost about 3%
 * of a small static answer. Here a sweep looks at every connection a few times per timeout instead, and reads
 * only what the socket keeps anyway (bytes read and written), so a request costs nothing. A connection is
 * closed at least `timeout` and at most `timeout` + 2 sweep intervals after it went idle.
 *
 * The same sweep enforces the send timeout (nginx's `send_timeout`): a connection with bytes waiting to go out
 * to its client (its write buffer not empty) that has made no progress for `send_timeout` — the client does not
 * read — is closed. Progress is a write completing or the kernel taking more of the one under way, so a slow
 * reader that keeps taking bytes is never cut, and an idle connection has nothing waiting to be sent.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import { queuedInKernelWrite, requestsBeingReceived, responseOnSocket, wrappedSocket } from './node-internals.js';

interface Watch {
  /** Bytes read plus bytes written at the last sweep that found the connection not busy. */
  activity: number;
  /** When that count last changed (ms, from the sweep's clock). */
  since: number;
  /** Handed over to an upgrade (WebSocket): busy for as long as Portico has not ended its side. */
  upgraded: boolean;
  /** Bytes whose write completed, and the kernel's backlog of the write under way, at the last change seen. */
  sent: number;
  queued: number;
  /** When the connection last made sending progress, or began to have bytes waiting (ms, from the sweep's clock). */
  sendSince: number;
}

/** How often connections are looked at for a timeout of `timeoutMs`: a quarter of it, within [50 ms, 5 s]. */
export function sweepInterval(timeoutMs: number): number {
  return Math.max(50, Math.min(5000, Math.floor(timeoutMs / 4)));
}

/** What the sweeper is told about a connection it closes for the send timeout. */
export type SendTimeoutHandler = (socket: Socket) => void;

/**
 * Closes a server's connections once they have been idle for the timeout, or stalled sending for the send
 * timeout (0: none); `watch()` each connection handed to the server; `drain()` and `stop()` for shutdown.
 */
export class KeepAliveSweeper {
  readonly #server: Server;
  #timeout: number;
  #sendTimeout: number;
  readonly #onSendTimeout: SendTimeoutHandler;
  readonly #watched = new Map<Socket, Watch>();
  readonly #now: () => number;
  #timer: NodeJS.Timeout;
  #draining = false;
  #stopped = false;

  constructor(
    server: Server,
    timeoutMs: number,
    sendTimeoutMs = 0,
    onSendTimeout: SendTimeoutHandler = () => {},
    now: () => number = () => performance.now(),
  ) {
    this.#server = server;
    this.#timeout = timeoutMs;
    this.#sendTimeout = sendTimeoutMs;
    this.#onSendTimeout = onSendTimeout;
    this.#now = now;
    this.#timer = setInterval(() => this.sweep(), this.#interval()).unref();
  }

  /** How often to sweep: often enough for the shorter of the two timeouts. */
  #interval(): number {
    return sweepInterval(this.#sendTimeout > 0 ? Math.min(this.#timeout, this.#sendTimeout) : this.#timeout);
  }

  /** Starts watching a connection the server now serves (until it closes). */
  watch(socket: Socket): void {
    const now = this.#now();
    this.#watched.set(socket, { activity: 0, since: now, upgraded: false, sent: 0, queued: 0, sendSince: now });
    socket.once('close', () => this.#watched.delete(socket));
  }

  /**
   * The socket was handed to an upgrade: the HTTP server no longer answers on it. It stays busy while the tunnel
   * is set up or open; once Portico has ended its side (a refused upgrade), a client that keeps its half open
   * is closed after the timeout like any idle connection.
   */
  upgraded(socket: Socket): void {
    const watch = this.#watched.get(socket);
    if (watch !== undefined) watch.upgraded = true;
  }

  /** Changes the timeouts (a reload): connections already idle are judged by the new ones from the next sweep. */
  setTimeout(timeoutMs: number, sendTimeoutMs = this.#sendTimeout): void {
    if ((timeoutMs === this.#timeout && sendTimeoutMs === this.#sendTimeout) || this.#draining || this.#stopped) return;
    this.#timeout = timeoutMs;
    this.#sendTimeout = sendTimeoutMs;
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.sweep(), this.#interval()).unref();
  }

  /**
   * Shutting down: an answer under way whose head is not out yet will say `Connection: close`, so its client does
   * not send another request on a connection about to close; and from now on every connection that is not busy is
   * closed at once (checked every 50 ms), unless `closeIdle` is false (an upgrade's old process: idle connections
   * keep their keep-alive timeout, their next answer says `Connection: close`).
   */
  drain(closeIdle = true): void {
    if (this.#stopped) return;
    for (const socket of this.#watched.keys()) {
      const message = responseOnSocket(socket);
      if (message !== null && message !== undefined && message.headersSent === false) message.shouldKeepAlive = false;
    }
    if (!closeIdle) return;
    this.#draining = true;
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.sweep(), 50).unref();
    this.sweep();
  }

  /** One look at every connection (run by the timer, and at once by `drain()`). */
  sweep(): void {
    const now = this.#now();
    const receiving = requestsBeingReceived(this.#server);
    for (const [socket, watch] of this.#watched) {
      // Nothing exchanged yet: header_timeout governs (Node answers 408), as nginx's client_header_timeout does.
      if (socket.bytesRead === 0 && (socket.bytesWritten ?? 0) === 0 && !this.#draining) continue;
      // A WebSocket tunnel too: its app side waits on this socket (pipe backpressure) while its client reads nothing.
      if (this.#sendTimeout > 0 && this.#sendStalled(socket, watch, now)) {
        this.#watched.delete(socket);
        this.#onSendTimeout(socket);
        resetConnection(socket);
        continue;
      }
      // While busy the count is left alone: the request's bytes then make the first quiet sweep see a change, and
      // the idle time starts there — not at the last byte written, as a large body written at once counts as
      // written long before a slow client has it.
      if (busy(socket, watch, receiving)) continue;
      const activity = socket.bytesRead + (socket.bytesWritten ?? 0);
      if (this.#draining) {
        socket.destroy();
      } else if (activity !== watch.activity) {
        watch.activity = activity;
        watch.since = now;
      } else if (now - watch.since >= this.#timeout) {
        this.#watched.delete(socket);
        socket.destroy();
      }
    }
  }

  /**
   * Whether bytes have waited to go out to the client for the send timeout without any progress. A connection
   * with nothing waiting restarts the clock, so the timeout counts from when its buffer began to stay full.
   */
  #sendStalled(socket: Socket, watch: Watch, now: number): boolean {
    const waiting = socket.writableLength;
    if (waiting === 0) {
      watch.sendSince = now;
      return false;
    }
    const sent = (socket.bytesWritten ?? 0) - waiting;
    const queued = queuedInKernelWrite(socket);
    if (sent !== watch.sent || queued !== watch.queued) {
      watch.sent = sent;
      watch.queued = queued;
      watch.sendSince = now;
      return false;
    }
    return now - watch.sendSince >= this.#sendTimeout;
  }

  /** Stops sweeping for good; `drain()` and `setTimeout()` after it do nothing. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#watched.clear();
  }
}

/**
 * Closes a connection with a reset, not a FIN: the kernel drops what it still holds for a client that does not
 * read, instead of keeping it while retrying (nginx's reset_timedout_connection). A TLS socket is reset through
 * the TCP socket it wraps (only a TCP handle can be reset).
 */
export function resetConnection(socket: Socket): void {
  const tcp = (socket as TLSSocket).encrypted === true ? wrappedSocket(socket as TLSSocket) : socket;
  try {
    tcp?.resetAndDestroy();
  } catch {
    // Not a TCP handle after all (a pipe): a plain close.
  }
  socket.destroy();
}

/**
 * Whether something is under way on the connection: a request head or body being received, a response being
 * written (see `responseOnSocket`), bytes still queued in the socket, or an upgrade Portico has not ended.
 */
function busy(socket: Socket, watch: Watch, receiving: ReadonlySet<unknown> | undefined): boolean {
  if (socket.writableLength > 0) return true;
  if (watch.upgraded) return !socket.writableEnded;
  const message = responseOnSocket(socket);
  if (message !== null && message !== undefined && message.writableFinished !== true) return true;
  return receiving !== undefined && receiving.has(socket);
}
