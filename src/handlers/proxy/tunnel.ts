/**
 * WebSocket tunnels. The client's 101 is sent only after the app server answered 101. A tunnel is an attempt
 * like any other: it follows the sticky cookie (and sets it) or the app session's route, waits for capacity under `max_conns` and for a
 * server under `try_duration`, feeds passive health, and is counted on its server (`active`) for as long as it
 * is open, so least_conn weighs it, max_conns caps it, and a drain can wait for it.
 */
import type { Duplex } from 'node:stream';
import type { RequestContext } from '../../http/context.js';
import { RETRY_SOON, sendRawError } from '../../http/send.js';
import type { ServerTarget, UpstreamServer } from '../../upstream/server.js';
import type { Upstream } from '../../upstream/upstream.js';
import { classify, type FailureReason } from './attempt.js';
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

/**
 * Opens a tunnel between the client's socket and an app server, or answers 502/503/504 on the socket. The loop
 * is forward.ts's: `retries` bounds the immediate retries (on a server not yet tried, within `retry_deadline`,
 * when `retry_on` has connect_error); `try_duration` bounds waiting for a server, retries or not.
 */
export async function tunnelWebSocket(o: TunnelOptions, ctx: RequestContext, socket: Duplex, head: Buffer): Promise<void> {
  if (o.preparer.inLoop(ctx)) {
    ctx.status = 508;
    return void sendRawError(socket, 508, { serverHeader: o.serverHeader, errorPages: ctx.errorPages });
  }
  const upstream = o.upstream;
  const config = upstream.config;
  const tried = new Set<number>();
  const pick = { clientIp: ctx.clientAddress(), hashKey: o.hashKey(ctx), random: Math.random };
  const headers = o.preparer.headers(ctx);
  const stickyValue = upstream.pinOf(ctx.req.headers.cookie, ctx.req.url!);
  // The upgrade fields are hop-by-hop and were dropped; this hop asks for the same upgrade itself.
  const path = o.preparer.upstreamPath(ctx);
  const started = Date.now();
  const deadline = started + config.retry_deadline;
  const tryUntil = started + config.try_duration;
  const retryConnect = config.retry_on.includes('connect_error');
  /** No server to try now: waits one try_interval if try_duration allows (true), else false. */
  const waitForServer = async (): Promise<boolean> => {
    if (Date.now() + config.try_interval >= tryUntil) return false;
    await new Promise((resolve) => setTimeout(resolve, config.try_interval));
    tried.clear();
    return true;
  };
  let lastFailure: FailureReason | undefined;
  let attempts = 0;
  // A client that goes away while the app is still answering the upgrade aborts it: else the app's 101 would
  // open a tunnel to nobody, holding the app connection and its place under max_conns for good.
  let abort: AbortController | undefined;
  const onClientGone = () => abort?.abort();
  socket.once('close', onClientGone);
  let status: number;
  const queue = { until: 0 };
  try {
    for (;;) {
      if (socket.destroyed) return;
      const server = upstream.select(tried, pick, stickyValue);
      if (server === 'full') {
        const wait = upstream.waitForCapacity(queue, stickyValue, tried);
        // A client that goes away while waiting leaves the queue.
        const leave = () => wait.cancel();
        socket.once('close', leave);
        const ok = await wait.ready;
        socket.off('close', leave);
        // A turn not taken (the client went away meanwhile) is passed on by the upstream.
        if (socket.destroyed) return;
        if (ok || (await waitForServer())) continue;
        status = 503;
        break;
      }
      if (server === 'unavailable') {
        if (await waitForServer()) continue;
        status = lastFailure === undefined ? 503 : lastFailure === 'timeout' ? 504 : 502;
        break;
      }
      attempts++;
      tried.add(server.id);
      upstream.acquire(server);
      // The tunnel keeps the target it began on, for as long as it is open: a spawned slot's move waits for it.
      const target = server.target!;
      target.users++;
      abort = new AbortController();
      let opened;
      try {
        opened = await target.dispatcher.upgrade({
          path: server.basePath + path,
          method: 'GET',
          headers,
          protocol: 'websocket',
          signal: abort.signal,
        });
      } catch (err) {
        upstream.release(server);
        target.end();
        // The client went away: nothing to answer, and no failure of the app's.
        if (socket.destroyed) return;
        const reason = classify(err as NodeJS.ErrnoException);
        if (o.passiveOn.has(reason)) upstream.recordFailure(server, reason, err);
        lastFailure = reason;
        // Only a connection never made is safe to try again: the app may have seen the upgrade otherwise.
        if (reason === 'connect_error' && ((attempts <= config.retries && retryConnect && Date.now() < deadline) || Date.now() < tryUntil)) continue;
        status = reason === 'timeout' ? 504 : 502;
        break;
      }
      if (socket.destroyed) {
        opened.socket.destroy();
        upstream.release(server);
        target.end();
        return;
      }
      upstream.recordSuccess(server);
      open(ctx, socket, head, opened, upstream, server, target, upstream.stickyCookie(server, stickyValue));
      return;
    }
  } finally {
    socket.off('close', onClientGone);
  }
  ctx.status = status;
  if (!socket.destroyed) {
    sendRawError(socket, status, { serverHeader: o.serverHeader, errorPages: ctx.errorPages, headers: status === 503 ? RETRY_SOON : undefined });
  }
}

function open(
  ctx: RequestContext,
  socket: Duplex,
  head: Buffer,
  opened: { headers: Record<string, string | string[] | undefined>; socket: Duplex },
  upstream: Upstream,
  server: UpstreamServer,
  target: ServerTarget,
  setCookie: string | undefined,
): void {
  const upstreamSocket = opened.socket;
  target.tunnels.add(upstreamSocket);
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
  // The tunnel's connection is no longer one of the pool's: a request waiting for one may go.
  upstream.leavePool(server);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    upstream.release(server, false);
    target.tunnels.delete(upstreamSocket);
    target.end();
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
