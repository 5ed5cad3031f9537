/**
 * `Cache-Control` parsing (RFC 9111 §5.2). Directive names are case-insensitive; values are tokens or quoted
 * strings; unknown directives are ignored (never treated as no-cache). When a directive appears twice, the
 * first occurrence wins (§4.2.1). An invalid delta-seconds counts as 0, which errs on the side of staleness.
 *
 * Targeted fields (RFC 9213, such as `CDN-Cache-Control`) carry the same directives as an RFC 8941 Dictionary;
 * `parseTargetedCacheControl` reads one into the same shape, or says it is invalid or empty.
 */
import { parseDictionary } from 'structured-headers';

/** The directives Portico acts on, for requests and responses alike. */
export interface CacheControl {
  noStore: boolean;
  /** `no-cache` with no field names → true; `no-cache="a, b"` → the names (Portico revalidates in both cases). */
  noCache: boolean | readonly string[];
  /** Unqualified or qualified `private` (a shared cache stores neither). */
  private: boolean;
  public: boolean;
  maxAge: number | undefined;
  sMaxAge: number | undefined;
  mustRevalidate: boolean;
  proxyRevalidate: boolean;
  /** Seconds; `Infinity` for `max-stale` without a value. */
  maxStale: number | undefined;
  minFresh: number | undefined;
  onlyIfCached: boolean;
  staleWhileRevalidate: number | undefined;
  staleIfError: number | undefined;
  immutable: boolean;
}

/** Nothing asked for: the parse of an absent header. */
export const EMPTY_CACHE_CONTROL: Readonly<CacheControl> = Object.freeze({
  noStore: false,
  noCache: false,
  private: false,
  public: false,
  maxAge: undefined,
  sMaxAge: undefined,
  mustRevalidate: false,
  proxyRevalidate: false,
  maxStale: undefined,
  minFresh: undefined,
  onlyIfCached: false,
  staleWhileRevalidate: undefined,
  staleIfError: undefined,
  immutable: false,
});

function deltaSeconds(value: string | true): number {
  if (value === true || !/^\d+$/.test(value)) return 0;
  // Values beyond 2^31 mean "a very long time" (§1.2.2).
  return Math.min(Number(value), 2 ** 31);
}

/** Splits on commas outside quoted strings, yielding `[name, value | true]` pairs. */
function* directives(header: string): Generator<[string, string | true]> {
  let i = 0;
  while (i < header.length) {
    let end = i;
    let inQuotes = false;
    for (; end < header.length; end++) {
      const c = header[end];
      if (c === '"' && header[end - 1] !== '\\') inQuotes = !inQuotes;
      else if (c === ',' && !inQuotes) break;
    }
    const part = header.slice(i, end).trim();
    i = end + 1;
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq === -1) {
      yield [part.toLowerCase(), true];
      continue;
    }
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1).replace(/\\(.)/g, '$1');
    yield [part.slice(0, eq).trim().toLowerCase(), value];
  }
}

/**
 * Sets one response directive on `cc`, for both Cache-Control and a targeted field (which differ only in how a
 * value is written: `delta` reads one as seconds). `names` is a qualified no-cache's field list (undefined: the
 * unqualified form). False when `name` is not a response directive.
 */
function setResponseDirective<V>(cc: CacheControl, name: string, value: V, delta: (value: V) => number, names: string | undefined): boolean {
  switch (name) {
    case 'no-store':
      cc.noStore = true;
      return true;
    case 'no-cache': {
      const list = names === undefined ? [] : names.split(',').map((f) => f.trim().toLowerCase()).filter(Boolean);
      cc.noCache = list.length === 0 ? true : list;
      return true;
    }
    case 'private':
      cc.private = true;
      return true;
    case 'public':
      cc.public = true;
      return true;
    case 'max-age':
      cc.maxAge = delta(value);
      return true;
    case 's-maxage':
      cc.sMaxAge = delta(value);
      return true;
    case 'must-revalidate':
      cc.mustRevalidate = true;
      return true;
    case 'proxy-revalidate':
      cc.proxyRevalidate = true;
      return true;
    case 'stale-while-revalidate':
      cc.staleWhileRevalidate = delta(value);
      return true;
    case 'stale-if-error':
      cc.staleIfError = delta(value);
      return true;
    case 'immutable':
      cc.immutable = true;
      return true;
    default:
      return false;
  }
}

/** Parses one or more Cache-Control field values (Node joins repeated fields with ", "). */
export function parseCacheControl(header: string | string[] | undefined): CacheControl {
  if (header === undefined || header === '') return EMPTY_CACHE_CONTROL;
  const text = Array.isArray(header) ? header.join(', ') : header;
  const cc: CacheControl = { ...EMPTY_CACHE_CONTROL };
  const seen = new Set<string>();
  for (const [name, value] of directives(text)) {
    if (seen.has(name)) continue;
    seen.add(name);
    if (setResponseDirective(cc, name, value, deltaSeconds, value === true ? undefined : value)) continue;
    // Request directives; unknown ones are ignored (§5.2.3).
    if (name === 'max-stale') cc.maxStale = value === true ? Infinity : deltaSeconds(value);
    else if (name === 'min-fresh') cc.minFresh = deltaSeconds(value);
    else if (name === 'only-if-cached') cc.onlyIfCached = true;
  }
  return cc;
}

function targetedDelta(value: unknown): number {
  // Integer expected; anything else (a decimal, a string, a boolean) counts as 0, as an invalid delta-seconds does.
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) return 0;
  return Math.min(value, 2 ** 31);
}

/**
 * Parses a targeted cache-control field (RFC 9213 §2.2): an RFC 8941 Dictionary of cache directives, with the
 * values of one field's several lines joined by ", ". `undefined` when the field is empty or not a valid
 * Dictionary (such a field is ignored, as if absent). Parameters on directives are ignored; a directive set to
 * `?0` is not set; a qualified `private` / `no-cache` (a String of field names) counts as the plain one for a
 * shared cache, as in Cache-Control.
 */
export function parseTargetedCacheControl(value: string | undefined): CacheControl | undefined {
  if (value === undefined) return undefined;
  let dict: ReturnType<typeof parseDictionary>;
  try {
    dict = parseDictionary(value);
  } catch {
    return undefined;
  }
  if (dict.size === 0) return undefined;
  const cc: CacheControl = { ...EMPTY_CACHE_CONTROL };
  for (const [name, member] of dict) {
    const item = member[0];
    // An inner list is no directive's value: the directive is ignored.
    if (Array.isArray(item)) continue;
    if (item === false) continue;
    // Request directives and unknown ones are ignored.
    setResponseDirective(cc, name, item, targetedDelta, typeof item === 'string' ? item : undefined);
  }
  return cc;
}
