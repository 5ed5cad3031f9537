/**
 * RFC 9111 rules for a *shared* cache, as pure functions (time is always passed in). Portico's choices where
 * the RFC leaves room, each the conservative one:
 * - only GET responses are stored; HEAD is answered from a stored GET;
 * - `private` (qualified or not) and `no-store` are never stored; a response to a request with Authorization
 *   only with `public`, `s-maxage` or `must-revalidate` (§3.5);
 * - a response with Set-Cookie is not stored unless `ignore_set_cookie` (then the cookie is stripped);
 * - with no explicit freshness, a response is stored only when heuristic freshness is enabled or a
 *   `default_ttl` is set: a zero-freshness copy would be revalidated with the first user's validators and then
 *   served to everyone, which is how personalised pages leak;
 * - those guessed lifetimes (heuristic, `default_ttl`) never apply to the answer to a request with Cookie or
 *   Authorization unless the route says `default_ttl_with_credentials`: an app that sends no cache fields for a
 *   logged-in page has not said it may be shared (cache deception); its own max-age, s-maxage or Expires still counts;
 * - heuristic freshness (opt-in) is 10 % of Date − Last-Modified, at most one day, and only for statuses that
 *   are heuristically cacheable (§4.2.2);
 * - `s-maxage` implies proxy-revalidate, so with must-revalidate and proxy-revalidate it forbids serving
 *   stale, whatever max-stale, stale-while-revalidate or stale-if-error say (§4.2.4, §5.2.2.10);
 * - `no-cache`, with or without field names, always means revalidate;
 * - dates (Expires, Date, Last-Modified) are HTTP-dates read strictly (`http/dates.ts`); an Expires that is not
 *   one, or that comes as several values, means already expired (§5.3);
 * - a list-valued Age uses its first member (§5.1);
 * - a targeted field (RFC 9213) named in the route's `targeted` list, the first one present, non-empty and a valid
 *   Dictionary, replaces Cache-Control and Expires for every decision here; Set-Cookie and Vary rules are unchanged.
 */
import { parseCacheControl, parseTargetedCacheControl, type CacheControl } from './cache-control.js';
import type { StoredResponse } from './types.js';
import { parseHttpDate } from '../http/dates.js';
import { ALL_ENCODINGS, negotiateEncoding } from '../http/negotiate.js';

/** Statuses a cache understands and may store (§3). */
const UNDERSTOOD = new Set([200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501]);
/** Statuses that are heuristically cacheable (RFC 9110 §15.1). */
const HEURISTIC = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]);
const MAX_HEURISTIC_MS = 86_400_000;

/** The route's cache settings that the rules use. */
export interface RuleOptions {
  heuristic: boolean;
  /** Freshness when the origin gives none and no heuristic applies (ms); 0 = none. */
  defaultTtl: number;
  /** Heuristic and default lifetimes apply to answers to requests with Cookie or Authorization too. */
  defaultTtlWithCredentials: boolean;
  ignoreSetCookie: boolean;
  /** Configured stale-if-error window (ms), used when the response does not give one. */
  staleIfError: number;
  /** Targeted cache-control fields obeyed (RFC 9213), lower-cased, in order of precedence. */
  targeted: readonly string[];
}

/** Portico's own targeted field: obeyed by default, and never passed on to clients. */
export const PORTICO_CACHE_CONTROL = 'portico-cache-control';
/** The default `targeted` list. */
export const DEFAULT_TARGETED: readonly string[] = Object.freeze([PORTICO_CACHE_CONTROL]);

/** First value of a field in a flat header list (case-insensitive name). */
export function headerValue(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.length === name.length && headers[i]!.toLowerCase() === name) return headers[i + 1];
  }
  return undefined;
}

/** All values of a field in a flat header list, joined with ", ". */
export function headerValues(headers: readonly string[], name: string): string | undefined {
  let out: string | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.length === name.length && headers[i]!.toLowerCase() === name) out = out === undefined ? headers[i + 1] : `${out}, ${headers[i + 1]}`;
  }
  return out;
}

function httpDate(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseHttpDate(value);
  return Number.isNaN(ms) ? undefined : ms;
}

