/**
 * The keep-alive timeout: a client connection that has been idle — no request in progress, not a byte read or
 * written — for `keepalive_timeout` is closed, as nginx's `keepalive_timeout` does.
 *
 * Why not Node's own `server.keepAliveTimeout`: Node arms it after every response (a new timer and a bound
 * function) and disarms it when the next request arrives, two timer-list updates per request that cost about 3%
 * of a small static answer. Here a sweep looks at every connection a few times per timeout instead, and reads
 * only counters that the socket keeps anyway (bytes read and written), so a request costs nothing. A connection
 * is closed between `timeout` and `timeout + interval` after its last activity.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

interface Watch {
  /** Bytes read plus bytes written at the last sweep. */
  activity: number;
  /** When that count last changed (ms, from the sweep's clock). */
  since: number;
}

/** How often connections are looked at for a timeout of `timeoutMs`: a quarter of it, within [50 ms, 5 s]. */
export function sweepInterval(timeoutMs: number): number {
  return Math.max(50, Math.min(5000, Math.floor(timeoutMs / 4)));
}

/** Closes a server's connections once they have been idle for the timeout; `stop()` ends the sweeping. */
export class KeepAliveSweeper {
  readonly #timeout: number;
  readonly #watched = new Map<Socket, Watch>();
  readonly #timer: NodeJS.Timeout;
  readonly #now: () => number;

  constructor(server: Server, timeoutMs: number, now: () => number = Date.now) {
    this.#timeout = timeoutMs;
    this.#now = now;
    server.on('connection', (socket: Socket) => {
      this.#watched.set(socket, { activity: 0, since: this.#now() });
      socket.once('close', () => this.#watched.delete(socket));
    });
    this.#timer = setInterval(() => this.sweep(), sweepInterval(timeoutMs));
    this.#timer.unref();
  }

  /** Stops watching a socket that is no longer an HTTP connection (it was upgraded to a tunnel). */
  forget(socket: Socket): void {
    this.#watched.delete(socket);
  }

  /** One look at every connection (run by the timer; public for tests with an injected clock). */
  sweep(): void {
    const now = this.#now();
    for (const [socket, watch] of this.#watched) {
      const activity = socket.bytesRead + (socket.bytesWritten ?? 0);
      if (activity !== watch.activity) {
        watch.activity = activity;
        watch.since = now;
      } else if (now - watch.since >= this.#timeout && !busy(socket)) {
        this.#watched.delete(socket);
        socket.destroy();
      }
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#watched.clear();
  }
}

/**
 * Whether a response is under way on the connection: a request waiting for a slow upstream is silent but not
 * idle. Node keeps the response being written in `_httpMessage` and checks it the same way in
 * `closeIdleConnections()`; it is cleared when the response has finished.
 */
function busy(socket: Socket): boolean {
  const message = (socket as Socket & { _httpMessage?: { writableFinished?: boolean } | null })._httpMessage;
  return message !== null && message !== undefined && message.writableFinished !== true;
}
