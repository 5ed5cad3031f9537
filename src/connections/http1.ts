/**
 * The HTTP/1.1 side of a listener, apart from its lifecycle: the request class that decides which requests are
 * upgrades, the status of a head over the size limit, the answer to a request Node's parser refused, and the
 * timeouts a listener's config gives Node's HTTP server and the keep-alive sweep. `listeners.ts` wires them.
 */
import { IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Config } from '../config/load.js';
import { sendRawError } from '../http/send.js';
import { parserHeaderPairs, responseOnSocket } from './node-internals.js';

/** One listener's settings. */
export type ListenerConfig = Config['listen'][number];

/** A request's scheme: `https` when its connection is TLS (the connection, not the listener's config of now). */
export function schemeOf(req: IncomingMessage): 'http' | 'https' {
  return (req.socket as TLSSocket).encrypted === true ? 'https' : 'http';
}

const kUpgrade = Symbol('portico.upgrade');

/**
 * The requests of Portico's listeners. Node hands every request with `Upgrade` and `Connection: upgrade`, and
 * every CONNECT, to the 'upgrade' / 'connect' event with the raw socket, and stops reading the request there (its
 * body included), as soon as an 'upgrade' listener exists. Node decides by reading `req.upgrade` once the head is
 * parsed (Node 20 has no `shouldUpgradeCallback`), so this class answers it: only a WebSocket handshake (a GET) is
 * an upgrade. Any other (h2c, unknown tokens) is a plain request read with its body (`declined` 1), and CONNECT
 * is a plain request too (`declined` 2), refused by `refusal`.
 */
export class PorticoRequest extends IncomingMessage {
  declare [kUpgrade]: boolean | null;
  /** 0; 1: an upgrade Portico ignores (the connection closes after the answer); 2: CONNECT. */
  declare declined: 0 | 1 | 2;
}
PorticoRequest.prototype.declined = 0;
Object.defineProperty(PorticoRequest.prototype, 'upgrade', {
  configurable: true,
  get(this: PorticoRequest): boolean | null {
    const upgrade = this[kUpgrade];
    if (!upgrade) return upgrade;
    if (this.method === 'GET' && (this.headers.upgrade ?? '').toLowerCase() === 'websocket') return true;
    // Decided once: Node reads the field again after each chunk it parses.
    this.declined = this.method === 'CONNECT' ? 2 : 1;
    this[kUpgrade] = false;
    return false;
  },
  set(this: PorticoRequest, value: boolean | null) {
    this[kUpgrade] = value;
  },
});

/**
 * A head over the size limit: 414 when its request line alone is over it, 431 otherwise. Node reports both as
 * HPE_HEADER_OVERFLOW, with the read that passed the limit (`rawPacket`) and where in it parsing stopped
 * (`bytesParsed`). The request line was still going on when no line end comes before that point, in a read that
 * starts the request: the connection's first, or one that begins with a method and a space (a later request on a
 * kept-alive connection). A head that arrived in several reads, and whose last one starts mid-line, gets 431.
 */
export function overflowStatus(err: NodeJS.ErrnoException & { rawPacket?: unknown; bytesParsed?: unknown }, socket: Socket): number {
  const packet = err.rawPacket;
  if (!Buffer.isBuffer(packet)) return 431;
  const parsed = typeof err.bytesParsed === 'number' && err.bytesParsed > 0 ? Math.min(err.bytesParsed, packet.length) : packet.length;
  if (packet.subarray(0, parsed).includes(10)) return 431;
  const first = socket.bytesRead === packet.length;
  return first || /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ /.test(packet.subarray(0, 32).toString('latin1')) ? 414 : 431;
}

/**
 * Whether the connection's parser stopped keeping header lines at this request's count (it kept as many as it
 * may): the request had more lines than were kept, so it is over the limit the parser was made for.
 */
export function cutByParser(req: IncomingMessage, entries: number): boolean {
  const kept = parserHeaderPairs(req.socket);
  return kept !== undefined && kept > 0 && entries >= kept;
}

/**
 * Answers bytes Node's parser refused, after the answers to the requests before them on the connection: written at
 * once, the error would land in the middle of an answer still streaming, or before one not yet begun, and the
 * client would take it for the answer to an earlier request (which the app may have run). Then the connection
 * closes once the answer is out, as Node's own handler does: the socket allows half-open connections, and a client
 * that ignores the answer and keeps its half open must not hold it.
 */
export function answerClientError(socket: Socket, status: number, serverHeader: string, requestId?: string): void {
  // Node hands the connection to the next queued answer (or to none) on each answer's 'finish', before this runs.
  const pending = responseOnSocket(socket) as ServerResponse | null | undefined;
  if (pending !== null && pending !== undefined && !pending.writableFinished) {
    // The answer of a request read whole: the refused bytes came after it.
    if (pending.req.complete) return void pending.once('finish', () => answerClientError(socket, status, serverHeader, requestId));
    // The refused bytes are this request's own body. An answer already begun can only be cut.
    if (pending.headersSent) return void socket.destroy();
  }
  if (!socket.writable) return void socket.destroy();
  sendRawError(socket, status, { serverHeader, headers: requestId === undefined ? undefined : { 'X-Request-Id': requestId } });
  socket.once('finish', () => socket.destroy());
}

