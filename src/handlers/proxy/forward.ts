/**
 * The attempt loop of a proxy route: select a server, forward, classify the outcome, maybe retry, maybe wait
 * for a server. A retry never re-picks a server already tried and stops at `retry_deadline`. Idempotent methods
 * are retried per `retry_on` when their body is absent, read whole (`request_buffering`, re-read from its
 * temporary file for each attempt when it was spilled) or small enough to keep (`retry_buffer`); other methods,
 * and streamed bodies, only when the connection was refused or never made, since an error on a reused
 * keep-alive connection does not prove the app did not receive the request. Once the response head went to the
 * client there is no retry: a failure after that cuts the client connection so the response is visibly
 * incomplete.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { responseComplete, type RequestContext, type UpstreamAttemptLog } from '../../http/context.js';
import { grpcTimeoutMs, grpcTimeoutValue, isGrpc } from '../../http/grpc.js';
import { RETRY_SOON, sendError } from '../../http/send.js';
import { PorticoError } from '../../errors.js';
import type { Template } from '../../http/template.js';
import type { Upstream } from '../../upstream/upstream.js';
import { ReplayableBody, SpooledBody } from './body.js';
import { grpcWebOf, GrpcWebSink } from './grpc-web.js';
import { Attempt, Exchange, type AttemptResult, type AttemptShared, type FailureReason } from './attempt.js';
import type { RequestPreparer } from './prepare.js';
import { ClientSink, type ResponseBuffering, type ForwardOutcome, type HeaderEdit, type PreparedRequest, type ResponseSink } from './sink.js';

const OK: ForwardOutcome = { ok: true };
const STATUS = /^\d{3}$/;
/** The longest delay a timer takes (2^31 - 1 ms); a longer one fires at once. */
const MAX_TIMER = 2_147_483_647;
/** Forwards in which a server answered with a status (discarded for a retry): the app was reachable. */
const answered = new WeakSet<Exchange>();

/** A failed forward's outcome: unreachable unless some server answered (or `reachable` says otherwise). */
function failed(ex: Exchange, status: 502 | 503 | 504, reachable = false): ForwardOutcome {
  return { ok: false, status, unreachable: !reachable && !answered.has(ex) };
}

/** What the loop needs of its route, resolved once. */
export interface ForwarderOptions {
  readonly upstream: Upstream;
  /** Prepares each request (a php route's gives the CGI variables as its header list). */
  readonly preparer: Pick<RequestPreparer, 'prepare'>;
  readonly shared: AttemptShared;
  /** The `hash` policy's key template (undefined for other policies). */
  readonly hashKey: Template | undefined;
  /** How much of an answer a slow client may leave for Portico to hold (limit 0: none). */
  readonly responseBuffering: ResponseBuffering;
  readonly logger: Logger;
  /** gRPC-Web answers are translated (default); false on a php route, whose app never speaks gRPC. */
  readonly grpcWeb?: boolean | undefined;
}

/** Forwards the requests of one proxy route to its upstream. */
export class Forwarder {
  readonly #o: ForwarderOptions;
  readonly #upstream: Upstream;

  constructor(options: ForwarderOptions) {
    this.#o = options;
    this.#upstream = options.upstream;
  }

  /** The `hash` policy's key for this request (only computed for that policy). */
  hashKey(ctx: RequestContext): string {
    return this.#o.hashKey === undefined ? '' : this.#o.hashKey(ctx);
  }

  /** The sticky Set-Cookie for a client answered from the cache (see `Upstream.stickyCookieUnforwarded`). */
  stickyCookie(ctx: RequestContext): string | undefined {
    const upstream = this.#upstream;
    if (upstream.config.sticky?.cookie === undefined) return undefined;
    const pick = { clientIp: ctx.clientAddress(), hashKey: this.hashKey(ctx), random: Math.random };
    return upstream.stickyCookieUnforwarded(pick, upstream.pinOf(ctx.req.headers.cookie, ctx.req.url!));
  }

