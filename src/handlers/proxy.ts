/**
 * `proxy`: forwards a request to an upstream (or one URL) and streams the answer back.
 *
 * One request may make several attempts. A retry never re-picks a server already tried and stops at
 * `retry_deadline`. Idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) are retried per `retry_on`
 * when their body is absent or small enough to keep (`retry_buffer`); other methods, and streamed bodies, only
 * when the connection was refused or never made, since an error on a reused keep-alive connection does not
 * prove the app did not receive the request. Once the response head went to the client there is no retry: a
 * failure after that cuts the client connection so the response is visibly incomplete.
 */
import type { Duplex, Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { RoutePath } from '../config/schema.js';
import type { RequestContext, UpstreamAttemptLog } from '../server/context.js';
import { sendError } from '../server/send.js';
import { TrustedProxies, stripMapped } from '../server/client-address.js';
import { compileKey, readCookie } from '../server/variables.js';
import { buildRequestHeaders } from '../upstream/headers.js';
import type { Upstream } from '../upstream/upstream.js';
import { ProxyCache } from '../cache/proxy-cache.js';
import { compileTemplate } from './redirect.js';
import { Attempt, classify, Exchange, type AttemptResult, type AttemptShared, type FailureReason } from './proxy/attempt.js';
import { limitBody, readBody } from './proxy/body.js';
import { ClientSink, type ForwardOutcome, type HeaderEdit, type PreparedRequest, type ResponseSink } from './proxy/sink.js';
import type { HandlerKind } from './types.js';

export { ClientSink, type ForwardOutcome, type HeaderEdit, type PreparedRequest, type ResponseSink };

/** Options of a `proxy` route, as validated by the config schema. */
export interface ProxyOptions {
  readonly upstream?: string | undefined;
  readonly url?: unknown;
  readonly strip_prefix: boolean;
  readonly host: string;
  readonly set_headers: Readonly<Record<string, string>>;
  readonly hide_headers: readonly string[];
  readonly max_body_size: number;
  readonly buffer_response: number;
  readonly websocket: boolean;
  readonly cache?:
    | {
        readonly zone: string;
        readonly key: string;
        readonly default_ttl: number;
        readonly heuristic: boolean;
        readonly stale_if_error: number;
        readonly ignore_set_cookie: boolean;
        readonly hit_for_miss: number;
        readonly collapse: boolean;
      }
    | undefined;
}

/** What a proxy handler needs beyond its options: the upstream it forwards to and whom to trust. */
export interface ProxyEnv {
  upstream: Upstream;
  trusted: TrustedProxies;
  routePath: RoutePath;
  serverHeader: string;
  logger: Logger;
}

const NO_HEADERS = new Map<string, string>();
const OK: ForwardOutcome = { ok: true };
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

class ProxyHandler {
  readonly #options: ProxyOptions;
  readonly #env: ProxyEnv;
  readonly #upstream: Upstream;
  readonly #setHeaders: Array<[string, (ctx: RequestContext) => string]>;
  readonly #hide: ReadonlySet<string>;
  readonly #prefix: string;
  readonly #retryOn: ReadonlySet<string>;
  readonly #passiveOn: ReadonlySet<string>;
  readonly #hostTemplate: ((ctx: RequestContext) => string) | undefined;
  readonly #serverOrigins: readonly string[];
  readonly #keyOf: ((ctx: RequestContext, clientIp: string) => string) | undefined;
  readonly #shared: AttemptShared;

  constructor(options: ProxyOptions, env: ProxyEnv) {
    this.#options = options;
    this.#env = env;
    this.#upstream = env.upstream;
    this.#setHeaders = Object.entries(options.set_headers).map(([name, value]) => [name.toLowerCase(), compileTemplate(value)]);
    this.#hide = new Set(options.hide_headers.map((name) => name.toLowerCase()));
    const path = env.routePath;
    this.#prefix = options.strip_prefix && path.kind !== 'regex' ? path.path : '';
    this.#retryOn = new Set(this.#upstream.config.retry_on);
    this.#passiveOn = new Set(this.#upstream.config.passive.on);
    this.#hostTemplate = options.host === 'pass' ? undefined : compileTemplate(options.host);
    this.#keyOf = this.#upstream.config.policy === 'hash' ? compileKey(this.#upstream.config.hash_key) : undefined;
    this.#serverOrigins = this.#upstream.servers.filter((s) => !s.label.startsWith('unix:')).map((s) => s.origin);
    this.#shared = {
      upstream: this.#upstream,
      passiveOn: this.#passiveOn,
      retryOn: this.#retryOn,
      hide: this.#hide,
      serverHeader: env.serverHeader,
      serverOrigins: this.#serverOrigins,
      strippedPrefix: this.#prefix.replace(/\/$/, ''),
    };
  }

  /** The `hash` policy's key for this request (only computed for that policy). */
  #hashKey(ctx: RequestContext, clientIp: string): string {
    return this.#keyOf === undefined ? '' : this.#keyOf(ctx, clientIp);
  }

  /** The path sent upstream: base path of the server, then the (maybe stripped) canonical path and query. */
  #upstreamPath(ctx: RequestContext): string {
    let path = ctx.path;
    if (this.#prefix !== '') {
      path = path.slice(Math.min(this.#prefix.length, path.length));
      if (path.charCodeAt(0) !== 47) path = '/' + path;
    }
    return ctx.query === '' ? path : `${path}?${ctx.query}`;
  }

  #buildHeaders(ctx: RequestContext, clientIp: string, trusted: boolean, peer: string): string[] {
    const req = ctx.req;
    const clientHost = req.headers.host ?? ctx.host;
    let setHeaders: Map<string, string> = NO_HEADERS;
    if (this.#setHeaders.length > 0) {
      setHeaders = new Map();
      for (const [name, value] of this.#setHeaders) setHeaders.set(name, value(ctx));
    }
    return buildRequestHeaders({
      rawHeaders: req.rawHeaders,
      peer,
      clientIp,
      trusted,
      scheme: ctx.scheme,
      host: clientHost,
      upstreamHost: this.#hostTemplate === undefined ? clientHost : this.#hostTemplate(ctx),
      setHeaders,
      httpVersion: req.httpVersion,
    });
  }

  /** The sink that answers the client directly. */
  clientSink(ctx: RequestContext): ClientSink {
    return new ClientSink(ctx, this.#options.buffer_response);
  }

  handle(ctx: RequestContext): Promise<void> | void {
    const prepared = this.prepare(ctx);
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
          sendError(ctx, outcome.status, outcome.status === 503 ? { 'Retry-After': '1' } : undefined);
        } catch (err) {
          this.#env.logger.error({ err, url: ctx.req.url }, 'proxy error page failed');
          ctx.res.destroy();
        }
      }),
    );
  }

  /**
   * Checks and reads what must be known before forwarding; answers the client itself (and returns undefined) on
   * a bad request. Synchronous unless a small body has to be read first (for replay), so a GET costs no promise.
   */
  prepare(ctx: RequestContext): PreparedRequest | undefined | Promise<PreparedRequest | undefined> {
    const { req, res } = ctx;
    const length = req.headers['content-length'];
    const declared = length === undefined ? -1 : Number(length);
    if (declared > this.#options.max_body_size) return void sendError(ctx, 413, undefined, true);
    if (req.headers.expect !== undefined) {
      if (req.headers.expect.toLowerCase() !== '100-continue') return void sendError(ctx, 417, undefined, true);
      res.writeContinue();
    }
    const hasBody = declared > 0 || req.headers['transfer-encoding'] !== undefined;
    let body: Readable | null = null;
    let replayable = IDEMPOTENT.has(req.method!);
    if (hasBody) {
      if (declared >= 0 && declared <= this.#upstream.config.retry_buffer) {
        return readBody(req, declared).then((buffer) => {
          if (buffer === null) return void sendError(ctx, 400, undefined, true);
          return this.#prepared(ctx, buffer, replayable);
        });
      }
      body = req;
      replayable = false;
      if (declared < 0) body = limitBody(req, this.#options.max_body_size, () => sendError(ctx, 413, undefined, true));
    }
    return this.#prepared(ctx, body, replayable);
  }

  #prepared(ctx: RequestContext, body: Buffer | Readable | null, replayable: boolean): PreparedRequest {
    const req = ctx.req;
    const peer = stripMapped(req.socket.remoteAddress ?? '');
    const trusted = this.#env.trusted.has(peer);
    const clientIp = this.#env.trusted.clientAddress(peer, req.headers['x-forwarded-for'] as string | undefined);
    const prepared: PreparedRequest = {
      ctx,
      body,
      replayable,
      headers: this.#buildHeaders(ctx, clientIp, trusted, peer),
      path: this.#upstreamPath(ctx),
      clientIp,
      clientGone: false,
      abortCurrent: undefined,
    };
    ctx.onClientGone(() => {
      prepared.clientGone = true;
      prepared.abortCurrent?.(new Error('client closed the connection'));
    });
    return prepared;
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
   * The attempt loop: select, forward, classify, maybe retry, maybe wait for a server. Written with callbacks
   * rather than `await`, so that a request answered by its first attempt creates no promise at all; the rare
   * waits (queue, try_duration) re-enter through `#next`.
   */
  #run(ex: Exchange): void {
    const config = this.#upstream.config;
    const started = Date.now();
    ex.deadline = started + config.retry_deadline;
    ex.tryUntil = started + config.try_duration;
    const sticky = config.sticky;
    ex.stickyValue = sticky === undefined ? undefined : readCookie(ex.ctx.req.headers.cookie, sticky.cookie);
    ex.pick = { clientIp: ex.clientIp, hashKey: this.#hashKey(ex.ctx, ex.clientIp), random: Math.random };
    this.#next(ex);
  }

  /** Starts the next attempt, or waits for a server, or ends the forward. */
  #next(ex: Exchange): void {
    if (ex.clientGone) return ex.done(OK);
    const config = this.#upstream.config;
    const chosen = this.#upstream.select(ex.tried, ex.pick!, ex.stickyValue);
    if (typeof chosen === 'string') {
      if (chosen === 'full') {
        this.#upstream.waitForCapacity().then((ok) => this.#later(ex, ok ? undefined : chosen));
        return;
      }
      this.#nothingLeft(ex, chosen);
      return;
    }
    ex.attempts++;
    ex.tried.add(chosen.id);
    const sticky = config.sticky;
    const setCookie =
      sticky !== undefined && ex.stickyValue !== this.#upstream.stickyId(chosen)
        ? `${sticky.cookie}=${this.#upstream.stickyId(chosen)}; Path=/; HttpOnly; SameSite=Lax`
        : undefined;
    // A retryable status is only worth discarding when another server could still answer.
    // The deadline is checked again when the status arrives: a slow answer past it is passed on, not discarded.
    const statusRetryUntil =
      ex.attempts <= config.retries && this.#mayRetry(ex, undefined, false) && this.#upstream.hasUntried(ex.tried) ? ex.deadline : 0;
    const log: UpstreamAttemptLog = { addr: chosen.label, status: '-', connectMs: -1, headerMs: -1, responseMs: -1 };
    ex.log.push(log);
    this.#upstream.acquire(chosen);
    chosen.dispatcher.dispatch(
      { path: chosen.basePath + ex.path, method: ex.ctx.req.method! as Dispatcher.HttpMethod, headers: ex.headers, body: ex.body },
      new Attempt(this.#shared, ex, chosen, log, setCookie, statusRetryUntil, this.#afterAttempt),
    );
  }

  /** No server to try now (all down, all tried, or the queue gave up): wait while try_duration allows, or fail. */
  #nothingLeft(ex: Exchange, why: 'full' | 'unavailable'): void {
    const config = this.#upstream.config;
    const lastFailure = ex.lastFailure;
    if (Date.now() + config.try_interval < ex.tryUntil && (lastFailure === undefined || this.#mayRetry(ex, lastFailure, true))) {
      setTimeout(() => {
        ex.tried.clear();
        this.#later(ex, undefined);
      }, config.try_interval);
      return;
    }
    if (lastFailure === undefined || why === 'full') return ex.done({ ok: false, status: 503 });
    ex.done({ ok: false, status: lastFailure === 'timeout' ? 504 : 502 });
  }

  /** An attempt ended (called by the Attempt, inside undici's callback). */
  readonly #afterAttempt = (ex: Exchange, result: AttemptResult): void => {
    if (result.ok || ex.committed || ex.clientGone) return ex.done(OK);
    const config = this.#upstream.config;
    ex.lastFailure = result.reason;
    // A discarded status was discarded to be retried, whatever the clock says now.
    const discarded = /^\d{3}$/.test(result.reason);
    const retry = ex.attempts <= config.retries && (discarded || Date.now() < ex.deadline) && this.#mayRetry(ex, result.reason, false);
    if (!retry && !(Date.now() < ex.tryUntil && this.#mayRetry(ex, result.reason, true))) {
      return ex.done({ ok: false, status: result.reason === 'timeout' ? 504 : 502 });
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
      this.#env.logger.error({ err, url: ex.ctx.req.url }, 'proxy request failed');
      ex.done({ ok: false, status: 502 });
    }
  }

  /**
   * Whether a failure may be retried for this request. With `reason` undefined: whether a retryable *status*
   * could be retried (decided before the response head arrives). `waiting` is the try_duration case.
   */
  #mayRetry(ex: Exchange, reason: FailureReason | undefined, waiting: boolean): boolean {
    if (reason === 'connect_error') {
      // The request never left: safe for any method, unless a streamed body was already consumed.
      return (waiting || this.#retryOn.has('connect_error')) && (ex.body === null || Buffer.isBuffer(ex.body) || !(ex.body as Readable).readableDidRead);
    }
    if (waiting) return false;
    if (!ex.replayable) return false;
    return reason === undefined || this.#retryOn.has(reason);
  }

  /** Tunnels a WebSocket upgrade: the client's 101 is sent only after the app server answered 101. */
  async upgrade(ctx: RequestContext, socket: Duplex, head: Buffer): Promise<void> {
    const peer = stripMapped(ctx.req.socket.remoteAddress ?? '');
    const trusted = this.#env.trusted.has(peer);
    const clientIp = this.#env.trusted.clientAddress(peer, ctx.req.headers['x-forwarded-for'] as string | undefined);
    const tried = new Set<number>();
    const pick = { clientIp, hashKey: this.#hashKey(ctx, clientIp), random: Math.random };
    const headers = this.#buildHeaders(ctx, clientIp, trusted, peer);
    // The upgrade fields are hop-by-hop and were dropped; this hop asks for the same upgrade itself.
    const path = this.#upstreamPath(ctx);
    for (let attempt = 0; attempt <= this.#upstream.config.retries; attempt++) {
      const server = this.#upstream.select(tried, pick, undefined);
      if (typeof server === 'string') break;
      tried.add(server.id);
      try {
        const { headers: upHeaders, socket: upstreamSocket } = await server.dispatcher.upgrade({
          path: server.basePath + path,
          method: 'GET',
          headers: headers,
          protocol: 'websocket',
        });
        const lines = ['HTTP/1.1 101 Switching Protocols'];
        for (const [name, value] of Object.entries(upHeaders)) {
          const lower = name.toLowerCase();
          if (lower === 'server' || lower === 'x-powered-by' || value === undefined) continue;
          for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
        }
        ctx.status = 101;
        socket.write(lines.join('\r\n') + '\r\n\r\n');
        if (head.length > 0) upstreamSocket.write(head);
        upstreamSocket.pipe(socket);
        socket.pipe(upstreamSocket);
        const close = () => {
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
        return;
      } catch (err) {
        const reason = classify(err as NodeJS.ErrnoException);
        if (reason !== 'connect_error') break;
      }
    }
    ctx.status = 502;
    writeRawError(socket, 502);
  }
}

/** Writes a minimal error response on a raw socket and closes it. */
export function writeRawError(socket: Duplex, status: number): void {
  const reason = status === 502 ? 'Bad Gateway' : status === 404 ? 'Not Found' : status === 400 ? 'Bad Request' : 'Error';
  const body = `${status} ${reason}\n`;
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
}

/** The `proxy` handler kind: a named upstream, or a private one-server upstream for `url:`; optionally cached. */
export const proxyKind: HandlerKind<ProxyOptions> = {
  kind: 'proxy',
  create(options, env) {
    let upstream: Upstream;
    let owned = false;
    if (options.upstream !== undefined) {
      upstream = env.upstreams.get(options.upstream)!;
    } else {
      upstream = env.createUpstream(`url:${(options.url as { text: string }).text}`, { servers: [{ url: (options.url as { text: string }).text }] });
      owned = true;
    }
    const handler = new ProxyHandler(options, { upstream, trusted: env.trusted, routePath: env.routePath, serverHeader: env.serverHeader, logger: env.logger });
    const cacheOptions = options.cache;
    const cache =
      cacheOptions === undefined
        ? undefined
        : new ProxyCache(
            {
              zone: env.caches.get(cacheOptions.zone)!,
              key: compileKey(cacheOptions.key),
              rules: {
                heuristic: cacheOptions.heuristic,
                defaultTtl: cacheOptions.default_ttl,
                ignoreSetCookie: cacheOptions.ignore_set_cookie,
                staleIfError: cacheOptions.stale_if_error,
              },
              hitForMiss: cacheOptions.hit_for_miss,
              collapse: cacheOptions.collapse,
            },
            handler,
          );
    return {
      handle:
        cache === undefined
          ? function proxy(ctx) {
              return handler.handle(ctx);
            }
          : function cachedProxy(ctx) {
              return cache.handle(ctx);
            },
      upgrade: options.websocket ? (ctx, socket, head) => handler.upgrade(ctx, socket, head) : undefined,
      start: owned ? () => upstream.start() : undefined,
      stop: owned ? () => upstream.stop() : undefined,
    };
  },
};
