/**
 * The cache in front of a proxy route (RFC 9111 shared cache, RFC 5861 stale-*, RFC 9211 Cache-Status).
 *
 * GET and HEAD are looked up; a fresh hit is answered from memory (HEAD from a stored GET, client validators
 * answered with 304, a single Range with 206). A stale hit is revalidated with the stored validators (a 304
 * refreshes the stored headers) or, within stale-while-revalidate, served at once and refreshed once in the
 * background; when the origin fails, stale-if-error may stand in, and when no upstream can be reached at all,
 * stale_if_unreachable (RFC 9111 §4.2.4). Concurrent misses for one key are collapsed
 * into one upstream request whose response streams to every waiter — only when it is storable and its Vary
 * matches the waiter; otherwise the waiters go to the origin themselves and the key is marked hit-for-miss.
 * A successful unsafe request invalidates its URI and same-origin Location / Content-Location (§4.4).
 */
import type { ClientSink, ForwardOutcome, HeaderEdit, PreparedRequest, ResponseSink } from './sink.js';
import { evaluatePreconditions, hasConditionals, ifRangeAllows, validatorsOf } from '../../http/conditional.js';
import { parseRange } from '../../http/range.js';
import { responseComplete, type RequestContext } from '../../http/context.js';
import { RETRY_SOON, sendError, sendWhole } from '../../http/send.js';
import { parseCacheControl, type CacheControl } from '../../cache/cache-control.js';
import { cacheStatus, ERROR_STATUSES, feedFromBody, InvalidatingSink, notModifiedHeaders, StoringSink, TaggedSink, type CacheOwner, type ProxyCacheOptions } from './cache-sinks.js';
import { ageOf, currentAge, headerValue, mayServeStaleOnError, mayServeStaleWhenUnreachable, normalizeAcceptEncoding, pragmaNoCache, usability, varyKey } from '../../cache/rules.js';
import type { StoredResponse } from '../../cache/types.js';
import type { OutgoingHttpHeaders } from 'node:http';
import { keptFields } from './intercept.js';
import { PorticoError } from '../../errors.js';
import { sameOriginPath, type CachedVariant, type Flight, type FlightDecision, type Lookup } from '../../cache/zone.js';

/** The forwarding half of the proxy that the cache drives. */
export interface Forwarder {
  prepare(ctx: RequestContext): PreparedRequest | undefined | Promise<PreparedRequest | undefined>;
  forward(prepared: PreparedRequest, sink: ResponseSink, edit?: HeaderEdit): Promise<ForwardOutcome>;
  clientSink(ctx: RequestContext): ClientSink;
  /** The sticky Set-Cookie for a client answered from the cache, if it needs one. */
  stickyCookie(ctx: RequestContext): string | undefined;
}

const NO_FIELDS: readonly string[] = [];

/**
 * Replaced in a cacheable fetch: client validators and Range are answered by Portico (the origin is asked with
 * the cache's own validators, or none), and Accept-Encoding is sent normalised, as the Vary key sees it.
 */
const REPLACED_ON_FETCH: ReadonlySet<string> = new Set(['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range', 'range', 'accept-encoding']);
/** Safe methods besides GET and HEAD (RFC 9110 §9.2.1, WebDAV): forwarded, never invalidating (§4.4 is for unsafe ones). */
const SAFE_METHODS: ReadonlySet<string> = new Set(['OPTIONS', 'TRACE', 'PROPFIND', 'REPORT', 'SEARCH']);
/** Fields a 304 may not change in the stored response (§3.2). */
const KEEP_ON_REFRESH = new Set(['content-length', 'content-encoding', 'content-range', 'transfer-encoding']);

/** The request header changes of a cacheable fetch, with the cache's own validators (`add`, flat name/value list). */
function fetchEdit(ctx: RequestContext, validators: readonly string[]): HeaderEdit {
  return { drop: REPLACED_ON_FETCH, add: ['accept-encoding', normalizeAcceptEncoding(ctx.req.headers['accept-encoding']), ...validators] };
}

/** Whether the request's Pragma asks for a validated answer (only without Cache-Control, §5.4). */
function requestPragmaNoCache(ctx: RequestContext): boolean {
  return pragmaNoCache(ctx.req.headers['cache-control'], ctx.req.headers.pragma);
}

