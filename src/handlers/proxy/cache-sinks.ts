/**
 * The sinks of the cache layer: TaggedSink passes a response through with its Cache-Status; StoringSink
 * decides storability, tees the body to the client and to collapsed waiters, stores it, and handles a
 * revalidation's 304 and stale-if-error.
 */
import type { CacheTally } from '../../metrics/metrics.js';
import type { ClientSink, PreparedRequest, ResponseSink } from './sink.js';
import { sendEarlyHints } from './interim.js';
import { evaluatePreconditions, validatorsOf } from '../../http/conditional.js';
import type { RequestContext } from '../../http/context.js';
import type { Template } from '../../http/template.js';
import type { CacheControl } from '../../cache/cache-control.js';
import { GrowingBody } from '../../cache/growing-body.js';
import { currentAge, headerValue, mayServeStaleOnError, notStorable, varyKey, type RuleOptions } from '../../cache/rules.js';
import type { StoredResponse } from '../../cache/types.js';
import { withoutPorticoField, withoutSetCookie, type CacheZone, type CachedVariant, type FlightDecision } from '../../cache/zone.js';
import { PorticoError } from '../../errors.js';

/** Origin statuses that count as errors for stale-if-error (RFC 5861 §4). */
export const ERROR_STATUSES = new Set([500, 502, 503, 504]);

/** An RFC 9211 Cache-Status value for Portico. */
export function cacheStatus(params: string): string {
  return `Portico; ${params}`;
}


/** Passes a response to the client with a Cache-Status field, and remembers its status and headers. */
export class TaggedSink implements ResponseSink {
  status = 0;
  headers: readonly string[] = [];
  constructor(
    readonly inner: ResponseSink,
    readonly statusHeader: string,
  ) {}
  head(status: number, headers: string[], own: readonly string[]): void {
    this.status = status;
    this.headers = headers;
    this.inner.head(status, [...withoutPorticoField(headers), 'Cache-Status', this.statusHeader], own);
  }
  data(chunk: Buffer): boolean {
    return this.inner.data(chunk);
  }
  drain(resume: () => void): void {
    this.inner.drain(resume);
  }
  end(trailers?: readonly string[]): void {
    // An HTTP/2 app's trailers (a gRPC call's status) go on: a pass-through is not stored.
    this.inner.end(trailers);
  }
  fail(err: Error): void {
    this.inner.fail(err);
  }
  earlyHints(links: string[]): void {
    this.inner.earlyHints?.(links);
  }
}

/**
 * The sink of an unsafe request on a cached route: at the response's head it starts the invalidation (RFC 9111
 * §4.4); when that returns a promise (a shared tier: Redis and the other boxes being told), the head and what
 * follows are held until it settles (bounded by the cluster's deadline), so that the client, once answered, finds
 * the old object gone on every box.
 */
export class InvalidatingSink implements ResponseSink {
  #held: Array<() => unknown> | null = null;
  #resume: (() => void) | null = null;
  #flushed: Promise<void> | undefined;

  constructor(
    readonly inner: ResponseSink,
    readonly invalidate: (status: number, headers: readonly string[]) => Promise<unknown> | undefined,
  ) {}

  /** Resolves once everything held (if anything) has been passed on. */
  get settled(): Promise<void> {
    return this.#flushed ?? Promise.resolve();
  }

