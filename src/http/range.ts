/**
 * `Range: bytes=…` (RFC 9110 §14) for one representation of a known size. Pure.
 *
 * Defence against the "Apache Killer" (many small overlapping ranges that multiply the work): more than
 * `maxRanges` ranges, or ranges that together ask for more bytes than the file holds (heavy overlap), make the
 * Range header ignored and the whole representation is sent with 200, as Apache's fix does. Overlapping and
 * adjacent ranges are otherwise coalesced, in ascending order (RFC 9110 §14.2 allows both).
 */

/** An inclusive byte range. */
export interface ByteRange {
  start: number;
  end: number;
}

/** What to do with a Range header. */
export type RangeDecision =
  | { kind: 'ignore' }
  | { kind: 'unsatisfiable' }
  | { kind: 'ranges'; ranges: ByteRange[] };

const IGNORE: RangeDecision = { kind: 'ignore' };
const UNSATISFIABLE: RangeDecision = { kind: 'unsatisfiable' };

/** Decides how to answer `header` for a representation of `size` bytes. */
export function parseRange(header: string, size: number, maxRanges: number): RangeDecision {
  const eq = header.indexOf('=');
  if (eq === -1 || header.slice(0, eq).trim().toLowerCase() !== 'bytes') return IGNORE;
  const specs = header.slice(eq + 1).split(',');
  if (specs.length > maxRanges) return IGNORE;

  const ranges: ByteRange[] = [];
  let requested = 0;
  for (const raw of specs) {
    const spec = raw.trim();
    if (spec === '') continue;
    const match = /^(\d*)-(\d*)$/.exec(spec);
    if (match === null || (match[1] === '' && match[2] === '')) return IGNORE;
    let start: number;
    let end: number;
    if (match[1] === '') {
      const suffix = Number(match[2]);
      if (suffix === 0) continue;
      start = Math.max(0, size - suffix);
      end = size - 1;
    } else {
      start = Number(match[1]);
      end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
      if (match[2] !== '' && Number(match[2]) < start) return IGNORE;
    }
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) return IGNORE;
    if (start >= size || end < start) continue;
    ranges.push({ start, end });
    requested += end - start + 1;
  }
  if (ranges.length === 0) return UNSATISFIABLE;
  if (ranges.length > 1 && requested > size) return IGNORE;

  ranges.sort((a, b) => a.start - b.start);
  const merged: ByteRange[] = [ranges[0]!];
  for (let i = 1; i < ranges.length; i++) {
    const last = merged[merged.length - 1]!;
    const next = ranges[i]!;
    if (next.start <= last.end + 1) last.end = Math.max(last.end, next.end);
    else merged.push(next);
  }
  return { kind: 'ranges', ranges: merged };
}
