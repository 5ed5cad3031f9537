/**
 * Values that outlive an app: what a handler or middleware asks to keep (a rate limit's buckets) under a key that
 * says what it is for, so that the next config's build asking for the same key gets the same value. A key the next
 * config no longer asks for is dropped at its swap; a reload that fails changes nothing.
 */

/** One config's lookups; see `KeptValues.plan`. */
export interface KeptPlan {
  /** The value kept under `key`, else `make()`'s (kept from now on for this plan). */
  keep<T>(key: string, make: () => T): T;
  /** Makes this plan's values the kept ones (at the swap); the others are let go. */
  commit(): void;
}

/** The process's kept values, shared by successive apps. */
export class KeptValues {
  #held = new Map<string, unknown>();

  /** Starts a config's build: its lookups see the held values, and replace them only at `commit()`. */
  plan(): KeptPlan {
    const next = new Map<string, unknown>();
    return {
      keep: <T>(key: string, make: () => T): T => {
        if (next.has(key)) return next.get(key) as T;
        const value = this.#held.has(key) ? (this.#held.get(key) as T) : make();
        next.set(key, value);
        return value;
      },
      commit: () => {
        this.#held = next;
      },
    };
  }
}
