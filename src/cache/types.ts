/**
 * What the cache stores: one response variant of one cache key, with what RFC 9111 needs to judge it later
 * (the times of the request and response, for Age per §4.2.3). Stores hold these; the rules in `rules.ts`
 * decide what may be stored and served.
 */

/** One stored response variant. Immutable once stored; a 304 refresh stores a new object. */
export interface StoredResponse {
  /** Primary cache key (e.g. `http127.0.0.1:8080/api/x?q=1`). */
  readonly key: string;
  /** Secondary key: the request's values of the fields named by Vary (`''` when the response has no Vary). */
  readonly varyKey: string;
  readonly status: number;
  /** Response header fields as a flat `[name, value, …]` list, hop-by-hop fields already removed. */
  readonly headers: readonly string[];
  readonly body: Buffer;
  /** When the request that produced it was sent upstream (ms since the epoch). */
  readonly requestTime: number;
  /** When its response head arrived (ms since the epoch). */
  readonly responseTime: number;
}

/** Bytes a stored response counts for against a store's bound (headers and body both count). */
export function storedSize(entry: StoredResponse): number {
  let size = entry.body.length + entry.key.length + entry.varyKey.length + 64;
  for (const field of entry.headers) size += field.length;
  return size;
}

/** A second, persistent tier (the disk store implements it). */
export interface PersistentStore {
  /**
   * Reads the index; discards unfinished and corrupt entries. `shared`: another process (the old one of an upgrade)
   * still writes the folder: its unfinished entries and the size bound are left alone.
   */
  open(shared?: boolean): Promise<void>;
  /** Every valid stored variant of a key (corrupt ones are deleted and left out). */
  get(key: string): Promise<StoredResponse[]>;
  /** Stores a variant, replacing the one with the same key and varyKey; evicts least recently used beyond the bound. */
  put(entry: StoredResponse): Promise<void>;
  /** Whether the store has a variant of a key, or is writing one (known without touching the disk). */
  holds(key: string): boolean;
  /** Removes every variant of a key (and cancels its writes in flight). */
  delete(key: string): Promise<number>;
  /** Removes every variant of every key starting with `prefix`. */
  deletePrefix(prefix: string): Promise<number>;
  /** Removes every variant of every key `match` accepts (and cancels their writes in flight). */
  deleteMatching(match: (key: string) => boolean): Promise<number>;
  /** Bytes in use. */
  readonly size: number;
  /** Keys stored. */
  readonly entries: number;
  /** Changes the bound (a reload that resized the zone); the next store evicts down to it. */
  resize(maxSize: number): void;
  close(): Promise<void>;
}
