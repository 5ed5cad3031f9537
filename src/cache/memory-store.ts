/**
 * The memory tier: a byte-bounded LRU of cache keys, each holding its stored variants (one per Vary
 * secondary key). Headers and bodies both count against the bound. Built on lru-cache.
 */
import { LRUCache } from 'lru-cache';
import { storedSize, type StoredResponse } from './types.js';

/** A stored response plus whatever the caller derived from it once (facts, ready header lists). */
export interface MemoryVariant<Extra> {
  readonly stored: StoredResponse;
  readonly extra: Extra;
}

/** Byte-bounded LRU of keys → variants. */
export class MemoryStore<Extra> {
  readonly #lru: LRUCache<string, Array<MemoryVariant<Extra>>>;
  readonly #maxObject: number;
  readonly #extraBytes: (extra: Extra) => number;

  /** `extraBytes`: what the caller's derived data costs beside the stored response (it counts too). */
  constructor(maxBytes: number, extraBytes: (extra: Extra) => number = () => 0) {
    this.#maxObject = maxBytes;
    this.#extraBytes = extraBytes;
    this.#lru = new LRUCache({
      maxSize: Math.max(1, maxBytes),
      sizeCalculation: (variants) => Math.max(1, variants.reduce((sum, v) => sum + this.#bytes(v), 0)),
    });
  }

  #bytes(variant: MemoryVariant<Extra>): number {
    return storedSize(variant.stored) + this.#extraBytes(variant.extra);
  }

  /** The variants of a key (marks it recently used), or `undefined`. */
  get(key: string): ReadonlyArray<MemoryVariant<Extra>> | undefined {
    return this.#lru.get(key);
  }

  /** Adds or replaces the variant with the same varyKey; a variant larger than the whole store is dropped. */
  put(variant: MemoryVariant<Extra>): void {
    if (this.#bytes(variant) > this.#maxObject) return;
    const existing = this.#lru.get(variant.stored.key) ?? [];
    const next = existing.filter((v) => v.stored.varyKey !== variant.stored.varyKey);
    next.push(variant);
    this.#lru.set(variant.stored.key, next);
  }

  /** Removes a key's variants; returns how many were removed. */
  delete(key: string): number {
    const existing = this.#lru.get(key);
    if (existing === undefined) return 0;
    this.#lru.delete(key);
    return existing.length;
  }

  /** Removes every key starting with `prefix`; returns how many variants were removed. */
  deletePrefix(prefix: string): number {
    return this.deleteMatching((key) => key.startsWith(prefix));
  }

  /** Removes every key `match` accepts; returns how many variants were removed. */
  deleteMatching(match: (key: string) => boolean): number {
    let removed = 0;
    for (const key of [...this.#lru.keys()]) if (match(key)) removed += this.delete(key);
    return removed;
  }

  /** Bytes in use. */
  get size(): number {
    return this.#lru.calculatedSize;
  }

  /** Keys stored. */
  get entries(): number {
    return this.#lru.size;
  }

  /** Keys from most to least recently used. */
  keys(): string[] {
    return [...this.#lru.keys()];
  }

  clear(): void {
    this.#lru.clear();
  }
}
