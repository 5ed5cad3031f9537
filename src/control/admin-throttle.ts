/**
 * Bounds on what refused admin requests cost (docs/operations.md, "Admin API"): the audit lines of refused POSTs
 * (the first few per second per peer, then one summary line a second), and a peer's wrong-token attempts (after
 * `MAX_FAILURES` within a minute, every request of that peer but `/healthz` is answered 429 until its minute is
 * over). Peers are addresses, not address:port: a new connection is no new peer. Memory is bounded by `MAX_PEERS`.
 */

/** Audit lines of refused POSTs written per peer within one second; past them they are counted. */
export const REFUSED_LINES_PER_SECOND = 5;
/** Wrong tokens a peer may send within `FAILURE_WINDOW_MS` before it is answered 429. */
export const MAX_FAILURES = 10;
/** The window of wrong-token counting, and how long a peer past `MAX_FAILURES` is answered 429 (from its first failure). */
export const FAILURE_WINDOW_MS = 60_000;
/** Peers tracked at once; past it the oldest is forgotten. */
const MAX_PEERS = 10_000;

/** Forgets the oldest entries of `map` past `max` (a Map keeps insertion order). */
function bound<V>(map: Map<string, V>, max: number): void {
  while (map.size > max) {
    const oldest = map.keys().next().value;
    if (oldest === undefined) return;
    map.delete(oldest);
  }
}

/** Per-peer counts of refused requests' audit lines and of wrong tokens. */
export class RefusalThrottle {
  readonly #now: () => number;
  /** Peer → lines written and refusals left unwritten in the current second. */
  readonly #audits = new Map<string, { written: number; skipped: number }>();
  /** Peer → wrong tokens since `since`. */
  readonly #failures = new Map<string, { since: number; count: number }>();
  readonly #summarise: (peer: string, skipped: number) => void;
  #timer: NodeJS.Timeout | undefined;

  /** A throttle writing its summary lines with `summarise`, reading the clock `now` (tests move it). */
  constructor(summarise: (peer: string, skipped: number) => void, now: () => number = Date.now) {
    this.#summarise = summarise;
    this.#now = now;
  }

  /**
   * Whether a refused request's audit line is to be written for `peer` now; when not, it is counted and the
   * count is written as one summary line when the second ends.
   */
  auditRefused(peer: string): boolean {
    let entry = this.#audits.get(peer);
    if (entry === undefined) {
      entry = { written: 0, skipped: 0 };
      this.#audits.set(peer, entry);
      bound(this.#audits, MAX_PEERS);
    }
    // The second starts at the first refusal after a quiet one: a timer ends it (unref: it never holds the process).
    this.#timer ??= setTimeout(() => this.#flush(), 1000).unref();
    if (entry.written < REFUSED_LINES_PER_SECOND) {
      entry.written++;
      return true;
    }
    entry.skipped++;
    return false;
  }

  #flush(): void {
    this.#timer = undefined;
    for (const [peer, { skipped }] of this.#audits) if (skipped > 0) this.#summarise(peer, skipped);
    this.#audits.clear();
  }

  /** Counts a wrong token sent by `peer`. */
  failed(peer: string): void {
    const now = this.#now();
    const entry = this.#failures.get(peer);
    if (entry === undefined || now - entry.since >= FAILURE_WINDOW_MS) {
      this.#failures.delete(peer);
      this.#failures.set(peer, { since: now, count: 1 });
      bound(this.#failures, MAX_PEERS);
      return;
    }
    entry.count++;
  }

  /** Seconds `peer` must wait before it is answered again (undefined: it is not held back). */
  retryAfter(peer: string): number | undefined {
    const entry = this.#failures.get(peer);
    if (entry === undefined || entry.count < MAX_FAILURES) return undefined;
    const left = entry.since + FAILURE_WINDOW_MS - this.#now();
    if (left <= 0) {
      this.#failures.delete(peer);
      return undefined;
    }
    return Math.ceil(left / 1000);
  }

  /** Writes the pending summary lines and drops every count (the API stops). */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#flush();
    this.#failures.clear();
  }
}
