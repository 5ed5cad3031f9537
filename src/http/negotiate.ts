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

const BIT: Readonly<Record<Encoding, number>> = { br: 1, gzip: 2, identity: 4 };
/**
 * Negotiation results by header value, one map per set of available encodings (indexed by its bit mask, so a
 * lookup makes no key string and one set's answers can never be read for another). Clients send a handful of
 * distinct values; each is parsed once.
 */
const memos: Array<Map<string, Encoding | null>> = Array.from({ length: 8 }, () => new Map());
const MEMO_MAX = 512;

/**
 * The best encoding among `available` for an `Accept-Encoding` value: the highest q wins, br before gzip before
 * identity on a tie; identity unlisted is acceptable at the lowest weight. `null` when the client refuses every
 * encoding available, identity included.
 */
export function negotiateEncoding(header: string | undefined, available: readonly Encoding[]): Encoding | null {
  if (header === undefined) return available.includes('identity') ? 'identity' : null;
  let mask = 0;
  for (let i = 0; i < available.length; i++) mask |= BIT[available[i]!];
  const memo = memos[mask]!;
  let found = memo.get(header);
  if (found === undefined) {
    // negotiator does not know x-gzip, the old name RFC 9110 §8.4.1.3 says to treat as gzip.
    const value = /x-gzip/i.test(header) ? header.replace(/x-gzip/gi, 'gzip') : header;
    const ranked = (new Negotiator({ headers: { 'accept-encoding': value } }) as RankedNegotiator).encodings(available, PREFERRED);
    found = (ranked[0] as Encoding | undefined) ?? null;
    if (memo.size >= MEMO_MAX) memo.clear();
    memo.set(header, found);
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
