/**
 * The TLS stage of a listener: takes an accepted socket, makes the TLS handshake, and hands the secure socket
 * by its ALPN protocol to the listener's HTTP/1.1 server (`h2` to an HTTP/2 server).
 *
 * Why not `http2.createSecureServer({ allowHTTP1: true })`: on Node 20 its HTTP/1 fallback leaves the keep-alive
 * timeout unset (nodejs/node#59783), and those connections would not be the listener's `http.Server`'s, so
 * Portico's keep-alive sweep, header and request timeouts, header-count check and `clientError` answers would
 * not see them. Here HTTP/1.1 over TLS goes to the very `http.Server` a plain listener uses (`emit('connection')`
 * with the TLS socket, as `https.Server` does internally), and keeps every limit; HTTP/2 goes to an unlistened
 * `http2.Server` (the listener's H2Stage, h2-stage.ts: its connection listener takes an already secure socket).
 *
 * The stage listens on nothing: `accept(socket)` takes a socket the listener's `net.Server` accepted, so that
 * something may sit in front (the PROXY protocol reads its header first, then hands the socket on).
 *
 * - Certificates: the tls.Server's own context holds the listener's default certificate and its policy
 *   (versions, ciphers, client CA); `SNICallback` asks the current certificate store for the server name's.
 * - `handshakeTimeout` is the listener's header_timeout: a client silent before or during the handshake is cut.
 * - ALPN: `ALPNCallback` chooses `h2` when the listener has HTTP/2 on and the client offers it, else
 *   `http/1.1`; a client that offers neither is refused (no_application_protocol). A client that sends no
 *   ALPN speaks HTTP/1.1.
 * - A reload that changes the TLS settings makes a new tls.Server for new connections; handshakes under way
 *   finish on the old one, whose handlers are the same.
 */
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { ClientRequest, ClientResponse } from '../http/context.js';
import { inheritProxiedPeer } from '../http/client-address.js';
import { sendRawError } from '../http/send.js';
import { H2Stage } from './h2-stage.js';
import { wrappedSocket } from './node-internals.js';
import { recordHandshake, servedCertificate, type CertificateStore, type ServedCertificate } from '../tls/certificates.js';

type ListenerConfig = Config['listen'][number];
const kMadeWith = Symbol('portico.tls.madeWith');
/** The certificates a handshake starts with. */
interface MadeWith {
  store: CertificateStore;
  fallback: ServedCertificate | undefined;
}
type ListenerTls = NonNullable<ListenerConfig['tls']>;

/** Where TLS handshakes are counted (the process's metrics, when counting is on). */
export interface HandshakeTally {
  handshake(version: string | null): void;
  handshakeFailed(): void;
}

/** What the TLS stage needs of the server around it. */
export interface SecureTarget {
  /** The current certificate store (a reload swaps it). */
  certificates(): CertificateStore;
  /** Takes an HTTP/1.1 connection (secure socket). */
  http1(socket: TLSSocket): void;
  /** Takes an HTTP/2 request (Node's compat pair). */
  request(req: ClientRequest, res: ClientResponse): void;
  /** The `Server` field of Portico's own answers. */
  serverHeader(): string;
  /** Answers an HTTP/2 request with Portico's error page for `status` (an expectation other than 100-continue). */
  refuse(req: ClientRequest, res: ClientResponse, status: number): void;
  /**
   * The session-ticket keys (48 bytes) a TLS server made now uses, when they are shared with other processes
   * (`workers`: a ticket one worker issued resumes on any; a cluster: on any box); undefined: each server's own
   * random keys.
   */
  ticketKeys?: () => Buffer | undefined;
  /** Where handshakes are counted now (undefined: counting is off). */
  handshakes?(): HandshakeTally | undefined;
}

/** TLS in front of a listener's HTTP servers. */
export class SecureStage {
  #config: ListenerConfig;
  #tls: tls.Server;
  #fallback: ServedCertificate | undefined;
  /** Connections whose ALPN chose `h2`. */
  readonly #h2: H2Stage;
  readonly #target: SecureTarget;
  readonly #logger: Logger;

  constructor(config: ListenerConfig, target: SecureTarget, logger: Logger) {
    this.#config = config;
    this.#target = target;
    this.#logger = logger;
    this.#fallback = defaultCertificate(config.tls!);
    this.#tls = this.#makeTls(config);
    this.#h2 = new H2Stage(config, target, logger);
  }

