/**
 * A keyed once-promise: one run per key, shared by every caller. The first call for a key starts the run; calls
 * while it runs, and after it succeeded, get the same promise. A failed run is forgotten (once every caller
 * holding it has seen it fail), so the next call tries again. For one resource with many concurrent users — an
 * ACME account shared by sites — instead of a hand-written check-then-act.
 */

/** One run per key (see the module comment). */
export class KeyedOnce<T> {
  readonly #runs = new Map<string, Promise<T>>();

  /** The run of `key`: the one in progress or done, or a new one made by `make`. */
  get(key: string, make: () => Promise<T>): Promise<T> {
    let run = this.#runs.get(key);
    if (run !== undefined) return run;
    run = make();
    this.#runs.set(key, run);
    const started = run;
    started.catch(() => {
      if (this.#runs.get(key) === started) this.#runs.delete(key);
    });
    return run;
  }

  /** Whether `key` has a run in progress or done. */
  has(key: string): boolean {
    return this.#runs.has(key);
  }
}
