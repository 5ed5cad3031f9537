/**
 * The Node internals Portico reads, in one place. Each is here for a measured reason, has a fallback when it is
 * missing, and is checked by `test/unit/node-internals.test.ts`, which fails loudly when a Node release
 * changes it (so the fallback is never taken silently).
 *
 * - `socket._httpMessage`: the response a connection is writing. Node's own `closeIdleConnections()` reads it.
 *   The keep-alive sweeper uses it to tell a busy connection from an idle one, and to make an answer not yet
 *   started say `Connection: close` on shutdown. Replacing Node's per-response keep-alive timer by this sweep was
 *   worth about 4% of a small static answer (bench/RESULTS.md, "Static files — 19:57–21:30").
 * - `socket.parser.maxHeaderPairs`: how many header entries a connection's parser keeps (its server's
 *   `maxHeadersCount` when the connection opened). A reload may raise the limit for new connections only; a request
 *   on an older one that filled its parser's count may have lost lines, and is refused instead of served cut.
 * - `socket._handle.writeQueueSize`: bytes of the write in progress the kernel has not taken yet. The send
 *   timeout's progress: a large write counts as written only once whole, but the kernel takes it piece by piece
 *   from a slow reader. Without it, progress is seen per completed write (a 64 KB chunk of a file).
 * - The HTTP server's connections list (symbol `http.server.connections`): the parsers inside a request, which
 *   Node keeps for its header and request timeouts. Without it a stalled request head is cut after the keep-alive
 *   timeout instead of answered 408.
 * - `tlsSocket._parent`: the accepted socket a server-side TLS socket wraps. What the TLS stage noted on the
 *   accepted socket when the handshake began (the certificate store of that moment) is read through it when the
 *   handshake is done: a TLS 1.3 client may send its request before that, and a reload may come in between.
 * - `socket._handle.readStop()` / `readStart()`: restarts reading on the accepted socket under a TLS one. Node's
 *   HTTP/2 session stops reading while a write of its is in progress, so when a peer stops reading and then
 *   closes, the close is never read and the session and its streams (and what they hold upstream) stay for good.
 *   The h2 stall watch (`h2-stall.ts`) restarts reading on such a stuck connection. Without it, such a session is
 *   closed by send_timeout instead.
 * - The connection parser's `execute()` and its `[HTTPParser.kOnExecute]` callback (`HTTPParser` from
 *   `_http_common`), and `getCurrentBuffer()`: how many bytes the parser took of each read. Node reports a parse
 *   error only when llhttp did not take the request for an upgrade (`node_http_parser.cc`, `Parser::Execute`:
 *   `if (!parser_.upgrade && err != HPE_OK)`), and llhttp does so on `Upgrade` + `Connection: upgrade` whatever
 *   Portico decides; a malformed body behind an upgrade Portico declines comes back as a short count of bytes
 *   taken, with no 'clientError'. `watchParserStops` sees that count. Without these, such a request waits for
 *   request_timeout (408).
 * - The HTTP server starts that list and its periodic header/request timeout check on its own 'listening' event.
 *   Portico's HTTP servers listen on nothing (a `net.Server` accepts and hands them connections), so the event
 *   is emitted for them once; without it a stalled request head would never get its 408.
 * - `server._handle`: a listening `net.Server`'s socket (libuv's TCP handle). An upgrade of Portico sends it to the
 *   new process over IPC as the raw handle (`child.send(message, handle)`: Node's "net.Native"), which the new
 *   process then listens on with `server.listen(handle)`. Sent as a `net.Server` instead, Node would make the
 *   receiving side accept at once on a server of its own with no connection listener, before the new Portico is
 *   ready: connections taken then would hang. There is no fallback: without it an upgrade fails (the old process
 *   keeps serving).
 */
import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type { Server } from 'node:net';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

/** What the sweeper reads of the response a socket is writing. */
export interface SocketResponse {
  headersSent?: boolean;
  writableFinished?: boolean;
  shouldKeepAlive?: boolean;
}

