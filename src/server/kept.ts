/**
 * Values that outlive an app: what a handler or middleware asks to keep (a rate limit's buckets, a `proxy: { url }`
 * route's upstream) under a key that says what it is for, so that the next config's build asking for the same key
 * gets the same value. A key the next config no longer asks for is dropped at its swap (and disposed of once the
 * previous config has drained); a reload that fails changes nothing.
 */

interface Entry {
  value: unknown;
  dispose: ((value: never) => Promise<void> | void) | undefined;
}

/** One config's lookups; see `KeptValues.plan`. */
export interface KeptPlan {
  /**
   * The value kept under `key`, else `make()`'s (kept from now on, for this plan). `dispose` is how a value is
   * let go once no config keeps it (stopping what it runs).
   */
  keep<T>(key: string, make: () => T, dispose?: (value: T) => Promise<void> | void): T;
  /**
   * Makes this plan's values the kept ones (at the swap). Returns what disposes of the values it dropped: call it
   * once the previous config, which may still use them, has drained.
   */
  commit(): () => Promise<void>;
  /** The reload failed: the values this plan made are disposed of; the kept ones stay. */
  discard(): Promise<void>;
}

/** Disposes of entries, each once; a failure of one does not stop the others. */
async function disposeAll(entries: Iterable<Entry>): Promise<void> {
  await Promise.all([...entries].map(async (entry) => entry.dispose?.(entry.value as never)));
}

/** The process's kept values, shared by successive apps. */
export class KeptValues {
  #held = new Map<string, Entry>();

  /** Starts a config's build: its lookups see the held values, and replace them only at `commit()`. */
  plan(): KeptPlan {
    const next = new Map<string, Entry>();
    const made: Entry[] = [];
    return {
      keep: <T>(key: string, make: () => T, dispose?: (value: T) => Promise<void> | void): T => {
        const entry = next.get(key) ?? this.#held.get(key);
        if (entry !== undefined) {
          next.set(key, entry);
          return entry.value as T;
        }
        const fresh: Entry = { value: make(), dispose: dispose as Entry['dispose'] };
        made.push(fresh);
        next.set(key, fresh);
        return fresh.value as T;
      },
      commit: () => {
        const kept = new Set(next.values());
        const dropped = [...this.#held.values()].filter((entry) => !kept.has(entry));
        this.#held = next;
        return () => disposeAll(dropped);
      },
      discard: () => disposeAll(made),
    };
  }

  /** Disposes of every kept value (the server stops). */
  async stop(): Promise<void> {
    const all = [...this.#held.values()];
    this.#held = new Map();
    await disposeAll(all);
  }
}
