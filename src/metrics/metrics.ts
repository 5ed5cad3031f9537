/**
 * One process's metrics (docs/operations.md, "Metrics"): its own prom-client `Registry` (never the global one),
 * the hot-path recorders it hands out, and the gauges read from the live objects at scrape time.
 *
 * Counting is split in two on purpose. The request path records into plain numbers (`Traffic`, `CacheTally`,
 * made once per route, server and zone and kept across reloads by id): no label object, no hash string, no
 * allocation per request. prom-client's metrics are filled from them in their `collect()` at scrape time, so the
 * text (and the JSON the workers send the primary, merged by `AggregatorRegistry.aggregate`) is prom-client's
 * own. What only the live objects know (a server's health and requests in flight, a zone's entries, open
 * connections, certificates) is asked of a `ScrapeSource` the server layer hands in.
 */
import { createRequire } from 'node:module';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { eventLoopDelay } from './event-loop.js';
import { CLASS_NAMES, LATENCY_BOUNDS_MS, Traffic } from './traffic.js';

/** gRPC statuses counted one by one: 0 OK … 16 UNAUTHENTICATED; any other value an app sends is counted as `other`. */
const GRPC_CODES = 17;

/** A route's traffic: `id` is `host + path` (`a.example/api/`, `*` for a site without hosts), `handler` its kind. */
export class RouteTraffic extends Traffic {
  /** gRPC calls by the `grpc-status` they ended with (index 17: any other value), made at the route's first call. */
  grpc: Float64Array | undefined = undefined;

  constructor(
    readonly id: string,
    public handler: string,
  ) {
    super();
  }

  /** One gRPC call that ended with `status` (the `grpc-status` text; `''`: none, counted as `other`). */
  recordGrpc(status: string): void {
    const code = status.length > 0 && status.length <= 2 ? Number(status) : -1;
    const grpc = (this.grpc ??= new Float64Array(GRPC_CODES + 1));
    grpc[Number.isInteger(code) && code >= 0 && code < GRPC_CODES ? code : GRPC_CODES]!++;
  }
}

/** A route's gRPC calls by status, as `{ "0": n, "14": m, "other": k }` (none: undefined). */
export function grpcCounts(traffic: RouteTraffic): Record<string, number> | undefined {
  const grpc = traffic.grpc;
  if (grpc === undefined) return undefined;
  const counts: Record<string, number> = {};
  grpc.forEach((n, i) => {
    if (n > 0) counts[i === GRPC_CODES ? 'other' : String(i)] = n;
  });
  return counts;
}

/** One upstream server's attempts (its stable id: see `UpstreamServer.name`). */
export class ServerTraffic extends Traffic {
  constructor(
    readonly upstream: string,
    readonly server: string,
  ) {
    super();
  }
}

/**
 * One cache zone's lookups by outcome, and the body bytes answered from it: in a typed array, as `Traffic`'s (the
 * bytes pass 2^30 soon, past which a number field of a long-lived object is boxed).
 */
export class CacheTally {
  readonly #counts = new Float64Array(4);
  constructor(readonly zone: string) {}

  /** An answer from storage, fresh; `bytes` of body sent. */
  hit(bytes: number): void {
    this.#counts[0]!++;
    this.#counts[3]! += bytes;
  }

  /** The answer came from the upstream (a miss, a revalidation, a collapsed wait). */
  miss(): void {
    this.#counts[1]!++;
  }

  /** A stored answer served stale; `bytes` of body sent. */
  staleServed(bytes: number): void {
    this.#counts[2]!++;
    this.#counts[3]! += bytes;
  }

  /** Fresh answers from storage. */
  get hits(): number {
    return this.#counts[0]!;
  }

  /** Answers that came from the upstream. */
  get misses(): number {
    return this.#counts[1]!;
  }

  /** Stale answers served (stale-while-revalidate, stale-if-error, unreachable, a client's max-stale). */
  get stale(): number {
    return this.#counts[2]!;
  }

  /** Body bytes answered from storage. */
  get bytes(): number {
    return this.#counts[3]!;
  }
}

/** The id under which requests answered before any route took them are counted (a 404, 421, 400, a redirect). */
export const UNROUTED = '-';

/** A server's live state at scrape time. */
export interface ServerGauge {
  upstream: string;
  server: string;
  /** The active checks' view: healthy, and (a spawned slot) served by an instance. */
  up: boolean;
  inFlight: number;
  /** `ServerState` of admin-types (`healthy`, `ejected`, `draining`...). */
  state: string;
}