/** The response the connection is writing now (`null`/`undefined` when none). */
export function responseOnSocket(socket: Socket): SocketResponse | null | undefined {
  return (socket as Socket & { _httpMessage?: SocketResponse | null })._httpMessage;
}

type ConnectionsList = { active(): Array<{ socket?: unknown }> };

/** The description of the symbol under which Node's HTTP server keeps its connections list. */
export const CONNECTIONS_SYMBOL = 'http.server.connections';

/**
 * The sockets whose parser is inside a request (between its first byte and its end), or `undefined` when this
 * Node has no such list (or it only appears once the server listens).
 */
export function requestsBeingReceived(server: Server): ReadonlySet<unknown> | undefined {
  const key = Object.getOwnPropertySymbols(server).find((symbol) => symbol.description === CONNECTIONS_SYMBOL);
  const list = key === undefined ? undefined : (server as unknown as Record<symbol, ConnectionsList | undefined>)[key];
  if (list === undefined || typeof list.active !== 'function') return undefined;
  const sockets = new Set<unknown>();
  for (const parser of list.active()) sockets.add(parser.socket);
  return sockets;
}

/** How many `rawHeaders` entries the connection's parser keeps (undefined when this Node does not say). */
export function parserHeaderPairs(socket: Socket): number | undefined {
  const kept = (socket as Socket & { parser?: { maxHeaderPairs?: number } | null }).parser?.maxHeaderPairs;
  return typeof kept === 'number' ? kept : undefined;
}

/** Bytes of the write in progress that the kernel has not taken yet (0 when this Node or handle does not say). */
export function queuedInKernelWrite(socket: Socket): number {
  const queued = (socket as Socket & { _handle?: { writeQueueSize?: unknown } | null })._handle?.writeQueueSize;
  return typeof queued === 'number' ? queued : 0;
}

/** Restarts reading on a socket whose reader stopped (see above), so that a peer's FIN or RST is seen; false when this Node does not allow it. */
export function probePeer(socket: Socket): boolean {
  const handle = (socket as Socket & { _handle?: { reading?: unknown; readStop?: unknown; readStart?: unknown } | null })._handle;
  if (handle === null || handle === undefined || typeof handle.readStop !== 'function' || typeof handle.readStart !== 'function') return false;
  // Only a socket that is meant to be reading: one paused on purpose stays paused.
  if (handle.reading !== true) return false;
  (handle.readStop as () => number).call(handle);
  (handle.readStart as () => number).call(handle);
  return true;
}

/** Starts an unlistened HTTP server's connection tracking and timeout checks (see above). */
export function startConnectionChecks(server: Server): void {
  server.emit('listening');
}

/** The accepted socket a server-side TLS socket wraps (`undefined` when this Node does not say). */
export function wrappedSocket(socket: TLSSocket): Socket | undefined {
  const parent = (socket as TLSSocket & { _parent?: unknown })._parent;
  return parent !== null && typeof parent === 'object' ? (parent as Socket) : undefined;
}

/** The parts of Node's HTTP parser (`HTTPParser` in `_http_common`) that `watchParserStops` uses. */
interface ConnectionParser {
  [key: number]: unknown;
  execute?: unknown;
  getCurrentBuffer?: unknown;
  incoming?: IncomingMessage | null;
  [kWatched]?: true;
}

const kWatched = Symbol('portico.parserWatched');
const kStops = Symbol('portico.parserStops');

/** The key of the callback Node's C++ parser calls after each read it parsed itself, or undefined when this Node has none. */
export const PARSER_ON_EXECUTE: number | undefined = (() => {
  try {
    const key = (createRequire(import.meta.url)('_http_common') as { HTTPParser?: { kOnExecute?: unknown } }).HTTPParser?.kOnExecute;
    return typeof key === 'number' ? key : undefined;
  } catch {
    return undefined;
  }
})();

/** What a watched socket is told: the request to look at, and what to do when the parser stopped inside it. */
interface Stops {
  req: IncomingMessage;
  stopped(req: IncomingMessage): void;
}

/**
 * Tells the socket's watch, once, when the parser took fewer bytes than it was given (`taken` of `given()`) inside
 * the watched request, not yet complete: the parser stopped there without an error (see above) and will take
 * nothing more. `given` is asked only then (in C++'s way in, it copies the read).
 */
