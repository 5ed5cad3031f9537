/**
 * Listeners: the sockets Portico accepts connections on. They outlive an app: each request goes to whichever
 * app is current when it arrives, so a reload swaps the app without closing a socket. Connection-level limits
 * (head size, timeouts, keep-alive) live here. Malformed requests never reach an app: Node's parser rejects
 * them and `clientError` answers 400 (431 for an oversized head, 414 when its request line alone is over the
 * limit, 408 for a slow one), after the answers to the requests before them on the connection, and closes. Requests Node parsed but Portico refuses before routing (too many header
 * lines, no Host, CONNECT, an unmet expectation) go through the app like any other (`refusal`).
 *
 * A reload keeps every listener whose address stays (matched by the address it binds — `localhost:8080` is
 * `127.0.0.1:8080` when the name resolves there — and its bound port; its limits are updated in place, for new
 * connections and requests), binds the new addresses before anything is swapped (a port in use fails the reload and nothing
 * changes), and closes the addresses no longer listed, gracefully, once the new config serves.
 *
 * The HTTP/1.1 rules themselves (which requests are upgrades, overflow statuses, client-error answers, timeouts
 * from the config) are in `http1.ts`; TLS and HTTP/2 in `secure.ts`; limits and PROXY headers in
 * `connection-gate.ts`.
 */
import http, { type IncomingMessage, ServerResponse } from 'node:http';
import { lookup } from 'node:dns/promises';
import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { PorticoError } from '../errors.js';
import type { ClientRequest, ClientResponse } from '../http/context.js';
import { PorticoResponse } from '../http/echo.js';
import { newRequestId } from '../http/request-identity.js';
import { connectionPeer, type TrustedProxies } from '../http/client-address.js';
import { kClosing, type MarkedSocket } from '../http/send.js';
import type { CertificateStore } from '../tls/certificates.js';
import { ConnectionGate } from './connection-gate.js';
import { KeepAliveSweeper } from './keepalive.js';
import { listeningHandle, prepareParserWatch, startConnectionChecks, watchParserStops } from './node-internals.js';
import { limitRequestTime } from './h2-session.js';
import {
  answerClientError,
  checkingInterval,
  clientErrorStatus,
  type ParserError,
  cutByParser,
  headersTimeout,
  isPlain,
  overflowStatus,
  PorticoRequest,
  refusedLine,
  type RefusedLine,
  schemeOf,
  sweepTimeout,
  versionRefusal,
  type ListenerConfig,
} from './http1.js';
import { SecureStage, type HandshakeTally } from './secure.js';
import { H2Stage, refusePreface, whenPrefaceKnown } from './h2-stage.js';

/** Where a listener is bound. */
export interface BoundAddress {
  host: string;
  port: number;
}

/**
 * A listening socket handed from one Portico process to the next (an upgrade): the address text its config gave,
 * where it is bound, and the socket's handle as it crossed the IPC channel (see `listeningHandle`).
 */
export interface InheritedSocket {
  text: string;
  host: string;
  port: number;
  handle: object;
}

/** Whether an inherited socket is the one a listener config names: the same text, or the same host and bound port. */
function inheritedFor(config: ListenerConfig, socket: InheritedSocket): boolean {
  if (config.addr.text === socket.text) return true;
  return config.addr.host === socket.host && config.addr.port !== 0 && config.addr.port === socket.port;
}

/**
 * Where listeners hand requests: the current app's `handle` and `handleUpgrade`. An HTTP/2 request comes as
 * Node's compat pair (`Http2ServerRequest`, `Http2ServerResponse`) to `request` and `refuse`; upgrades are
 * HTTP/1 only (WebSocket over h2, RFC 8441, is not offered).
 */
