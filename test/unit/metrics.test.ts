/**
 * The metrics' pure parts: the hot-path recorder (`Traffic`), percentiles from buckets as Prometheus's
 * histogram_quantile has them, histograms summed bucket-wise, the workers' statuses merged, and prom-client's
 * text and aggregation of what the recorders hold.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AggregatorRegistry } from 'prom-client';
import { CacheTally, carryForgottenServers, Metrics, withoutNaN, type MetricsJson } from '../../src/metrics/metrics.js';
import { classIndex, cumulative, LATENCY_BOUNDS_MS, percentiles, quantile, sumHistograms, Traffic } from '../../src/metrics/traffic.js';
import { mergeProcessStatus, trafficStats, withoutHistograms } from '../../src/server/status.js';
import type { ProcessStatus, ServerStatus } from '../../src/control/admin-types.js';

/** A traffic with `n` requests of `ms` each, with `status`. */
function traffic(...series: Array<[n: number, ms: number, status?: number]>): Traffic {
  const t = new Traffic();
  for (const [n, ms, status = 200] of series) for (let i = 0; i < n; i++) t.record(status, ms);
  return t;
}

describe('Traffic and percentiles', () => {
  test('a status is counted in its class; 0 and out-of-range statuses count as none', () => {
    assert.deepEqual([100, 204, 302, 404, 503, 0, 600, 99].map(classIndex), [0, 1, 2, 3, 4, 5, 5, 5]);
    const t = traffic([2, 1, 200], [1, 1, 404], [1, 1, 0]);
    assert.deepEqual([...t.classes], [0, 2, 0, 1, 0, 1]);
    assert.equal(t.count, 4);
  });

  test('a latency lands in the first bucket whose bound is at least it (le), past the last in +Inf', () => {
    const t = traffic([1, 0.5], [1, 0.6], [1, 60_000], [1, 60_001]);
    const h = cumulative(t);
    assert.equal(h.buckets.length, LATENCY_BOUNDS_MS.length + 1);
    assert.equal(h.buckets[0], 1); // 0.5 ≤ 0.5
    assert.equal(h.buckets[1], 2); // 0.6 ≤ 1
    assert.equal(h.buckets[LATENCY_BOUNDS_MS.length - 1], 3); // 60000 ≤ 60000
    assert.equal(h.buckets[LATENCY_BOUNDS_MS.length], 4); // +Inf = count
    assert.equal(h.count, 4);
    assert.equal(h.sum_ms, 0.5 + 0.6 + 60_000 + 60_001);
  });

  test('percentiles interpolate linearly inside the bucket holding the rank, as histogram_quantile does', () => {
    // 100 requests, all in (10, 25]: the median is interpolated halfway, 17.5 ms; p90 at 23.5 ms.
    const h = cumulative(traffic([100, 20]));
    assert.equal(quantile(0.5, h), 17.5);
    assert.equal(quantile(0.9, h), 23.5);
    // 50 in (0, 0.5] and 50 in (100, 250]: p50 is the first bucket's top, p99 near 250.
    const split = cumulative(traffic([50, 0.2], [50, 200]));
    assert.equal(quantile(0.5, split), 0.5);
    assert.equal(quantile(0.99, split), 100 + 150 * (49 / 50));
  });

  test('a rank in the +Inf bucket gives the highest finite bound; an empty histogram gives null', () => {
    assert.equal(quantile(0.99, cumulative(traffic([10, 120_000]))), 60_000);
    assert.deepEqual(percentiles(cumulative(new Traffic())), { p50: null, p90: null, p99: null });
  });

  test('histograms sum bucket-wise, and the sum\'s percentiles are those of all the requests together', () => {
    const a = traffic([90, 3]);
    const b = traffic([10, 400]);
    const both = traffic([90, 3], [10, 400]);
    assert.deepEqual(sumHistograms([cumulative(a), cumulative(b)]), cumulative(both));
    assert.deepEqual(percentiles(sumHistograms([cumulative(a), cumulative(b)])), percentiles(cumulative(both)));
    assert.throws(() => sumHistograms([cumulative(a), { bounds_ms: [1], buckets: [0, 0], count: 0, sum_ms: 0 }]), /different bounds/);
  });
});