/** The cache directives in effect for a response, and the targeted field they come from (`undefined`: Cache-Control). */
export interface ResponseDirectives {
  cc: CacheControl;
  targeted: string | undefined;
}

/**
 * The directives that govern a response (RFC 9213 §2.1): those of the first field of `targeted` that is present,
 * non-empty and a valid Dictionary; else Cache-Control's. A targeted field in effect also makes Expires ignored.
 */
export function responseDirectives(headers: readonly string[], targeted: readonly string[]): ResponseDirectives {
  for (const name of targeted) {
    const cc = parseTargetedCacheControl(headerValues(headers, name));
    if (cc !== undefined) return { cc, targeted: name };
  }
  return { cc: parseCacheControl(headerValues(headers, 'cache-control')), targeted: undefined };
}

/** Why a response was not stored (for logs and tests), or `undefined` when it may be. */
export type NotStorable =
  | 'method'
  | 'status'
  | 'no-store'
  | 'private'
  | 'authorization'
  | 'credentials'
  | 'set-cookie'
  | 'vary-star'
  | 'no-freshness'
  | 'partial';

/** What the storage decision looks at in the request. */
export interface RequestFacts {
  method: string;
  cacheControl: CacheControl;
  hasAuthorization: boolean;
  hasCookie: boolean;
}

/** Decides whether a response may be stored (§3); returns the reason when it may not. */
export function notStorable(req: RequestFacts, status: number, headers: readonly string[], options: RuleOptions): NotStorable | undefined {
  if (req.method !== 'GET') return 'method';
  if (status === 206 || headerValue(headers, 'content-range') !== undefined) return 'partial';
  if (!UNDERSTOOD.has(status)) return 'status';
  const { cc, targeted } = responseDirectives(headers, options.targeted);
  if (req.cacheControl.noStore || cc.noStore) return 'no-store';
  if (cc.private) return 'private';
  if (req.hasAuthorization && !cc.public && cc.sMaxAge === undefined && !cc.mustRevalidate) return 'authorization';
  if (!options.ignoreSetCookie && headerValue(headers, 'set-cookie') !== undefined) return 'set-cookie';
  const vary = headerValues(headers, 'vary');
  if (vary !== undefined && vary.split(',').some((f) => f.trim() === '*')) return 'vary-star';
  const ignoreExpires = targeted !== undefined;
  if (hasExplicitFreshness(cc, headers, ignoreExpires)) return undefined;
  if (freshnessLifetime(status, headers, cc, undefined, options, ignoreExpires) <= 0) return 'no-freshness';
  // A lifetime Portico guessed, for an answer the app may have made for these credentials alone.
  if ((req.hasAuthorization || req.hasCookie) && !options.defaultTtlWithCredentials) return 'credentials';
  return undefined;
}

function hasExplicitFreshness(cc: CacheControl, headers: readonly string[], ignoreExpires: boolean): boolean {
  return cc.sMaxAge !== undefined || cc.maxAge !== undefined || (!ignoreExpires && headerValue(headers, 'expires') !== undefined);
}

/**
 * Freshness lifetime in ms (§4.2.1): s-maxage, then max-age, then Expires − Date, then (opt-in) heuristic,
 * then `default_ttl`. `responseTime` stands in for a missing Date. `ignoreExpires`: a targeted field is in effect
 * (RFC 9213 §2.1).
 */
export function freshnessLifetime(
  status: number,
  headers: readonly string[],
  cc: CacheControl,
  responseTime: number | undefined,
  options: RuleOptions,
  ignoreExpires = false,
): number {
  if (cc.sMaxAge !== undefined) return cc.sMaxAge * 1000;
  if (cc.maxAge !== undefined) return cc.maxAge * 1000;
  const date = httpDate(headerValue(headers, 'date')) ?? responseTime ?? Date.now();
  // Several Expires lines come joined with ", ", which is no HTTP-date: invalid, like a list in one line.
  const expiresText = ignoreExpires ? undefined : headerValues(headers, 'expires');
  if (expiresText !== undefined) {
    // An invalid Expires (such as "0", or a date in another format) means already expired (§5.3).
    const expires = httpDate(expiresText);
    return expires === undefined ? 0 : Math.max(0, expires - date);
  }
  if (!HEURISTIC.has(status)) return 0;
  if (options.heuristic) {
    const lastModified = httpDate(headerValue(headers, 'last-modified'));
    if (lastModified !== undefined && lastModified < date) return Math.min(MAX_HEURISTIC_MS, (date - lastModified) / 10);
  }
  return options.defaultTtl;
}

