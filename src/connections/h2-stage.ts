/**
 * The HTTP/2 stage of a listener: an unlistened `http2.Server` that takes connections already decided to be
 * HTTP/2 — a TLS socket whose ALPN chose `h2` (secure.ts), or, on a plain listener with `http2` on, a socket that
 * opened with HTTP/2's connection preface (prior knowledge, "h2c"; RFC 9113 §3.3) — and hands their requests to
 * the listener's dispatch. It keeps the sessions it made, for a graceful close (GOAWAY) and a cut.
 *
 * `whenPrefaceKnown` reads the first bytes of a plain connection to choose: the preface is 24 fixed bytes that
 * no HTTP/1.1 request begins with (its `PRI * HTTP/2.0` line is refused by HTTP/1 parsers), so the two share a
 * port, as nginx's `http2 on` and Envoy's `codec_type: AUTO` do. The `Upgrade: h2c` dance (RFC 7540 §3.2,
 * deprecated by RFC 9113) is not offered, as nginx does not.
 */
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { Http2Settings } from '../config/schema.js';
import { PorticoH2Response } from '../http/echo.js';
import { serveH2, type H2Target } from './h2-session.js';
import { H2StallWatch } from './h2-stall.js';

type ListenerConfig = Config['listen'][number];

function h2Settings(settings: Http2Settings): http2.Settings {
  return {
    maxConcurrentStreams: settings.max_concurrent_streams,
    maxHeaderListSize: settings.max_header_list_size,
    initialWindowSize: settings.initial_window_size,
    maxFrameSize: settings.max_frame_size,
  };
}

/** Settings for the HTTP/2 server of a listener that has HTTP/2 off (it never gets a connection then). */
const http2SettingsOff: Http2Settings = { max_concurrent_streams: 100, max_header_list_size: 16 * 1024 + 32 * 100, initial_window_size: 65_535, max_frame_size: 16_384 };

/**
 * Node's own session limits that would end a well-behaved client's connection, loosened so that Portico's rapid-reset
 * rule (`guardSession`, Envoy's) decides. Node 24 lets go of a cancelled stream only on the next turn of the event
 * loop, so a stream opened in the same read as a cancel finds the count still full and is refused (RST_STREAM
 * ENHANCE_YOUR_CALM); past `maxSessionRejectedStreams` refusals in a row (Node's default: 100) it ended the whole
 * session. nghttp2's reset limit (1000 streams reset by the client, then 33 a second: a gRPC client that cancels
 * 50 calls a second gets GOAWAY INTERNAL_ERROR within a minute) can be set on Node 24, not on Node 20.
 */
const SESSION_LIMITS = { maxSessionRejectedStreams: 10_000, streamResetBurst: 10_000, streamResetRate: 1000 } as const;

/** An idle HTTP/2 session is closed (GOAWAY) after this: keep-alive_timeout, else header_timeout. */
function sessionTimeout(config: ListenerConfig): number {
  return config.keepalive_timeout > 0 ? config.keepalive_timeout : config.header_timeout;
}

/** The HTTP/2 server of a listener and its sessions. */
export class H2Stage {
  readonly #h2: http2.Http2Server;
  /** Open HTTP/2 sessions, closed on shutdown (HTTP/1.1 connections are the http.Server's). */
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  /** send_timeout for HTTP/2 streams and sessions, and disconnects Node's session does not notice. */
  readonly #stalls: H2StallWatch;
  /** Set by `close`: a session made after it (a connection that chose HTTP/2 late) is closed at once (GOAWAY). */
  #closing = false;

