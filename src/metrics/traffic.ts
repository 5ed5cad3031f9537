/**
 * Traffic figures as the hot path records them: a count per status class and a latency histogram, in plain
 * numbers and one preallocated array per route, upstream server or total. Recording allocates nothing and builds
 * no string (prom-client's own `labels().observe()` hashes its label object on every call); the registry reads
 * these at scrape time (see metrics.ts). Percentiles are estimated from the buckets as Prometheus's
 * `histogram_quantile` does.
 */

/**
 * The histogram's upper bounds, in milliseconds (Prometheus's default buckets, from 5 ms to 10 s, with finer ones
 * below for loopback and cache answers, and 30 s and 60 s for long requests). The last bucket is +Inf.
 */
export const LATENCY_BOUNDS_MS: readonly number[] = Object.freeze([0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]);

/** The bounds as the hot loop reads them (a typed array: no boxed or frozen elements). */
const BOUNDS = new Float64Array(LATENCY_BOUNDS_MS);

/** The status classes in the order of `Traffic.classes`; the sixth counts an attempt that ended with no status. */
export const CLASS_NAMES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'none'] as const;

/** The index into `Traffic.classes` of a status (5: none, for 0 or anything outside 100–599). */
export function classIndex(status: number): number {
  const index = (status / 100) | 0;
  return index >= 1 && index <= 5 ? index - 1 : 5;
}

/** Requests counted by status class, with their latency histogram; one per route, upstream server, or in all. */
export class Traffic {
  /** Requests by class (`CLASS_NAMES`). */
  readonly classes = new Float64Array(CLASS_NAMES.length);
  /** Requests per bucket, not cumulative: `buckets[i]` counts latencies in (bound[i-1], bound[i]]; the last is +Inf. */
  readonly buckets = new Float64Array(LATENCY_BOUNDS_MS.length + 1);
  /**
   * The count and the sum of latencies (ms), in a typed array too: a number field of a long-lived object may be
   * boxed, and a new box per request written into an old object is what the collector must then track.
   */
  readonly #totals = new Float64Array(2);

  /** Requests recorded. */
  get count(): number {
    return this.#totals[0]!;
  }

  /** Their latencies summed, in milliseconds. */
  get sumMs(): number {
    return this.#totals[1]!;
  }

  /** One request (or attempt) that ended with `status` after `ms` milliseconds. */
  record(status: number, ms: number): void {
    this.classes[classIndex(status)]!++;
    const bounds = BOUNDS;
    let i = 0;
    while (i < bounds.length && ms > bounds[i]!) i++;
    this.buckets[i]!++;
    const totals = this.#totals;
    totals[0]!++;
    totals[1]! += ms;
  }

  /** Adds another's figures into this one (an upstream's servers, the workers' reports). */
  add(other: Traffic): void {
    for (let i = 0; i < this.classes.length; i++) this.classes[i]! += other.classes[i]!;
    for (let i = 0; i < this.buckets.length; i++) this.buckets[i]! += other.buckets[i]!;
    this.#totals[0]! += other.count;
    this.#totals[1]! += other.sumMs;
  }
}

/** A histogram's cumulative form (Prometheus's `le`), as `LatencyHistogram` in admin-types has it. */
export interface CumulativeHistogram {
  bounds_ms: number[];
  /** `buckets[i]`: requests of at most `bounds_ms[i]`; one more entry than bounds, the +Inf one (= count). */
  buckets: number[];
  count: number;
  sum_ms: number;
}

/** The cumulative histogram of a `Traffic`. */
export function cumulative(traffic: Traffic): CumulativeHistogram {
  const buckets: number[] = [];
  let total = 0;
  for (const n of traffic.buckets) buckets.push((total += n));
  return { bounds_ms: [...LATENCY_BOUNDS_MS], buckets, count: traffic.count, sum_ms: traffic.sumMs };
}

/** Sums cumulative histograms with the same bounds (bucket-wise); an empty list gives an empty histogram. */
export function sumHistograms(histograms: readonly CumulativeHistogram[]): CumulativeHistogram {
  const bounds = histograms[0]?.bounds_ms ?? [...LATENCY_BOUNDS_MS];
  const buckets = new Array<number>(bounds.length + 1).fill(0);
  let count = 0;
  let sum = 0;
  for (const h of histograms) {
    if (h.bounds_ms.length !== bounds.length || h.bounds_ms.some((b, i) => b !== bounds[i])) throw new Error('histograms with different bounds cannot be summed');
    h.buckets.forEach((n, i) => (buckets[i]! += n));
    count += h.count;
    sum += h.sum_ms;
  }
  return { bounds_ms: [...bounds], buckets, count, sum_ms: sum };
}

/**
 * The `q` quantile (0–1) of a cumulative histogram, as Prometheus's `histogram_quantile`: the bucket holding the
 * rank, linear interpolation inside it (from 0 for the first bucket); a rank in the +Inf bucket gives the highest
 * finite bound. null when the histogram is empty.
 */
export function quantile(q: number, histogram: CumulativeHistogram): number | null {
  const { bounds_ms: bounds, buckets, count } = histogram;
  if (count === 0 || Number.isNaN(q)) return null;
  if (q <= 0) return 0;
  const rank = Math.min(q, 1) * count;
  let i = 0;
  while (i < buckets.length && buckets[i]! < rank) i++;
  if (i >= bounds.length) return bounds[bounds.length - 1] ?? null;
  const lower = i === 0 ? 0 : bounds[i - 1]!;
  const below = i === 0 ? 0 : buckets[i - 1]!;
  const inBucket = buckets[i]! - below;
  if (inBucket === 0) return bounds[i]!;
  return lower + (bounds[i]! - lower) * ((rank - below) / inBucket);
}

/** p50, p90 and p99 in milliseconds, rounded to 0.01 ms (null: no request yet). */
export function percentiles(histogram: CumulativeHistogram): { p50: number | null; p90: number | null; p99: number | null } {
  const round = (v: number | null): number | null => (v === null ? null : Math.round(v * 100) / 100);
  return { p50: round(quantile(0.5, histogram)), p90: round(quantile(0.9, histogram)), p99: round(quantile(0.99, histogram)) };
}
