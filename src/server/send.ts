/**
 * Sending error and simple responses: the one place that turns a status into what the client sees. An error
 * page shows only the status; nothing about files, stacks or upstreams ever reaches the client.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import { errorPage } from '../errors.js';
import type { RequestContext } from './context.js';

/** Sends the error page for `status` (the site's own page when configured); closes the connection if asked. */
export function sendError(ctx: RequestContext, status: number, headers?: OutgoingHttpHeaders, close = false): void {
  const { res } = ctx;
  ctx.status = status;
  if (res.headersSent) {
    // Too late for a status: make the failure visible instead of a complete-looking response.
    res.destroy();
    return;
  }
  const body = ctx.errorPages?.get(status) ?? errorPage(status);
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Content-Length', body.length);
  res.setHeader('Cache-Control', 'no-store');
  if (ctx.serverHeader !== '') res.setHeader('Server', ctx.serverHeader);
  if (headers !== undefined) for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
  if (close) res.setHeader('Connection', 'close');
  if (ctx.req.method === 'HEAD') {
    res.end();
  } else {
    ctx.bytesSent = body.length;
    res.end(body);
  }
}