  constructor(config: ListenerConfig, target: H2Target, logger: Logger) {
    this.#stalls = new H2StallWatch(config.send_timeout, (what, session, streams) =>
      logger.info(
        { remote: session.socket?.remoteAddress, streams },
        what === 'session' ? 'client took nothing of its answers for send_timeout; http2 connection closed' : 'client took nothing of its answers for send_timeout; http2 streams reset',
      ),
    );
    const h2 = http2.createServer({
      // Every answer echoes its request's X-Request-Id (see http/echo.ts).
      Http2ServerResponse: PorticoH2Response as typeof http2.Http2ServerResponse,
      settings: h2Settings(config.http2 === false ? http2SettingsOff : config.http2),
      // Pseudo-header fields count as lines here; four of them at most in a request.
      maxHeaderListPairs: config.max_header_count + 4,
      maxSessionInvalidFrames: 100,
      ...SESSION_LIMITS,
    });
    h2.setTimeout(sessionTimeout(config));
    h2.on('timeout', (session: http2.ServerHttp2Session) => session.close());
    h2.on('session', (session: http2.ServerHttp2Session) => {
      this.#sessions.add(session);
      session.once('close', () => this.#sessions.delete(session));
      this.#stalls.watch(session);
      if (this.#closing) session.close();
    });
    h2.on('sessionError', (err: Error) => logger.debug({ err }, 'http2 session error'));
    // Requests (after the read that carried them: see h2RequestHandler), expectations, session guards.
    serveH2(h2, target);
    this.#h2 = h2;
  }

  /** Takes a connection that speaks HTTP/2 (a TLS socket that chose `h2`, or a plain one that sent the preface). */
  accept(socket: Socket): void {
    this.#h2.emit('connection', socket);
  }

  /** Takes a reloaded config: new sessions get its settings and timeouts. */
  apply(config: ListenerConfig): void {
    if (config.http2 !== false) this.#h2.updateSettings(h2Settings(config.http2));
    this.#h2.setTimeout(sessionTimeout(config));
    this.#stalls.setTimeout(config.send_timeout);
  }

  /** Shutdown: each session finishes its streams and closes (GOAWAY); new streams are refused. */
  close(): Promise<void> {
    this.#closing = true;
    const sessions = [...this.#sessions].map((session) => new Promise<void>((resolve) => {
      session.once('close', () => resolve());
      session.close();
    }));
    return Promise.all(sessions).then(() => undefined);
  }

  /** The grace period is over: cuts every session. */
  cut(): void {
    for (const session of this.#sessions) session.destroy();
    this.#stalls.stop();
  }
}

/** HTTP/2's connection preface (RFC 9113 §3.4). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * SETTINGS (empty) then GOAWAY HTTP_1_1_REQUIRED (RFC 9113 §7), with a reason: what an HTTP/2 client that opened a
 * connection with the preface is told by a listener that speaks HTTP/1.1 only (an HTTP/1.1 400 it could not read).
 */
const HTTP_1_1_REQUIRED = (() => {
  const reason = Buffer.from('HTTP/2 is off on this listener (set http2: true on it to serve HTTP/2 without TLS)', 'latin1');
  const goaway = Buffer.alloc(9 + 8 + reason.length);
  goaway.writeUIntBE(8 + reason.length, 0, 3);
  goaway[3] = 0x7; // GOAWAY, stream 0, last stream id 0
  goaway.writeUInt32BE(0xd, 13);
  reason.copy(goaway, 17);
  return Buffer.concat([Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]), goaway]);
})();

/**
 * Whether the bytes a plain HTTP/1.1 listener's parser refused open with HTTP/2's preface: the client is told in
 * HTTP/2 (GOAWAY HTTP_1_1_REQUIRED) and the connection closed. False: not a preface, nothing done.
 */
export function refusePreface(socket: Socket, packet: unknown): boolean {
  if (!Buffer.isBuffer(packet) || packet.length < PREFACE.length || packet.compare(PREFACE, 0, PREFACE.length, 0, PREFACE.length) !== 0) return false;
  if (!socket.writable) socket.destroy();
  else socket.end(HTTP_1_1_REQUIRED);
  return true;
}

/**
 * Reads the first bytes of a plain connection until they show whether it opens with HTTP/2's preface, puts them
 * back and calls `decide` (with the socket paused). A client that has said nothing that decides it within
 * `timeoutMs` is disconnected, as a silent HTTP/1.1 client is at header_timeout; one that leaves (or resets the
 * connection: no server has its errors yet, so they are taken here) is forgotten.
 */
export function whenPrefaceKnown(socket: Socket, timeoutMs: number, decide: (h2: boolean) => void): void {
  let seen: Buffer | undefined;
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  const onError = (): void => void socket.destroy();
  const stop = (): void => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('close', stop);
    socket.off('error', onError);
  };
  const onData = (chunk: Buffer): void => {
    seen = seen === undefined ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    const h2 = seen.compare(PREFACE, 0, n, 0, n) === 0;
    // A client writing its preface in pieces: wait for the rest.
    if (h2 && n < PREFACE.length) return;
    stop();
    socket.pause();
    socket.unshift(seen);
    decide(h2);
  };
  socket.on('data', onData);
  socket.on('error', onError);
  socket.once('close', stop);
  // Paused after a PROXY header (the bytes after it put back): a 'data' listener alone would not resume it.
  socket.resume();
}
