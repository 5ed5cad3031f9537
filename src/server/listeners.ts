/**
 * Listeners: the sockets Portico accepts connections on. They outlive an app: each request goes to whichever
 * app is current when it arrives, so a reload swaps the app without closing a socket. Connection-level limits
 * (head size, timeouts, keep-alive) live here. Malformed requests never reach an app: Node's parser rejects
 * them and `clientError` answers 400 (431 for an oversized head, 408 for a slow one) and closes.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { errorPage, reasonPhrase } from '../errors.js';
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
}

function clientErrorStatus(code: string | undefined): number {
  if (code === 'HPE_HEADER_OVERFLOW') return 431;
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  if (code === 'HPE_URI_TOO_LONG') return 414;
  return 400;
}

/** The set of listening sockets of one Portico process. */
export class Listeners {
  readonly #configs: readonly ListenerConfig[];
  readonly #dispatch: Dispatch;
  readonly #logger: Logger;
  readonly #servers: http.Server[] = [];
  readonly #sweepers: KeepAliveSweeper[] = [];
  /** Set by `stop()`: answers from then on say `Connection: close`. */
  #stopping = false;
  /** Upgraded (WebSocket) sockets: the HTTP server no longer tracks them, so `stop()` must cut them itself. */
  readonly #upgraded = new Set<Duplex>();
  #addresses: BoundAddress[] = [];

  constructor(configs: readonly ListenerConfig[], dispatch: Dispatch, logger: Logger) {
    this.#configs = configs;
    this.#dispatch = dispatch;
    this.#logger = logger;
  }

  /** Binds every listener; if one fails, the ones already bound are closed and the error is thrown. */
  async start(): Promise<void> {
    try {
      for (const config of this.#configs) this.#addresses.push(await this.#listen(config));
    } catch (err) {
      await this.stop(0);
      throw err;
    }
  }

  /** The bound addresses, in config order (a port of 0 shows the one the system chose). */
  get addresses(): readonly BoundAddress[] {
    return this.#addresses;
  }

  #listen(config: ListenerConfig): Promise<BoundAddress> {
    const dispatch = this.#dispatch;
    const keepAlive = config.keepalive_timeout > 0;
    /**
     * Whether this request may be answered on a connection that stays open. With keep-alive off (timeout 0, as
     * nginx's) or while stopping, the answer says `Connection: close`; with keep-alive off, a request pipelined
     * behind the first is not run at all (its answer could never be sent), as nginx never reads it.
     */
    const served = new WeakSet<object>();
    const admit = (req: IncomingMessage, res: ServerResponse): boolean => {
      if (keepAlive && !this.#stopping) return true;
      res.shouldKeepAlive = false;
      if (keepAlive) return true;
      if (served.has(req.socket)) return false;
      served.add(req.socket);
      return true;
    };
    const server = http.createServer(
      {
        maxHeaderSize: config.max_header_size,
        requestTimeout: config.request_timeout,
        headersTimeout: config.header_timeout,
        // Node checks these timeouts every 30 s by default; check often enough that short limits hold.
        connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(Math.min(config.header_timeout, config.request_timeout) / 2))),
        // 0: Node's own per-response keep-alive timer is off; the sweeper closes idle connections instead.
        keepAliveTimeout: 0,
        joinDuplicateHeaders: true,
        requireHostHeader: true,
      },
      function onRequest(req, res) {
        if (admit(req, res)) dispatch.request(req, res, 'http');
      },
    );
    // Portico answers `Expect: 100-continue` itself, after its own checks (a 413 comes before any 100).
    server.on('checkContinue', function onCheckContinue(req, res) {
      if (admit(req, res)) dispatch.request(req, res, 'http');
    });
    const upgraded = this.#upgraded;
    // With keep-alive off no connection should ever sit idle; the sweeper still closes leftovers (a client that
    // keeps its half open after an error answer) once they have been idle for header_timeout.
    const sweeper = new KeepAliveSweeper(server, keepAlive ? config.keepalive_timeout : config.header_timeout || 60_000);
    this.#sweepers.push(sweeper);
    server.on('upgrade', function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer) {
      // A tunnel may be quiet for as long as its ends like: it is no longer an idle HTTP connection.
      sweeper.upgraded(socket as Socket);
      socket.on('error', () => socket.destroy());
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
      dispatch.upgrade(req, socket, head, 'http');
    });
    server.maxRequestsPerSocket = config.max_requests_per_conn;
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.#clientError(err, socket));
    this.#servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: config.addr.host, port: config.addr.port }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.#logger.error({ err }, 'listener error'));
        const address = server.address();
        const port = typeof address === 'object' && address !== null ? address.port : config.addr.port;
        resolve({ host: config.addr.host, port });
      });
    });
  }

  #clientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = clientErrorStatus(err.code);
    this.#logger.debug({ code: err.code, remote: socket.remoteAddress }, `client error: ${reasonPhrase(status)}`);
    const body = errorPage(status);
    // Closed once the answer is out, as Node's own handler does: the socket allows half-open connections, and a
    // client that ignores the answer and keeps its half open must not hold it.
    socket.end(
      `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\nContent-Type: text/html; charset=utf-8\r\n` +
        `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.toString()}`,
      () => socket.destroy(),
    );
  }

  /**
   * Stops accepting, closes idle keep-alive connections at once (and each busy one as soon as its answer is
   * out), lets requests in flight finish for up to `graceMs`, then cuts whatever is left.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.#stopping = true;
    const closing = this.#servers.map(
      (server) =>
        new Promise<void>((resolve) => {
          if (!server.listening) return resolve();
          server.close(() => resolve());
          server.closeIdleConnections();
        }),
    );
    // Connections that become idle during the grace period are closed as soon as they do, not after the timeout.
    for (const sweeper of this.#sweepers) sweeper.drain();
    const timer = setTimeout(() => {
      for (const server of this.#servers) server.closeAllConnections();
      for (const socket of this.#upgraded) socket.destroy();
    }, graceMs);
    // Tunnels are not the HTTP server's any more: wait for them too, or they outlive the stop.
    const tunnels = [...this.#upgraded].map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
    await Promise.all([...closing, ...tunnels]);
    clearTimeout(timer);
    for (const sweeper of this.#sweepers) sweeper.stop();
    this.#sweepers.length = 0;
    this.#servers.length = 0;
    this.#addresses = [];
    this.#stopping = false;
  }
}