/** A cache zone's tier at scrape time. */
export interface CacheGauge {
  zone: string;
  tier: 'memory' | 'disk';
  entries: number;
  bytes: number;
}

/** What the registry reads of the live objects at scrape time (the server layer builds it). */
export interface ScrapeSource {
  /** The servers of the live upstreams; undefined while the process is not serving yet (it has none to ask). */
  servers(): readonly ServerGauge[] | undefined;
  caches(): readonly CacheGauge[];
  connections(): { open: number; streams: number };
  /** Each certificate served: its hosts and when it expires (ms since the epoch). */
  certificates(): ReadonlyArray<{ hosts: readonly string[]; notAfter: number }>;
  /** The box's cluster link (undefined: no `cluster` section, and no `portico_cluster_*` series). */
  cluster?(): ClusterGauge | undefined;
}

/** A box's link to the cluster's Redis at scrape time (docs/cluster.md). */
export interface ClusterGauge {
  /** Whether Redis answers. */
  up: boolean;
  /** The boxes the last heartbeat saw (this one included). */
  boxes: number;
  /** Outages since start. */
  outages: number;
  /** Calls that took their local fallback, by feature (`rate_limit`, `heartbeat`...). */
  fallbacks: Readonly<Record<string, number>>;
}

const SERVER_STATES = ['healthy', 'ejected', 'unhealthy', 'down', 'draining', 'disabled'] as const;
const SECONDS_BOUNDS = LATENCY_BOUNDS_MS.map((ms) => ms / 1000);
const NO_SOURCE: ScrapeSource = { servers: () => undefined, caches: () => [], connections: () => ({ open: 0, streams: 0 }), certificates: () => [] };

/** Internals of prom-client's Histogram (15.x) that `fillHistogram` writes: one entry per label set. */
interface HistogramEntry {
  labels: Record<string, string>;
  bucketValues: Record<number, number>;
  sum: number;
  count: number;
}

/**
 * Sets a prom-client histogram to the given series (replacing what it held): `zero()` makes each series' entry
 * (prom-client's public way to create one), whose buckets, sum and count are then written from the `Traffic`.
 * prom-client has no public setter for a histogram; tested in test/unit/metrics.test.ts against its text output.
 */
function fillHistogram(histogram: Histogram<string>, series: ReadonlyArray<{ labels: Record<string, string>; traffic: Traffic }>): void {
  histogram.reset();
  const byLabels = new Map<Record<string, string>, Traffic>();
  for (const { labels, traffic } of series) {
    histogram.zero(labels);
    byLabels.set(labels, traffic);
  }
  const entries = Object.values((histogram as unknown as { hashMap: Record<string, HistogramEntry> }).hashMap);
  for (const entry of entries) {
    const traffic = byLabels.get(entry.labels);
    if (traffic === undefined) continue;
    SECONDS_BOUNDS.forEach((bound, i) => (entry.bucketValues[bound] = traffic.buckets[i]!));
    entry.sum = traffic.sumMs / 1000;
    entry.count = traffic.count;
  }
}

/** Sets a counter's series to the given values (replacing what it held). */
function fillCounter(counter: Counter<string>, series: ReadonlyArray<[Record<string, string>, number]>): void {
  counter.reset();
  for (const [labels, value] of series) counter.inc(labels, value);
}

/** Sets a gauge's series to the given values (replacing what it held). */
function fillGauge(gauge: Gauge<string>, series: ReadonlyArray<[Record<string, string>, number]>): void {
  gauge.reset();
  for (const [labels, value] of series) gauge.set(labels, value);
}

/** How often the process metrics sample the event loop's delay (`nodejs_eventloop_lag_*`). */
const EVENT_LOOP_SAMPLE_MS = 100;

const requireCjs = createRequire(import.meta.url);

/**
 * prom-client's process metrics (`collectDefaultMetrics`'s list, each its own module) on `registry`, but two
 * costs measured on the request path (bench/RESULTS.md, "Counting (admin on)"): the event loop's delay is sampled
 * every 100 ms, not every 10 (that timer cost 2% of the proxied requests a second), and the GC duration histogram
 * (`nodejs_gc_duration_seconds`) is left out: its PerformanceObserver, called on every collection, cost 2% of the
 * cache hits a second. The modules are prom-client's own (15.1.3, pinned); its `metricsList` names them; the event
 * loop's delay is Portico's own (`event-loop.ts`), under prom-client's names.
 */