function server(id: string, overrides: Partial<ServerStatus>, t: Traffic): ServerStatus {
  return {
    id,
    address: id,
    state: 'healthy',
    admin: 'enabled',
    backup: false,
    weight: 1,
    configured_weight: 1,
    in_flight: 0,
    failures: 0,
    ejections: 0,
    last_check: null,
    ...trafficStats(t),
    ...overrides,
  };
}

function worker(routeTraffic: Traffic, serverTraffic: Traffic, serverOverrides: Partial<ServerStatus>, hits: number, misses: number): ProcessStatus {
  const totals = trafficStats(routeTraffic);
  return {
    connections: { open: 2, streams: 1 },
    totals: { requests: totals.requests, classes: totals.classes, latency: totals.histogram! },
    routes: [{ id: '*/', handler: 'proxy', ...trafficStats(routeTraffic) }],
    upstreams: [{ name: 'app', spawned: false, ...trafficStats(serverTraffic), servers: [server('a', serverOverrides, serverTraffic)] }],
    caches: [{ zone: 'main', entries: 3, bytes: 300, hits, misses, stale: 1, hit_ratio: null }],
  };
}

describe('merging the workers\' statuses', () => {
  test('counts, histograms, in flight and cache figures are summed; a server takes the worst state any worker reports', () => {
    const one = worker(traffic([10, 2]), traffic([4, 1, 200]), { in_flight: 1, state: 'ejected', last_check: { at: '2026-01-01T00:00:01.000Z', ok: true } }, 6, 2);
    const two = worker(traffic([30, 300, 500]), traffic([6, 2, 502]), { in_flight: 2, last_check: { at: '2026-01-01T00:00:02.000Z', ok: false } }, 2, 0);
    const merged = mergeProcessStatus([one, two]);
    assert.deepEqual(merged.connections, { open: 4, streams: 2 });
    assert.equal(merged.totals.requests, 40);
    assert.equal(merged.totals.classes['2xx'], 10);
    assert.equal(merged.totals.classes['5xx'], 30);
    assert.deepEqual(merged.totals.latency, cumulative(traffic([10, 2], [30, 300])));
    const route = merged.routes[0]!;
    assert.equal(route.requests, 40);
    assert.deepEqual(route.latency_ms, percentiles(cumulative(traffic([10, 2], [30, 300]))));
    const s = merged.upstreams[0]!.servers[0]!;
    assert.equal(s.requests, 10);
    assert.equal(s.in_flight, 3);
    assert.equal(s.state, 'ejected');
    assert.deepEqual(s.last_check, { at: '2026-01-01T00:00:02.000Z', ok: false });
    assert.equal(merged.upstreams[0]!.requests, 10);
    assert.deepEqual(merged.caches[0], { zone: 'main', entries: 6, bytes: 600, hits: 8, misses: 2, stale: 2, hit_ratio: 0.8 });
    const served = withoutHistograms(merged);
    assert.equal('histogram' in served.routes[0]!, false);
    assert.equal('histogram' in served.upstreams[0]!.servers[0]!, false);
  });

  test('gRPC calls by status are summed per route, and an HTTP/2 server\'s connections, streams and waiting requests', () => {
    const h2 = { protocol: 'h2c', http2: { connections: 1, streams: 2, waiting: 0 } };
    const one = worker(traffic([10, 2]), traffic([4, 1]), h2, 0, 0);
    const two = worker(traffic([10, 2]), traffic([4, 1]), { ...h2, http2: { connections: 2, streams: 1, waiting: 3 } }, 0, 0);
    one.routes[0]!.grpc = { '0': 5, '14': 1 };
    two.routes[0]!.grpc = { '0': 2, '4': 1 };
    const merged = mergeProcessStatus([one, two]);
    assert.deepEqual(merged.routes[0]!.grpc, { '0': 7, '4': 1, '14': 1 });
    const s = merged.upstreams[0]!.servers[0]!;
    assert.equal(s.protocol, 'h2c');
    assert.deepEqual(s.http2, { connections: 3, streams: 3, waiting: 3 });
    const plain = mergeProcessStatus([worker(traffic([1, 1]), traffic([1, 1]), {}, 0, 0), worker(traffic([1, 1]), traffic([1, 1]), {}, 0, 0)]);
    assert.equal('grpc' in plain.routes[0]!, false);
    assert.equal('http2' in plain.upstreams[0]!.servers[0]!, false);
  });
});