export interface Dispatch {
  /** A request; `redirectHttps` is the listener's redirect_https port (0: none). */
  request(req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https', redirectHttps?: number): void;
  /** A WebSocket handshake on its raw socket; `refuse` (a status) answers it with that error instead. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, scheme: 'http' | 'https', refuse?: number): void;
  /**
   * A request refused before routing (see `refusal`): Portico's error page, `Server` field and access-log line,
   * as for any request; `close` ends the connection after it.
   */
  refuse(req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https', status: number, close: boolean): void;
  /**
   * A request Node's parser refused (`clientError`: 400, 408, 414, 431, 501), answered by the listener with
   * `requestId` echoed: its access-log line.
   */
  parserRefused(socket: Socket, status: number, line: RefusedLine | undefined, requestId: string): void;
  /** The `Server` header of Portico's own answers (the current config's). */
  serverHeader(): string;
  /** The current config's `trusted_proxies` (who may send a PROXY protocol header). */
  trustedProxies(): TrustedProxies;
  /** The current config's certificate store, for TLS handshakes. */
  certificates(): CertificateStore;
  /** Where TLS handshakes are counted, when counting is on (asked once per handshake). */
  handshakes?(): HandshakeTally | undefined;
}

/** How the listeners of a process bind, besides their config (with `workers`; see docs/operations.md, "Workers"). */
export interface ListenerOptions {
  /** Session-ticket keys shared by every worker (see `SecureTarget.ticketKeys`). */
  ticketKeys?: Buffer | undefined;
  /**
   * Each process binds its own socket on the address (SO_REUSEPORT, Node ≥ 22.12: the kernel spreads
   * connections), instead of node:cluster's primary accepting for the workers.
   */
  reusePort?: boolean | undefined;
  /** Under `reusePort`, the port another worker was given for an address written with port 0 (by its text). */
  ports?: ReadonlyMap<string, number> | undefined;
}

/**
 * One listening socket and its connections. A `net.Server` accepts; `accept(socket)` hands each socket on, to
 * the TLS stage on a TLS listener (which hands secure HTTP/1.1 connections back to the same `http.Server`),
 * else to the `http.Server`, which listens on nothing itself. In front of `accept` sits the connection gate
 * (connection limits; the PROXY protocol header, read before TLS).
 */
class Listener {
  readonly front: net.Server;
  readonly server: http.Server;
  /** The TLS stage: made when the listener first has `tls`; kept for the connections it made. */
  secure: SecureStage | undefined;
  /** HTTP/2 by prior knowledge on a plain listener (h2c): made when it first has `http2` on; kept for its sessions. */
  #cleartext: H2Stage | undefined;
  /** Plain connections whose first bytes have not yet said HTTP/1.1 or HTTP/2 (closed at once by a close). */
  readonly #undecided = new Set<Socket>();
  /** The accepted sockets, cut when the grace period of a close is over (and counted by `open`). */
  readonly #sockets = new Set<Socket>();

  /** Client connections open now on this listener. */
  get open(): number {
    return this.#sockets.size;
  }
  readonly #dispatch: Dispatch;
  readonly #logger: Logger;
  readonly #options: ListenerOptions;
  readonly sweeper: KeepAliveSweeper;
  /** Connection limits and the PROXY protocol, before HTTP sees a connection. */
  readonly gate: ConnectionGate;
  config: ListenerConfig;
  address: BoundAddress | undefined;
  /** The IP address the socket is bound to, as the system reports it (`127.0.0.1`, `::1`). */
  boundIp: string | undefined;
  /** Set by `close()`: answers from then on say `Connection: close`. */
  stopping = false;
  /** Keep-alive on, no request limit, not stopping: every request is simply run (the usual case, one check). */
  plain: boolean;
  /** Header lines allowed, as entries of `rawHeaders` (two per line). */
  headerEntries: number;
  /**
   * The fewest `rawHeaders` entries a connection's parser keeps (Node's `maxHeadersCount`, two per line, set to one
   * line more than allowed, for the connections of that time). Only a reload that raised the limit puts it at or
   * below `headerEntries`: a request that long may then have been cut by its connection's older parser.
   */
  keptEntries: number;

  /** Upgraded (WebSocket) sockets: the HTTP server no longer tracks them, so closing must cut them itself. */
  readonly upgraded = new Set<Duplex>();

  constructor(config: ListenerConfig, dispatch: Dispatch, logger: Logger, options: ListenerOptions = {}) {
    this.config = config;
    this.#dispatch = dispatch;
    this.#logger = logger;
    this.#options = options;
    // noDelay as Node's http.Server has it.
    this.front = net.createServer({ noDelay: true }, (socket) => {
      const sockets = this.#sockets;
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      this.gate.accept(socket);
    });
    this.plain = isPlain(config);
    this.headerEntries = config.max_header_count * 2;
    this.keptEntries = (config.max_header_count + 1) * 2;
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
    /** A request pipelined behind an answer that closes the connection (see `kClosing`): never run. */
    const behindClose = (req: IncomingMessage): boolean => (req.socket as IncomingMessage['socket'] & MarkedSocket)[kClosing] === true;
    /**
     * The status a parsed request is refused with before it reaches a route, or 0 (the usual case: three cheap
     * checks). Node would drop header lines past its own count silently (a Host at the end lost); it keeps one
     * more than the limit here, so that a longer list is seen and refused whole. Node's own answers (the bare 400
     * for a missing Host, the silent close on CONNECT) are turned off, so that these go through the app.
     */
    const refusal = (req: PorticoRequest, res: ServerResponse | undefined): number => {
      const version = versionRefusal(req);
      if (version !== 0) return version;
      const entries = req.rawHeaders.length;
      if (entries > this.headerEntries || (entries >= this.keptEntries && cutByParser(req, entries))) return 431;
      if (req.declined !== 0) {
        if (req.declined === 2) return 405;
        // The upgrade is ignored (RFC 9110 §7.8) and the request answered; Node stopped reading the connection's
        // bytes after it, so the connection closes once the answer is out.
        if (res !== undefined) res.shouldKeepAlive = false;
        // llhttp still took it for an upgrade, so Node reports no error in its body: a malformed one is seen here.
        watchParserStops(req, () => {
          logger.debug({ remote: req.socket.remoteAddress }, 'client error 400 (malformed body behind a declined upgrade)');
          answerClientError(req.socket, 400, dispatch.serverHeader());
        });
      }
      // RFC 9112 §3.2: an HTTP/1.1 request without Host gets 400.
      if (req.headers.host === undefined && req.httpVersionMinor === 1 && req.httpVersionMajor === 1) return 400;
      // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (an HTTP/1.0 hop before
      // Portico read its body another way). Refused with 400 and the connection closed, as nginx does.
      if (req.httpVersionMinor === 0 && req.headers['transfer-encoding'] !== undefined) return 400;
      return 0;
    };
    const listener = this;
    const server = http.createServer(
      {
        IncomingMessage: PorticoRequest,
        // Every answer echoes its request's X-Request-Id (see http/echo.ts).
        ServerResponse: PorticoResponse as unknown as typeof ServerResponse<PorticoRequest>,
        maxHeaderSize: config.max_header_size,
        requestTimeout: config.request_timeout,
        headersTimeout: headersTimeout(config),
        connectionsCheckingInterval: checkingInterval(config),
        // 0: Node's own per-response keep-alive timer is off; the sweeper closes idle connections instead.
        keepAliveTimeout: 0,
        joinDuplicateHeaders: true,
        requireHostHeader: false,
      },
      function onRequest(req, res) {
        if (behindClose(req)) return;
        const status = refusal(req as PorticoRequest, res);
        if (status !== 0) return dispatch.refuse(req, res, schemeOf(req), status, true);
        if (admit(req, res)) dispatch.request(req, res, schemeOf(req), listener.config.redirect_https ?? 0);
      },
    );
    this.server = server;
    startConnectionChecks(server);
    server.maxHeadersCount = config.max_header_count + 1;
    // Portico answers `Expect: 100-continue` itself, after its own checks (a 413 comes before any 100).
    server.on('checkContinue', function onCheckContinue(req: IncomingMessage, res: ServerResponse) {
      if (behindClose(req)) return;
      const status = refusal(req as PorticoRequest, res);
      if (status !== 0) return dispatch.refuse(req, res, schemeOf(req), status, true);
      if (admit(req, res)) dispatch.request(req, res, schemeOf(req), listener.config.redirect_https ?? 0);
    });
    // Any other expectation: 417 (RFC 9110 §10.1.1), Portico's page; the connection stays (as nginx's).
    server.on('checkExpectation', function onCheckExpectation(req: IncomingMessage, res: ServerResponse) {
      if (behindClose(req)) return;
      const status = refusal(req as PorticoRequest, res);
      if (status !== 0) return dispatch.refuse(req, res, schemeOf(req), status, true);
      if (admit(req, res)) dispatch.refuse(req, res, schemeOf(req), 417, false);
    });
    const sweeper = new KeepAliveSweeper(server, sweepTimeout(config), config.send_timeout, (socket) =>
      logger.info({ remote: connectionPeer(socket) }, 'client took nothing of its answer for send_timeout; connection closed'),
    );
    this.sweeper = sweeper;
    // Every connection the HTTP server takes (plain, or HTTP/1.1 over TLS) is watched for idleness and stalls.
    server.on('connection', (socket: Socket) => {
      sweeper.watch(socket);
      // A declined upgrade's malformed body: Node's parser stops there without a 'clientError' (node-internals.ts);
      // watched only for such requests (see `refusal`), this puts the part that must come first in place.
      prepareParserWatch(socket);
    });
    // Every accepted connection passes the gate first (limits, PROXY header); TLS and HTTP see only those admitted.
    this.gate = new ConnectionGate(config, logger, dispatch.trustedProxies, dispatch.serverHeader, (socket) => this.accept(socket));
    const upgraded = this.upgraded;
    server.on('upgrade', function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer) {
      // A tunnel may be quiet for as long as its ends like: it is no longer an idle HTTP connection.
      sweeper.upgraded(socket as Socket);
      socket.on('error', () => socket.destroy());
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
      dispatch.upgrade(req, socket, head, schemeOf(req), refusal(req as PorticoRequest, undefined));
    });
    server.on('clientError', (err: NodeJS.ErrnoException & ParserError, socket: Socket) => {
      if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? overflowStatus(err, socket) : clientErrorStatus(err);
      logger.debug({ code: err.code, remote: socket.remoteAddress }, `client error ${status}`);
      const requestId = newRequestId();
      // HTTP/2 by prior knowledge on a listener without http2: told in HTTP/2, which the client reads.
      if (err.code !== 'HPE_PAUSED_H2_UPGRADE' || !refusePreface(socket, err.rawPacket)) answerClientError(socket, status, dispatch.serverHeader(), requestId);
      dispatch.parserRefused(socket, status, refusedLine(err, socket), requestId);
    });
    if (config.tls !== undefined) this.secure = this.#secureStage(config);
  }

  #secureStage(config: ListenerConfig): SecureStage {
    const dispatch = this.#dispatch;
    return new SecureStage(
      config,
      {
        certificates: () => dispatch.certificates(),
        http1: (socket) => this.server.emit('connection', socket),
        request: (req, res) => {
          limitRequestTime(req, res, this.config.request_timeout);
          dispatch.request(req, res, 'https');
        },
        refuse: (req, res, status) => dispatch.refuse(req, res, 'https', status, false),
        serverHeader: () => dispatch.serverHeader(),
        handshakes: () => dispatch.handshakes?.(),
        // Read when a TLS server is made (a reload's): the keys of the moment (see `Listeners.setTicketKeys`).
        ticketKeys: () => this.#options.ticketKeys,
      },
      this.#logger,
    );
  }

