/**
 * The door of a listener: every accepted TCP connection passes it before TLS or HTTP sees a byte. In order:
 * `max_connections` (open connections on the listener), the PROXY protocol header when the listener takes one
 * (only from a `trusted_proxies` peer, read within `header_timeout`), then `max_connections_per_ip` on the
 * client address — the header's when there is one. An admitted connection is handed to the next stage; a
 * refused one is closed (logged), and counts nothing.
 *
 * Over a limit, a plain HTTP listener answers a short 503 (`Connection: close`) and closes, as nginx's
 * limit_conn answers 503: the client learns why, and a browser does not retry a reset. HAProxy's maxconn queues
 * instead; a queue would hold the very resource the limit protects. A TLS listener would close without a word
 * (no plaintext answer can be sent there). A connection from an untrusted peer on a PROXY listener, or with a
 * missing, malformed or slow header, is closed at once, as HAProxy's accept-proxy does.
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { connectionPeer, setProxiedPeer, type TrustedProxies } from '../http/client-address.js';
import { sendRawError } from '../http/send.js';
import { readProxyHeader } from './proxy-protocol.js';

/** The listener settings the gate reads (a reload may change them; new connections see the new ones). */
export interface GateLimits {
  max_connections: number;
  max_connections_per_ip: number;
  proxy_protocol: boolean;
  header_timeout: number;
  /** Set on a TLS listener: no plaintext 503 can be sent there. */
  tls?: unknown;
}

/** How long a turned-away client may keep its half of the connection open to read the 503. */
const LINGER_MS = 1000;
/** One log line per kind of refusal per this long at most (a flood must not become a flood of log lines). */
const LOG_EVERY_MS = 1000;

/** Counts open connections per listener and per client address; admits or turns away each new one. */
export class ConnectionGate {
  limits: GateLimits;
  readonly #logger: Logger;
  readonly #trusted: () => TrustedProxies;
  readonly #serverHeader: () => string;
  readonly #admit: (socket: Socket) => void;
  #open = 0;
  /** Open connections per client address; an address leaves the map when its count drops to zero. */
  readonly #perAddress = new Map<string, number>();
  /** Per kind of refusal: when it was last logged, and how many since then went unlogged. */
  readonly #logged = new Map<string, { at: number; unlogged: number }>();

  constructor(
    limits: GateLimits,
    logger: Logger,
    /** The current `trusted_proxies` (the app's: a reload may change them). */
    trusted: () => TrustedProxies,
    serverHeader: () => string,
    /** The next stage: TLS or HTTP serving the connection. */
    admit: (socket: Socket) => void,
  ) {
    this.limits = limits;
    this.#logger = logger;
    this.#trusted = trusted;
    this.#serverHeader = serverHeader;
    this.#admit = admit;
  }

  /** Connections open now (admitted or still reading their PROXY header). */
  get open(): number {
    return this.#open;
  }

  /** Distinct client addresses with connections open now. */
  get addresses(): number {
    return this.#perAddress.size;
  }

  /** A connection just accepted. */
  accept(socket: Socket): void {
    const limits = this.limits;
    if (limits.max_connections > 0 && this.#open >= limits.max_connections) {
      return this.#turnAway(socket, 'max_connections', connectionPeer(socket));
    }
    this.#open++;
    socket.once('close', () => this.#open--);
    if (!limits.proxy_protocol) return this.#perClient(socket);
    const peer = connectionPeer(socket);
    if (!this.#trusted().has(peer)) {
      this.#note('untrusted', { remote: peer }, 'PROXY protocol listener: connection from a peer not in trusted_proxies closed');
      return void socket.destroy();
    }
    readProxyHeader(socket, limits.header_timeout, (result) => {
      if (!result.ok) {
        this.#note('header', { remote: peer, reason: result.reason }, 'PROXY protocol header refused; connection closed');
        return void socket.destroy();
      }
      if (result.source !== undefined) setProxiedPeer(socket, result.source.address);
      // Paused by the reader with the bytes after the header put back: the next stage reads them first (the
      // HTTP stage resumes the socket; TLS takes what is buffered as it starts).
      this.#perClient(socket);
    });
  }

  #perClient(socket: Socket): void {
    const max = this.limits.max_connections_per_ip;
    if (max === 0) return this.#admit(socket);
    const address = connectionPeer(socket);
    const count = this.#perAddress.get(address) ?? 0;
    if (count >= max) return this.#turnAway(socket, 'max_connections_per_ip', address);
    this.#perAddress.set(address, count + 1);
    socket.once('close', () => {
      const left = this.#perAddress.get(address)! - 1;
      if (left === 0) this.#perAddress.delete(address);
      else this.#perAddress.set(address, left);
    });
    this.#admit(socket);
  }

  /** Logs a refusal (a warning), at most once per LOG_EVERY_MS per kind, with the count of those not logged. */
  #note(kind: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    const last = this.#logged.get(kind);
    if (last !== undefined && now - last.at < LOG_EVERY_MS) {
      last.unlogged++;
      return;
    }
    this.#logger.warn({ ...fields, unlogged: last?.unlogged ?? 0 }, message);
    this.#logged.set(kind, { at: now, unlogged: 0 });
  }

  /**
   * Over a limit: a 503 and a close; the client may read the answer for up to LINGER_MS, then it is cut. On a
   * TLS listener, a close without a word.
   */
  #turnAway(socket: Socket, limit: string, address: string): void {
    this.#note(limit, { remote: address, limit }, `connection refused: ${limit} reached`);
    if (this.limits.tls !== undefined) return void socket.destroy();
    socket.on('error', () => socket.destroy());
    const timer = setTimeout(() => socket.destroy(), LINGER_MS).unref();
    socket.once('close', () => clearTimeout(timer));
    // What the client sent is read and dropped: unread bytes at close would make the kernel reset the
    // connection, and the client might lose the answer.
    socket.resume();
    sendRawError(socket, 503, { serverHeader: this.#serverHeader() });
  }
}