describe('prom-client text from the recorders', () => {
  test('counters and histograms hold exactly what was recorded, in prom-client\'s format', async () => {
    const metrics = new Metrics({ processMetrics: false });
    const route = metrics.route('a.example/api/', 'proxy');
    route.record(200, 3);
    route.record(200, 30);
    route.record(503, 3000);
    metrics.unrouted.record(404, 0.1);
    metrics.server('app', 'one').record(200, 2);
    const tally: CacheTally = metrics.cache('main');
    for (let i = 0; i < 5; i++) tally.hit(200);
    tally.hit(234);
    tally.miss();
    tally.miss();
    metrics.handshake('TLSv1.3');
    metrics.handshakeFailed();
    const text = await metrics.text();
    assert.match(text, /^portico_http_requests_total\{route="a\.example\/api\/",class="2xx"\} 2$/m);
    assert.match(text, /^portico_http_requests_total\{route="a\.example\/api\/",class="5xx"\} 1$/m);
    assert.match(text, /^portico_http_requests_total\{route="-",class="4xx"\} 1$/m);
    assert.match(text, /^portico_http_request_duration_seconds_bucket\{le="0\.005",route="a\.example\/api\/"\} 1$/m);
    assert.match(text, /^portico_http_request_duration_seconds_bucket\{le="0\.05",route="a\.example\/api\/"\} 2$/m);
    assert.match(text, /^portico_http_request_duration_seconds_bucket\{le="\+Inf",route="a\.example\/api\/"\} 3$/m);
    assert.match(text, /^portico_http_request_duration_seconds_sum\{route="a\.example\/api\/"\} 3\.033$/m);
    assert.match(text, /^portico_http_request_duration_seconds_count\{route="a\.example\/api\/"\} 3$/m);
    assert.match(text, /^portico_upstream_requests_total\{upstream="app",server="one",class="2xx"\} 1$/m);
    assert.match(text, /^portico_cache_requests_total\{zone="main",result="hit"\} 6$/m);
    assert.match(text, /^portico_cache_served_bytes_total\{zone="main"\} 1234$/m);
    assert.match(text, /^portico_tls_handshakes_total\{version="TLSv1\.3"\} 1$/m);
    assert.match(text, /^portico_tls_handshake_errors_total 1$/m);
    // A second scrape gives the same figures (the metrics are set from the recorders, not added to).
    assert.equal(await metrics.text(), text);
  });

  test('a server no live upstream has any more keeps its series while it records, is forgotten once idle past forgetGoneServersAfterMs, and is put back if it records again', async () => {
    const metrics = new Metrics({ processMetrics: false, forgetGoneServersAfterMs: 0 });
    let live = ['a', 'b'];
    metrics.source = { servers: () => live.map((server) => ({ upstream: 'app', server, up: true, inFlight: 0, state: 'healthy' })), caches: () => [], connections: () => ({ open: 0, streams: 0 }), certificates: () => [] };
    const series = (text: string): string[] => [...text.matchAll(/^portico_upstream_requests_total\{upstream="app",server="(\w+)",class="2xx"\} (\d+)$/gm)].map((m) => `${m[1]}=${m[2]}`);
    const [a, b, c] = ['a', 'b', 'c'].map((name) => metrics.server('app', name));
    a!.record(200, 1);
    b!.record(200, 1);
    c!.record(200, 1);
    assert.deepEqual(series(await metrics.text()), ['a=1', 'b=1', 'c=1']);
    // DNS stops naming b and c; c's last request is still ending.
    live = ['a'];
    c!.record(200, 1);
    assert.deepEqual(series(await metrics.text()), ['a=1', 'b=1', 'c=2'], 'a gone server is shown at least once more');
    assert.deepEqual(series(await metrics.text()), ['a=1', 'c=2'], 'b, gone and idle, is forgotten; c recorded since the last scrape');
    assert.deepEqual(series(await metrics.text()), ['a=1']);
    c!.record(200, 1);
    assert.deepEqual(series(await metrics.text()), ['a=1', 'c=3'], 'a forgotten recorder that records again is back, its count whole');
    // A live server is never forgotten, idle or not; a forgotten one named again starts a new series.
    live = ['a', 'b'];
    assert.deepEqual(series(await metrics.text()), ['a=1', 'c=3']);
    metrics.server('app', 'b').record(200, 1);
    assert.deepEqual(series(await metrics.text()), ['a=1', 'b=1'], 'b is new; c, idle again, is forgotten again');
  });

  test('process metrics are prom-client\'s, but the GC histogram (a cost on every collection)', async () => {
    const text = await new Metrics().text();
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_version_info']) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
    }
    assert.doesNotMatch(text, /nodejs_gc_duration_seconds/);
  });

  test('the event loop delay gauges never print NaN: a scrape with no sample since the last leaves them out; an idle loop reads near 0, not the 0.1 s sampling interval', async () => {
    const metrics = new Metrics();
    await metrics.text();
    const again = await metrics.text();
    assert.doesNotMatch(again, /\b(Nan|NaN)\b/);
    assert.doesNotMatch(again, /^nodejs_eventloop_lag_(mean|stddev|min|max|p50|p90|p99)_seconds /m);
    assert.match(again, /^# TYPE nodejs_eventloop_lag_mean_seconds gauge$/m);
    // Bounded: until a window has samples (the timer ticks every 100 ms), at most 30 scrapes 100 ms apart.
    let text = '';
    for (let i = 0; i < 30 && !/^nodejs_eventloop_lag_min_seconds /m.test(text); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      text = await metrics.text();
    }
    const min = Number(/^nodejs_eventloop_lag_min_seconds (\S+)$/m.exec(text)?.[1]);
    const mean = Number(/^nodejs_eventloop_lag_mean_seconds (\S+)$/m.exec(text)?.[1]);
    // prom-client's own read the interval itself: at least 0.1 s.
    assert.ok(min >= 0 && min < 0.05, `min ${min}`);
    assert.ok(mean >= 0 && mean < 0.1, `mean ${mean}`);
  });

  test('the primary aggregates a gauge over the processes that have a value: NaN (or null, as JSON sent it) is left out', async () => {
    const gauge = (value: number | null) => [{ name: 'g', help: 'g', type: 'gauge', aggregator: 'average', values: [{ value, labels: {} }] }] as unknown as Parameters<typeof withoutNaN>[0];
    const text = await AggregatorRegistry.aggregate([gauge(NaN), gauge(0.004), gauge(null)].map(withoutNaN)).metrics();
    assert.match(text, /^g 0\.004$/m);
    const none = await AggregatorRegistry.aggregate([gauge(NaN)].map(withoutNaN)).metrics();
    assert.doesNotMatch(none, /Nan|NaN/);
  });

  test('with workers, a gone server one worker forgot keeps that worker\'s last figures in the sum while another still has it; forgotten by all, it goes', async () => {
    const worker = (): Metrics => {
      const metrics = new Metrics({ processMetrics: false, forgetGoneServersAfterMs: 0 });
      // Serving, with no upstream that has the server.
      metrics.source = { ...metrics.source, servers: () => [] };
      return metrics;
    };
    const [a, b] = [worker(), worker()];
    a.server('app', 'gone').record(200, 1);
    a.server('app', 'gone').record(200, 1);
    b.server('app', 'gone').record(200, 1);
    const seen = new Map<string, MetricsJson>();
    /** One scrape of the primary: each worker's JSON, with what it forgot carried (as workers.ts does). */
    const scrape = async (): Promise<string> => {
      const fresh = [await a.json(), await b.json()];
      const lists = fresh.map((own, i) => {
        const carried = carryForgottenServers(seen.get(String(i)), own, fresh);
        seen.set(String(i), carried);
        return carried;
      });
      const text = await AggregatorRegistry.aggregate(lists).metrics();
      return /^portico_upstream_requests_total\{upstream="app",server="gone",class="2xx"\} (\d+)$/m.exec(text)?.[1] ?? 'none';
    };
    assert.equal(await scrape(), '3');
    // Neither has the server any more (no source lists it); a's last request is still ending: b forgets first.
    a.server('app', 'gone').record(200, 1);
    assert.equal(await scrape(), '4');
    assert.equal(await scrape(), '4', 'b forgot it: its last figure is carried while a still has it');
    assert.equal(await scrape(), 'none', 'a forgot it too: the series goes');
  });

  test('two processes\' registries aggregate into sums, histograms bucket-wise', async () => {
    const a = new Metrics({ processMetrics: false });
    const b = new Metrics({ processMetrics: false });
    a.route('*/', 'static').record(200, 1);
    b.route('*/', 'static').record(200, 1);
    b.route('*/', 'static').record(200, 700);
    a.source = { ...a.source, servers: () => [{ upstream: 'u', server: 's', up: true, inFlight: 2, state: 'healthy' }] };
    b.source = { ...b.source, servers: () => [{ upstream: 'u', server: 's', up: true, inFlight: 3, state: 'healthy' }] };
    const text = await AggregatorRegistry.aggregate([await a.json(), await b.json()]).metrics();
    assert.match(text, /^portico_http_requests_total\{route="\*\/",class="2xx"\} 3$/m);
    assert.match(text, /^portico_http_request_duration_seconds_bucket\{le="0\.001",route="\*\/"\} 2$/m);
    assert.match(text, /^portico_http_request_duration_seconds_bucket\{le="1",route="\*\/"\} 3$/m);
    assert.match(text, /^portico_http_request_duration_seconds_count\{route="\*\/"\} 3$/m);
    assert.match(text, /^portico_upstream_server_in_flight\{upstream="u",server="s"\} 5$/m);
    // Health is the same fact in each process: not summed.
    assert.match(text, /^portico_upstream_server_up\{upstream="u",server="s"\} 1$/m);
  });

  test('the portico_cluster_* series come from the cluster link at scrape time, and a box without cluster has none', async () => {
    const alone = await new Metrics({ processMetrics: false }).text();
    assert.doesNotMatch(alone, /^portico_cluster_\w+(\{[^}]*\})? /m);
    const metrics = new Metrics({ processMetrics: false, cluster: true });
    let link = { up: true, boxes: 3, outages: 0, fallbacks: {} as Record<string, number> };
    metrics.source = { ...metrics.source, cluster: () => link };
    const up = await metrics.text();
    assert.match(up, /^portico_cluster_redis_up 1$/m);
    assert.match(up, /^portico_cluster_boxes 3$/m);
    assert.match(up, /^portico_cluster_outages_total 0$/m);
    assert.doesNotMatch(up, /^portico_cluster_fallbacks_total\{/m);
    link = { up: false, boxes: 3, outages: 1, fallbacks: { rate_limit: 12, heartbeat: 2 } };
    const down = await metrics.text();
    assert.match(down, /^portico_cluster_redis_up 0$/m);
    assert.match(down, /^portico_cluster_outages_total 1$/m);
    assert.match(down, /^portico_cluster_fallbacks_total\{feature="rate_limit"\} 12$/m);
    assert.match(down, /^portico_cluster_fallbacks_total\{feature="heartbeat"\} 2$/m);
  });
});

describe('gRPC calls by status', () => {
  test('a route counts its calls by grpc-status 0 to 16; any other value (or none) as other', async () => {
    const metrics = new Metrics({ processMetrics: false });
    const route = metrics.route('*/', 'proxy');
    for (const status of ['0', '0', '14', '16', '17', '', 'x', '-1']) route.recordGrpc(status);
    const text = (await metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('portico_grpc_requests_total'));
    assert.deepEqual(text, [
      'portico_grpc_requests_total{route="*/",grpc_status="0"} 2',
      'portico_grpc_requests_total{route="*/",grpc_status="14"} 1',
      'portico_grpc_requests_total{route="*/",grpc_status="16"} 1',
      'portico_grpc_requests_total{route="*/",grpc_status="other"} 4',
    ]);
    assert.equal(metrics.unrouted.grpc, undefined, 'a route without calls keeps no counts');
  });
});