  /**
   * Takes a connection the gate admitted: TLS first on a TLS listener, then HTTP; on a plain listener with `http2`
   * on, HTTP/2 when it opens with the preface, else HTTP/1.1.
   */
  accept(socket: Socket): void {
    const config = this.config;
    if (config.tls !== undefined) return this.secure!.accept(socket);
    if (config.http2 === false) return this.#http1(socket);
    const cleartext = (this.#cleartext ??= this.#cleartextStage(config));
    const undecided = this.#undecided;
    undecided.add(socket);
    socket.once('close', () => undecided.delete(socket));
    whenPrefaceKnown(socket, config.header_timeout > 0 ? config.header_timeout : 30_000, (h2) => {
      undecided.delete(socket);
      if (h2) cleartext.accept(socket);
      else this.#http1(socket);
    });
  }

  #http1(socket: Socket): void {
    this.server.emit('connection', socket);
    // Paused after a PROXY header or the preface check (bytes put back): Node's HTTP server does not resume it.
    if (socket.isPaused()) socket.resume();
  }

  #cleartextStage(config: ListenerConfig): H2Stage {
    const dispatch = this.#dispatch;
    return new H2Stage(
      config,
      {
        request: (req, res) => {
          limitRequestTime(req, res, this.config.request_timeout);
          dispatch.request(req, res, 'http', this.config.redirect_https ?? 0);
        },
        refuse: (req, res, status) => dispatch.refuse(req, res, 'http', status, false),
      },
      this.#logger,
    );
  }

  /**
   * Binds, or listens on an inherited socket (an upgrade: another process accepts on it too until it stops); rejects
   * with PORTICO_LISTEN_FAILED (the system's error as its cause).
   */
  listen(logger: Logger, inherited?: InheritedSocket): Promise<BoundAddress> {
    const { front: server, config } = this;
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        this.sweeper.stop();
        const reason = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
        reject(new PorticoError('PORTICO_LISTEN_FAILED', `cannot listen on ${config.addr.text}: ${reason}`, { cause: err }));
      });
      const { reusePort, ports } = this.#options;
      const port = config.addr.port === 0 ? (ports?.get(config.addr.text) ?? 0) : config.addr.port;
      // reusePort: this process's own socket (exclusive: not node:cluster's shared one); Node ≥ 22.12 only.
      const options = reusePort === true ? { host: config.addr.host, port, reusePort: true, exclusive: true } : { host: config.addr.host, port };
      const bound = () => {
        server.removeAllListeners('error');
        server.on('error', (err) => logger.error({ err }, 'listener error'));
        const address = server.address();
        const port = typeof address === 'object' && address !== null ? address.port : config.addr.port;
        this.boundIp = typeof address === 'object' && address !== null ? address.address : undefined;
        this.address = { host: config.addr.host, port };
        resolve(this.address);
      };
      if (inherited === undefined) server.listen(options, bound);
      // Node's net.Server.listen takes a TCP handle as it is (already bound and listening: listen(2) again is harmless).
      else server.listen(inherited.handle, bound);
    });
  }

  /**
   * Whether `config` names this listener's address: the same text (`127.0.0.1:0` stays the port the system
   * chose), or the port it is bound to on the address it is bound to (`ip`: what `config`'s host binds, see
   * `bindAddress`), so that `localhost:8080` after `127.0.0.1:8080` keeps the socket rather than fail to bind it.
   */
  serves(config: ListenerConfig, ip: string | undefined): boolean {
    if (config.addr.text === this.config.addr.text) return true;
    if (config.addr.port === 0 || config.addr.port !== this.address?.port) return false;
    if (config.addr.host === this.config.addr.host) return true;
    return ip !== undefined && this.boundIp !== undefined && sameIp(ip, this.boundIp);
  }

  /** Takes a reloaded config's limits for this address: new connections and requests see them. */
  apply(config: ListenerConfig): void {
    this.config = config;
    this.plain = !this.stopping && isPlain(config);
    this.headerEntries = config.max_header_count * 2;
    this.keptEntries = Math.min(this.keptEntries, (config.max_header_count + 1) * 2);
    const server = this.server;
    // Read for each new connection's parser; older connections keep theirs (see `keptEntries`).
    server.maxHeadersCount = config.max_header_count + 1;
    // Node reads it for each new connection's parser (not in its types: it is the constructor's option, kept).
    (server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = config.max_header_size;
    server.requestTimeout = config.request_timeout;
    server.headersTimeout = headersTimeout(config);
    this.sweeper.setTimeout(sweepTimeout(config), config.send_timeout);
    this.gate.limits = config;
    if (config.tls !== undefined) {
      if (this.secure === undefined) this.secure = this.#secureStage(config);
      else this.secure.apply(config);
    }
    this.#cleartext?.apply(config);
  }

  /**
   * Starts closing: no new connections; busy ones close as soon as their answer is out; idle ones close now, or,
   * with `lingerIdle` (an upgrade: another process accepts on the same socket), answer their next request with
   * `Connection: close` and are closed only by their keep-alive timeout or the grace period's end.
   */
  close(lingerIdle = false): Promise<void> {
    this.stopping = true;
    this.plain = false;
    const closed = new Promise<void>((resolve) => {
      // The front's callback comes once every connection it accepted is closed.
      if (!this.front.listening) return resolve();
      this.front.close(() => resolve());
    });
    // The HTTP server listens on nothing: closing it stops its timeout checks and closes its idle connections
    // (lingering, that waits for the end).
    if (!lingerIdle) this.server.close();
    // Like an idle HTTP/1.1 connection: nothing asked, nothing lost (lingering, it is told on its first request).
    if (!lingerIdle) for (const socket of this.#undecided) socket.destroy();
    const sessions = this.secure?.close();
    const cleartext = this.#cleartext?.close();
    // Connections that become idle during the grace period are closed as soon as they do, not after the timeout.
    this.sweeper.drain(!lingerIdle);
    // Tunnels are not the HTTP server's any more: wait for them too, or they outlive the close.
    const tunnels = [...this.upgraded].map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
    return Promise.all([closed, sessions, cleartext, ...tunnels]).then(() => {
      if (lingerIdle) this.server.close();
      this.sweeper.stop();
    });
  }

  /** The grace period is over: cuts every connection and tunnel still open. */
  cut(): void {
    this.server.closeAllConnections();
    this.secure?.cut();
    this.#cleartext?.cut();
    for (const socket of this.upgraded) socket.destroy();
    for (const socket of this.#sockets) socket.destroy();
  }
}

/** Closes a raw socket handle received over IPC and not used (libuv's handles have `close()`). */
function closeHandle(handle: object): void {
  (handle as { close?: () => void }).close?.();
}

/**
 * The IP address a listen host binds: an IP itself, a name as `listen()` resolves it (`dns.lookup`, its first
 * answer); undefined when the name does not resolve (binding it then fails with its own error).
 */
async function bindAddress(host: string): Promise<string | undefined> {
  if (net.isIP(host) !== 0) return host;
  try {
    return (await lookup(host)).address;
  } catch {
    return undefined;
  }
}

/** Whether two IP addresses are the same one, whatever their spelling (`::1`, `0:0:0:0:0:0:0:1`). */
function sameIp(a: string, b: string): boolean {
  const family = net.isIP(a);
  if (family === 0 || family !== net.isIP(b)) return false;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  const list = new net.BlockList();
  list.addAddress(a, type);
  return list.check(b, type);
}

/** A reload's listeners, bound but not yet serving the new config: `commit()` makes them the listeners. */
export interface ListenerPlan {
  /**
   * Makes the plan the listeners, at once; the promise resolves when the addresses no longer listed have closed
   * (their connections and tunnels are cut after `graceMs`).
   */
  commit(graceMs?: number): Promise<void>;
}

/** The set of listening sockets of one Portico process. */
export class Listeners {
  #configs: readonly ListenerConfig[];
  readonly #dispatch: Dispatch;
  readonly #logger: Logger;
  readonly #options: ListenerOptions;
  #listeners: Listener[] = [];
  /** Listeners a reload removed, still draining: `stop()` waits for them too. */
  readonly #retiring = new Set<Promise<void>>();
  /** The listeners of `#retiring` (their connections still count as open). */
  readonly #draining = new Set<Listener>();

  constructor(configs: readonly ListenerConfig[], dispatch: Dispatch, logger: Logger, options: ListenerOptions = {}) {
    this.#configs = configs;
    this.#dispatch = dispatch;
    this.#logger = logger;
    // A copy: `setTicketKeys` changes it, and every listener made later reads it.
    this.#options = { ...options };
  }

  /**
   * New session-ticket keys (48 bytes; a cluster's rotation) for every TLS listener, now and made later. Node's
   * TLS server holds one key: a ticket issued under the previous one makes a full handshake.
   */
  setTicketKeys(keys: Buffer): void {
    this.#options.ticketKeys = keys;
    for (const listener of [...this.#listeners, ...this.#draining]) listener.secure?.setTicketKeys(keys);
  }

  /**
   * Binds every listener, or listens on the inherited socket its address names (an upgrade; see
   * `InheritedSocket`); if one fails, the ones already bound are closed and the error is thrown. Inherited sockets
   * no config names are closed (in this process: the one that sent them keeps its own).
   */
  async start(inherited: readonly InheritedSocket[] = []): Promise<void> {
    const plan = await this.prepare(this.#configs, inherited);
    await plan.commit();
  }

  /** The listening sockets with their addresses, to hand to a new Portico process (an upgrade). */
  sockets(): InheritedSocket[] {
    const sockets: InheritedSocket[] = [];
    for (const listener of this.#listeners) {
      const handle = listeningHandle(listener.front);
      if (handle === undefined || listener.address === undefined) continue;
      sockets.push({ text: listener.config.addr.text, host: listener.address.host, port: listener.address.port, handle });
    }
    return sockets;
  }

  /**
   * Binds the addresses of `configs` that are not bound yet, keeping the others (see `Listener.serves`). Nothing
   * changes until the plan is committed; if an address cannot be bound, whatever was bound for the plan is closed
   * and the error (PORTICO_LISTEN_FAILED) is thrown.
   */
  async prepare(configs: readonly ListenerConfig[], inherited: readonly InheritedSocket[] = []): Promise<ListenerPlan> {
    const current = new Set(this.#listeners);
    const handed = new Set(inherited);
    const next: Array<{ listener: Listener; config: ListenerConfig }> = [];
    const added: Listener[] = [];
    try {
      for (const config of configs) {
        const ip = [...current].some((listener) => listener.config.addr.text !== config.addr.text && listener.address?.port === config.addr.port)
          ? await bindAddress(config.addr.host)
          : undefined;
        const kept = [...current].find((listener) => listener.serves(config, ip));
        if (kept !== undefined) {
          current.delete(kept);
          next.push({ listener: kept, config });
          continue;
        }
        const listener = new Listener(config, this.#dispatch, this.#logger, this.#options);
        added.push(listener);
        const socket = [...handed].find((candidate) => inheritedFor(config, candidate));
        if (socket !== undefined) handed.delete(socket);
        await listener.listen(this.#logger, socket);
        next.push({ listener, config });
      }
    } catch (err) {
      await Promise.all(added.map((listener) => listener.close()));
      throw err;
    } finally {
      for (const socket of handed) closeHandle(socket.handle);
    }
    const removed = [...current.values()];
    return {
      commit: (graceMs = 10_000) => {
        for (const { listener, config } of next) if (listener.config !== config) listener.apply(config);
        this.#configs = configs;
        this.#listeners = next.map((entry) => entry.listener);
        for (const listener of removed) this.#draining.add(listener);
        const closing: Promise<void> = this.#close(removed, graceMs).then(
          () => {
            this.#retiring.delete(closing);
            for (const listener of removed) this.#draining.delete(listener);
          },
          (err: unknown) => {
            this.#retiring.delete(closing);
            for (const listener of removed) this.#draining.delete(listener);
            this.#logger.error({ err }, 'closing a removed listener failed');
          },
        );
        this.#retiring.add(closing);
        return closing;
      },
    };
  }

  /** Client connections open now, on every listener (those a reload removed that still drain included). */
  get openConnections(): number {
    let open = 0;
    for (const listener of this.#listeners) open += listener.open;
    for (const listener of this.#draining) open += listener.open;
    return open;
  }

  /** The bound addresses, in config order (a port of 0 shows the one the system chose). */
  get addresses(): readonly BoundAddress[] {
    return this.#listeners.map((listener) => listener.address!);
  }

  /**
   * Stops accepting, closes idle keep-alive connections at once (and each busy one as soon as its answer is
   * out), lets requests in flight finish for up to `graceMs`, then cuts whatever is left. With `lingerIdle` (the
   * old process of an upgrade), idle keep-alive connections are not closed at once but told `Connection: close`
   * on their next answer: a client sending on one just as it closed would see an error (HAProxy before 2.4 did
   * the same on a soft stop).
   */
  async stop(graceMs = 10_000, lingerIdle = false): Promise<void> {
    const all = this.#listeners;
    this.#listeners = [];
    await Promise.all([this.#close(all, graceMs, lingerIdle), ...this.#retiring]);
  }

  async #close(listeners: readonly Listener[], graceMs: number, lingerIdle = false): Promise<void> {
    if (listeners.length === 0) return;
    const closing = Promise.all(listeners.map((listener) => listener.close(lingerIdle)));
    const timer = setTimeout(() => {
      for (const listener of listeners) listener.cut();
    }, graceMs);
    await closing;
    clearTimeout(timer);
  }
}