function stoppedShort(parser: ConnectionParser, socket: { [kStops]?: Stops } | null | undefined, taken: unknown, given: () => number): void {
  const stops = socket?.[kStops];
  if (socket === null || socket === undefined || stops === undefined || typeof taken !== 'number') return;
  const req = parser.incoming;
  if (req !== stops.req || req.complete) return;
  if (taken >= given()) return;
  // Once: the parser stays stopped, and takes nothing of what may still come.
  delete socket[kStops];
  stops.stopped(req);
}

/** The socket's parser, when this Node has the parts the watch uses (see above). */
function watchableParser(socket: Socket): ConnectionParser | undefined {
  const parser = (socket as Socket & { parser?: ConnectionParser | null }).parser;
  if (parser === null || parser === undefined || PARSER_ON_EXECUTE === undefined) return undefined;
  const ok = typeof parser[PARSER_ON_EXECUTE] === 'function' && typeof parser.execute === 'function' && typeof parser.getCurrentBuffer === 'function';
  return ok ? parser : undefined;
}

/**
 * The part of the watch that must be in place before a request is parsed: bytes that come as 'data' events (put
 * back with `unshift`, or from a stream Node cannot consume) are given to `parser.execute()`, whose count of bytes
 * taken is seen only by a wrapper around it. Parsers are pooled and reused: the wrapper is put on each parser once,
 * and asks the socket of the moment whether it watches a request (`watchParserStops`), so a connection whose
 * requests are all plain costs one check here and nothing per read. Call it from the HTTP server's 'connection'
 * event, after Node's own listener gave the socket its parser. Returns false when this Node does not have the parts.
 */
export function prepareParserWatch(socket: Socket): boolean {
  const parser = watchableParser(socket);
  if (parser === undefined) return false;
  if (parser[kWatched] !== true) {
    parser[kWatched] = true;
    const parse = parser.execute as (data: Buffer) => unknown;
    parser.execute = function watchedExecute(this: ConnectionParser & { socket?: { [kStops]?: Stops } | null }, data: Buffer) {
      const taken = parse.call(this, data);
      stoppedShort(this, this.socket, taken, () => data.length);
      return taken;
    };
  }
  return true;
}

/**
 * Calls `stopped(req)` when the connection's parser stops short inside `req`, a request llhttp took for an upgrade
 * (see above): it took fewer bytes than it was given before the request was complete, which, Node reporting no
 * error for it, is a parse error. Called while `req` is being parsed (from its 'request' event), for the requests
 * that need it only: it watches bytes Node reads off the socket's handle in C++ (then calling the parser's
 * `kOnExecute`, which Node looks up after each read, so a callback put in now sees the read under way), and, with
 * `prepareParserWatch`, bytes given to `parser.execute()`. Returns false, watching nothing, when this Node does not
 * have these (such a request then waits for request_timeout).
 */
export function watchParserStops(req: IncomingMessage, stopped: (req: IncomingMessage) => void): boolean {
  const socket = req.socket;
  const parser = watchableParser(socket);
  if (parser === undefined) return false;
  const watchedSocket = socket as Socket & { [kStops]?: Stops };
  if (watchedSocket[kStops]?.req === req) return true;
  watchedSocket[kStops] = { req, stopped };
  const onExecute = parser[PARSER_ON_EXECUTE!] as (taken: unknown) => unknown;
  const currentBuffer = parser.getCurrentBuffer as () => Buffer;
  // Node sets this callback for each connection (and clears it when the parser is freed): wrapped for this one.
  parser[PARSER_ON_EXECUTE!] = function onParserExecute(this: unknown, taken: unknown) {
    stoppedShort(parser, watchedSocket, taken, () => currentBuffer.call(parser).length);
    return onExecute.call(this, taken);
  };
  return true;
}

/** The listening socket's handle of a `net.Server` (`undefined` when it is not listening): see `server._handle` above. */
export function listeningHandle(server: Server): object | undefined {
  return (server as Server & { _handle?: object | null })._handle ?? undefined;
}
