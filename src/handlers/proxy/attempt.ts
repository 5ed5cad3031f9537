/**
 * One forward and its attempts: the state shared by a request's attempts (`Exchange`), and one attempt on one
 * server as undici's handler (`Attempt`), which also filters the response head for the client. The retry loop
 * that creates them is `forward.ts`.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { RequestContext, UpstreamAttemptLog } from '../../http/context.js';
import { isGrpc } from '../../http/grpc.js';
import { earlyHintLinks, filterResponseHeaders, rewriteLocation, type ResponseFilter } from '../../upstream/headers.js';
import { failureWords } from '../../upstream/health/active.js';
import type { PickContext } from '../../upstream/policies/types.js';
import type { ServerTarget, UpstreamServer } from '../../upstream/server.js';
import type { QueuePlace } from '../../upstream/capacity-queue.js';
import type { Upstream } from '../../upstream/upstream.js';
import type { ReplayableBody, SpooledBody } from './body.js';
import { keptFields, READ_OUT_TIME, readOutBudget } from './intercept.js';
import type { ForwardOutcome, PreparedRequest, ResponseSink } from './sink.js';
import { PorticoError } from '../../errors.js';

const NO_FIELDS: readonly string[] = [];
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOENT', 'EACCES', 'UND_ERR_CONNECT_TIMEOUT', 'ECONNABORTED', 'PORTICO_H2_REFUSED', 'PORTICO_H2_NO_ALPN']);

/** Why an attempt failed, in `retry_on` terms. */
export type FailureReason = 'connect_error' | 'timeout' | 'reset' | `${number}`;

/** The outcome of one attempt. */
export type AttemptResult = { ok: true } | { ok: false; reason: FailureReason; aborted: boolean };

/** Classifies a transport error for `retry_on` and passive checks. */
export function classify(err: NodeJS.ErrnoException): FailureReason {
  const code = err.code ?? (err.cause as NodeJS.ErrnoException | undefined)?.code ?? '';
  if (CONNECT_ERRORS.has(code)) return 'connect_error';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'timeout';
  return 'reset';
}

/** The limit a timeout error of undici ran into, by its code: connect, response head, or read (between body chunks). */
function timeoutOf(err: NodeJS.ErrnoException, timeouts: { connect: number; response_header: number; read: number }): number {
  const code = err.code ?? (err.cause as NodeJS.ErrnoException | undefined)?.code;
  return code === 'UND_ERR_CONNECT_TIMEOUT' ? timeouts.connect : code === 'UND_ERR_HEADERS_TIMEOUT' ? timeouts.response_header : timeouts.read;
}

/** What the failure line of a gRPC call to an HTTP/1.1 server says to do. */
const GRPC_NEEDS_H2 = 'gRPC needs an HTTP/2 server: write it h2c://host:port (no TLS) or https:// with protocol: h2';

/** One forward's state, shared by its attempts. */
export class Exchange {
  readonly tried = new Set<number>();
  readonly log: UpstreamAttemptLog[];
  attempts = 0;
  committed = false;
  /** The loop's clock and choices, set when it starts. */
  deadline = 0;
  tryUntil = 0;
  /** Its place in the capacity queue, made at its first wait (most requests never wait). */
  queue: QueuePlace | undefined = undefined;
  stickyValue: string | undefined = undefined;
  pick: PickContext | undefined = undefined;
  lastFailure: FailureReason | undefined = undefined;
  /** A gRPC call's deadline (`grpc-timeout`, ms since the epoch; 0: none), and whether it passed. */
  grpcDeadline = 0;
  expired = false;
  constructor(
    readonly prepared: PreparedRequest,
    readonly sink: ResponseSink,
    readonly headers: string[],
    /** Called once with how the forward ended. */
    readonly done: (outcome: ForwardOutcome) => void,
  ) {
    this.log = prepared.ctx.upstreamLog ??= [];
  }
  get ctx(): RequestContext {
    return this.prepared.ctx;
  }
  get clientGone(): boolean {
    return this.prepared.clientGone;
  }
  get body(): Buffer | SpooledBody | ReplayableBody | Readable | null {
    return this.prepared.body;
  }
  get replayable(): boolean {
    return this.prepared.replayable;
  }
  get path(): string {
    return this.prepared.path;
  }
  get clientIp(): string {
    return this.prepared.clientIp;
  }
  set abortCurrent(abort: ((err?: Error) => void) | undefined) {
    this.prepared.abortCurrent = abort;
  }
}

/** What every attempt of one proxy route shares (built once, with the route). */
export interface AttemptShared {
  readonly upstream: Upstream;
  readonly passiveOn: ReadonlySet<string>;
  readonly retryOn: ReadonlySet<string>;
  readonly hide: ReadonlySet<string>;
  readonly serverHeader: string;
  readonly serverOrigins: readonly string[];
  readonly strippedPrefix: string;
  /** Statuses whose app answer is replaced by the error page (`intercept_errors`); undefined: none. */
  readonly intercept: ReadonlySet<number> | undefined;
  /** The error log: each failed attempt gets a line with its cause. */
  readonly logger: Logger;
}

