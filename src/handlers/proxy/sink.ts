/** The contract between forwarding and what consumes a forwarded response (the client, or the cache). */
import type { OutgoingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { RequestContext } from '../../http/context.js';
import type { ReplayableBody, SpooledBody } from './body.js';
import { isH2Response } from '../../http/context.js';
import { GrpcStatus, grpcStatusIn, grpcStatusOf, isGrpc } from '../../http/grpc.js';
import { sendEarlyHints } from './interim.js';
import { ResponseSpool, type SpoolLimits } from './response-spool.js';

/**
 * Where a forwarded response goes: straight to the client, or through the cache (which may store it, share it
 * with collapsed waiters, or swallow a 304). Headers arrive already filtered for the client.
 */
export interface ResponseSink {
  /**
   * The app's answer head (`headers`: what the cache judges and stores) and Portico's fields for this client only
   * (`own`: its sticky Set-Cookie), which go out with this client's answer and nowhere else.
   */
  head(status: number, headers: string[], own: readonly string[]): void;
  /** Returns false when the reader is full; the sink then calls the `drain` function once it can take more. */
  data(chunk: Buffer): boolean;
  /** Gives the sink the function that resumes the origin after `data` returned false. */
  drain(resume: () => void): void;
  /** The answer's end, with the app's trailers (a flat name/value list; empty or absent: none). */
  end(trailers?: readonly string[]): void;
  /** The origin failed after `head`: the response must end visibly broken. */
  fail(err: Error): void;
  /** A 103 Early Hints before `head`, its Link values one per entry (optional: dropped by sinks without it). */
  earlyHints?(links: string[]): void;
}

/**
 * How a forward ended: answered (through the sink), or the error status to answer with. `unreachable`: no server
 * answered at all — every tried one refused, reset or timed out, or none was available (health checks hold them
 * all down) — as opposed to a reachable app's 5xx, a full queue, or an internal error. `intercepted`: the app's
 * own answer had this status (`intercept_errors`) and its body was discarded; `kept` are the fields it keeps.
 */
export type ForwardOutcome =
  | { ok: true }
  | { ok: false; status: 502 | 503 | 504; unreachable: boolean; intercepted?: undefined }
  | { ok: false; status: number; unreachable: false; intercepted: true; kept: OutgoingHttpHeaders | undefined };

/** Per-forward changes to the request headers (the cache drops client validators and adds its own). */
export interface HeaderEdit {
  drop?: ReadonlySet<string>;
  add?: readonly string[];
}

/** A route's response buffering (`proxy.buffer_response`, `response_buffer_memory`): limit 0 turns it off. */
export interface ResponseBuffering extends SpoolLimits {
  readonly logger: Logger;
}

const EVENT_STREAM = /^\s*(?:text\/event-stream\s*(?:;|$)|application\/grpc)/i;

/**
 * Whether an answer must reach the client as it is produced: an event stream (SSE), a gRPC call's, or one whose app said
 * `X-Accel-Buffering: no`. The latter field is Portico's, not the client's: it is taken out of `headers`.
 */
export function unbufferedAnswer(headers: string[]): boolean {
  let unbuffered = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    // Length first: most fields are neither, and this runs for every proxied answer.
    if (name.length === 12 && name.toLowerCase() === 'content-type') {
      if (EVENT_STREAM.test(headers[i + 1]!)) unbuffered = true;
    } else if (name.length === 17 && name.toLowerCase() === 'x-accel-buffering') {
      if (headers[i + 1]!.trim().toLowerCase() === 'no') unbuffered = true;
      headers.splice(i, 2);
      i -= 2;
    }
  }
  return unbuffered;
}

/**
 * The sink that writes to the client. While the client keeps up, chunks go straight through; once it falls
 * behind, what it has not taken is held in a ResponseSpool (memory, then a temporary file) up to the route's
 * limit, so that the app server is read to the end at its own pace. Without buffering (limit 0, SSE,
 * `X-Accel-Buffering: no`), the client's backpressure pauses the upstream.
 */
export class ClientSink implements ResponseSink {
  #resume: (() => void) | null = null;
  #buffered = false;
  #spool: ResponseSpool | null = null;
  constructor(
    readonly ctx: RequestContext,
    readonly buffering: ResponseBuffering,
  ) {}

  head(status: number, appHeaders: string[], own: readonly string[]): void {
    this.ctx.status = status;
    this.#buffered = !unbufferedAnswer(appHeaders) && this.buffering.limit > 0;
    this.ctx.res.writeHead(status, own.length === 0 ? appHeaders : [...appHeaders, ...own]);
  }