function processMetrics(registry: Registry): void {
  for (const name of collectDefaultMetrics.metricsList) {
    if (name === 'gc') continue;
    // Portico's own, under the same names: see event-loop.ts for what prom-client's reports wrongly.
    if (name === 'eventLoopLag') {
      eventLoopDelay(registry, EVENT_LOOP_SAMPLE_MS);
      continue;
    }
    const collect = requireCjs(`prom-client/lib/metrics/${name}.js`) as (register: Registry, config: object) => void;
    collect(registry, { eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  }
}

/** How a `Metrics` is made. */
export interface MetricsOptions {
  /** Process metrics (CPU, memory, file descriptors, heap, event loop: see `processMetrics`); default true. */
  processMetrics?: boolean;
  /** The `portico_cluster_*` series, read from `source.cluster` (a box of a cluster); default false. */
  cluster?: boolean;
  /**
   * How long a server no upstream has any more (DNS stopped naming it, a reload removed it) keeps its series, once
   * it is idle, before it is forgotten; default 10 minutes.
   */
  forgetGoneServersAfterMs?: number;
}

/** `MetricsOptions.forgetGoneServersAfterMs`'s default: a few scrapes see a gone server's last figures. */
const FORGET_GONE_SERVERS_MS = 10 * 60_000;

/** The metrics of one Portico process (single, worker or primary). */
export class Metrics {
  readonly registry = new Registry();
  readonly #routes = new Map<string, RouteTraffic>();
  /**
   * Each server's recorder, with its count at the last sweep and since when it has been gone and idle (see `#sweep`).
   */
  readonly #servers = new Map<string, { readonly traffic: ServerTraffic; seenCount: number; goneSince: number | undefined }>();
  /**
   * Recorders forgotten (see `#sweep`), held weakly with their count then: one that recorded since (a request to
   * it still ending) is put back at the next sweep; one nothing holds any more is dropped.
   */
  readonly #forgotten = new Map<string, { traffic: WeakRef<ServerTraffic>; count: number }>();
  /** When the gone servers were last swept: a new server sweeps them too, at most once a minute (see `server`). */
  #sweptAt = 0;
  readonly #caches = new Map<string, CacheTally>();
  readonly #handshakes = new Map<string, number>();
  #handshakeErrors = 0;
  readonly #forgetAfterMs: number;
  /** Requests answered before routing (`UNROUTED`). */
  readonly unrouted: RouteTraffic;
  source: ScrapeSource = NO_SOURCE;

  constructor(options: MetricsOptions = {}) {
    this.#forgetAfterMs = options.forgetGoneServersAfterMs ?? FORGET_GONE_SERVERS_MS;
    this.unrouted = this.route(UNROUTED, 'none');
    if (options.processMetrics !== false) processMetrics(this.registry);
    this.#define();
    if (options.cluster === true) this.#defineCluster();
  }

  /** The recorder of a route (the same one for the same id across reloads: counters never go back). */
  route(id: string, handler: string): RouteTraffic {
    let traffic = this.#routes.get(id);
    if (traffic === undefined) this.#routes.set(id, (traffic = new RouteTraffic(id, handler)));
    else traffic.handler = handler;
    return traffic;
  }

  /** The recorder of an upstream server's attempts. */
  server(upstream: string, server: string): ServerTraffic {
    const key = `${upstream}\0${server}`;
    const held = this.#servers.get(key);
    if (held !== undefined) return held.traffic;
    const traffic = new ServerTraffic(upstream, server);
    this.#servers.set(key, { traffic, seenCount: 0, goneSince: undefined });
    // Servers come and go without a scrape too (nothing reads /metrics): the gone ones are forgotten all the same.
    if (Date.now() - this.#sweptAt >= 60_000) this.#sweep();
    return traffic;
  }

  /** The tally of a cache zone. */
  cache(zone: string): CacheTally {
    let tally = this.#caches.get(zone);
    if (tally === undefined) this.#caches.set(zone, (tally = new CacheTally(zone)));
    return tally;
  }

  /** A TLS handshake completed with `version` (`TLSv1.3`). */
  handshake(version: string | null): void {
    const key = version ?? 'unknown';
    this.#handshakes.set(key, (this.#handshakes.get(key) ?? 0) + 1);
  }

  /** A TLS handshake failed. */
  handshakeFailed(): void {
    this.#handshakeErrors++;
  }

  /** The recorded routes (the unrouted entry included). */
  routes(): RouteTraffic[] {
    return [...this.#routes.values()];
  }

  /** The recorded upstream servers. */
  servers(): ServerTraffic[] {
    return [...this.#servers.values()].map((held) => held.traffic);
  }

  /** The tally of a zone if it was ever counted. */
  cacheTally(zone: string): CacheTally | undefined {
    return this.#caches.get(zone);
  }

  /** The Prometheus text of this registry. */
  async text(): Promise<string> {
    this.#sweep();
    return this.registry.metrics();
  }

  /** The registry as JSON, for the primary to aggregate (`AggregatorRegistry.aggregate`). */
  json(): Promise<MetricsJson> {
    this.#sweep();
    return this.registry.getMetricsAsJSON();
  }

  /**
   * Forgets the servers that are gone: none of the live upstreams has them (`source.servers()`) and no attempt was
   * recorded on them for `forgetGoneServersAfterMs`. Servers found through DNS come and go (a deploy on Kubernetes
   * gives each pod a new address): each would otherwise keep its series, and its recorder, for the process's life.
   * A forgotten recorder that records again (a request to it still ending) is put back, by the sweep: the hot
   * path pays nothing for it.
   */
  #sweep(): void {
    // Not serving yet (a server is made while its upstream is built), or no source: nothing is known gone.
    const servers = this.source.servers();
    if (servers === undefined) return;
    const live = new Set(servers.map((s) => `${s.upstream}\0${s.server}`));
    const now = Date.now();
    this.#sweptAt = now;
    for (const [key, gone] of this.#forgotten) {
      const traffic = gone.traffic.deref();
      if (traffic !== undefined && traffic.count === gone.count) continue;
      this.#forgotten.delete(key);
      if (traffic !== undefined && !this.#servers.has(key)) this.#servers.set(key, { traffic, seenCount: 0, goneSince: undefined });
    }
    for (const [key, held] of this.#servers) {
      const count = held.traffic.count;
      if (live.has(key) || count !== held.seenCount) {
        held.seenCount = count;
        held.goneSince = undefined;
      } else if (held.goneSince === undefined) {
        held.goneSince = now;
      } else if (now - held.goneSince >= this.#forgetAfterMs) {
        this.#servers.delete(key);
        this.#forgotten.set(key, { traffic: new WeakRef(held.traffic), count });
      }
    }
  }

  #define(): void {
    const registers = [this.registry];
    // `collect` runs in prom-client's `get()`, for each scrape: `this` there is the metric, hence `metrics`.
    const metrics = this;
    new Counter({
      name: 'portico_http_requests_total',
      help: 'Requests answered, by route (host + path; "-": answered before routing) and status class.',
      labelNames: ['route', 'class'],
      registers,
      collect() {
        fillCounter(this, metrics.routes().flatMap((r) => classSeries({ route: r.id }, r)));
      },
    });
    new Counter({
      name: 'portico_grpc_requests_total',
      help: 'gRPC (and gRPC-Web) calls answered, by route and the grpc-status they ended with ("other": a value outside 0-16).',
      labelNames: ['route', 'grpc_status'],
      registers,
      collect() {
        fillCounter(
          this,
          metrics.routes().flatMap((r) => Object.entries(grpcCounts(r) ?? {}).map(([status, n]): [Record<string, string>, number] => [{ route: r.id, grpc_status: status }, n])),
        );
      },
    });
    new Histogram({
      name: 'portico_http_request_duration_seconds',
      help: 'Time from a request\'s arrival to the end of its answer, by route.',
      labelNames: ['route'],
      buckets: SECONDS_BOUNDS,
      registers,
      collect() {
        fillHistogram(this, metrics.routes().filter((r) => r.count > 0).map((r) => ({ labels: { route: r.id }, traffic: r })));
      },
    });
    new Counter({
      name: 'portico_upstream_requests_total',
      help: 'Attempts forwarded to upstream servers, by upstream, server and status class ("none": ended without a status).',
      labelNames: ['upstream', 'server', 'class'],
      registers,
      collect() {
        fillCounter(this, metrics.servers().flatMap((s) => classSeries({ upstream: s.upstream, server: s.server }, s)));
      },
    });
    new Histogram({
      name: 'portico_upstream_request_duration_seconds',
      help: 'Time of an attempt on an upstream server, from its dispatch to the end of its answer.',
      labelNames: ['upstream', 'server'],
      buckets: SECONDS_BOUNDS,
      registers,
      collect() {
        fillHistogram(this, metrics.servers().filter((s) => s.count > 0).map((s) => ({ labels: { upstream: s.upstream, server: s.server }, traffic: s })));
      },
    });
    new Gauge({
      name: 'portico_upstream_server_up',
      help: 'Whether the active health checks hold the server up (1) or down (0).',
      labelNames: ['upstream', 'server'],
      registers,
      aggregator: 'max',
      collect() {
        fillGauge(this, (metrics.source.servers() ?? []).map((s) => [{ upstream: s.upstream, server: s.server }, s.up ? 1 : 0]));
      },
    });
    new Gauge({
      name: 'portico_upstream_server_in_flight',
      help: 'Requests in flight on the server now.',
      labelNames: ['upstream', 'server'],
      registers,
      collect() {
        fillGauge(this, (metrics.source.servers() ?? []).map((s) => [{ upstream: s.upstream, server: s.server }, s.inFlight]));
      },
    });
    new Gauge({
      name: 'portico_upstream_server_state',
      help: 'The server\'s state (1 for the one it is in): healthy, ejected, unhealthy, down, draining, disabled.',
      labelNames: ['upstream', 'server', 'state'],
      registers,
      aggregator: 'max',
      collect() {
        fillGauge(
          this,
          (metrics.source.servers() ?? []).flatMap((s) => SERVER_STATES.map((state): [Record<string, string>, number] => [{ upstream: s.upstream, server: s.server, state }, s.state === state ? 1 : 0])),
        );
      },
    });
    new Counter({
      name: 'portico_cache_requests_total',
      help: 'Cache lookups by zone and result: hit (fresh), stale (served stale), miss (went to the upstream).',
      labelNames: ['zone', 'result'],
      registers,
      collect() {
        fillCounter(
          this,
          [...metrics.#caches.values()].flatMap((c): Array<[Record<string, string>, number]> => [
            [{ zone: c.zone, result: 'hit' }, c.hits],
            [{ zone: c.zone, result: 'miss' }, c.misses],
            [{ zone: c.zone, result: 'stale' }, c.stale],
          ]),
        );
      },
    });
    new Counter({
      name: 'portico_cache_served_bytes_total',
      help: 'Body bytes answered from the cache (hits and stale answers), by zone.',
      labelNames: ['zone'],
      registers,
      collect() {
        fillCounter(this, [...metrics.#caches.values()].map((c) => [{ zone: c.zone }, c.bytes]));
      },
    });
    new Gauge({
      name: 'portico_cache_entries',
      help: 'Cache keys stored, by zone and tier (memory, disk).',
      labelNames: ['zone', 'tier'],
      registers,
      collect() {
        fillGauge(this, metrics.source.caches().map((c) => [{ zone: c.zone, tier: c.tier }, c.entries]));
      },
    });
    new Gauge({
      name: 'portico_cache_bytes',
      help: 'Bytes stored, by zone and tier (memory, disk).',
      labelNames: ['zone', 'tier'],
      registers,
      collect() {
        fillGauge(this, metrics.source.caches().map((c) => [{ zone: c.zone, tier: c.tier }, c.bytes]));
      },
    });
    new Gauge({
      name: 'portico_connections_open',
      help: 'Client connections open now (every listener).',
      registers,
      collect() {
        this.set(metrics.source.connections().open);
      },
    });
    new Gauge({
      name: 'portico_http2_streams_open',
      help: 'HTTP/2 requests (streams) being answered now.',
      registers,
      collect() {
        this.set(metrics.source.connections().streams);
      },
    });
    new Counter({
      name: 'portico_tls_handshakes_total',
      help: 'TLS handshakes completed, by protocol version.',
      labelNames: ['version'],
      registers,
      collect() {
        fillCounter(this, [...metrics.#handshakes].map(([version, n]) => [{ version }, n]));
      },
    });
    new Counter({
      name: 'portico_tls_handshake_errors_total',
      help: 'TLS handshakes that failed (or plain HTTP sent to a TLS port).',
      registers,
      collect() {
        this.reset();
        this.inc(metrics.#handshakeErrors);
      },
    });
    new Gauge({
      name: 'portico_certificate_expiry_seconds',
      help: 'When each certificate served expires, in seconds since the Unix epoch (subtract time() for what is left).',
      labelNames: ['hosts'],
      registers,
      aggregator: 'min',
      collect() {
        fillGauge(this, metrics.source.certificates().map((c) => [{ hosts: c.hosts.join(',') }, Math.floor(c.notAfter / 1000)]));
      },
    });
  }

  /** The cluster link's series (see `MetricsOptions.cluster`). */
  #defineCluster(): void {
    const registers = [this.registry];
    const metrics = this;
    const cluster = (): ClusterGauge | undefined => metrics.source.cluster?.();
    new Gauge({
      name: 'portico_cluster_redis_up',
      help: 'Whether this box reaches the cluster\'s Redis (1) or runs on its local fallbacks (0).',
      registers,
      // With workers: 0 when any process of the box does not (each has its own link).
      aggregator: 'min',
      collect() {
        const link = cluster();
        this.set(link?.up === true ? 1 : 0);
      },
    });
    new Gauge({
      name: 'portico_cluster_boxes',
      help: 'Boxes of the cluster the last heartbeat saw, this one included (kept while Redis is away).',
      registers,
      // With workers: every process of the box has the primary's count.
      aggregator: 'max',
      collect() {
        const link = cluster();
        this.set(link?.boxes ?? 1);
      },
    });
    new Counter({
      name: 'portico_cluster_outages_total',
      help: 'Times this box lost the cluster\'s Redis (each logged once, with its end).',
      registers,
      collect() {
        const link = cluster();
        this.reset();
        this.inc(link?.outages ?? 0);
      },
    });
    new Counter({
      name: 'portico_cluster_fallbacks_total',
      help: 'Calls to Redis that took their local fallback (Redis away, slow past the deadline, or failing), by feature.',
      labelNames: ['feature'],
      registers,
      collect() {
        fillCounter(this, Object.entries(cluster()?.fallbacks ?? {}).map(([feature, n]) => [{ feature }, n]));
      },
    });
  }
}

/** A traffic's counts by class as counter series, each with `labels` and its class. */
function classSeries(labels: Record<string, string>, traffic: Traffic): Array<[Record<string, string>, number]> {
  const series: Array<[Record<string, string>, number]> = [];
  CLASS_NAMES.forEach((name, i) => {
    const n = traffic.classes[i]!;
    if (n > 0) series.push([{ ...labels, class: name }, n]);
  });
  return series;
}

/**
 * A process's registry as JSON without the values that are no number (NaN, or the `null` it becomes in JSON): the
 * primary aggregates only the processes that have a value, so an average is never NaN (printed `Nan`).
 */
export function withoutNaN(list: MetricObjectWithValues<MetricValue<string>>[]): MetricObjectWithValues<MetricValue<string>>[] {
  return list.map((metric) => (metric.values.every(isNumber) ? metric : { ...metric, values: metric.values.filter(isNumber) }));
}

/** A registry as JSON (prom-client's `getMetricsAsJSON`), as a worker sends it to the primary. */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** The metrics counted per upstream server, which a process forgets once the server is gone (`Metrics.#sweep`). */
const PER_SERVER = new Set(['portico_upstream_requests_total', 'portico_upstream_request_duration_seconds']);

const serverKey = (labels: Partial<Record<string, string | number>>): string => `${labels.upstream}\0${labels.server}`;

/**
 * With workers, each forgets a gone server at its own scrape (it went idle there at its own moment): summed, its
 * counters would fall while the others still have it, which Prometheus reads as a reset (a burst of phantom traffic
 * in `rate()`). So the primary hands on a worker's last figures of a server it forgot (`previous`: its last JSON,
 * as this returned it) while any process (`fresh`, all of them) still has that server; once none does, it goes.
 */
export function carryForgottenServers(previous: MetricsJson | undefined, own: MetricsJson, fresh: readonly MetricsJson[]): MetricsJson {
  if (previous === undefined) return own;
  const held = new Set<string>();
  for (const list of fresh) for (const metric of list) if (PER_SERVER.has(metric.name)) for (const value of metric.values) held.add(serverKey(value.labels));
  // `fresh` is every process's figures at this scrape (one that did not answer, with its last: see workers.ts).
  return own.map((metric) => {
    if (!PER_SERVER.has(metric.name)) return metric;
    const mine = new Set(metric.values.map((value) => serverKey(value.labels)));
    const carried = previous.find((m) => m.name === metric.name)?.values.filter((value) => !mine.has(serverKey(value.labels)) && held.has(serverKey(value.labels))) ?? [];
    return carried.length === 0 ? metric : { ...metric, values: [...metric.values, ...carried] };
  });
}

function isNumber(value: MetricValue<string>): boolean {
  return typeof value.value === 'number' && !Number.isNaN(value.value);
}