/** What one attempt is made of. */
export interface AttemptInit {
  readonly shared: AttemptShared;
  readonly ex: Exchange;
  readonly server: UpstreamServer;
  /** The server's target the attempt was dispatched to (counted in its `users` until the attempt ends). */
  readonly target: ServerTarget;
  /** The access log's record of this attempt. */
  readonly log: UpstreamAttemptLog;
  /** A sticky cookie for this client's answer only (never stored by the cache nor shared with waiters). */
  readonly setCookie: string | undefined;
  /** Until when a retryable status may be discarded for a retry (0: never). */
  readonly statusRetryUntil: number;
  /** Called once when the attempt ended. */
  readonly after: (ex: Exchange, result: AttemptResult) => void;
}

// The class takes its fields from AttemptInit (declaration merging) instead of a second list of them.
export interface Attempt extends AttemptInit {}

/**
 * One attempt on one server, as undici's handler: a class with its methods on the prototype (as undici's own
 * handlers are), so an attempt costs one object, not a set of closures. It is also the response-header filter.
 */
export class Attempt implements Dispatcher.DispatchHandler, ResponseFilter {
  readonly #start = Date.now();
  #settled = false;
  #discarding = false;
  #failure: FailureReason = 'reset';
  /** The answer was intercepted: `done` was called at its head; what is left is discarding its body. */
  #intercepted = false;
  /** Body bytes of an intercepted answer still to read out before closing its connection instead. */
  #readOut = 0;
  /** Closes an intercepted answer's connection when reading it out takes longer than READ_OUT_TIME. */
  #readOutTimer: NodeJS.Timeout | undefined = undefined;

  constructor(init: AttemptInit) {
    Object.assign(this, init);
  }

  get hide(): ReadonlySet<string> {
    return this.shared.hide;
  }

  get serverHeader(): string {
    return this.shared.serverHeader;
  }

  rewriteLocation(value: string): string {
    const ctx = this.ex.ctx;
    const client = `${ctx.scheme}://${ctx.canonicalAuthority}`;
    // A spawned instance knows its address only as the port it was given: that is its origin; so does a server
    // found through DNS (the configured servers' list was made when the route was built, before DNS named it).
    const origins = this.server.slot === undefined && !this.server.discovered ? this.shared.serverOrigins : [this.target.origin];
    return rewriteLocation(value, origins, this.server.basePath, client, this.shared.strippedPrefix);
  }

