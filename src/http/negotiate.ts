/**
 * Content negotiation for `Accept-Encoding` (RFC 9110 §12.5.3), one rule for static files, the cache's Vary key
 * and everything after, on the maintained `negotiator` package; and which types are worth compressing, from
 * the `compressible` package (mime-db's data). Pure.
 */
import compressible from 'compressible';
import Negotiator from 'negotiator';

/** Encodings Portico can send, in order of preference when the client weighs them equally. */
export type Encoding = 'br' | 'gzip' | 'identity';

/** Every encoding Portico can send, best first. */
export const ALL_ENCODINGS: readonly Encoding[] = ['br', 'gzip', 'identity'];

const PREFERRED = { preferred: ALL_ENCODINGS };
/** negotiator 1.x's `encodings(available, { preferred })` (the tie-break order), which @types/negotiator 0.6 lacks. */
interface RankedNegotiator {
  encodings(available: readonly string[], options: { preferred: readonly string[] }): string[];
}
/** Negotiation results by `available|header`: clients send a handful of distinct values, parsing each once. */
const memo = new Map<string, Encoding | null>();
const MEMO_MAX = 512;

/**
 * The best encoding among `available` for an `Accept-Encoding` value: the highest q wins, br before gzip before
 * identity on a tie; identity unlisted is acceptable at the lowest weight. `null` when the client refuses every
 * encoding available, identity included.
 */
export function negotiateEncoding(header: string | undefined, available: readonly Encoding[]): Encoding | null {
  if (header === undefined) return available.includes('identity') ? 'identity' : null;
  const key = available === ALL_ENCODINGS ? header : `${available.join()}|${header}`;
  let found = memo.get(key);
  if (found === undefined) {
    // negotiator does not know x-gzip, the old name RFC 9110 §8.4.1.3 says to treat as gzip.
    const value = header.includes('x-gzip') || header.includes('X-GZIP') ? header.replace(/x-gzip/gi, 'gzip') : header;
    const ranked = (new Negotiator({ headers: { 'accept-encoding': value } }) as RankedNegotiator).encodings(available, PREFERRED);
    found = (ranked[0] as Encoding | undefined) ?? null;
    if (memo.size >= MEMO_MAX) memo.clear();
    memo.set(key, found);
  }
  return found;
}

/**
 * Types that mime-db does not mark compressible but that are uncompressed data: legacy font types that servers
 * still send for .ttf/.otf/.eot.
 */
const ALSO_COMPRESSIBLE = new Set(['application/x-font-ttf', 'application/x-font-opentype', 'font/eot']);
/** Types mime-db marks compressible that are not worth it here: an unknown binary is most likely compressed. */
const NOT_COMPRESSIBLE = new Set(['application/octet-stream']);

/** Whether a content type is worth compressing (text, JSON, JS, XML, SVG, WASM, uncompressed fonts…). */
export function isCompressible(contentType: string): boolean {
  const semi = contentType.indexOf(';');
  const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  if (NOT_COMPRESSIBLE.has(type)) return false;
  return compressible(type) === true || ALSO_COMPRESSIBLE.has(type);
}