  head(status: number, headers: string[], own: readonly string[]): void {
    const pending = this.invalidate(status, headers);
    if (pending === undefined) {
      this.inner.head(status, headers, own);
      return;
    }
    this.#held = [() => this.inner.head(status, headers, own)];
    this.#flushed = pending.then(() => {
      const held = this.#held ?? [];
      this.#held = null;
      let full = false;
      for (const step of held) full = step() === false;
      const resume = this.#resume;
      this.#resume = null;
      if (resume === null) return;
      this.inner.drain(resume);
      // The origin was paused by `data` here: the inner sink resumes it when it fills up, else it goes on now.
      if (this.#paused && !full) resume();
    });
  }

  #paused = false;

  data(chunk: Buffer): boolean {
    if (this.#held === null) return this.inner.data(chunk);
    this.#held.push(() => this.inner.data(chunk));
    this.#paused = true;
    return false;
  }

  drain(resume: () => void): void {
    if (this.#held === null) this.inner.drain(resume);
    else this.#resume = resume;
  }

  end(trailers?: readonly string[]): void {
    if (this.#held === null) this.inner.end(trailers);
    else this.#held.push(() => this.inner.end(trailers));
  }

  fail(err: Error): void {
    if (this.#held === null) this.inner.fail(err);
    else this.#held.push(() => this.inner.fail(err));
  }

  earlyHints(links: string[]): void {
    this.inner.earlyHints?.(links);
  }
}

/**
 * Feeds one client (a collapse leader's own, or a waiter) from a growing body at the client's pace, through its
 * ClientSink: what the client has not taken yet goes to its own spool (`buffer_response`), never back to the fetch.
 * Resolves when the body ended and all of it was handed to the sink; rejects when the body failed, when `signal`
 * aborts (the client went), or when the reader fell too far behind a released body and was cut.
 */
export function feedFromBody(body: GrowingBody, client: ClientSink, signal: AbortSignal): Promise<void> {
  let wait: { resolve: () => void; reject: (err: Error) => void } | null = null;
  const settle = (err?: Error) => {
    const waiting = wait;
    wait = null;
    if (err === undefined) waiting?.resolve();
    else waiting?.reject(err);
  };
  const onAbort = () => settle(signal.reason as Error);
  client.drain(() => settle());
  signal.addEventListener('abort', onAbort, { once: true });
  return body
    .pipeTo(
      (chunk) => client.data(chunk),
      () => new Promise<void>((resolve, reject) => (wait = { resolve, reject })),
      signal,
    )
    .finally(() => {
      signal.removeEventListener('abort', onAbort);
      // A reader cut while it waited for its client: its wait ends too.
      settle(new Error('the reader ended'));
    });
}

/** Fields a 304 carries (RFC 9110 §15.4.5), taken from a full header list. */
export function notModifiedHeaders(headers: readonly string[]): string[] {
  const keep = new Set(['etag', 'last-modified', 'cache-control', 'expires', 'vary', 'content-location', 'date', 'server']);
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (keep.has(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!);
  return out;
}

/** A route's cache settings, resolved once. */
export interface ProxyCacheOptions {
  zone: CacheZone;
  /** The cache key of a request (a compiled `key` template). */
  key: Template;
  /**
   * Whether the key template holds `$host`. Without it, the request's canonical authority is added to every key:
   * the app is told it (Host with `host: pass`, X-Forwarded-Host and Forwarded always), so it may build the page for it.
   */
  keyHoldsHost: boolean;
  rules: RuleOptions;
  /** How long after going stale a stored response may stand in for an unreachable upstream (ms); 0 = never. */
  staleIfUnreachable: number;
  hitForMiss: number;
  collapse: boolean;
  /** Statuses the route intercepts (`intercept_errors`): a stored answer with one is never served as it is. */
  intercept: ReadonlySet<number> | undefined;
  /** Where the zone's lookups are counted when counting is on (the config has `admin`). */
  tally?: CacheTally | undefined;
}

/** What a StoringSink needs of the route's cache. */
export interface CacheOwner {
  readonly options: ProxyCacheOptions;
  /** Stores a complete response. */
  store(entry: StoredResponse): void;
  /** Refreshes a stored variant with the fields of a 304 (RFC 9111 §4.3.4) and serves it. */
  refreshAndServe(ctx: RequestContext, variant: CachedVariant, headers: readonly string[], requestTime: number, responseTime: number, params: string, background: boolean): void;
}

/** One cacheable fetch, as the StoringSink sees it. */
export interface StoringSinkInit {
  readonly cache: CacheOwner;
  readonly ctx: RequestContext;
  readonly key: string;
  /** Cache-Status parameters so far (`fwd=miss`, …). */
  readonly params: string;
  readonly reqcc: CacheControl;
  /** A collapse leader's way to tell waiters what they get; null when not leading. */
  readonly publish: ((decision: FlightDecision) => void) | null;
  /** The stored variant a revalidation's 304 refreshes; null for a plain miss. */
  readonly stale: CachedVariant | null;
  /** A background refresh (stale-while-revalidate): no client to answer. */
  readonly background: boolean;
  /** The cache's own copy of the prepared request. */
  readonly fetch: PreparedRequest;
  /**
   * Where the client's answer goes. A response being stored or shared reaches it through the GrowingBody, like any
   * waiter; any other straight from the fetch (its spool then holds what a slow client has not taken).
   */
  readonly client: ClientSink;
}

// The class takes its fields from StoringSinkInit (declaration merging) instead of a second list of them.
export interface StoringSink extends StoringSinkInit {}

/**
 * The sink of a cacheable fetch: decides storability at the head, streams to the client (and to collapsed
 * waiters through a GrowingBody), stores the complete body, swallows a revalidation's 304 and refreshes, and
 * turns an origin error into stale-if-error when the stored copy allows it.
 *
 * A response being stored is fetched at the app's pace, whoever reads it: its own client reads the GrowingBody
 * like any collapsed waiter, so a slow one (or one that reads nothing) holds back neither the waiters nor the app
 * (nginx fills the cache file at the upstream's pace, Varnish streams a fetch to all its clients from storage).
 * The body is kept whole up to max_object anyway. Past max_object it is not stored, and is still fetched at the
 * app's pace: each reader falls behind into its own spool (`buffer_response`), and one that is still more than
 * max_object behind once that is full is cut, rather than pausing the fetch for all.
 */
export class StoringSink implements ResponseSink {
  status = 0;
  servedStaleOnError = false;
  #mode: 'client' | 'refresh' | 'discard' = 'client';
  #body: GrowingBody | null = null;
  #stored: Omit<StoredResponse, 'body'> | null = null;
  #clientBody = true;
  #published = false;
  #refreshHeaders: readonly string[] = [];
  readonly #requestTime = Date.now();
  #responseTime = 0;
  #clientGone = false;
  #resume: (() => void) | null = null;
  /** Resumes the fetch once the body's readers have caught up (past max_object). */
  readonly #resumeFetch = (): void => this.#resume?.();
  /** The client's reader of the GrowingBody, when it reads from there; aborted when the client goes. */
  #reading: AbortController | null = null;

  constructor(init: StoringSinkInit) {
    Object.assign(this, init);
  }

  /**
   * The client went away. A response being stored or shared is still fetched to the end (one client leaving
   * must not cut the collapsed waiters, nor waste the fetch); anything else is aborted as the proxy would.
   */
  clientGone(): void {
    this.#clientGone = true;
    this.#clientBody = false;
    this.#stopReading(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the connection'));
    if (this.status !== 0 && !this.#needed()) this.#abort();
    // A pause for this client's backpressure would never end now (the body's readers never pause the fetch).
    if (this.#reading === null) this.#resume?.();
  }

  /**
   * Feeds the client from the body, as a waiter is fed: its pace is its own. Its end or failure ends the
   * client's answer; the reader is aborted when the client goes, or when the fetch fails.
   */
  #readBody(body: GrowingBody): void {
    const reading = (this.#reading = new AbortController());
    feedFromBody(body, this.client, reading.signal).then(
      () => this.client.end(),
      () => {
        if (!reading.signal.aborted) this.client.fail();
      },
    );
  }

  /** The client's reader leaves the body (its client went, or the fetch failed). */
  #stopReading(reason: Error): void {
    const reading = this.#reading;
    if (reading !== null && !reading.signal.aborted) reading.abort(reason);
  }

  /** Whether the response is wanted beside this client: it is being stored, or waiters are reading it. */
  #needed(): boolean {
    return this.#stored !== null || (this.#body !== null && this.#body.readers > 0);
  }

  #abort(): void {
    this.fetch.clientGone = true;
    this.fetch.abortCurrent?.(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the connection'));
  }

  #publish(decision: FlightDecision): void {
    if (this.#published) return;
    this.#published = true;
    this.publish?.(decision);
  }

  /** Storability is judged on the app's `headers` alone; `own` (the sticky cookie) goes to this client only. */
  head(status: number, headers: string[], own: readonly string[]): void {
    this.status = status;
    this.#responseTime = Date.now();
    const { ctx, cache } = this;
    const options = cache.options;
    if (status === 304 && this.stale !== null) {
      this.#mode = 'refresh';
      // A refresh sends every Set-Cookie of the 304 to this client only, never into the stored response.
      this.#refreshHeaders = own.length === 0 ? headers : [...headers, ...own];
      return;
    }
    if (ERROR_STATUSES.has(status) && this.stale !== null) {
      const age = currentAge(this.stale.stored, this.#responseTime);
      if (mayServeStaleOnError(this.stale.extra.facts, age, this.reqcc, options.rules.staleIfError)) {
        this.#mode = 'discard';
        this.servedStaleOnError = !this.background;
        return;
      }
    }
    const req = ctx.req;
    // A HEAD (revalidating a stale entry) is never stored: its empty body would replace the stored one.
    let reason: string | undefined = notStorable(
      { method: req.method!, cacheControl: this.reqcc, hasAuthorization: req.headers.authorization !== undefined, hasCookie: req.headers.cookie !== undefined },
      status,
      headers,
      options.rules,
    );
    const length = Number(headerValue(headers, 'content-length') ?? -1);
    if (reason === undefined && length > options.zone.maxObject) reason = 'too-large';
    const storedHeaders = options.rules.ignoreSetCookie ? withoutSetCookie(headers) : headers;
    const varyHeader = headerValue(storedHeaders, 'vary');
    const vary = varyHeader === undefined ? undefined : varyHeader.split(',').map((f) => f.trim().toLowerCase()).filter(Boolean);
    const variantKey = varyKey(vary, req.headers);
    if (reason === undefined && variantKey !== undefined) {
      this.#body = new GrowingBody();
      this.#stored = { key: this.key, varyKey: variantKey, status, headers: storedHeaders, requestTime: this.#requestTime, responseTime: this.#responseTime };
      this.#publish({ share: true, status, headers: withoutPorticoField(storedHeaders, true), body: this.#body, vary, varyKeyOf: variantKey });
    } else {
      this.#publish({ share: false });
      // Not for this request's credentials: the next request, without them, may well be stored.
      if (reason !== 'method' && reason !== 'credentials') options.zone.markHitForMiss(this.key, Date.now() + options.hitForMiss);
    }
    if (this.background || this.#clientGone) {
      this.#clientBody = false;
      if (this.#clientGone && !this.#needed()) this.#abort();
      return;
    }
    const statusHeader = cacheStatus(`${this.params}; fwd-status=${status}${this.#body !== null ? '; stored' : ''}`);
    // The client's own validators were not sent upstream: answer them here against the fresh response.
    const etag = headerValue(headers, 'etag');
    const lastModified = headerValue(headers, 'last-modified');
    if (status === 200 && (etag !== undefined || lastModified !== undefined)) {
      const outcome = evaluatePreconditions(req.headers, validatorsOf(etag, lastModified), true);
      if (outcome === 304) {
        this.client.head(304, [...notModifiedHeaders(headers), 'Cache-Status', statusHeader], own);
        this.#clientBody = false;
        return;
      }
    }
    this.client.head(status, [...withoutPorticoField(headers), 'Cache-Status', statusHeader], own);
    if (req.method === 'HEAD') this.#clientBody = false;
    else if (this.#body !== null) this.#readBody(this.#body);
  }

  data(chunk: Buffer): boolean {
    if (this.#mode !== 'client') return true;
    const body = this.#body;
    if (body === null) return !this.#clientBody || this.client.data(chunk);
    body.push(chunk);
    const maxObject = this.cache.options.zone.maxObject;
    if (this.#stored !== null && body.bytes > maxObject) this.#tooLarge(body);
    // Kept whole (≤ max_object): at the app's pace. Released: each reader first falls behind into its own spool
    // (buffer_response); past that and max_object, the fetch waits for the slowest (as one client's answer waits
    // once its buffer_response is full: nginx's proxy_max_temp_file_size), and send_timeout ends a reader that
    // takes nothing. Cutting a reader that was only slower than the app instead lost whole downloads.
    return !body.holdsOver(maxObject, this.#resumeFetch);
  }

  drain(resume: () => void): void {
    this.#resume = resume;
    // A client reading the body resumes its own reader, never the fetch.
    if (this.#reading === null) this.client.drain(resume);
  }

  /** A 103 of the fetch goes to the client that triggered it (not to collapsed waiters, nor in the background). */
  earlyHints(links: string[]): void {
    if (!this.background && !this.#clientGone) sendEarlyHints(this.ctx, links);
  }

  /**
   * Beyond max_object with no Content-Length to tell beforehand: not stored, not joined by anyone new, and the
   * body kept only until the waiters already reading have passed it.
   */
  #tooLarge(body: GrowingBody): void {
    const options = this.cache.options;
    this.#stored = null;
    body.release();
    if (this.publish !== null) options.zone.endFlight(this.key);
    options.zone.markHitForMiss(this.key, Date.now() + options.hitForMiss);
    if (this.#clientGone && !this.#needed()) this.#abort();
  }

  end(): void {
    if (this.#mode === 'refresh') {
      this.cache.refreshAndServe(this.ctx, this.stale!, this.#refreshHeaders, this.#requestTime, this.#responseTime, `${this.params}; fwd-status=304`, this.background);
      return;
    }
    if (this.#mode === 'discard') return;
    const body = this.#body;
    if (body !== null) {
      body.end();
      if (this.#stored !== null) this.cache.store({ ...this.#stored, body: body.concat() });
    }
    // A client reading the body ends when its reader has passed the end.
    if (!this.background && this.#reading === null) this.client.end();
  }

  fail(err: Error): void {
    this.#body?.fail(err);
    // Broken at once, not after a slow client has read what arrived before.
    this.#stopReading(err);
    // A 'discard' (stale-if-error) answers after the forward; a 'refresh' that failed has nothing to serve.
    if (!this.background && this.#mode !== 'discard') this.client.fail();
  }

  /** After the forward: waiters still waiting (the fetch failed before a head) go to the origin themselves. */
  settle(): void {
    this.#publish({ share: false });
    if (this.#body !== null && !this.#body.done) this.#body.fail(new PorticoError('PORTICO_UPSTREAM_INCOMPLETE', 'origin response ended early'));
  }
}