  data(chunk: Buffer): boolean {
    // What was handed to the client's connection, not what was taken from the app: a spool counts its own.
    if (this.#spool !== null) return this.#spool.push(chunk);
    this.ctx.bytesSent += chunk.length;
    if (this.ctx.res.write(chunk)) return true;
    if (this.#buffered) {
      this.#spool = new ResponseSpool(this.ctx.res, this.buffering, this.#resume, (err) => this.#spoolFailed(err), this.ctx);
      return true;
    }
    // A 'drain' listener only when the client is slow: most responses never need one.
    if (this.#resume !== null) this.ctx.res.once('drain', this.#resume);
    return false;
  }

  drain(resume: () => void): void {
    this.#resume = resume;
  }

  earlyHints(links: string[]): void {
    sendEarlyHints(this.ctx, links);
  }

  end(trailers?: readonly string[]): void {
    if (this.#spool !== null) return this.#spool.end();
    const res = this.ctx.res;
    if (trailers !== undefined && trailers.length > 0) {
      this.ctx.grpcStatus = grpcStatusIn(trailers);
      const fields = trailerFields(trailers);
      // No body: Node ends the stream with the HEADERS frame, where trailers cannot follow. The fields go in that
      // frame (gRPC's Trailers-Only answer); once the head is out, they are trailers.
      if (!res.headersSent) for (const [name, value] of Object.entries(fields)) res.setHeader(name, value!);
      else res.addTrailers(fields);
    }
    res.end();
  }

  fail(err?: Error): void {
    this.#spool?.release();
    const res = this.ctx.res;
    const failure = err as { code?: string; rstCode?: number } | undefined;
    // A gRPC call's deadline passed after the answer's head: the call ends with its status, not broken.
    if (failure?.code === 'PORTICO_GRPC_DEADLINE' && !res.writableEnded) return this.endGrpc(String(GrpcStatus.DEADLINE_EXCEEDED), 'deadline exceeded (Portico)');
    // An HTTP/2 app's stream reset goes on to an HTTP/2 client with its code (gRPC reads CANCEL as CANCELLED).
    const code = failure?.rstCode;
    if (code !== undefined && code !== 0 && isH2Response(res) && !res.stream.closed) return void res.stream.close(code);
    // A gRPC call whose app was lost, or went quiet past timeouts.read, after the head: the status a client reads
    // (as Portico's own error before the head would be), where a bare reset would read as INTERNAL or CANCELLED.
    if (!res.writableEnded && !res.destroyed && this.grpcCall()) {
      const timeout = failure?.code === 'UND_ERR_BODY_TIMEOUT' || failure?.code === 'UND_ERR_HEADERS_TIMEOUT';
      return timeout ? this.endGrpc(String(grpcStatusOf(504)), '504 Gateway Timeout (Portico)') : this.endGrpc(String(grpcStatusOf(502)), '502 Bad Gateway (Portico)');
    }
    res.destroy();
  }

  /** Whether this is a gRPC call's answer (its status then goes in its trailers). */
  protected grpcCall(): boolean {
    return isGrpc(this.ctx.req.headers);
  }

  /** Ends a gRPC call whose answer began with Portico's status, in its trailers. */
  protected endGrpc(status: string, message: string): void {
    this.ctx.grpcStatus = status;
    this.ctx.res.addTrailers({ 'grpc-status': status, 'grpc-message': encodeURIComponent(message) });
    this.ctx.res.end();
  }

  #spoolFailed(err: Error): void {
    this.buffering.logger.error({ err, dir: this.buffering.space.dir }, 'cannot hold an answer for a slow client in a temporary file');
    this.ctx.res.destroy();
  }
}

/** Trailer fields as an object (Node's HTTP/2 response takes no list), without those a response may not end with (RFC 9110 §6.5.1). */
function trailerFields(list: readonly string[]): OutgoingHttpHeaders {
  const fields: OutgoingHttpHeaders = {};
  for (let i = 0; i < list.length; i += 2) {
    const lower = list[i]!.toLowerCase();
    if (lower === 'content-length' || lower === 'transfer-encoding' || lower === 'host' || lower === 'connection' || lower === 'te' || lower === 'trailer') continue;
    const previous = fields[lower];
    fields[lower] = previous === undefined ? list[i + 1]! : [...(Array.isArray(previous) ? previous : [String(previous)]), list[i + 1]!];
  }
  return fields;
}

/** A request made ready to forward: body read or wrapped, client address known, base headers built. */
export interface PreparedRequest {
  ctx: RequestContext;
  /** In memory, in a temporary file (re-read for each attempt), streamed from the client, or none. */
  body: Buffer | SpooledBody | ReplayableBody | Readable | null;
  replayable: boolean;
  headers: string[];
  path: string;
  clientIp: string;
  /** Set when the client went away: no more attempts. */
  clientGone: boolean;
  abortCurrent: ((err?: Error) => void) | undefined;
}
