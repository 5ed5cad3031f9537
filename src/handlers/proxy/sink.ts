/** The contract between forwarding and what consumes a forwarded response (the client, or the cache). */
import type { OutgoingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { RequestContext } from '../../http/context.js';
import { sendEarlyHints } from './interim.js';

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
  end(): void;
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

/** The sink that writes to the client, optionally buffering up to `bufferLimit` bytes first. */
export class ClientSink implements ResponseSink {
  #pending: { status: number; headers: string[]; chunks: Buffer[]; bytes: number } | null = null;
  #resume: (() => void) | null = null;
  constructor(
    readonly ctx: RequestContext,
    readonly bufferLimit: number,
  ) {}

  head(status: number, appHeaders: string[], own: readonly string[]): void {
    this.ctx.status = status;
    const headers = own.length === 0 ? appHeaders : [...appHeaders, ...own];
    if (this.bufferLimit > 0) this.#pending = { status, headers, chunks: [], bytes: 0 };
    else this.ctx.res.writeHead(status, headers);
  }

  data(chunk: Buffer): boolean {
    this.ctx.bytesSent += chunk.length;
    const pending = this.#pending;
    if (pending !== null) {
      pending.chunks.push(chunk);
      pending.bytes += chunk.length;
      if (pending.bytes > this.bufferLimit) this.#flush();
      return true;
    }
    // A 'drain' listener only when the client is slow: most responses never need one.
    if (this.ctx.res.write(chunk)) return true;
    if (this.#resume !== null) this.ctx.res.once('drain', this.#resume);
    return false;
  }

  drain(resume: () => void): void {
    this.#resume = resume;
  }

  earlyHints(links: string[]): void {
    sendEarlyHints(this.ctx, links);
  }

  end(): void {
    this.#flush();
    this.ctx.res.end();
  }

  fail(): void {
    this.ctx.res.destroy();
  }

  #flush(): void {
    const pending = this.#pending;
    if (pending === null) return;
    this.#pending = null;
    this.ctx.res.writeHead(pending.status, pending.headers);
    for (const chunk of pending.chunks) this.ctx.res.write(chunk);
  }
}

/** A request made ready to forward: body read or wrapped, client address known, base headers built. */
export interface PreparedRequest {
  ctx: RequestContext;
  body: Buffer | Readable | null;
  replayable: boolean;
  headers: string[];
  path: string;
  clientIp: string;
  /** Set when the client went away: no more attempts. */
  clientGone: boolean;
  abortCurrent: ((err?: Error) => void) | undefined;
}
