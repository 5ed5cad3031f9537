/**
 * Sending error and simple responses: the one place that turns a status into what the client sees. An error
 * page shows only the status; nothing about files, stacks or upstreams ever reaches the client.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorPage, PorticoError, reasonPhrase } from '../errors.js';
import { grpcStatusOf, grpcWebKind, isGrpc, sendGrpcStatus } from './grpc.js';
import { H2_NO_ERROR, isH2Response, responseCut, type ClientResponse, type H2Response, type RequestContext } from './context.js';

/**
 * Set on a socket once an answer on it says `Connection: close`. Node keeps parsing the bytes already read and
 * emits the requests pipelined behind that answer, although theirs can never be sent; the listener reads this
 * mark and does not run them (their bytes may be what a front-end hop took for the refused request's body).
 */
export const kClosing = Symbol('portico.closing');

/** A socket that may carry the `kClosing` mark. */
export type MarkedSocket = { [kClosing]?: true };

/**
 * Sends the error page for `status` (the site's own page when configured); closes the connection if asked. Over
 * HTTP/2 there is no connection to close for one request (and `Connection` is forbidden there): the request's
 * stream ends with the answer, its unread body refused by a reset (see `endRequestAfterAnswer`).
 */
export function sendError(ctx: RequestContext, status: number, headers?: OutgoingHttpHeaders, close = false): void {
  const { res } = ctx;
  ctx.status = status;
  if (res.headersSent) {
    // Too late for a status: make the failure visible instead of a complete-looking response.
    res.destroy();
    return;
  }
  // A gRPC client reads a status from the trailers, never a page: 200 with grpc-status (14 UNAVAILABLE, …).
  const web = isGrpc(ctx.req.headers) ? undefined : grpcWebKind(ctx.req.headers);
  if (web !== undefined || isGrpc(ctx.req.headers)) {
    sendGrpcStatus(res, grpcStatusOf(status), `${status} ${reasonPhrase(status)} (Portico)`, web);
    if (close && isH2Response(res)) endRequestAfterAnswer(ctx, res);
    return;
  }
  const body = ctx.errorPages?.get(status) ?? errorPage(status);
  // Strict-Transport-Security (set for the site over TLS) stays: it holds for error answers too.
  for (const name of res.getHeaderNames()) if (name !== 'strict-transport-security') res.removeHeader(name);
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Content-Length', body.length);
  res.setHeader('Cache-Control', 'no-store');
  if (ctx.serverHeader !== '') res.setHeader('Server', ctx.serverHeader);
  if (headers !== undefined) for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
  if (close) {
    if (isH2Response(res)) {
      // An HTTP/2 request's socket stands for the session's, which its other streams share: it is never marked.
      endRequestAfterAnswer(ctx, res);
    } else {
      res.setHeader('Connection', 'close');
      const socket = ctx.req.socket as (typeof ctx.req.socket & MarkedSocket) | null;
      if (socket !== null) socket[kClosing] = true;
    }
  }
  if (ctx.req.method === 'HEAD') {
    res.end();
  } else {
    ctx.bytesSent = body.length;
    res.end(body);
  }
}

/**
 * Once the answer is out, stops the client sending the rest of a request body Portico will not read (RFC 9113
 * §8.1: RST_STREAM NO_ERROR after a complete response), as closing the connection does over HTTP/1.
 */
function endRequestAfterAnswer(ctx: RequestContext, res: H2Response): void {
  const stream = res.stream;
  stream.once('finish', () => {
    if (!ctx.req.complete && !stream.closed) stream.close(H2_NO_ERROR);
  });
}

/**
 * Bodies up to this size that are sent many times (cached files, compressed variants) are also kept as latin1
 * strings (one char per byte, so the bytes are unchanged). Node joins a string body to its header string into
 * one string, which the socket writes with a single immediate write(); a Buffer body goes out as a writev of
 * two chunks through a write request. Measured on a 1 KiB answer: about 6% more requests per second. The
 * bound keeps head and body within the 16 KB that Node writes at once from the stack.
 */
const ONE_WRITE_MAX = 12 * 1024;

/** The latin1 string form of a small body that is sent many times (`undefined` when too large to gain). */
export function oneWriteText(body: Buffer): string | undefined {
  return body.length <= ONE_WRITE_MAX ? body.toString('latin1') : undefined;
}

/**
 * Answers with a whole body held in memory (a cached file, a stored response): the head, then the body — in one
 * write when its `text` form is there — or no body for HEAD.
 */
export function sendWhole(ctx: RequestContext, status: number, headers: readonly string[], body: Buffer, text: string | undefined): void {
  const res: ClientResponse = ctx.res;
  ctx.status = status;
  ctx.wholeBody = body;
  res.writeHead(status, headers as string[]);
  if (ctx.req.method === 'HEAD') return void res.end();
  ctx.bytesSent = body.length;
  if (text !== undefined) res.end(text, 'latin1');
  else res.end(body);
}

/** The fields of a 503 that Portico expects to clear soon (an upstream with no server now, a file changing). */
export const RETRY_SOON: Readonly<Record<string, string>> = Object.freeze({ 'Retry-After': '1' });

/** What a raw error answer carries besides its status. */
export interface RawErrorOptions {
  serverHeader: string;
  /** The site's own error pages, when the site is known. */
  errorPages?: ReadonlyMap<number, Buffer> | undefined;
  headers?: Readonly<Record<string, string>> | undefined;
}

/**
 * Answers with an error page on a raw socket (an upgrade that could not be tunnelled, a request Node's parser
 * refused, where no ServerResponse exists) and closes it: the same page, fields and framing as `sendError`.
 */
export function sendRawError(socket: Duplex, status: number, options: RawErrorOptions): void {
  const body = options.errorPages?.get(status) ?? errorPage(status);
  let head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${body.length}\r\nCache-Control: no-store\r\n`;
  if (options.serverHeader !== '') head += `Server: ${options.serverHeader}\r\n`;
  if (options.headers !== undefined) for (const [name, value] of Object.entries(options.headers)) head += `${name}: ${value}\r\n`;
  socket.write(`${head}Connection: close\r\n\r\n`, 'latin1');
  socket.end(body);
}

/** Resolves on the response's next 'drain'; rejects when the client is gone (no drain will ever come). */
export function drained(res: RequestContext['res']): Promise<void> {
  return new Promise((resolve, reject) => {
    if (responseCut(res)) return reject(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the connection'));
    const onDrain = () => {
      res.off('close', onClose);
      resolve();
    };
    const onClose = () => {
      res.off('drain', onDrain);
      reject(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the connection'));
    };
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}
