/*
 * Portico's dashboard: traffic over time from successive StatusReports. A report's `totals` are cumulative (request
 * counts and a latency histogram since start), so requests/s and the p50/p99 of a stretch of time are differences
 * of two reports. Pure (no DOM): test/unit/dashboard-traffic.test.ts imports it under Node.
 */

/** Seconds of history the charts keep (one sample a status event, ~1 s). */
export const HISTORY_S = 300;
/** Seconds of traffic a latency point is estimated over (smoother than one second's few requests). */
export const LATENCY_WINDOW_S = 10;

/**
 * The q-quantile (0..1) of a histogram, interpolated linearly in its bucket as Prometheus's histogram_quantile:
 * `buckets[i]` counts the requests of at most `bounds[i]` ms (cumulative), a last bucket past `bounds` is +Inf.
 * Null when `total` is 0.
 */
export function quantile(q, bounds, buckets, total) {
  if (!(total > 0)) return null;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < buckets.length; i++) {
    const upTo = buckets[i];
    if (upTo >= rank) {
      // The +Inf bucket: the highest finite bound is the best estimate (as Prometheus answers).
      if (i >= bounds.length) return bounds.length > 0 ? bounds[bounds.length - 1] : null;
      const lower = i === 0 ? 0 : bounds[i - 1];
      const inBucket = upTo - below;
      return inBucket > 0 ? lower + (bounds[i] - lower) * ((rank - below) / inBucket) : bounds[i];
    }
    below = upTo;
  }
  return bounds.length > 0 ? bounds[bounds.length - 1] : null;
}

/** A report's totals as a sample taken at `t` (the +Inf bucket appended when `buckets` has one per finite bound). */
export function sampleOf(report, t) {
  const totals = (report && report.totals) || {};
  const latency = totals.latency || {};
  const bounds = Array.isArray(latency.bounds_ms) ? latency.bounds_ms : [];
  const buckets = Array.isArray(latency.buckets) ? latency.buckets.slice() : [];
  const total = typeof latency.count === 'number' ? latency.count : 0;
  if (buckets.length === bounds.length) buckets.push(total);
  const classes = totals.classes || {};
  return { t, requests: Number(totals.requests) || 0, errors: Number(classes['5xx']) || 0, bounds, buckets, count: total };
}

/** Latency percentiles of the requests between two samples, or nulls when none finished between them. */
export function latencyBetween(a, b) {
  const total = b.count - a.count;
  if (!(total > 0) || a.buckets.length !== b.buckets.length) return { p50: null, p99: null };
  const delta = b.buckets.map((v, i) => v - a.buckets[i]);
  return { p50: quantile(0.5, b.bounds, delta, total), p99: quantile(0.99, b.bounds, delta, total) };
}

/** The samples of the last minutes, and the chart points they make. */
export class TrafficHistory {
  /** Samples, oldest first. */
  samples = [];

  /** Adds the report received at `t` (ms). */
  add(report, t) {
    const sample = sampleOf(report, t);
    const last = this.samples[this.samples.length - 1];
    // A counter that went down: a restart (or a worker left out); the history before it no longer compares.
    if (last && (sample.requests < last.requests || sample.count < last.count)) this.samples = [];
    // Two reports close together (the first GET and the stream's first event) make a noisy rate: keep the later.
    else if (last && sample.t - last.t < 500) this.samples.pop();
    this.samples.push(sample);
    const cutoff = sample.t - (HISTORY_S + LATENCY_WINDOW_S + 5) * 1000;
    while (this.samples.length > 2 && this.samples[0].t < cutoff) this.samples.shift();
  }

  /**
   * One point a sample after the first: `rps` since the sample before, `errors` (5xx) since then, and the p50/p99
   * of the requests over the `LATENCY_WINDOW_S` before it (from the newest sample at least that old, else the first).
   */
  points() {
    const s = this.samples;
    const points = [];
    let w = 0;
    for (let i = 1; i < s.length; i++) {
      const dt = (s[i].t - s[i - 1].t) / 1000;
      while (w < i - 1 && s[i].t - s[w + 1].t >= LATENCY_WINDOW_S * 1000) w++;
      const lat = latencyBetween(s[w], s[i]);
      points.push({ t: s[i].t, rps: dt > 0 ? (s[i].requests - s[i - 1].requests) / dt : null, p50: lat.p50, p99: lat.p99, errors: s[i].errors - s[i - 1].errors });
    }
    return points;
  }
}