  #settle(result: AttemptResult): void {
    if (this.#settled) return;
    this.#settled = true;
    if (this.#readOutTimer !== undefined) clearTimeout(this.#readOutTimer);
    const ms = (this.log.responseMs = Date.now() - this.#start);
    // `status` is '-' when the attempt ended before any answer (the client left): counted with no class.
    this.server.traffic?.record(+this.log.status | 0, ms);
    this.shared.upstream.release(this.server);
    this.target.end();
    // An intercepted answer told the loop how the forward ended at its head; its body's end is no news.
    if (!this.#intercepted) this.after(this.ex, result);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.log.connectMs = Date.now() - this.#start;
    // The client went away while the connection was being made: nothing is sent for it. (Left to onHeaders, an
    // answer would be read for nobody, for as long as the app streams it.)
    if (this.ex.clientGone) return abort(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the connection'));
    this.ex.abortCurrent = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    const { ex, shared, server, log } = this;
    // An interim answer (undici reports each 1xx here, then the final one): a 103's Link fields may go ahead to
    // the client; any other (102, 1xx unknown) is dropped. The final answer follows on the same attempt.
    if (statusCode < 200) {
      if (statusCode === 103 && !ex.clientGone && !this.#discarding) {
        const links = earlyHintLinks(rawHeaders);
        if (links !== undefined) ex.sink.earlyHints?.(links);
      }
      return true;
    }
    const now = Date.now();
    const status = String(statusCode) as FailureReason;
    log.headerMs = now - this.#start;
    log.status = status;
    server.observeLatency(now - this.#start, now);
    if (shared.passiveOn.has(status)) shared.upstream.recordFailure(server, status);
    else shared.upstream.recordSuccess(server);
    if (now < this.statusRetryUntil && shared.retryOn.has(status)) {
      this.#discarding = true;
      this.#failure = status;
      return true;
    }
    if (ex.clientGone) {
      this.#discarding = true;
      this.#failure = 'reset';
      return true;
    }
    if (shared.intercept?.has(statusCode) === true) return this.#intercept(statusCode, rawHeaders);
    const headers = filterResponseHeaders(rawHeaders, this);
    ex.committed = true;
    ex.sink.head(statusCode, headers, this.setCookie === undefined ? NO_FIELDS : ['Set-Cookie', this.setCookie]);
    if (statusCode === 204 || statusCode === 304) {
      // No body by definition (RFC 9110 §6.4.1): complete at its head. undici would otherwise fail one that
      // carries a Content-Length (a length mismatch) after the head, and the answer would never end.
      ex.sink.end();
      this.#settle({ ok: true });
      return true;
    }
    ex.sink.drain(resume);
    return true;
  }

  /**
   * Answers with the error page instead of the app's answer (called at its head, a final 4xx/5xx not discarded
   * for a retry); the body is read out when small (the connection is reused), else the connection is closed.
   */
  #intercept(status: number, rawHeaders: Buffer[]): boolean {
    const ex = this.ex;
    this.#intercepted = true;
    this.#discarding = true;
    ex.committed = true;
    this.#readOut = readOutBudget(rawHeaders);
    let kept = keptFields(rawHeaders);
    // Portico's own pin is not the app's: the page carries it as any answer would (the app's Set-Cookie is dropped).
    if (this.setCookie !== undefined) kept = { ...kept, 'Set-Cookie': this.setCookie };
    ex.done({ ok: false, status, unreachable: false, intercepted: true, kept });
    if (this.#readOut < 0) this.#closeIntercepted();
    else this.#readOutTimer = setTimeout(() => this.#closeIntercepted(), READ_OUT_TIME).unref();
    return true;
  }

  #closeIntercepted(): void {
    this.ex.prepared.abortCurrent?.(new Error('intercepted answer: body not read'));
  }

  onData(chunk: Buffer): boolean {
    // Settled at its head (a 204/304): a transport that still hands body bytes must not write past the answer's end.
    if (this.#settled && !this.#intercepted) return true;
    if (this.#discarding) {
      if (this.#intercepted && (this.#readOut -= chunk.length) < 0) this.#closeIntercepted();
      return true;
    }
    return this.ex.sink.data(chunk);
  }

  onComplete(trailers?: Buffer[] | string[] | null): void {
    // Settled already: a 204/304 completed at its head.
    if (this.#settled) return;
    if (this.#discarding) return this.#settle({ ok: false, reason: this.#failure, aborted: false });
    // An HTTP/2 app's trailers go on (gRPC's status is there); an HTTP/1.1 app's are dropped, as they always were.
    this.ex.sink.end(!this.target.http2 || trailers === null || trailers === undefined || trailers.length === 0 ? undefined : trailers.map(String));
    this.#settle({ ok: true });
  }

  onError(err: Error): void {
    // A 204/304 completed at its head: what undici says of it afterwards (a length mismatch) changes nothing.
    if (this.#settled) return;
    // Closed by #intercept, or failed while its body was read out: the client has its page already.
    if (this.#intercepted) return this.#settle({ ok: false, reason: this.#failure, aborted: true });
    const { ex, shared } = this;
    // The client's side ended the attempt (it left, its request body broke off, or passed max_body_size): no
    // failure of the app's, whichever was told first, the response's close or the body's.
    const code = (err as NodeJS.ErrnoException).code;
    const clientGone = ex.clientGone || code === 'PORTICO_CLIENT_CLOSED';
    const reason = clientGone ? 'reset' : classify(err as NodeJS.ErrnoException);
    if (!clientGone && code !== 'PORTICO_PAYLOAD_TOO_LARGE') this.#logFailure(err as NodeJS.ErrnoException);
    if (!this.#discarding) {
      if (shared.passiveOn.has(reason)) shared.upstream.recordFailure(this.server, reason, err);
      this.log.status = reason === 'timeout' ? '504' : '502';
    }
    if (ex.committed && !this.#discarding) {
      // Headers are out: the response must end visibly broken, never as a complete-looking one.
      ex.sink.fail(err);
      return this.#settle({ ok: false, reason, aborted: true });
    }
    this.#settle({ ok: false, reason: this.#discarding ? this.#failure : reason, aborted: clientGone });
  }

  /**
   * One warn line per failed attempt with its cause and where it happened, as nginx writes `connect() failed
   * (111: Connection refused) while connecting to upstream, client: …, request: "GET / HTTP/1.1", upstream: …`.
   */
  #logFailure(err: NodeJS.ErrnoException): void {
    const { ex, shared, server, log } = this;
    const req = ex.ctx.req;
    const reason = failureWords(err, timeoutOf(err, shared.upstream.config.timeouts));
    const during = log.connectMs < 0 ? 'connecting' : log.headerMs < 0 ? 'reading the response head' : 'reading the response';
    // The usual cause of a gRPC call failing on an HTTP/1.1 server: a gRPC app written as http:// (it answers HTTP/2).
    const hint = !this.target.http2 && isGrpc(req.headers) ? GRPC_NEEDS_H2 : undefined;
    shared.logger.warn(
      { reason, during, upstream: shared.upstream.name, server: server.label, client: ex.clientIp, request: `${req.method} ${req.url} HTTP/${req.httpVersion}`, hint },
      'upstream attempt failed',
    );
  }
}