/**
 * The Age field's value in seconds (§5.1): of a list (`7200, 0`, or several lines) the first member; an invalid
 * value is ignored (0). Values beyond 2^31 mean "a very long time" (§1.2.2).
 */
export function ageSeconds(value: string | undefined): number {
  if (value === undefined) return 0;
  const comma = value.indexOf(',');
  const first = (comma === -1 ? value : value.slice(0, comma)).trim();
  return /^\d+$/.test(first) ? Math.min(Number(first), 2 ** 31) : 0;
}

/** Current age in ms (§4.2.3). */
export function currentAge(entry: Pick<StoredResponse, 'headers' | 'requestTime' | 'responseTime'>, now: number): number {
  const ageValue = ageSeconds(headerValue(entry.headers, 'age')) * 1000;
  const dateValue = httpDate(headerValue(entry.headers, 'date')) ?? entry.responseTime;
  const apparentAge = Math.max(0, entry.responseTime - dateValue);
  const responseDelay = Math.max(0, entry.responseTime - entry.requestTime);
  const correctedInitialAge = Math.max(apparentAge, ageValue + responseDelay);
  return correctedInitialAge + Math.max(0, now - entry.responseTime);
}

/** Everything the serving rules need of a stored response, computed once when it is stored or loaded. */
export interface EntryFacts {
  status: number;
  cc: CacheControl;
  /** Freshness lifetime, ms. */
  lifetime: number;
  /** The targeted field whose directives are in `cc` (RFC 9213), or `undefined` for Cache-Control. */
  targeted: string | undefined;
  /** Stale may never be served (must-revalidate, proxy-revalidate or s-maxage). */
  neverStale: boolean;
  etag: string | undefined;
  lastModified: string | undefined;
  /** Lower-cased field names of Vary, or `undefined`. `['*']` never matches. */
  vary: readonly string[] | undefined;
  /** The corrected initial age (§4.2.3), ms: the age at `responseTime`; see `ageOf`. */
  initialAge: number;
  /** When the response was received (ms since the epoch). */
  responseTime: number;
}

/** Current age in ms from the facts computed at store time: the same value `currentAge` gives, without parsing. */
export function ageOf(facts: EntryFacts, now: number): number {
  return facts.initialAge + Math.max(0, now - facts.responseTime);
}

/** Computes the serving facts of a stored response. */
export function entryFacts(entry: StoredResponse, options: RuleOptions): EntryFacts {
  const { cc, targeted } = responseDirectives(entry.headers, options.targeted);
  const vary = headerValues(entry.headers, 'vary');
  return {
    status: entry.status,
    cc,
    targeted,
    lifetime: freshnessLifetime(entry.status, entry.headers, cc, entry.responseTime, options, targeted !== undefined),
    neverStale: cc.mustRevalidate || cc.proxyRevalidate || cc.sMaxAge !== undefined,
    etag: headerValue(entry.headers, 'etag'),
    lastModified: headerValue(entry.headers, 'last-modified'),
    vary: vary === undefined ? undefined : vary.split(',').map((f) => f.trim().toLowerCase()).filter(Boolean),
    initialAge: currentAge(entry, entry.responseTime),
    responseTime: entry.responseTime,
  };
}

/** How a stored response may serve a request. */
export type Usability =
  /** Fresh enough for this request. */
  | 'fresh'
  /** Stale, but the request's max-stale accepts it. */
  | 'stale-ok'
  /** Stale within the response's stale-while-revalidate: serve, and refresh in the background. */
  | 'stale-while-revalidate'
  /** Must be revalidated (or fetched) before use. */
  | 'revalidate';

