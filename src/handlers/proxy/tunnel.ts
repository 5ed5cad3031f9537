/**
 * WebSocket tunnels. The client's 101 is sent only after the app server answered 101. A tunnel is an attempt
 * like any other: it follows the sticky cookie (and sets it), waits for capacity under `max_conns` and for a
 * server under `try_duration`, feeds passive health, and is counted on its server (`active`) for as long as it
 * is open, so least_conn weighs it, max_conns caps it, and a drain can wait for it.
 */
import type { Duplex } from 'node:stream';
import type { RequestContext } from '../../http/context.js';
import { sendRawError } from '../../http/send.js';
import { readCookie } from '../../http/template.js';
import type { UpstreamServer } from '../../upstream/server.js';
import type { Upstream } from '../../upstream/upstream.js';
import { classify } from './attempt.js';
import type { RequestPreparer } from './prepare.js';

/** What a tunnel needs of its route. */
export interface TunnelOptions {
  readonly upstream: Upstream;
  readonly preparer: RequestPreparer;
  readonly passiveOn: ReadonlySet<string>;
  readonly hashKey: (ctx: RequestContext) => string;
  readonly serverHeader: string;
}

/** Response fields of the app's 101 that are not passed on (they name what runs behind Portico). */
const HIDDEN = new Set(['server', 'x-powered-by']);

/** Opens a tunnel between the client's socket and an app server, or answers 502/503/504 on the socket. */
export async function tunnelWebSocket(o: TunnelOptions, ctx: RequestContext, socket: Duplex, head: Buffer): Promise<void> {
  const upstream = o.upstream;
  const config = upstream.config;
  const tried = new Set<number>();
  const pick = { clientIp: ctx.clientAddress(), hashKey: o.hashKey(ctx), random: Math.random };
  const headers = o.preparer.headers(ctx);
  const stickyValue = config.sticky === undefined ? undefined : readCookie(ctx.req.headers.cookie, config.sticky.cookie);
  // The upgrade fields are hop-by-hop and were dropped; this hop asks for the same upgrade itself.
  const path = o.preparer.upstreamPath(ctx);
  const tryUntil = Date.now() + config.try_duration;
  let lastStatus = 503;
  let attempts = 0;
  while (attempts <= config.retries && !socket.destroyed) {
    const server = upstream.select(tried, pick, stickyValue);
    if (server === 'full') {
      if (await upstream.waitForCapacity()) continue;
      break;
    }
    if (server === 'unavailable') {
      if (Date.now() + config.try_interval >= tryUntil) break;
      await new Promise((resolve) => setTimeout(resolve, config.try_interval));
      tried.clear();
      continue;
    }
    attempts++;
    tried.add(server.id);
    upstream.acquire(server);
    let opened;
    try {
      opened = await server.dispatcher.upgrade({ path: server.basePath + path, method: 'GET', headers, protocol: 'websocket' });
    } catch (err) {
      upstream.release(server);
      const reason = classify(err as NodeJS.ErrnoException);
      if (o.passiveOn.has(reason)) upstream.recordFailure(server);
      lastStatus = reason === 'timeout' ? 504 : 502;
      // Only a connection never made is safe to try elsewhere: the app may have seen the upgrade otherwise.
      if (reason !== 'connect_error') break;
      continue;
    }
    upstream.recordSuccess(server);
    open(ctx, socket, head, opened, upstream, server, upstream.stickyCookie(server, stickyValue));
    return;
  }
  ctx.status = lastStatus;
  if (!socket.destroyed) sendRawError(socket, lastStatus, o.serverHeader);
}

function open(
  ctx: RequestContext,
  socket: Duplex,
  head: Buffer,
  opened: { headers: Record<string, string | string[] | undefined>; socket: Duplex },
  upstream: Upstream,
  server: UpstreamServer,
  setCookie: string | undefined,
): void {
  const upstreamSocket = opened.socket;
  const lines = ['HTTP/1.1 101 Switching Protocols'];
  for (const [name, value] of Object.entries(opened.headers)) {
    if (HIDDEN.has(name.toLowerCase()) || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
  }
  if (setCookie !== undefined) lines.push(`Set-Cookie: ${setCookie}`);
  ctx.status = 101;
  socket.write(lines.join('\r\n') + '\r\n\r\n');
  if (head.length > 0) upstreamSocket.write(head);
  upstreamSocket.pipe(socket);
  socket.pipe(upstreamSocket);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    upstream.release(server);
    upstreamSocket.destroy();
    socket.destroy();
  };
  upstreamSocket.on('error', close);
  socket.on('error', close);
  upstreamSocket.on('close', close);
  socket.on('close', close);
  // One side ended: its FIN was passed on (pipe ends the other), and once that is flushed the tunnel is torn
  // down, as nginx does. Waiting for both halves would leave a tunnel half-open for as long as a peer likes.
  upstreamSocket.once('finish', close);
  socket.once('finish', close);
}
