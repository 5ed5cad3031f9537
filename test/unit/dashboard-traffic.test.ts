/**
 * The dashboard's traffic arithmetic (dashboard/traffic.js, a browser module with no DOM, imported here under
 * Node): percentiles interpolated in histogram buckets as Prometheus's histogram_quantile, requests/s and p50/p99
 * from the differences of successive reports' cumulative totals, a restart's reset, the history bound.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface Sample {
  t: number;
  requests: number;
  count: number;
}
interface Point {
  t: number;
  rps: number | null;
  p50: number | null;
  p99: number | null;
  errors: number;
}
interface TrafficModule {
  HISTORY_S: number;
  LATENCY_WINDOW_S: number;
  quantile(q: number, bounds: number[], buckets: number[], total: number): number | null;
  TrafficHistory: new () => { samples: Sample[]; add(report: unknown, t: number): void; points(): Point[] };
}

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const traffic = (await import(pathToFileURL(path.join(repo, 'dashboard/traffic.js')).href)) as TrafficModule;

const BOUNDS = [1, 5, 10, 50, 100];

/** A report whose totals hold `requests` requests, `latency` as per-bucket (not cumulative) counts plus +Inf. */
function report(perBucket: number[], fiveXx = 0): unknown {
  let sum = 0;
  const cumulative = perBucket.slice(0, BOUNDS.length).map((n) => (sum += n));
  const count = perBucket.reduce((a, n) => a + n, 0);
  return {
    totals: {
      requests: count,
      classes: { '1xx': 0, '2xx': count - fiveXx, '3xx': 0, '4xx': 0, '5xx': fiveXx },
      latency: { bounds_ms: BOUNDS, buckets: cumulative, count, sum_ms: 0 },
    },
  };
}

test('quantile interpolates inside the bucket the rank falls in, as histogram_quantile does', () => {
  // 10 requests ≤ 1 ms, 10 in (1, 5]: the median (rank 10) is the top of the first bucket; rank 15 is mid-second.
  assert.equal(traffic.quantile(0.5, BOUNDS, [10, 20, 20, 20, 20, 20], 20), 1);
  assert.equal(traffic.quantile(0.75, BOUNDS, [10, 20, 20, 20, 20, 20], 20), 3);
  // All in (10, 50]: p50 is halfway, 30 ms.
  assert.equal(traffic.quantile(0.5, BOUNDS, [0, 0, 0, 100, 100, 100], 100), 30);
  // In the first bucket the lower bound is 0.
  assert.equal(traffic.quantile(0.5, BOUNDS, [4, 4, 4, 4, 4, 4], 4), 0.5);
});

test('quantile answers the highest finite bound for a rank in the +Inf bucket, and null with no request', () => {
  assert.equal(traffic.quantile(0.99, BOUNDS, [0, 0, 0, 0, 90, 100], 100), 100);
  assert.equal(traffic.quantile(0.5, BOUNDS, [0, 0, 0, 0, 0, 0], 0), null);
});

test('requests/s is the difference of two reports over the seconds between them; p50/p99 are those of the requests between', () => {
  const history = new traffic.TrafficHistory();
  history.add(report([100, 0, 0, 0, 0, 0]), 0);
  // In the next 2 s: 40 more requests, all in (10, 50] ms, 2 of them 5xx.
  history.add(report([100, 0, 0, 40, 0, 0], 2), 2000);
  const [point] = history.points();
  assert.equal(point!.rps, 20);
  assert.equal(point!.errors, 2);
  assert.equal(point!.p50, 30, 'the old fast requests do not count: only the 40 between the reports');
  assert.equal(point!.p99, 10 + 40 * (39.6 / 40));
});

test(`the latency of a point covers the last ${10} s (the newest sample at least that old), the rate only the last second`, () => {
  assert.equal(traffic.LATENCY_WINDOW_S, 10);
  const history = new traffic.TrafficHistory();
  for (let s = 0; s <= 12; s++) history.add(report([s * 10, 0, 0, 0, 0, 0]), s * 1000);
  // Then a second of slow requests.
  history.add(report([120, 0, 0, 0, 10, 0]), 13_000);
  const last = history.points().at(-1)!;
  assert.equal(last.rps, 10);
  // The window from t=3 s: 90 fast ones and 10 slow ones; p99 falls in (50, 100].
  assert.ok(last.p50! <= 1, String(last.p50));
  assert.ok(last.p99! > 50 && last.p99! <= 100, String(last.p99));
});

test('a counter that goes down (a restart) starts the history again; two reports within 0.5 s keep the later', () => {
  const history = new traffic.TrafficHistory();
  history.add(report([50, 0, 0, 0, 0, 0]), 0);
  history.add(report([60, 0, 0, 0, 0, 0]), 1000);
  history.add(report([5, 0, 0, 0, 0, 0]), 2000);
  assert.equal(history.samples.length, 1, 'after the reset only the new sample');
  assert.equal(history.points().length, 0);
  history.add(report([6, 0, 0, 0, 0, 0]), 2100);
  assert.equal(history.samples.length, 1, 'a report 100 ms later replaces the one before');
  assert.equal(history.samples[0]!.requests, 6);
});

test(`the history keeps about ${300} s of samples, not more`, () => {
  assert.equal(traffic.HISTORY_S, 300);
  const history = new traffic.TrafficHistory();
  for (let s = 0; s < 1000; s++) history.add(report([s, 0, 0, 0, 0, 0]), s * 1000);
  const span = history.samples.at(-1)!.t - history.samples[0]!.t;
  assert.ok(span <= (300 + 10 + 5) * 1000 && span >= 300 * 1000, String(span));
});

test("a report without totals (an older Portico's) makes points with no rate change and no latency, not NaN", () => {
  const history = new traffic.TrafficHistory();
  history.add({}, 0);
  history.add({ totals: { requests: 5 } }, 1000);
  const [point] = history.points();
  assert.equal(point!.rps, 5);
  assert.equal(point!.p50, null);
  assert.equal(point!.p99, null);
});
