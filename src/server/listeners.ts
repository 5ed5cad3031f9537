/**
 * Listeners: the sockets Portico accepts connections on. They outlive an app: each request goes to whichever
 * app is current when it arrives, so a reload swaps the app without closing a socket. Connection-level limits
 * (head size, timeouts, keep-alive) live here. Malformed requests never reach an app: Node's parser rejects
 * them and `clientError` answers 400 (431 for an oversized head, 408 for a slow one) and closes.
 *
 * A reload keeps every listener whose address stays (matched by host and bound port; its limits are updated in place, for new connections and
 * requests), binds the new addresses before anything is swapped (a port in use fails the reload and nothing
 * changes), and closes the addresses no longer listed, gracefully, once the new config serves.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { PorticoError } from '../errors.js';
import { sendRawError } from '../http/send.js';
import { KeepAliveSweeper } from './keepalive.js';

/** Where a listener is bound. */
export interface BoundAddress {
  host: string;
  port: number;
}

type ListenerConfig = Config['listen'][number];
/** Where listeners hand requests: the current app's `handle` and `handleUpgrade`. */
export interface Dispatch {
  request(req: IncomingMessage, res: ServerResponse, scheme: 'http' | 'https'): void;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, scheme: 'http' | 'https'): void;
  /** The `Server` header of Portico's own answers (the current config's). */
  serverHeader(): string;
}

function clientErrorStatus(code: string | undefined): number {
  if (code === 'HPE_HEADER_OVERFLOW') return 431;
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  if (code === 'HPE_URI_TOO_LONG') return 414;
  return 400;
}

/** Node checks header and request timeouts every 30 s by default; check often enough that short limits hold. */
function checkingInterval(config: ListenerConfig): number {
  return Math.max(100, Math.min(1000, Math.floor(Math.min(config.header_timeout, config.request_timeout) / 2)));
}

/**
 * The time allowed for a request head: header_timeout, but never more than request_timeout (the head is part of
 * the request, and Node refuses a headersTimeout above a non-zero requestTimeout).
 */
function headersTimeout(config: ListenerConfig): number {
  return config.request_timeout > 0 ? Math.min(config.header_timeout, config.request_timeout) : config.header_timeout;
}

/** With keep-alive off no connection should sit idle; the sweeper still closes leftovers after header_timeout. */
function sweepTimeout(config: ListenerConfig): number {
  return config.keepalive_timeout > 0 ? config.keepalive_timeout : config.header_timeout || 60_000;
}

function isPlain(config: ListenerConfig): boolean {
  return config.keepalive_timeout > 0 && config.max_requests_per_conn === 0;
}

/** One listening socket and its connections. */
class Listener {
  readonly server: http.Server;
  readonly sweeper: KeepAliveSweeper;
  config: ListenerConfig;
  address: BoundAddress | undefined;
  /** Set by `close()`: answers from then on say `Connection: close`. */
  stopping = false;
  /** Keep-alive on, no request limit, not stopping: every request is simply run (the usual case, one check). */
  plain: boolean;

  /** Upgraded (WebSocket) sockets: the HTTP server no longer tracks them, so closing must cut them itself. */
  readonly upgraded = new Set<Duplex>();

