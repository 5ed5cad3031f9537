/**
 * Connections to one FastCGI server (PHP-FPM) as an undici `Dispatcher`, so that an upstream's servers may speak
 * FastCGI while its balancing, health checks, passive ejection, retries, cache and error pages stay those of the
 * proxy. One request per connection at a time (PHP-FPM does not multiplex), connections kept with FCGI_KEEP_CONN
 * and reused, at most `connections` of them (the upstream's `keepalive`), idle ones closed after `idleTimeout`.
 *
 * The request's `headers` are the CGI variables (a flat name/value list) the `php` handler built; a name not
 * starting with an upper-case letter (a request field's: `if-none-match`) is passed as its `HTTP_` variable. A request
 * that carries no `REQUEST_METHOD` (an active health check) gets the few variables a FastCGI server needs from
 * its method and path (PHP-FPM answers its `ping.path` that way).
 */
import { connect as netConnect } from 'node:net';
import { Dispatcher } from 'undici';
import { Connection, FastCgiError, type ConnectionOwner, type FastCgiPoolOptions, type Handler, type Pending } from './connection.js';

/**
 * How long a request waits unanswered on a new connection (in the server's listen queue, or PHP still running it)
 * before a kept connection is closed at the end of its request to free its worker for it.
 */
const STARVING_MS = 50;

export { FastCgiError, paramsOf, type FastCgiPoolOptions } from './connection.js';

/** The connections to one FastCGI server, as an undici dispatcher. */
export class FastCgiPool extends Dispatcher implements ConnectionOwner {
  readonly options: FastCgiPoolOptions;
  readonly #all = new Set<Connection>();
  /** Idle kept connections, the last released last (reused first: the others may then time out). */
  readonly #idle: Connection[] = [];
  readonly #idleTimers = new Map<Connection, NodeJS.Timeout>();
  /** Requests waiting for a connection, in order. */
  readonly #queue: Pending[] = [];
  /** Connections being opened, each for the request at the head of the queue when it opens. */
  #connecting = 0;
  /** Set while idle connections may hold workers that a waiting connection needs: see `#watchStarving`. */
  #starveTimer: NodeJS.Timeout | undefined = undefined;
  #closing: Promise<void> | undefined = undefined;
  #closeWaiters: Array<() => void> = [];
  #destroyed = false;

  constructor(options: FastCgiPoolOptions) {
    super();
    this.options = options;
  }

  /** Sends a request on an idle connection, a new one, or queues it. */
  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const pending: Pending = { opts, handler: handler as Handler };
    if (this.#closing !== undefined || this.#destroyed) {
      queueMicrotask(() => (handler as Handler).onError?.(new FastCgiError('UND_ERR_CLOSED', 'the FastCGI pool is closed')));
      return false;
    }
    if (this.#sendIdle(pending)) return true;
    this.#queue.push(pending);
    if (this.#all.size < this.options.connections) this.#open();
    return true;
  }

  /** Sends `pending` on the idle connection released last, if there is one. */
  #sendIdle(pending: Pending): boolean {
    const idle = this.#idle.pop();
    if (idle === undefined) return false;
    clearTimeout(this.#idleTimers.get(idle));
    this.#idleTimers.delete(idle);
    idle.send(pending);
    return true;
  }

  #open(): void {
    const o = this.options;
    const socket = o.socketPath !== undefined ? netConnect({ path: o.socketPath }) : netConnect({ host: o.host ?? '127.0.0.1', port: o.port ?? 9000 });
    const connection = new Connection(this, socket);
    this.#all.add(connection);
    this.#connecting++;
    const timer = setTimeout(() => connection.destroy(new FastCgiError('UND_ERR_CONNECT_TIMEOUT', `connect timeout (${o.connectTimeout}ms)`)), o.connectTimeout);
    socket.once('connect', () => {
      clearTimeout(timer);
      this.#connecting--;
      connection.connected();
      this.#take(connection);
    });
    socket.once('close', () => clearTimeout(timer));
  }