  /** Starts the TLS handshake on a socket the listener accepted. */
  accept(socket: Socket): void {
    // The store and default of the moment the handshake begins: the connection is made with them.
    (socket as Socket & { [kMadeWith]?: MadeWith })[kMadeWith] = { store: this.#target.certificates(), fallback: this.#fallback };
    this.#tls.emit('connection', socket);
  }

  /** Takes a reloaded config: new connections see its certificate, policy and HTTP/2 settings. */
  apply(config: ListenerConfig): void {
    this.#config = config;
    this.#fallback = defaultCertificate(config.tls!);
    this.#tls = this.#makeTls(config);
    this.#h2.apply(config);
  }

  /** New session-ticket keys (a cluster's rotation) for the TLS server new connections meet. */
  setTicketKeys(keys: Buffer): void {
    this.#tls.setTicketKeys(keys);
  }

  /** Shutdown: each HTTP/2 session finishes its streams and closes (GOAWAY); new streams are refused. */
  close(): Promise<void> {
    return this.#h2.close();
  }

  /** The grace period is over: cuts every HTTP/2 session. */
  cut(): void {
    this.#h2.cut();
  }

  #makeTls(config: ListenerConfig): tls.Server {
    const options = config.tls!;
    const target = this.#target;
    const ticketKeys = target.ticketKeys?.();
    const server = tls.createServer({
      // Node's default session context is a hash of the process's command line: another box's differs, and
      // OpenSSL would not resume its sessions even with the same ticket keys. Shared keys, shared context; a
      // listener that asks for client certificates of another CA is another context (no resumption across them).
      ...(ticketKeys === undefined ? {} : { sessionIdContext: sharedSessionContext(options) }),
      ...(options.pem === undefined ? {} : { cert: options.pem.cert, key: options.pem.key }),
      minVersion: options.min_version,
      maxVersion: options.max_version,
      ciphers: options.ciphers,
      honorCipherOrder: true,
      ...(options.client_ca_pem === undefined ? {} : { ca: options.client_ca_pem, requestCert: true, rejectUnauthorized: true }),
      handshakeTimeout: config.header_timeout > 0 ? config.header_timeout : 30_000,
      SNICallback(name, done) {
        done(null, target.certificates().forServerName(name)?.context);
      },
      ALPNCallback: ({ protocols }) => {
        if (this.#config.http2 !== false && protocols.includes('h2')) return 'h2';
        return protocols.includes('http/1.1') ? 'http/1.1' : undefined;
      },
    });
    if (ticketKeys !== undefined) server.setTicketKeys(ticketKeys);
    server.on('secureConnection', (socket: TLSSocket) => {
      const raw = wrappedSocket(socket) as (Socket & { [kMadeWith]?: MadeWith }) | undefined;
      const made = raw?.[kMadeWith] ?? { store: target.certificates(), fallback: this.#fallback };
      // The PROXY protocol's client address, read off the accepted socket, is the secure socket's too.
      if (raw !== undefined) inheritProxiedPeer(raw, socket);
      recordHandshake(socket, made.store, made.fallback);
      target.handshakes?.()?.handshake(socket.getProtocol());
      if (socket.alpnProtocol === 'h2') this.#h2.accept(socket);
      else target.http1(socket);
    });
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      this.#logger.debug({ code: err.code, remote: socket.remoteAddress }, `tls handshake failed: ${err.message}`);
      target.handshakes?.()?.handshakeFailed();
      // Plain HTTP sent to the TLS port (OpenSSL recognises a request line): a 400 in plain HTTP on the socket under
      // the TLS one, as nginx answers, instead of an empty reply the client cannot explain.
      const raw = err.code === 'ERR_SSL_HTTP_REQUEST' ? wrappedSocket(socket) : undefined;
      if (raw === undefined || !raw.writable) return void socket.destroy();
      sendRawError(raw, 400, { serverHeader: this.#target.serverHeader() });
      raw.once('finish', () => raw.destroy());
    });
    return server;
  }
}

/** The TLS session context of a listener whose ticket keys are shared: the same on every box with the same policy. */
function sharedSessionContext(options: ListenerTls): string {
  return createHash('sha256').update(`portico\0${options.client_ca_pem ?? ''}`).digest('hex').slice(0, 32);
}

function defaultCertificate(options: ListenerTls): ServedCertificate | undefined {
  return options.pem === undefined ? undefined : servedCertificate(options.pem.cert, options.pem.key);
}