function ttlParam(variant: CachedVariant, age: number): string {
  return `ttl=${Math.floor((variant.extra.facts.lifetime - age) / 1000)}`;
}

/** The caching layer of one proxy route. */
export class ProxyCache implements CacheOwner {
  readonly #o: ProxyCacheOptions;
  readonly #forwarder: Forwarder;

  constructor(options: ProxyCacheOptions, forwarder: Forwarder) {
    this.#o = options;
    this.#forwarder = forwarder;
  }

  /**
   * Portico's own fields for a client answered from storage: its sticky cookie (a stored response never holds
   * one, so that no client gets another's pin).
   */
  #own(ctx: RequestContext): readonly string[] {
    const cookie = this.#forwarder.stickyCookie(ctx);
    return cookie === undefined ? NO_FIELDS : ['Set-Cookie', cookie];
  }

  /**
   * The route's key, then what else the app is told that the key must hold so that a page is stored only for the
   * requests it was built for: the canonical authority when the client named a port (`$host` has none:
   * `good.example:6666`) or when the template lacks `$host`; and what a trusted proxy forwarded of another host or
   * scheme (`RequestContext.forwarded()`, the same view the app's headers are built from). Usually the key alone.
   */
  #keyFor(ctx: RequestContext): string {
    const key = this.#o.key(ctx);
    const authority = ctx.canonicalAuthority;
    const forwarded = ctx.forwarded().keySuffix;
    if (authority.length === ctx.host.length && this.#o.keyHoldsHost) return forwarded === '' ? key : key + forwarded;
    return `${key}\0${authority}${forwarded}`;
  }

  /** Synchronous for a hit from memory (no promise on the hot path); a promise otherwise. */
  handle(ctx: RequestContext): Promise<void> | void {
    const { req } = ctx;
    const method = req.method!;
    if (method !== 'GET' && method !== 'HEAD') return this.#unsafe(ctx);
    const ccHeader = req.headers['cache-control'];
    const reqcc = parseCacheControl(ccHeader);
    const pragma = requestPragmaNoCache(ctx);
    const key = this.#keyFor(ctx);
    if (reqcc.noStore) return this.#passThrough(ctx, 'fwd=request');
    const found = this.#o.zone.lookupMemory(key, req.headers);
    if (found !== undefined) return this.#answer(ctx, key, found, reqcc, pragma);
    return this.#o.zone.lookup(key, req.headers, this.#o.rules).then((lookup) => this.#answer(ctx, key, lookup, reqcc, pragma));
  }

  #answer(ctx: RequestContext, key: string, lookup: Lookup, reqcc: CacheControl, pragmaAsks: boolean): Promise<void> | void {
    if ('hit' in lookup) {
      const variant = lookup.hit;
      const now = Date.now();
      const age = ageOf(variant.extra.facts, now);
      const use = usability(variant.extra.facts, age, reqcc, pragmaAsks);
      if (use === 'fresh' || use === 'stale-ok') {
        if (lookup.shared === true) this.#serveStored(ctx, variant, age, `hit; ${ttlParam(variant, age)}; detail=shared`);
        else this.#serveHit(ctx, variant, age);
        const tally = this.#o.tally;
        if (tally !== undefined) {
          if (use === 'fresh') tally.hit(ctx.bytesSent);
          else tally.staleServed(ctx.bytesSent);
        }
        return;
      }
      if (use === 'stale-while-revalidate') {
        this.#serveStored(ctx, variant, age, `hit; ${ttlParam(variant, age)}; detail=stale-while-revalidate`);
        this.#count(ctx, true);
        this.#refreshInBackground(ctx, key, variant, reqcc);
        return;
      }
      // RFC 9211: fwd=request when the stored response was fresh and usable but the request's directives
      // (no-cache, max-age, min-fresh, Pragma) refused it; fwd=stale when the response itself needs validation.
      const facts = variant.extra.facts;
      const fwd = facts.cc.noCache === false && facts.lifetime > age ? 'fwd=request' : 'fwd=stale';
      if (reqcc.onlyIfCached) {
        this.#count(ctx, false);
        return sendError(ctx, 504, { 'Cache-Status': cacheStatus(`${fwd}; detail=only-if-cached`) });
      }
      if (this.#o.zone.shared !== undefined) return this.#revalidateShared(ctx, key, variant, age, reqcc, fwd);
      return this.#revalidate(ctx, key, variant, age, reqcc, fwd);
    }
    // Counted here: the rest of a miss (a collapsed wait, a fetch) never serves from storage.
    this.#count(ctx, false);
    if (reqcc.onlyIfCached) return sendError(ctx, 504, { 'Cache-Status': cacheStatus(`fwd=${lookup.miss}; detail=only-if-cached`) });
    if (ctx.req.method === 'HEAD') return this.#passThrough(ctx, `fwd=${lookup.miss}`);
    return this.#miss(ctx, key, `fwd=${lookup.miss}`, reqcc);
  }

  /**
   * Counts a lookup's outcome (counting on): `stale`, a stored response served stale (its body bytes counted as
   * served from the cache), else a miss (the answer came from the upstream: a miss, a revalidation).
   */
  #count(ctx: RequestContext, stale: boolean): void {
    const tally = this.#o.tally;
    if (tally === undefined) return;
    if (stale) tally.staleServed(ctx.bytesSent);
    else tally.miss();
  }

  /** Forwards without storing; every response still says what the cache did. */
  async #passThrough(ctx: RequestContext, params: string): Promise<void> {
    ctx.cacheStatus = params;
    const prepared = await this.#forwarder.prepare(ctx);
    if (prepared === undefined) return;
    const sink = new TaggedSink(this.#forwarder.clientSink(ctx), cacheStatus(params));
    const outcome = await this.#forwarder.forward(prepared, sink);
    if (!outcome.ok) sendError(ctx, outcome.status, this.#errorHeaders(outcome, params));
  }

  /** The fields of an error page: an intercepted answer's own (and its status, RFC 9211 fwd-status), or Portico's. */
  #errorHeaders(outcome: Exclude<ForwardOutcome, { ok: true }>, params: string): OutgoingHttpHeaders {
    if (outcome.intercepted) return { ...outcome.kept, 'Cache-Status': cacheStatus(`${params}; fwd-status=${outcome.status}`) };
    return outcome.status === 503 ? { ...RETRY_SOON, 'Cache-Status': cacheStatus(params) } : { 'Cache-Status': cacheStatus(params) };
  }

  /** POST/PUT/PATCH/DELETE…: forwarded; on success the URI and its same-origin Location/Content-Location are invalidated. */
  async #unsafe(ctx: RequestContext): Promise<void> {
    ctx.cacheStatus = 'fwd=method';
    const prepared = await this.#forwarder.prepare(ctx);
    if (prepared === undefined) return;
    const tagged = new TaggedSink(this.#forwarder.clientSink(ctx), cacheStatus('fwd=method'));
    // The invalidation starts at the response's head; with a shared tier the client is answered once every box
    // has been told (see InvalidatingSink).
    const sink = new InvalidatingSink(tagged, (status, headers) => this.#invalidate(ctx, status, headers));
    const outcome = await this.#forwarder.forward(prepared, sink);
    await sink.settled;
    if (!outcome.ok) return sendError(ctx, outcome.status, this.#errorHeaders(outcome, 'fwd=method'));
  }

  /**
   * RFC 9111 §4.4: a non-error answer to an unsafe method invalidates the URI and its same-origin Location /
   * Content-Location. Returns what to wait for before the client is answered: the shared tier's part (Redis and
   * the other boxes told), or nothing (a box alone: the memory tier is purged at once, the disk's in the background).
   */
  #invalidate(ctx: RequestContext, status: number, headers: readonly string[]): Promise<unknown> | undefined {
    if (status < 200 || status >= 400 || SAFE_METHODS.has(ctx.req.method!)) return undefined;
    const zone = this.#o.zone;
    const purges = [zone.purge(this.#keyFor(ctx))];
    for (const name of ['location', 'content-location']) {
      const target = sameOriginPath(headerValue(headers, name), ctx.canonicalAuthority);
      if (target === undefined) continue;
      const q = target.indexOf('?');
      const other = Object.create(ctx) as RequestContext;
      Object.defineProperty(other, 'path', { value: q === -1 ? target : target.slice(0, q) });
      Object.defineProperty(other, 'query', { value: q === -1 ? '' : target.slice(q + 1) });
      purges.push(zone.purge(this.#keyFor(other)));
    }
    const done = Promise.all(purges).catch(() => undefined);
    return zone.shared === undefined ? undefined : done;
  }

  /** A miss: join a collapsed fetch in flight, or lead one, or (hit-for-miss, Authorization) fetch alone. */
  async #miss(ctx: RequestContext, key: string, params: string, reqcc: CacheControl): Promise<void> {
    const zone = this.#o.zone;
    const alone = !this.#o.collapse || ctx.req.headers.authorization !== undefined || zone.isHitForMiss(key, Date.now());
    if (!alone) {
      const inFlight = zone.flight(key);
      if (inFlight !== undefined) {
        const decision = await inFlight.decision;
        if (decision.share && decision.body.joinable && varyKey(decision.vary, ctx.req.headers) === decision.varyKeyOf) {
          return this.#serveFlight(ctx, decision, `${params}; collapsed`);
        }
        if (!decision.share && decision.stored !== undefined && this.#servable(ctx, decision.stored, reqcc)) return this.#serveShared(ctx, decision.stored);
        return this.#fetch(ctx, key, params, reqcc, null, null);
      }
      let publish!: (decision: FlightDecision) => void;
      const flight: Flight = { decision: new Promise((resolve) => (publish = resolve)) };
      const done = this.#lead(ctx, key, params, reqcc, publish);
      zone.beginFlight(key, flight, done);
      return done;
    }
    return this.#fetch(ctx, key, params, reqcc, null, null);
  }

  /**
   * A collapse leader. With a shared tier, first the cluster-wide lock of the key: another box fetching it, this
   * one waits for its answer and serves it (and so do this box's waiters); else it fetches, and frees the lock
   * when nothing was stored (`releaseClaim`; a store frees it itself).
   */
  async #lead(ctx: RequestContext, key: string, params: string, reqcc: CacheControl, publish: (decision: FlightDecision) => void): Promise<void> {
    const zone = this.#o.zone;
    if (zone.shared === undefined) return this.#fetch(ctx, key, params, reqcc, publish, null);
    const claimed = await zone.claim(key, ctx.req.headers, this.#o.rules, (variant) => this.#servable(ctx, variant, reqcc));
    if (claimed !== undefined && 'hit' in claimed) {
      publish({ share: false, stored: claimed.hit });
      return this.#serveShared(ctx, claimed.hit);
    }
    try {
      await this.#fetch(ctx, key, params, reqcc, publish, null);
    } finally {
      zone.releaseClaim(key);
    }
  }

  /**
   * A stale stored variant to revalidate, with a shared tier: one box of the cluster revalidates (the lock), the
   * others wait and serve its refreshed answer.
   */
  async #revalidateShared(ctx: RequestContext, key: string, variant: CachedVariant, age: number, reqcc: CacheControl, params: string): Promise<void> {
    const zone = this.#o.zone;
    const claimed = await zone.claim(key, ctx.req.headers, this.#o.rules, (other) => other.stored.responseTime > variant.stored.responseTime && this.#servable(ctx, other, reqcc));
    if (claimed !== undefined && 'hit' in claimed) {
      this.#serveShared(ctx, claimed.hit);
      return this.#o.tally?.hit(ctx.bytesSent);
    }
    try {
      await this.#revalidate(ctx, key, variant, age, reqcc, params);
    } finally {
      zone.releaseClaim(key);
    }
  }

  /** Whether a variant read from the shared tier answers this request as it is (its Vary matches; fresh enough). */
  #servable(ctx: RequestContext, variant: CachedVariant, reqcc: CacheControl): boolean {
    if (varyKey(variant.extra.facts.vary, ctx.req.headers) !== variant.stored.varyKey) return false;
    const use = usability(variant.extra.facts, ageOf(variant.extra.facts, Date.now()), reqcc, requestPragmaNoCache(ctx));
    return use === 'fresh' || use === 'stale-ok';
  }

  /** Serves a variant another box stored (read from the shared tier). */
  #serveShared(ctx: RequestContext, variant: CachedVariant): void {
    const age = ageOf(variant.extra.facts, Date.now());
    this.#serveStored(ctx, variant, age, `hit; ${ttlParam(variant, age)}; detail=shared`);
  }

  /**
   * Fetches from the origin into a StoringSink. `publish` (a collapse leader) tells waiters what they get;
   * `stale` (a revalidation) is the stored variant a 304 refreshes.
   */
  async #fetch(
    ctx: RequestContext,
    key: string,
    params: string,
    reqcc: CacheControl,
    publish: ((decision: FlightDecision) => void) | null,
    stale: { variant: CachedVariant; age: number; edit: HeaderEdit } | null,
    background = false,
  ): Promise<void> {
    if (!background) ctx.cacheStatus = params;
    const prepared = await this.#forwarder.prepare(ctx);
    if (prepared === undefined) {
      publish?.({ share: false });
      return;
    }
    // The fetch is the cache's, not this client's: forwarded as a copy that the client's close does not abort.
    // The sink decides instead: a response being stored or shared with waiters is fetched to the end.
    const fetch: PreparedRequest = { ...prepared };
    const sink = new StoringSink({ cache: this, ctx, key, params, reqcc, publish, stale: stale?.variant ?? null, background, fetch, client: this.#forwarder.clientSink(ctx) });
    if (!background) {
      ctx.res.once('close', () => {
        if (!responseComplete(ctx.res)) sink.clientGone();
      });
    }
    const outcome = await this.#forwarder.forward(fetch, sink, stale?.edit ?? fetchEdit(ctx, []));
    sink.settle();
    if (!background) ctx.cacheStatus = `${params}; fwd-status=${sink.status}`;
    // A revalidation's outcome is counted here (a plain miss was counted at its lookup): stale when stored stands in.
    const revalidation = stale !== null && !background;
    if (outcome.ok) {
      if (sink.servedStaleOnError && stale !== null) {
        this.#serveStored(ctx, stale.variant, stale.age, `fwd=stale; fwd-status=${sink.status}; detail=stale-if-error`);
        if (revalidation) this.#count(ctx, true);
      } else if (revalidation) this.#count(ctx, false);
      return;
    }
    if (background) return;
    if (stale !== null && outcome.unreachable && this.#o.staleIfUnreachable > 0) {
      // Aged to now: the failed attempts (a connect timeout) may have taken a while.
      const age = ageOf(stale.variant.extra.facts, Date.now());
      if (mayServeStaleWhenUnreachable(stale.variant.extra.facts, age, reqcc, requestPragmaNoCache(ctx), this.#o.staleIfUnreachable)) {
        this.#serveStored(ctx, stale.variant, age, `${params}; fwd-status=${outcome.status}; detail=unreachable-stale`);
        return this.#count(ctx, true);
      }
    }
    // An intercepted 5xx is still the app's 5xx: stale-if-error stands in for it as for one passed through.
    if (stale !== null && ERROR_STATUSES.has(outcome.status) && mayServeStaleOnError(stale.variant.extra.facts, stale.age, reqcc, this.#o.rules.staleIfError)) {
      this.#serveStored(ctx, stale.variant, stale.age, `fwd=stale; fwd-status=${outcome.status}; detail=stale-if-error`);
      return this.#count(ctx, true);
    }
    if (revalidation) this.#count(ctx, false);
    sendError(ctx, outcome.status, this.#errorHeaders(outcome, params));
  }

  /** Revalidates a stored variant with its validators (or refetches when it has none). */
  #revalidate(ctx: RequestContext, key: string, variant: CachedVariant, age: number, reqcc: CacheControl, params: string, background = false): Promise<void> {
    const add: string[] = [];
    const { etag, lastModified } = variant.extra.facts;
    if (etag !== undefined) add.push('if-none-match', etag);
    if (lastModified !== undefined) add.push('if-modified-since', lastModified);
    return this.#fetch(ctx, key, params, reqcc, null, { variant, age, edit: fetchEdit(ctx, add) }, background);
  }

  /** stale-while-revalidate: one background refresh per key at a time. */
  #refreshInBackground(ctx: RequestContext, key: string, variant: CachedVariant, reqcc: CacheControl): void {
    const zone = this.#o.zone;
    const flightKey = `\0refresh\0${key}`;
    if (zone.flight(flightKey) !== undefined) return;
    const flight: Flight = { decision: Promise.resolve({ share: false }) };
    const done = zone.shared === undefined ? this.#revalidate(ctx, key, variant, currentAge(variant.stored, Date.now()), reqcc, 'fwd=stale', true) : this.#refreshShared(ctx, key, variant, reqcc);
    zone.beginFlight(flightKey, flight, done.catch(() => undefined));
  }

  /** A background refresh with a shared tier: unless another box refreshed it (its answer is then kept here), this one does. */
  async #refreshShared(ctx: RequestContext, key: string, variant: CachedVariant, reqcc: CacheControl): Promise<void> {
    const zone = this.#o.zone;
    const claimed = await zone.claim(key, ctx.req.headers, this.#o.rules, (other) => other.stored.responseTime > variant.stored.responseTime);
    if (claimed !== undefined) return;
    try {
      await this.#revalidate(ctx, key, variant, currentAge(variant.stored, Date.now()), reqcc, 'fwd=stale', true);
    } finally {
      zone.releaseClaim(key);
    }
  }

  /**
   * A hit: a request with no validators and no Range (the usual one) gets the whole stored response with a header
   * list made at most once per second of age; any other goes through `#serveStored`.
   */
  #serveHit(ctx: RequestContext, variant: CachedVariant, age: number): void {
    const headers = ctx.req.headers;
    if (hasConditionals(headers) || headers.range !== undefined || this.#o.intercept?.has(variant.stored.status) === true) {
      return this.#serveStored(ctx, variant, age, `hit; ${ttlParam(variant, age)}`);
    }
    const ageSeconds = Math.floor(age / 1000);
    const ttl = Math.floor((variant.extra.facts.lifetime - age) / 1000);
    let served = variant.extra.served;
    if (served === undefined || served.age !== ageSeconds || served.ttl !== ttl) {
      served = { age: ageSeconds, ttl, headers: [...variant.extra.baseHeaders, 'Age', String(ageSeconds), 'Cache-Status', cacheStatus(`hit; ttl=${ttl}`)] };
      variant.extra.served = served;
    }
    const own = this.#own(ctx);
    ctx.cacheStatus = 'hit';
    sendWhole(ctx, variant.stored.status, own.length === 0 ? served.headers : [...served.headers, ...own], variant.stored.body, variant.extra.text);
  }

  /**
   * Answers from a stored variant: 304/412 for client validators, 206/416 for a Range, else the whole response.
   * `own`: this client's fields from a revalidation it made; without them, its sticky cookie is worked out here.
   */
  #serveStored(ctx: RequestContext, variant: CachedVariant, age: number, params: string, own: readonly string[] = this.#own(ctx)): void {
    const { req, res } = ctx;
    const stored = variant.stored;
    ctx.cacheStatus = params;
    // Stored before the route intercepted its status (a reload turned intercept_errors on): the app's page stays inside.
    if (this.#o.intercept?.has(stored.status) === true) return sendError(ctx, stored.status, { ...keptFields(stored.headers), 'Cache-Status': cacheStatus(params) });
    const facts = variant.extra.facts;
    const statusHeader = cacheStatus(params);
    const ageSeconds = String(Math.floor(age / 1000));
    const validators = validatorsOf(facts.etag, facts.lastModified);
    if (stored.status === 200 && (facts.etag !== undefined || facts.lastModified !== undefined)) {
      const outcome = evaluatePreconditions(req.headers, validators, true);
      if (outcome === 304) {
        ctx.status = 304;
        res.writeHead(304, [...notModifiedHeaders(variant.extra.baseHeaders), ...own, 'Age', ageSeconds, 'Cache-Status', statusHeader]);
        res.end();
        return;
      }
      if (outcome === 412) return sendError(ctx, 412, { 'Cache-Status': statusHeader });
    }
    const range = req.method === 'GET' && stored.status === 200 ? req.headers.range : undefined;
    if (range !== undefined && ifRangeAllows(req.headers['if-range'] as string | undefined, validators)) {
      const decision = parseRange(range, stored.body.length, 1);
      if (decision.kind === 'unsatisfiable') return sendError(ctx, 416, { 'Content-Range': `bytes */${stored.body.length}`, 'Cache-Status': statusHeader });
      if (decision.kind === 'ranges') {
        const { start, end } = decision.ranges[0]!;
        const headers = variant.extra.baseHeaders.filter((_v, i, list) => i % 2 === 0 ? list[i]!.toLowerCase() !== 'content-length' : list[i - 1]!.toLowerCase() !== 'content-length');
        ctx.status = 206;
        ctx.bytesSent = end - start + 1;
        res.writeHead(206, [...headers, ...own, 'Content-Range', `bytes ${start}-${end}/${stored.body.length}`, 'Content-Length', String(end - start + 1), 'Age', ageSeconds, 'Cache-Status', statusHeader]);
        res.end(stored.body.subarray(start, end + 1));
        return;
      }
    }
    sendWhole(ctx, stored.status, [...variant.extra.baseHeaders, ...own, 'Age', ageSeconds, 'Cache-Status', statusHeader], stored.body, variant.extra.text);
  }

  /**
   * A collapsed waiter: the leader's response, streamed as it arrives, through the same ClientSink as the leader's
   * own client: a waiter that falls behind does so into its own spool (`buffer_response`), and one still more than
   * max_object behind a released body once that is full is cut (StoringSink.data), never waited for.
   */
  async #serveFlight(ctx: RequestContext, decision: Extract<FlightDecision, { share: true }>, params: string): Promise<void> {
    const client = this.#forwarder.clientSink(ctx);
    ctx.cacheStatus = params;
    client.head(decision.status, [...decision.headers, 'Cache-Status', cacheStatus(params)], this.#own(ctx));
    if (ctx.req.method === 'HEAD') return client.end();
    const reading = new AbortController();
    const onClose = () => reading.abort(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the connection'));
    ctx.res.once('close', onClose);
    try {
      await feedFromBody(decision.body, client, reading.signal);
      client.end();
    } catch {
      if (!reading.signal.aborted) client.fail();
    } finally {
      ctx.res.off('close', onClose);
    }
  }

  /** Stores a complete response; called by StoringSink. */
  store(entry: StoredResponse): void {
    this.#o.zone.store(entry, this.#o.rules, this.#staleWindow());
  }

  /** How long past its freshness a stored answer may still serve on this route (for the shared tier's expiry). */
  #staleWindow(): number {
    return Math.max(this.#o.rules.staleIfError, this.#o.staleIfUnreachable);
  }

  /** Refreshes a stored variant with the fields of a 304 (§4.3.4) and serves it. */
  refreshAndServe(ctx: RequestContext, variant: CachedVariant, headers: readonly string[], requestTime: number, responseTime: number, params: string, background: boolean): void {
    const updated = new Map<string, number>();
    for (let i = 0; i < headers.length; i += 2) updated.set(headers[i]!.toLowerCase(), i);
    const merged: string[] = [];
    // A Set-Cookie on the 304 is this client's own: it goes to this client and never into the stored response.
    const own: string[] = [];
    const old = variant.stored.headers;
    for (let i = 0; i < old.length; i += 2) {
      const lower = old[i]!.toLowerCase();
      // The old Age described the old copy; the validated one is as old as the 304 says (no Age: just made).
      if (lower === 'age') continue;
      if (!updated.has(lower) || KEEP_ON_REFRESH.has(lower)) merged.push(old[i]!, old[i + 1]!);
    }
    for (let i = 0; i < headers.length; i += 2) {
      const lower = headers[i]!.toLowerCase();
      if (lower === 'set-cookie') own.push(headers[i]!, headers[i + 1]!);
      else if (!KEEP_ON_REFRESH.has(lower) && lower !== 'cache-status') merged.push(headers[i]!, headers[i + 1]!);
    }
    const entry: StoredResponse = { ...variant.stored, headers: merged, requestTime, responseTime };
    const refreshed = this.#o.zone.store(entry, this.#o.rules, this.#staleWindow());
    if (!background) this.#serveStored(ctx, refreshed, currentAge(entry, Date.now()), params, own);
  }

  get options(): ProxyCacheOptions {
    return this.#o;
  }
}
