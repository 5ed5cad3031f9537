/**
 * Conditional requests (RFC 9110 §13.2.2), evaluated in the order the RFC gives. Pure: the caller passes the
 * request's headers and the selected representation's validators.
 */
import { parseHttpDate } from './dates.js';

/** Validators of the selected representation. */
export interface Validators {
  /** Entity tag, quoted: `"5f3-1a2b"` (or `W/"…"`); undefined when the representation has none. */
  etag: string | undefined;
  /** Last modification, whole seconds since the epoch ×1000; NaN when the representation has none. */
  lastModifiedMs: number;
}

/** The validators of a stored response, from its `ETag` and `Last-Modified` fields (either may be absent). */
export function validatorsOf(etag: string | undefined, lastModified: string | undefined): Validators {
  // The stored field is the origin's, read as leniently as freshness reads it (a request's dates are strict).
  return { etag, lastModifiedMs: lastModified === undefined ? NaN : Date.parse(lastModified) };
}

/** The request header fields that matter here. */
export interface ConditionalHeaders {
  'if-match'?: string | undefined;
  'if-none-match'?: string | undefined;
  'if-modified-since'?: string | undefined;
  'if-unmodified-since'?: string | undefined;
}

/** The outcome: go on (`200`), answer 304 Not Modified, or 412 Precondition Failed. */
export type ConditionalOutcome = 200 | 304 | 412;

/** Whether a request carries any precondition field (most do not, and then none needs evaluating). */
export function hasConditionals(headers: ConditionalHeaders): boolean {
  return (
    headers['if-none-match'] !== undefined ||
    headers['if-modified-since'] !== undefined ||
    headers['if-match'] !== undefined ||
    headers['if-unmodified-since'] !== undefined
  );
}

function opaque(tag: string): string {
  return tag.startsWith('W/') ? tag.slice(2) : tag;
}

/** Splits an entity-tag list (`"a", W/"b"`) into tags; `*` stays `*`. */
export function parseETagList(value: string): string[] {
  const tags: string[] = [];
  for (const match of value.matchAll(/\*|(?:W\/)?"[^"]*"/g)) tags.push(match[0]);
  return tags;
}

/** Strong comparison: both tags strong and identical (§8.8.3.2). */
function strongMatch(list: string, etag: string | undefined): boolean {
  for (const tag of parseETagList(list)) {
    // `*` matches any current representation, with or without a tag; a listed tag needs one to match.
    if (tag === '*' || (etag !== undefined && !tag.startsWith('W/') && tag === etag)) return true;
  }
  return false;
}

/** Weak comparison: opaque tags identical, weakness ignored. */
function weakMatch(list: string, etag: string | undefined): boolean {
  const target = etag === undefined ? undefined : opaque(etag);
  for (const tag of parseETagList(list)) {
    if (tag === '*' || opaque(tag) === target) return true;
  }
  return false;
}

/** Milliseconds of an HTTP-date, or NaN when it is not one (strict: RFC 9110 §5.6.7; see `dates.ts`). */
export { parseHttpDate };

/**
 * Evaluates the preconditions of a GET/HEAD (`safe`) or other request against a representation. A date
 * condition is ignored when the representation has no modification date (§13.1.3, §13.1.4).
 */
export function evaluatePreconditions(headers: ConditionalHeaders, v: Validators, safe: boolean): ConditionalOutcome {
  const ifMatch = headers['if-match'];
  if (ifMatch !== undefined) {
    if (!strongMatch(ifMatch, v.etag)) return 412;
  } else {
    const ius = headers['if-unmodified-since'];
    if (ius !== undefined) {
      const date = parseHttpDate(ius);
      if (!Number.isNaN(date) && v.lastModifiedMs > date) return 412;
    }
  }
  const inm = headers['if-none-match'];
  if (inm !== undefined) {
    if (weakMatch(inm, v.etag)) return safe ? 304 : 412;
  } else if (safe) {
    const ims = headers['if-modified-since'];
    if (ims !== undefined) {
      const date = parseHttpDate(ims);
      if (!Number.isNaN(date) && v.lastModifiedMs <= date) return 304;
    }
  }
  return 200;
}

/** Whether `If-Range` allows the Range to apply (§13.1.5): a strong ETag match or an exactly equal date. */
export function ifRangeAllows(ifRange: string | undefined, v: Validators): boolean {
  if (ifRange === undefined) return true;
  const value = ifRange.trim();
  if (value.startsWith('"')) return v.etag !== undefined && !v.etag.startsWith('W/') && value === v.etag;
  if (value.startsWith('W/')) return false;
  const date = parseHttpDate(value);
  return !Number.isNaN(date) && date === v.lastModifiedMs;
}
