/**
 * The admin API's TCP listener: HTTP, or HTTPS with `admin.tls` (required by the config for a non-loopback
 * address). Never one of the public listeners: nothing of the admin API is reachable there.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { PorticoError } from '../errors.js';
import type { AdminApi } from './admin-api.js';

/** Connections the admin listener holds at once (an admin request is small and rare; past it new ones are closed). */
export const MAX_ADMIN_CONNECTIONS = 256;

/** How long a request may take to arrive (headers and body): an admin request is a few hundred bytes. */
const REQUEST_TIMEOUT_MS = 10_000;
/** How long its headers may take; a connection (or TLS handshake) that sends no request is closed after it too. */
const HEADERS_TIMEOUT_MS = 5_000;
/** How often Node checks those two timeouts (its default, 30 s, let an idle socket stay that long). */
const TIMEOUT_CHECK_MS = 1_000;

/** Where to listen, and the certificate when the listener serves TLS. */
export interface AdminAddress {
  host: string;
  port: number;
  /** As written in the config (`127.0.0.1:9901`). */
  text: string;
  tls?: { cert: string; key: string } | undefined;
}

/** The admin API's listener on one address. */
export class AdminListener {
  /** The address as configured. */
  readonly address: AdminAddress;
  readonly #server: Server;
  readonly #connections = new Set<Socket>();
  readonly #logger: Logger;
  /** Connections that have not sent a request yet → the timer that closes them. */
  readonly #waiting = new WeakMap<object, NodeJS.Timeout>();
  #closed: Promise<void> | undefined;

  /** A listener for `api` at `address`; nothing is bound until `start`. */
  constructor(api: AdminApi, address: AdminAddress, logger: Logger) {
    this.address = address;
    this.#logger = logger;
    const secure = address.tls !== undefined;
    const answer = (req: IncomingMessage, res: ServerResponse) => api.handle(req, res, { kind: 'tcp', secure });
    const options = { requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS, connectionsCheckingInterval: TIMEOUT_CHECK_MS, keepAliveTimeout: 5_000 };
    this.#server =
      address.tls === undefined
        ? createHttpServer(options, answer)
        : createHttpsServer({ ...options, handshakeTimeout: HEADERS_TIMEOUT_MS, cert: address.tls.cert, key: address.tls.key, minVersion: 'TLSv1.2' }, answer);
    // Node's headersTimeout counts from a request's first byte: a connection that sends nothing is closed here.
    this.#server.on(address.tls === undefined ? 'connection' : 'secureConnection', (socket: Socket) => {
      const timer = setTimeout(() => socket.destroy(), HEADERS_TIMEOUT_MS).unref();
      this.#waiting.set(socket, timer);
      socket.once('close', () => clearTimeout(timer));
    });
    this.#server.on('request', (req: IncomingMessage) => {
      const timer = this.#waiting.get(req.socket);
      if (timer === undefined) return;
      clearTimeout(timer);
      this.#waiting.delete(req.socket);
    });
    // Past the cap Node closes a new connection at once: idle sockets cannot pile up (event streams are capped lower).
    this.#server.maxConnections = MAX_ADMIN_CONNECTIONS;
    this.#server.on('connection', (socket: Socket) => {
      this.#connections.add(socket);
      socket.once('close', () => this.#connections.delete(socket));
    });
    // A TLS handshake that fails (a port scan, a plain-HTTP client) is the client's problem, not a log line each.
    this.#server.on('tlsClientError', () => {});
  }

  /** Binds; throws PORTICO_LISTEN_FAILED (the port in use, a permission). */
  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const failed = (err: Error) =>
        reject(new PorticoError('PORTICO_LISTEN_FAILED', `cannot bind the admin listener ${this.address.text}: ${err.message}`, { cause: err }));
      this.#server.once('error', failed);
      this.#server.listen({ host: this.address.host, port: this.address.port, exclusive: true }, () => {
        this.#server.off('error', failed);
        resolve();
      });
    });
    this.#server.on('error', (err) => this.#logger.error({ err }, 'admin listener error'));
  }

  /** Whether it serves TLS. */
  get secure(): boolean {
    return this.address.tls !== undefined;
  }

  /** The bound port (the system's choice when the config said 0). */
  get port(): number {
    const bound = this.#server.address();
    return typeof bound === 'object' && bound !== null ? bound.port : this.address.port;
  }

  /** `http://127.0.0.1:9901/` (or https). */
  get url(): string {
    const host = this.address.host.includes(':') ? `[${this.address.host}]` : this.address.host;
    return `${this.secure ? 'https' : 'http'}://${host}:${this.port}/`;
  }

  /** A new certificate for new handshakes (a reload read changed files). */
  setCertificate(tls: { cert: string; key: string }): void {
    if ('setSecureContext' in this.#server) (this.#server as unknown as { setSecureContext(o: object): void }).setSecureContext({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' });
  }

  /** Stops accepting; requests under way get `graceMs`, then their connections (event streams too) are cut. */
  async stop(graceMs = 1000): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
    });
    this.#server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const socket of this.#connections) socket.destroy();
        resolve();
      }, graceMs);
    });
    await Promise.race([this.#closed, cut]);
    clearTimeout(timer);
    for (const socket of this.#connections) socket.destroy();
    await this.#closed;
  }
}