  constructor(config: ListenerConfig, dispatch: Dispatch, logger: Logger) {
    this.config = config;
    this.plain = isPlain(config);
    /**
     * Whether this request may be answered on a connection that stays open. With keep-alive off (timeout 0, as
     * nginx's) or while stopping, the answer says `Connection: close`; with keep-alive off, a request pipelined
     * behind the first is not run at all (its answer could never be sent), as nginx never reads it.
     */
    /** Requests admitted on each connection; -1 once one of its answers said `Connection: close`. */
    const served = new WeakMap<object, number>();
    const admit = (req: IncomingMessage, res: ServerResponse): boolean => {
      if (this.plain) return true;
      const { keepalive_timeout: keepAliveMs, max_requests_per_conn: max } = this.config;
      const before = served.get(req.socket) ?? 0;
      // A request pipelined behind an answer that closes the connection is never run: its answer could not be sent.
      if (before === -1) return false;
      // The last request allowed says `Connection: close`, and Node closes the socket once its answer is out (as
      // nginx's keepalive_requests). A reload may lower the limit below what a connection already had: its next
      // request is then the last, answered, not dropped.
      const limit = keepAliveMs > 0 ? max : 1;
      const last = this.stopping || (limit > 0 && before + 1 >= limit);
      served.set(req.socket, last ? -1 : before + 1);
      if (last) res.shouldKeepAlive = false;
      return true;
    };
    const server = http.createServer(
      {
        maxHeaderSize: config.max_header_size,
        requestTimeout: config.request_timeout,
        headersTimeout: headersTimeout(config),
        connectionsCheckingInterval: checkingInterval(config),
        // 0: Node's own per-response keep-alive timer is off; the sweeper closes idle connections instead.
        keepAliveTimeout: 0,
        joinDuplicateHeaders: true,
        requireHostHeader: true,
      },
      function onRequest(req, res) {
        if (admit(req, res)) dispatch.request(req, res, 'http');
      },
    );
    this.server = server;
    // Portico answers `Expect: 100-continue` itself, after its own checks (a 413 comes before any 100).
    server.on('checkContinue', function onCheckContinue(req, res) {
      if (admit(req, res)) dispatch.request(req, res, 'http');
    });
    const sweeper = new KeepAliveSweeper(server, sweepTimeout(config));
    this.sweeper = sweeper;
    const upgraded = this.upgraded;
    server.on('upgrade', function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer) {
      // A tunnel may be quiet for as long as its ends like: it is no longer an idle HTTP connection.
      sweeper.upgraded(socket as Socket);
      socket.on('error', () => socket.destroy());
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
      dispatch.upgrade(req, socket, head, 'http');
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
      const status = clientErrorStatus(err.code);
      logger.debug({ code: err.code, remote: socket.remoteAddress }, `client error ${status}`);
      // Closed once the answer is out, as Node's own handler does: the socket allows half-open connections, and a
      // client that ignores the answer and keeps its half open must not hold it.
      sendRawError(socket, status, { serverHeader: dispatch.serverHeader() });
      socket.once('finish', () => socket.destroy());
    });
  }

  /** Binds; rejects with PORTICO_LISTEN_FAILED (the system's error as its cause). */
  listen(logger: Logger): Promise<BoundAddress> {
    const { server, config } = this;
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        this.sweeper.stop();
        const reason = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
        reject(new PorticoError('PORTICO_LISTEN_FAILED', `cannot listen on ${config.addr.text}: ${reason}`, { cause: err }));
      });
      server.listen({ host: config.addr.host, port: config.addr.port }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => logger.error({ err }, 'listener error'));
        const address = server.address();
        const port = typeof address === 'object' && address !== null ? address.port : config.addr.port;
        this.address = { host: config.addr.host, port };
        resolve(this.address);
      });
    });
  }

  /**
   * Whether `config` names this listener's address: the same host and the port it is bound to, or the same text
   * (`127.0.0.1:0` stays the port the system chose).
   */
  serves(config: ListenerConfig): boolean {
    if (config.addr.text === this.config.addr.text) return true;
    return config.addr.host === this.config.addr.host && config.addr.port !== 0 && config.addr.port === this.address?.port;
  }

  /** Takes a reloaded config's limits for this address: new connections and requests see them. */
  apply(config: ListenerConfig): void {
    this.config = config;
    this.plain = !this.stopping && isPlain(config);
    const server = this.server;
    // Node reads it for each new connection's parser (not in its types: it is the constructor's option, kept).
    (server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = config.max_header_size;
    server.requestTimeout = config.request_timeout;
    server.headersTimeout = headersTimeout(config);
    this.sweeper.setTimeout(sweepTimeout(config));
  }

  /** Starts closing: no new connections; idle ones close now, busy ones as soon as their answer is out. */
  close(): Promise<void> {
    this.stopping = true;
    this.plain = false;
    const closed = new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
    // Connections that become idle during the grace period are closed as soon as they do, not after the timeout.
    this.sweeper.drain();
    // Tunnels are not the HTTP server's any more: wait for them too, or they outlive the close.
    const tunnels = [...this.upgraded].map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
    return Promise.all([closed, ...tunnels]).then(() => this.sweeper.stop());
  }

  /** The grace period is over: cuts every connection and tunnel still open. */
  cut(): void {
    this.server.closeAllConnections();
    for (const socket of this.upgraded) socket.destroy();
  }
}