/**
 * The status for a request line whose version this HTTP/1 server does not speak, else 0. Node's parser takes
 * `HTTP/2.0` (any other major version it refuses itself) and reads a line without a version (`GET /`, HTTP/0.9's
 * form) as version 0.9, headers and all: 505 for the first and 400 for the second, as nginx does (a major
 * version above 1 is 505; one below is a bad request line). The h2c preface (`PRI * HTTP/2.0`) never gets here:
 * a plain listener with `http2` takes it before the parser, and without, the parser refuses it (answered with an
 * HTTP/2 GOAWAY: see h2-stage.ts).
 */
export function versionRefusal(req: IncomingMessage): number {
  if (req.httpVersionMajor === 1) return 0;
  return req.httpVersionMajor === 0 ? 400 : 505;
}

/** A request line Node's parser refused the request of, as far as it can be read. */
export interface RefusedLine {
  method: string;
  url: string;
  /** `1.1`. */
  version: string;
}

const WHOLE_REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^ \r\n]+) HTTP\/(\d\.\d)\r?$/;

/**
 * The request line of the request Node's parser refused, for its access-log line, when it is known for sure, else
 * `undefined` (logged as `-`): the line of a request whose body was refused (the parser's current request, not
 * complete), or the first line of the read that carried the refusal when that read is the connection's first and
 * holds the whole line (a 414's does not). A later read is not trusted: with pipelining (or a body ending in it) the
 * read also holds the end of the request before, and where the refused one starts is not known without a hook on
 * every request (measured: 2% of the static scenario), which a log line is not worth.
 */
export function refusedLine(err: ParserError, socket: Socket): RefusedLine | undefined {
  const packet = err.rawPacket;
  if (!Buffer.isBuffer(packet)) return undefined;
  const previous = (socket as Socket & { parser?: { incoming?: IncomingMessage | null } | null }).parser?.incoming;
  if (previous !== null && previous !== undefined) {
    // Its body was refused: the request is that one, its line known. Else it was answered: see above.
    return previous.complete ? undefined : { method: previous.method!, url: previous.url!, version: previous.httpVersion };
  }
  if (socket.bytesRead !== packet.length) return undefined;
  let start = 0;
  while (start < 32 && (packet[start] === 13 || packet[start] === 10)) start++;
  const lineEnd = packet.indexOf(10, start);
  if (lineEnd === -1 || lineEnd - start > 16 * 1024) return undefined;
  const m = WHOLE_REQUEST_LINE.exec(packet.toString('latin1', start, lineEnd));
  return m === null ? undefined : { method: m[1]!, url: m[2]!, version: m[3]! };
}

/** Node's parser error, with the bytes it was parsing (`rawPacket`) and where it stopped in them. */
export interface ParserError extends Error {
  code?: string;
  rawPacket?: Buffer;
  bytesParsed?: number;
}

/** The status of an answer to bytes Node's parser refused, by its error code. */
export function clientErrorStatus(err: ParserError): number {
  const code = err.code;
  if (code === 'HPE_HEADER_OVERFLOW') return 431;
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  if (code === 'HPE_URI_TOO_LONG') return 414;
  if (code === 'HPE_INVALID_METHOD' && methodIsToken(err)) return 501;
  return 400;
}

/** RFC 9110 §5.6.2 tchar, by byte. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;

/**
 * Whether the method Node's parser did not know is a well-formed token (RFC 9110 §9.1): a method this server does
 * not implement, 501 (§15.6.2), not a malformed request line, 400. Node (llhttp) knows a fixed list and refuses
 * any other name while reading it; the request line starts after the last line break before where it stopped
 * (a request pipelined behind others) and the token runs to a space, or to the end of what has come so far.
 */
function methodIsToken(err: ParserError): boolean {
  const packet = err.rawPacket;
  if (packet === undefined || err.bytesParsed === undefined) return false;
  let start = Math.min(err.bytesParsed, packet.length);
  while (start > 0 && packet[start - 1] !== 0x0a) start--;
  let end = start;
  while (end < packet.length && packet[end]! < 128 && TCHAR[packet[end]!] === 1) end++;
  if (end === start || (end < packet.length && packet[end] !== 0x20)) return false;
  // A whole request line must be one (`FOO /x HTTP/1.1`): `NOT HTTP AT ALL` is a malformed line, 400, as nginx says.
  const lineEnd = packet.indexOf(0x0a, end);
  return lineEnd === -1 || REQUEST_LINE_REST.test(packet.toString('latin1', end, lineEnd));
}

/** What follows the method on a well-formed request line: one target, one version (a CR before the LF). */
const REQUEST_LINE_REST = /^ [^ \r]+ HTTP\/\d\.\d\r?$/;

/** Node checks header and request timeouts every 30 s by default; check often enough that short limits hold. */
export function checkingInterval(config: ListenerConfig): number {
  return Math.max(100, Math.min(1000, Math.floor(Math.min(config.header_timeout, config.request_timeout) / 4)));
}

/**
 * The time allowed for a request head: header_timeout, but never more than request_timeout (the head is part of
 * the request, and Node refuses a headersTimeout above a non-zero requestTimeout).
 */
export function headersTimeout(config: ListenerConfig): number {
  return config.request_timeout > 0 ? Math.min(config.header_timeout, config.request_timeout) : config.header_timeout;
}

/** With keep-alive off no connection should sit idle; the sweeper still closes leftovers after header_timeout. */
export function sweepTimeout(config: ListenerConfig): number {
  return config.keepalive_timeout > 0 ? config.keepalive_timeout : config.header_timeout || 60_000;
}

export function isPlain(config: ListenerConfig): boolean {
  return config.keepalive_timeout > 0 && config.max_requests_per_conn === 0;
}