  /** The sink that answers the client directly. */
  clientSink(ctx: RequestContext): ClientSink {
    const web = this.#o.grpcWeb === false ? undefined : grpcWebOf(ctx);
    return web === undefined ? new ClientSink(ctx, this.#o.responseBuffering) : new GrpcWebSink(ctx, this.#o.responseBuffering, web);
  }

  /** See `RequestPreparer.prepare`. */
  prepare(ctx: RequestContext): PreparedRequest | undefined | Promise<PreparedRequest | undefined> {
    return this.#o.preparer.prepare(ctx);
  }

  /** Answers a request from the upstream, or with the error page of the outcome. */
  handle(ctx: RequestContext): Promise<void> | void {
    const prepared = this.#o.preparer.prepare(ctx);
    if (prepared === undefined) return;
    if (prepared instanceof Promise) return prepared.then((ready) => (ready === undefined ? undefined : this.#answer(ready)));
    return this.#answer(prepared);
  }

  #answer(prepared: PreparedRequest): void {
    const ctx = prepared.ctx;
    this.#run(
      new Exchange(prepared, this.clientSink(ctx), prepared.headers, (outcome) => {
        if (outcome.ok) return;
        // Called from inside undici's callbacks: nothing may be thrown back into them.
        try {
          sendError(ctx, outcome.status, outcome.intercepted ? outcome.kept : outcome.status === 503 ? RETRY_SOON : undefined);
        } catch (err) {
          this.#o.logger.error({ err, url: ctx.req.url }, 'proxy error page failed');
          ctx.res.destroy();
        }
      }),
    );
  }

  /** Forwards a prepared request into a sink, with retries; the outcome says what to answer if it failed. */
  forward(prepared: PreparedRequest, sink: ResponseSink, edit?: HeaderEdit): Promise<ForwardOutcome> {
    let headers = prepared.headers;
    if (edit !== undefined) {
      headers = [];
      for (let i = 0; i < prepared.headers.length; i += 2) {
        if (edit.drop?.has(prepared.headers[i]!.toLowerCase()) !== true) headers.push(prepared.headers[i]!, prepared.headers[i + 1]!);
      }
      if (edit.add !== undefined) headers.push(...edit.add);
    }
    return new Promise((resolve) => this.#run(new Exchange(prepared, sink, headers, resolve)));
  }

  /**
   * Starts the loop. Written with callbacks rather than `await`, so that a request answered by its first attempt
   * creates no promise at all; the rare waits (queue, try_duration) re-enter through `#later`.
   */
  #run(ex: Exchange): void {
    const config = this.#upstream.config;
    const started = Date.now();
    ex.deadline = started + config.retry_deadline;
    ex.tryUntil = started + config.try_duration;
    ex.stickyValue = this.#upstream.pinOf(ex.ctx.req.headers.cookie, ex.ctx.req.url!);
    ex.pick = { clientIp: ex.clientIp, hashKey: this.hashKey(ex.ctx), random: Math.random };
    const timeout = ex.ctx.req.headers['grpc-timeout'];
    if (timeout !== undefined) this.#watchDeadline(ex, timeout, started);
    this.#next(ex);
  }

  /** Starts a gRPC call's deadline (`grpc-timeout`); its timer ends with the answer (the response's close). */
  #watchDeadline(ex: Exchange, value: string | string[], started: number): void {
    const ms = grpcTimeoutMs(value);
    if (ms === undefined || (!isGrpc(ex.ctx.req.headers) && grpcWebOf(ex.ctx) === undefined)) return;
    ex.grpcDeadline = started + ms;
    // Past a timer's range (24.8 days; Node would fire it at once): passed on, never expired here.
    if (ms > MAX_TIMER) return;
    const timer = setTimeout(() => this.#expire(ex), Math.max(1, Math.ceil(ms)));
    ex.ctx.res.once('close', () => clearTimeout(timer));
  }

  /**
   * A gRPC call's deadline passed in Portico's hands: the attempt in flight is cancelled (RST_STREAM CANCEL to an
   * HTTP/2 app) and the client answered DEADLINE_EXCEEDED (before the answer's head: as a 504, which a gRPC
   * client reads as status 4; after it: in the trailers).
   */
  #expire(ex: Exchange): void {
    if (responseComplete(ex.ctx.res)) return;
    ex.expired = true;
    ex.prepared.abortCurrent?.(new PorticoError('PORTICO_GRPC_DEADLINE', 'the gRPC deadline (grpc-timeout) passed'));
  }