/** A reload's listeners, bound but not yet serving the new config: `commit()` or `abandon()`. */
export interface ListenerPlan {
  /**
   * Makes the plan the listeners, at once; the promise resolves when the addresses no longer listed have closed
   * (their connections and tunnels are cut after `graceMs`).
   */
  commit(graceMs?: number): Promise<void>;
  /** Closes what the plan bound; the listeners stay as they were. */
  abandon(): Promise<void>;
}

/** The set of listening sockets of one Portico process. */
export class Listeners {
  #configs: readonly ListenerConfig[];
  readonly #dispatch: Dispatch;
  readonly #logger: Logger;
  #listeners: Listener[] = [];
  /** Listeners a reload removed, still draining: `stop()` waits for them too. */
  readonly #retiring = new Set<Promise<void>>();

  constructor(configs: readonly ListenerConfig[], dispatch: Dispatch, logger: Logger) {
    this.#configs = configs;
    this.#dispatch = dispatch;
    this.#logger = logger;
  }

  /** Binds every listener; if one fails, the ones already bound are closed and the error is thrown. */
  async start(): Promise<void> {
    const plan = await this.prepare(this.#configs);
    await plan.commit();
  }

  /**
   * Binds the addresses of `configs` that are not bound yet, keeping the others (see `Listener.serves`). Nothing changes until the plan is committed; if an address cannot be bound, whatever was bound for
   * the plan is closed and the error (PORTICO_LISTEN_FAILED) is thrown.
   */
  async prepare(configs: readonly ListenerConfig[]): Promise<ListenerPlan> {
    const current = new Set(this.#listeners);
    const next: Array<{ listener: Listener; config: ListenerConfig }> = [];
    const added: Listener[] = [];
    try {
      for (const config of configs) {
        const kept = [...current].find((listener) => listener.serves(config));
        if (kept !== undefined) {
          current.delete(kept);
          next.push({ listener: kept, config });
          continue;
        }
        const listener = new Listener(config, this.#dispatch, this.#logger);
        added.push(listener);
        await listener.listen(this.#logger);
        next.push({ listener, config });
      }
    } catch (err) {
      await Promise.all(added.map((listener) => listener.close()));
      throw err;
    }
    const removed = [...current.values()];
    return {
      commit: (graceMs = 10_000) => {
        for (const { listener, config } of next) if (listener.config !== config) listener.apply(config);
        this.#configs = configs;
        this.#listeners = next.map((entry) => entry.listener);
        const closing: Promise<void> = this.#close(removed, graceMs).then(
          () => void this.#retiring.delete(closing),
          (err: unknown) => {
            this.#retiring.delete(closing);
            this.#logger.error({ err }, 'closing a removed listener failed');
          },
        );
        this.#retiring.add(closing);
        return closing;
      },
      abandon: async () => {
        await Promise.all(added.map((listener) => listener.close()));
      },
    };
  }

  /** The bound addresses, in config order (a port of 0 shows the one the system chose). */
  get addresses(): readonly BoundAddress[] {
    return this.#listeners.map((listener) => listener.address!);
  }

  /**
   * Stops accepting, closes idle keep-alive connections at once (and each busy one as soon as its answer is
   * out), lets requests in flight finish for up to `graceMs`, then cuts whatever is left.
   */
  async stop(graceMs = 10_000): Promise<void> {
    const all = this.#listeners;
    this.#listeners = [];
    await Promise.all([this.#close(all, graceMs), ...this.#retiring]);
  }

  async #close(listeners: readonly Listener[], graceMs: number): Promise<void> {
    if (listeners.length === 0) return;
    const closing = Promise.all(listeners.map((listener) => listener.close()));
    const timer = setTimeout(() => {
      for (const listener of listeners) listener.cut();
    }, graceMs);
    await closing;
    clearTimeout(timer);
  }
}
