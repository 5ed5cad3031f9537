/**
 * Small, fast, non-cryptographic hashes for the hashing policies. They run on every pick, so they read the
 * string in place (no encoding to bytes, no allocation). UTF-16 code units are hashed as they are: the value
 * only has to be stable within Portico, not equal to some other program's FNV.
 */

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** 32-bit FNV-1a of `text` from index `start`, over UTF-16 code units. */
export function fnv1a32(text: string, start = 0): number {
  let hash = FNV_OFFSET;
  for (let i = start; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, FNV_PRIME);
  }
  return hash >>> 0;
}

/**
 * MurmurHash3's finaliser: makes every input bit affect every output bit. FNV-1a alone leaves keys that
 * differ only in their last characters (`user-1`, `user-2`) close together, which clusters them on a ring.
 */
export function fmix32(value: number): number {
  let h = value >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A well-mixed 32-bit hash of a string: FNV-1a, then the Murmur finaliser. */
export function hashString(text: string, start = 0): number {
  return fmix32(fnv1a32(text, start));
}