  /**
   * The remaining time of a gRPC call's deadline as its `grpc-timeout` for the app (Envoy does the same). The
   * deadline is the call's bound: `response_header` and `read` shorter than what is left of it are raised to it
   * (an app may answer a long call late, or stay quiet between messages, within the time its client allowed).
   */
  #passDeadline(ex: Exchange, opts: Dispatcher.DispatchOptions): void {
    const headers = ex.headers;
    const ms = Math.max(1, Math.ceil(ex.grpcDeadline - Date.now()));
    const timeouts = this.#upstream.config.timeouts;
    // A timer longer than Node's limit would fire at once: a deadline past it leaves the timeouts as they are.
    const bound = Math.min(ms, MAX_TIMER);
    if (bound > timeouts.response_header) opts.headersTimeout = bound;
    if (bound > timeouts.read) opts.bodyTimeout = bound;
    const left = grpcTimeoutValue(ms);
    for (let i = 0; i < headers.length; i += 2) {
      if (headers[i]!.length === 12 && headers[i]!.toLowerCase() === 'grpc-timeout') {
        headers[i + 1] = left;
        return;
      }
    }
  }

  /** Starts the next attempt, or waits for a server, or ends the forward. */
  #next(ex: Exchange): void {
    if (ex.clientGone) return ex.done(OK);
    if (ex.expired) return ex.done(failed(ex, 504, true));
    const config = this.#upstream.config;
    const chosen = this.#upstream.select(ex.tried, ex.pick!, ex.stickyValue);
    if (typeof chosen === 'string') {
      if (chosen === 'full') {
        // A client that goes away while waiting leaves the queue (its place would otherwise be held to the timeout).
        const wait = this.#upstream.waitForCapacity((ex.queue ??= { until: 0 }), ex.stickyValue, ex.tried);
        ex.abortCurrent = wait.cancel;
        wait.ready.then((ok) => {
          ex.abortCurrent = undefined;
          // A turn not taken (the client went away meanwhile) is passed on by the upstream's queue (see `CapacityQueue.wake`).
          if (ex.clientGone) return ex.done(OK);
          this.#later(ex, ok ? undefined : chosen);
        });
        return;
      }
      this.#nothingLeft(ex, chosen);
      return;
    }
    ex.attempts++;
    ex.tried.add(chosen.id);
    // A retryable status is only worth discarding when another server could still answer.
    // The deadline is checked again when the status arrives: a slow answer past it is passed on, not discarded.
    const statusRetryUntil =
      ex.attempts <= config.retries && this.#mayRetry(ex, undefined, false) && this.#upstream.hasUntried(ex.tried) ? ex.deadline : 0;
    const log: UpstreamAttemptLog = { addr: chosen.label, status: '-', connectMs: -1, headerMs: -1, responseMs: -1 };
    ex.log.push(log);
    this.#upstream.acquire(chosen);
    // The attempt keeps the target it began on: a spawned slot's move waits for it on the port it left.
    const target = chosen.target!;
    target.users++;
    const opts: Dispatcher.DispatchOptions = {
      path: chosen.basePath + ex.path,
      method: ex.ctx.req.method! as Dispatcher.HttpMethod,
      headers: ex.headers,
      body: this.#bodyFor(ex, target.http2),
    };
    if (ex.grpcDeadline !== 0) this.#passDeadline(ex, opts);
    target.dispatcher.dispatch(
      opts,
      new Attempt({
        shared: this.#o.shared,
        ex,
        server: chosen,
        target,
        log,
        setCookie: this.#upstream.stickyCookie(chosen, ex.stickyValue),
        statusRetryUntil,
        after: this.#afterAttempt,
      }),
    );
  }

  /**
   * The body for one attempt: a file re-read from its start; a replayable body as it is to an HTTP/2 app (its
   * transport writes it into the stream itself) and as a new reading to an HTTP/1.1 one.
   */
  #bodyFor(ex: Exchange, http2: boolean): Dispatcher.DispatchOptions['body'] {
    const body = ex.body;
    if (body instanceof SpooledBody) return body.stream();
    if (body instanceof ReplayableBody) {
      if (!http2) return body.stream();
      // Read while the transport finds a stream: a unary call's HEADERS, message and end then leave together.
      body.readAhead();
      return body as unknown as Readable;
    }
    return body;
  }

  /** No server to try now (all down, all tried, or the queue gave up): wait while try_duration allows, or fail. */
  #nothingLeft(ex: Exchange, why: 'full' | 'unavailable'): void {
    if (ex.expired) return ex.done(failed(ex, 504, true));
    const config = this.#upstream.config;
    const lastFailure = ex.lastFailure;
    if (Date.now() + config.try_interval < ex.tryUntil && (lastFailure === undefined || this.#mayRetry(ex, lastFailure, true))) {
      setTimeout(() => {
        ex.tried.clear();
        this.#later(ex, undefined);
      }, config.try_interval);
      return;
    }
    // A full queue is a busy app, not an unreachable one; no server available at all (health checks) is.
    if (lastFailure === undefined || why === 'full') return ex.done(failed(ex, 503, why === 'full'));
    ex.done(failed(ex, lastFailure === 'timeout' ? 504 : 502));
  }

  /** An attempt ended (called by the Attempt, inside undici's callback). */
  readonly #afterAttempt = (ex: Exchange, result: AttemptResult): void => {
    if (result.ok || ex.committed || ex.clientGone) return ex.done(OK);
    if (ex.expired) return ex.done(failed(ex, 504, true));
    const config = this.#upstream.config;
    ex.lastFailure = result.reason;
    // A discarded status was discarded to be retried, whatever the clock says now.
    const discarded = STATUS.test(result.reason);
    if (discarded) answered.add(ex);
    const retry = ex.attempts <= config.retries && (discarded || Date.now() < ex.deadline) && this.#mayRetry(ex, result.reason, false);
    if (!retry && !(Date.now() < ex.tryUntil && this.#mayRetry(ex, result.reason, true))) {
      return ex.done(failed(ex, result.reason === 'timeout' ? 504 : 502));
    }
    // Not from inside undici's callback for the failed request: the next dispatch starts on a clean stack.
    process.nextTick(() => this.#later(ex, undefined));
  };

  /** Goes on with the loop from a timer or a queue: outside the request's stack, so nothing may throw out of it. */
  #later(ex: Exchange, nothingLeft: 'full' | undefined): void {
    try {
      if (nothingLeft === undefined) this.#next(ex);
      else this.#nothingLeft(ex, nothingLeft);
    } catch (err) {
      this.#o.logger.error({ err, url: ex.ctx.req.url }, 'proxy request failed');
      ex.done(failed(ex, 502, true));
    }
  }

  /**
   * Whether a failure may be retried for this request. With `reason` undefined: whether a retryable *status*
   * could be retried (decided before the response head arrives). `waiting` is the try_duration case.
   */
  #mayRetry(ex: Exchange, reason: FailureReason | undefined, waiting: boolean): boolean {
    if (reason === 'connect_error') {
      // The request never left: safe for any method, unless a streamed body was already consumed.
      return (waiting || this.#o.shared.retryOn.has('connect_error')) && (ex.body === null || Buffer.isBuffer(ex.body) || ex.body instanceof SpooledBody || (ex.body instanceof ReplayableBody ? ex.body.replayable : !ex.body.readableDidRead));
    }
    if (waiting) return false;
    if (!ex.replayable) return false;
    return reason === undefined || this.#o.shared.retryOn.has(reason);
  }
}
