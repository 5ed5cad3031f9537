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
 * - The HTTP server's own 'connection' listener (the one its constructor adds): taken off and called by the
 *   listener's connection gate once a connection is admitted (limits, PROXY header), so that the server keeps
 *   listening, closing and timing requests out as ever. A public API (`listeners()`), but which listener is
 *   Node's is Node's business.
 * - `socket._handle.writeQueueSize`: bytes of the write in progress the kernel has not taken yet. The send
 *   timeout's progress: a large write counts as written only once whole, but the kernel takes it piece by piece
 *   from a slow reader. Without it, progress is seen per completed write (a 64 KB chunk of a file).
 * - The HTTP server's connections list (symbol `http.server.connections`): the parsers inside a request, which
 *   Node keeps for its header and request timeouts. Without it a stalled request head is cut after the keep-alive
 *   timeout instead of answered 408.
 */
import type { Server } from 'node:net';
import type { Socket } from 'node:net';

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

/**
 * Takes the HTTP (or TLS) server's own 'connection' listener off the server and returns it, bound: calling it
 * with a socket starts serving that connection, as the 'connection' event would have.
 */
export function takeConnectionListener(server: Server): (socket: Socket) => void {
  const own = server.listeners('connection');
  if (own.length !== 1) throw new Error(`expected the server's one 'connection' listener, found ${own.length}`);
  const listener = own[0] as (this: Server, socket: Socket) => void;
  server.removeListener('connection', listener);
  return (socket: Socket) => listener.call(server, socket);
}

/** Bytes of the write in progress that the kernel has not taken yet (0 when this Node or handle does not say). */
export function queuedInKernelWrite(socket: Socket): number {
  const queued = (socket as Socket & { _handle?: { writeQueueSize?: unknown } | null })._handle?.writeQueueSize;
  return typeof queued === 'number' ? queued : 0;
}