  /** A connection's request ended well: it is kept for the next one, unless another connection starves. */
  released(connection: Connection): void {
    // A PHP-FPM worker serves one connection until it closes (FCGI_KEEP_CONN): with more connections than workers,
    // the rest wait in FPM's listen queue for a worker that a kept connection holds, and would wait until their
    // timeout while the kept ones are reused. So a connection is kept only while none of this pool's is waiting
    // so; otherwise it is closed, which frees its worker for the connection that waits.
    // (The released connection itself has no request: it is never among those counted.)
    if (this.#starving() > 0) return connection.close();
    this.#take(connection);
  }

  /**
   * Sends again, on a new connection, a request that a kept connection lost before any answer (see
   * `Connection.#stale`): first in line, as it was before.
   */
  resend(pending: Pending): void {
    if (this.#closing !== undefined || this.#destroyed) {
      return pending.handler.onError?.(new FastCgiError('UND_ERR_CLOSED', 'the FastCGI pool is closed'));
    }
    this.#queue.unshift(pending);
    if (this.#queue.length > this.#connecting && this.#all.size < this.options.connections) this.#open();
  }

  /** A free connection (just opened, or released) takes the next queued request, or waits idle. */
  #take(connection: Connection): void {
    const next = this.#queue.shift();
    if (next !== undefined) return connection.send(next);
    if (this.#closing !== undefined) return connection.close();
    connection.socket.unref();
    this.#idle.push(connection);
    // An idle connection keeps nothing alive: neither its socket (unref'd above) nor its timer.
    this.#idleTimers.set(connection, setTimeout(() => connection.close(), this.options.idleTimeout).unref());
    this.#watchStarving();
  }

  /**
   * An idle kept connection holds its worker too. One that went idle while another connection's request had not
   * yet waited STARVING_MS would hold it for good if no request ended afterwards to see the starving one
   * (`released`): so while any connection is idle and another unanswered, the pool looks again when the oldest
   * of those has waited STARVING_MS, and then closes one idle connection (the one idle longest) per connection
   * that has waited so long, and looks again for the others.
   */
  #watchStarving(): void {
    if (this.#starveTimer !== undefined || this.#idle.length === 0) return;
    let oldest = Infinity;
    for (const connection of this.#all) oldest = Math.min(oldest, connection.unansweredSince ?? Infinity);
    if (oldest === Infinity) return;
    this.#starveTimer = setTimeout(() => {
      this.#starveTimer = undefined;
      // One worker for each connection that waits: a closed idle one frees one.
      for (let n = this.#starving(); n > 0 && this.#idle.length > 0; n--) this.#idle[0]!.close();
      this.#watchStarving();
    }, Math.max(0, oldest + STARVING_MS - Date.now())).unref();
  }

  /**
   * A connection ended. One that failed before it opened takes the request it was opened for with it (the
   * connect error is that request's answer), as undici fails a request whose connection could not be made.
   */
  lost(connection: Connection, connectError: Error | undefined): void {
    this.#all.delete(connection);
    const at = this.#idle.indexOf(connection);
    if (at !== -1) this.#idle.splice(at, 1);
    clearTimeout(this.#idleTimers.get(connection));
    this.#idleTimers.delete(connection);
    if (connectError !== undefined) {
      this.#connecting--;
      const failed = this.#queue.shift();
      failed?.handler.onError?.(connectError);
    }
    // Closing too: a queued request is still answered (close() waits for it), else it would wait forever.
    if (this.#queue.length > this.#connecting && this.#all.size < this.options.connections && !this.#destroyed) this.#open();
    if (this.#all.size === 0) this.#closed();
  }

  #closed(): void {
    clearTimeout(this.#starveTimer);
    this.#starveTimer = undefined;
    const waiters = this.#closeWaiters;
    this.#closeWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /**
   * How many connections have a request that has waited STARVING_MS or more and that no worker has answered yet.
   * Not at once: a new connection's first request is unanswered while PHP runs it too, and closing kept connections
   * for it would make every busy moment a storm of new connections (each closed one's request opens another).
   */
  #starving(): number {
    const now = Date.now();
    let count = 0;
    for (const connection of this.#all) {
      const since = connection.unansweredSince;
      if (since !== undefined && now - since >= STARVING_MS) count++;
    }
    return count;
  }

  /** Connections open now (busy or idle). */
  get size(): number {
    return this.#all.size;
  }

  /** No new request; resolves once the requests in flight and queued have ended and every connection closed. */
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#closeWaiters.push(resolve);
      for (const idle of [...this.#idle]) idle.close();
      if (this.#all.size === 0) this.#closed();
    });
    if (callback === undefined) return this.#closing;
    void this.#closing.then(callback);
  }

  /** Cuts every connection and fails what is in flight or queued. */
  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const err = typeof a === 'function' || a === undefined || a === null ? new FastCgiError('UND_ERR_DESTROYED', 'the FastCGI pool was destroyed') : a;
    const callback = typeof a === 'function' ? a : b;
    this.#destroyed = true;
    const queued = this.#queue.splice(0);
    for (const pending of queued) pending.handler.onError?.(err);
    const done = new Promise<void>((resolve) => {
      this.#closeWaiters.push(resolve);
      for (const connection of [...this.#all]) connection.destroy(err);
      if (this.#all.size === 0) this.#closed();
    });
    if (callback === undefined) return done;
    void done.then(callback);
  }
}
