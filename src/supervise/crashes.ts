/**
 * The restart policy of a crashed instance, as pure functions of the crash times: exponential backoff (100 ms
 * doubling to 30 s), and a crash loop (5 crashes within 60 s) after which the slot is left down.
 */

/** The first restart's delay. */
export const FIRST_BACKOFF_MS = 100;
/** The longest delay between two restarts. */
export const MAX_BACKOFF_MS = 30_000;
/** This many crashes within `CRASH_WINDOW_MS` is a crash loop: the slot stays down. */
export const CRASH_LOOP_COUNT = 5;
/** The window of the crash-loop count; an instance that ran this long also starts the backoff over. */
export const CRASH_WINDOW_MS = 60_000;

/** One slot's recent crashes. */
export class CrashHistory {
  #times: number[] = [];
  #streak = 0;

  /**
   * Records a crash at `now` of an instance that ran `ranMs`; returns the delay before the restart, or undefined
   * when this crash makes a crash loop.
   */
  record(now: number, ranMs: number): number | undefined {
    this.#times = this.#times.filter((t) => now - t < CRASH_WINDOW_MS);
    this.#times.push(now);
    this.#streak = ranMs >= CRASH_WINDOW_MS ? 1 : this.#streak + 1;
    if (this.#times.length >= CRASH_LOOP_COUNT) return undefined;
    return Math.min(FIRST_BACKOFF_MS * 2 ** (this.#streak - 1), MAX_BACKOFF_MS);
  }

  /** Crashes within the window. */
  get recent(): number {
    return this.#times.length;
  }

  /** Forgets every crash (a deploy or reload starts the slot afresh). */
  clear(): void {
    this.#times = [];
    this.#streak = 0;
  }
}