/** Decides whether a stored response can serve a request now (§4.2, §5.2.1, RFC 5861). */
export function usability(facts: EntryFacts, age: number, req: CacheControl, pragmaNoCache: boolean): Usability {
  // `pragmaNoCache`: the request has `Pragma: no-cache` and no Cache-Control (§5.4).
  if (req.noCache || pragmaNoCache || facts.cc.noCache !== false) return 'revalidate';
  if (req.maxAge !== undefined && age > req.maxAge * 1000) return 'revalidate';
  if (facts.lifetime - age > (req.minFresh ?? 0) * 1000) return 'fresh';
  if (facts.neverStale) return 'revalidate';
  const staleness = age - facts.lifetime;
  if (req.maxStale !== undefined && staleness <= req.maxStale * 1000) return 'stale-ok';
  if (facts.cc.staleWhileRevalidate !== undefined && staleness <= facts.cc.staleWhileRevalidate * 1000) return 'stale-while-revalidate';
  return 'revalidate';
}

/**
 * Whether a request's `Pragma` asks for a validated answer: `no-cache` among its tokens, counted only when the
 * request has no Cache-Control at all (RFC 9111 §5.4: Pragma is for HTTP/1.0 caches; a Cache-Control, whatever it
 * says, takes its place). The one reading of Pragma, for the lookup and for the stale-when-unreachable decision.
 */
export function pragmaNoCache(cacheControl: string | string[] | undefined, pragma: string | string[] | undefined): boolean {
  if (cacheControl !== undefined || pragma === undefined) return false;
  for (const token of (Array.isArray(pragma) ? pragma.join(',') : pragma).split(',')) {
    if (token.trim().toLowerCase() === 'no-cache') return true;
  }
  return false;
}

/**
 * Whether a stale response may stand in for a failed origin (RFC 5861 §4), never where stale is forbidden:
 * must-revalidate / proxy-revalidate / s-maxage, and no-cache, which allows use only after a successful
 * validation (RFC 9111 §4.2.4, §5.2.2.4).
 */
export function mayServeStaleOnError(facts: EntryFacts, age: number, req: CacheControl, configured: number): boolean {
  if (facts.neverStale || facts.cc.noCache !== false) return false;
  const window = facts.cc.staleIfError !== undefined ? facts.cc.staleIfError * 1000 : req.staleIfError !== undefined ? req.staleIfError * 1000 : configured;
  return age - facts.lifetime <= window;
}

/**
 * Whether a stored response may stand in when no upstream could be reached (RFC 9111 §4.2.4 allows stale "when
 * disconnected"): at most `window` ms after it went stale (0: never). Never where the response forbids stale
 * (must-revalidate, proxy-revalidate, s-maxage, no-cache), nor where the request asks for a validated or fresh
 * answer (no-cache, `Pragma: no-cache`, max-age=0, min-fresh).
 */
export function mayServeStaleWhenUnreachable(facts: EntryFacts, age: number, req: CacheControl, pragmaNoCache: boolean, window: number): boolean {
  if (window <= 0 || facts.neverStale || facts.cc.noCache !== false) return false;
  if (req.noCache !== false || pragmaNoCache || req.maxAge === 0 || req.minFresh !== undefined) return false;
  return age - facts.lifetime <= window;
}

/**
 * Normalised Accept-Encoding: the best encoding the client takes among br, gzip, identity. The cache keys Vary
 * on it and also sends it upstream in place of the client's value, so that a stored variant was made for exactly
 * that value and every client mapped to it accepts its encoding.
 */
export function normalizeAcceptEncoding(value: string | undefined): string {
  return negotiateEncoding(value, ALL_ENCODINGS) ?? 'identity';
}

/**
 * The secondary key of a request for a Vary field list: each named field's value, whitespace-normalised
 * (Accept-Encoding reduced to the encoding that would be chosen). `undefined` for `Vary: *` (never matches).
 */
export function varyKey(vary: readonly string[] | undefined, headers: Record<string, string | string[] | undefined>): string | undefined {
  if (vary === undefined || vary.length === 0) return '';
  let key = '';
  for (const field of vary) {
    if (field === '*') return undefined;
    const raw = headers[field];
    const value = field === 'accept-encoding' ? normalizeAcceptEncoding(Array.isArray(raw) ? raw.join(',') : raw) : Array.isArray(raw) ? raw.join(', ') : raw ?? '';
    key += `${field}:${value.replace(/\s+/g, ' ').trim()}\n`;
  }
  return key;
}
