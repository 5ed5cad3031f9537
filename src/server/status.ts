/**
 * The status report's parts (see `StatusReport` in control/admin-types.ts): what one serving process knows
 * (`ProcessStatus`: routes, upstreams with their servers, caches, connections, totals), built from the live objects
 * and the process's metrics; how the primary merges its workers' (sums, histograms bucket-wise, a server's worst
 * state); the certificates served; and the `ScrapeSource` the metrics registry reads the same objects through.
 */
import { X509Certificate } from 'node:crypto';
import type { BoxStatus, CacheStatus, CertificateStatus, ClusterStatus, LatencyHistogram, ProcessStatus, RouteStatus, ServerState, ServerStatus, StatusClasses, StatusReport, TrafficStats, UpstreamStatus } from '../control/admin-types.js';
import type { Config } from '../config/load.js';
import type { CacheZone } from '../cache/zone.js';
import type { Upstream } from '../upstream/upstream.js';
import type { UpstreamServer } from '../upstream/server.js';
import type { AcmeManager } from '../tls/acme.js';
import { grpcCounts, type CacheGauge, type CacheTally, type Metrics, type RouteTraffic, type ScrapeSource, type ServerGauge } from '../metrics/metrics.js';
import { cumulative, percentiles, sumHistograms, Traffic } from '../metrics/traffic.js';
import type { ClusterLink } from '../cluster/link.js';
import type { Heartbeat } from '../cluster/heartbeat.js';

/**
 * Traffic figures with their histogram: what a worker sends the primary, so that percentiles over every worker
 * come from the summed buckets (`withoutHistograms` takes them out of the report served).
 */
type Counted = TrafficStats & { histogram?: LatencyHistogram };

const EMPTY = new Traffic();

/** The figures of a `Traffic` (none yet: zeros, null percentiles). */
export function trafficStats(traffic: Traffic = EMPTY): Counted {
  const histogram = cumulative(traffic);
  const c = traffic.classes;
  return { requests: traffic.count, classes: { '1xx': c[0]!, '2xx': c[1]!, '3xx': c[2]!, '4xx': c[3]!, '5xx': c[4]! }, latency_ms: percentiles(histogram), histogram };
}

/** Sums figures (the classes, the histograms bucket-wise) and works the percentiles out again. */
function sumStats(list: readonly Counted[]): Counted {
  const histogram = sumHistograms(list.map((s) => s.histogram ?? cumulative(EMPTY)));
  const classes: StatusClasses = { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 };
  let requests = 0;
  for (const s of list) {
    requests += s.requests;
    for (const k of Object.keys(classes) as Array<keyof StatusClasses>) classes[k] += s.classes[k];
  }
  return { requests, classes, latency_ms: percentiles(histogram), histogram };
}

/** A server's state, worst first: the operator's say, then health (see `ServerState`). */
export function serverState(server: UpstreamServer, now: number = Date.now()): ServerState {
  if (server.admin === 'disabled') return 'disabled';
  if (server.admin === 'draining') return 'draining';
  if (server.target === undefined) return 'down';
  if (!server.healthy) return 'unhealthy';
  if (server.ejectedUntil > now) return 'ejected';
  return 'healthy';
}

/** One server's status (its traffic figures when counting is on, else zeros). */
export function serverStatus(server: UpstreamServer, now: number = Date.now()): ServerStatus {
  return {
    id: server.name,
    address: server.label,
    discovered: server.discovered,
    state: serverState(server, now),
    admin: server.admin,
    backup: server.backup,
    // `weight` is the operator's when set (see `UpstreamServer.weight`), `configWeight` the config's.
    weight: server.weight,
    configured_weight: server.configWeight,
    in_flight: server.active,
    failures: server.recentFailures(now),
    ejections: server.ejectionsTotal,
    last_check: server.lastCheckAt === 0 ? null : { at: new Date(server.lastCheckAt).toISOString(), ok: server.lastCheckPassed },
    ...trafficStats(server.traffic),
    ...http2Fields(server),
  };
}

/** An HTTP/2 server's `protocol` and `http2` fields (none for another server). */
function http2Fields(server: UpstreamServer): Pick<ServerStatus, 'protocol' | 'http2'> {
  const load = server.http2Load;
  if (load === undefined) return {};
  const { protocol, ...connections } = load;
  return { protocol, http2: connections };
}

/** A route's status with its gRPC counts when it has any (no `grpc` key otherwise). */
function withGrpc(route: RouteStatus, grpc: Record<string, number> | undefined): RouteStatus {
  return grpc === undefined ? route : { ...route, grpc };
}

/** Two reports' gRPC counts by status, summed (absent when neither has any). */
function sumGrpc(a: Record<string, number> | undefined, b: Record<string, number> | undefined): Record<string, number> | undefined {
  if (a === undefined || b === undefined) return a ?? b;
  const sum = { ...a };
  for (const [status, n] of Object.entries(b)) sum[status] = (sum[status] ?? 0) + n;
  return sum;
}

/** One upstream's status: its servers, and their figures summed. */
export function upstreamStatus(upstream: Upstream, now: number = Date.now()): UpstreamStatus {
  const servers = upstream.servers.map((server) => serverStatus(server, now));
  const d = upstream.discovery;
  const discovery =
    d === undefined
      ? null
      : { dns: d.dns, type: d.type, resolved_at: d.resolvedAt === 0 ? null : new Date(d.resolvedAt).toISOString(), next_at: d.nextAt === 0 ? null : new Date(d.nextAt).toISOString(), error: d.error ?? null };
  return { name: upstream.name, spawned: upstream.config.spawn !== undefined, discovery, ...sumStats(servers), servers };
}

/** One zone's status: its disk tier's keys and bytes when it has one (it holds every stored answer), else memory's. */
export function cacheStatus(zone: CacheZone, tally: CacheTally | undefined): CacheStatus {
  const stored = zone.stored;
  const tier = stored.disk ?? stored.memory;
  const hits = tally?.hits ?? 0;
  const misses = tally?.misses ?? 0;
  const status: CacheStatus = { zone: zone.name, entries: tier.entries, bytes: tier.bytes, hits, misses, stale: tally?.stale ?? 0, hit_ratio: hitRatio(hits, misses) };
  const shared = zone.shared?.counts;
  if (shared !== undefined) status.shared = { hits: shared.hits, writes: shared.writes, too_large: shared.tooLarge };
  return status;
}

function hitRatio(hits: number, misses: number): number | null {
  return hits + misses === 0 ? null : Math.round((hits / (hits + misses)) * 10_000) / 10_000;
}

/** What a process's status is built from. */
export interface ProcessParts {
  /** The routes of the config serving, in order. */
  routes: readonly RouteTraffic[];
  /** Every request, routed or not (the metrics' routes, unrouted included); empty when counting is off. */
  all: readonly Traffic[];
  upstreams: readonly Upstream[];
  zones: readonly CacheZone[];
  metrics: Metrics | undefined;
  connections: { open: number; streams: number };
}

/** What one serving process knows (a worker's part of the primary's report). */
export function processStatus(parts: ProcessParts, now: number = Date.now()): ProcessStatus {
  const total = new Traffic();
  for (const traffic of parts.all) total.add(traffic);
  const totals = trafficStats(total);
  return {
    connections: { ...parts.connections },
    totals: { requests: totals.requests, classes: totals.classes, latency: totals.histogram! },
    routes: parts.routes.map((route): RouteStatus => withGrpc({ id: route.id, handler: route.handler, ...trafficStats(route) }, grpcCounts(route))),
    upstreams: parts.upstreams.map((upstream) => upstreamStatus(upstream, now)),
    caches: parts.zones.map((zone) => cacheStatus(zone, parts.metrics?.cacheTally(zone.name))),
  };
}

const STATE_ORDER: readonly ServerState[] = ['disabled', 'draining', 'down', 'unhealthy', 'ejected', 'healthy'];

/** Two reports of one server from two workers: figures summed, in flight summed, the worse state. */
function mergeServer(a: ServerStatus, b: ServerStatus): ServerStatus {
  const state = STATE_ORDER.indexOf(a.state) <= STATE_ORDER.indexOf(b.state) ? a.state : b.state;
  const check = a.last_check === null ? b.last_check : b.last_check === null || a.last_check.at >= b.last_check.at ? a.last_check : b.last_check;
  return {
    ...a,
    ...sumStats([a, b]),
    state,
    in_flight: a.in_flight + b.in_flight,
    failures: a.failures + b.failures,
    ejections: a.ejections + b.ejections,
    last_check: check,
    // Each worker has connections of its own to an HTTP/2 server.
    ...(a.http2 === undefined || b.http2 === undefined
      ? {}
      : { http2: { connections: a.http2.connections + b.http2.connections, streams: a.http2.streams + b.http2.streams, waiting: a.http2.waiting + b.http2.waiting } }),
  };
}

/** Merges items by key, in first-seen order. */
function mergeBy<T>(lists: ReadonlyArray<readonly T[]>, key: (item: T) => string, merge: (a: T, b: T) => T): T[] {
  const merged = new Map<string, T>();
  for (const list of lists) {
    for (const item of list) {
      const k = key(item);
      const held = merged.get(k);
      merged.set(k, held === undefined ? item : merge(held, item));
    }
  }
  return [...merged.values()];
}

/**
 * The workers' statuses as one: connections, totals and every route, upstream, server and zone summed by id
 * (histograms bucket-wise, percentiles worked out again); a server's state is the worst any worker reports (an
 * ejection is one worker's passive view), its operator fields the same in each.
 */
export function mergeProcessStatus(list: readonly ProcessStatus[]): ProcessStatus {
  const totals = sumStats(list.map((s) => ({ requests: s.totals.requests, classes: s.totals.classes, latency_ms: { p50: null, p90: null, p99: null }, histogram: s.totals.latency })));
  return {
    connections: { open: list.reduce((n, s) => n + s.connections.open, 0), streams: list.reduce((n, s) => n + s.connections.streams, 0) },
    totals: { requests: totals.requests, classes: totals.classes, latency: totals.histogram! },
    routes: mergeBy(list.map((s) => s.routes), (r) => r.id, (a, b) => withGrpc({ ...a, ...sumStats([a, b]) }, sumGrpc(a.grpc, b.grpc))),
    upstreams: mergeBy(
      list.map((s) => s.upstreams),
      (u) => u.name,
      (a, b) => {
        const servers = mergeBy([a.servers, b.servers], (s) => s.id, mergeServer);
        return { ...a, ...sumStats(servers), servers };
      },
    ),
    caches: mergeBy(
      list.map((s) => s.caches),
      (c) => c.zone,
      (a, b) => {
        const hits = a.hits + b.hits;
        const misses = a.misses + b.misses;
        const merged: CacheStatus = { zone: a.zone, entries: a.entries + b.entries, bytes: a.bytes + b.bytes, hits, misses, stale: a.stale + b.stale, hit_ratio: hitRatio(hits, misses) };
        // A shared tier's figures, summed over the workers (each has its own link to it).
        if (a.shared !== undefined || b.shared !== undefined) {
          const [x, y] = [a.shared ?? { hits: 0, writes: 0, too_large: 0 }, b.shared ?? { hits: 0, writes: 0, too_large: 0 }];
          merged.shared = { hits: x.hits + y.hits, writes: x.writes + y.writes, too_large: x.too_large + y.too_large };
        }
        return merged;
      },
    ),
  };
}

/** What a status report is made of, whoever serves (a single process, or the primary of `workers`). */
export interface ReportParts {
  /** `Operations.status()`: version, pid, uptime, config file, listeners, instances, the queue. */
  operations: Record<string, unknown>;
  startedAt: number;
  config: Config;
  /** The admin listener's URL once bound (null: none bound; the config's `admin.listen` then stands in). */
  adminUrl: string | null;
  workers: StatusReport['workers'];
  certificates: CertificateStatus[];
  counting: boolean;
  /** This process's view, or the workers' merged (histograms still in: they are taken out here). */
  process: ProcessStatus;
  /** The cluster part (with a `cluster` section). */
  cluster?: ClusterStatus | undefined;
}

/** The status report (`GET /status`) from its parts. */
export function statusReport(parts: ReportParts): StatusReport {
  const { ok: _ok, operation: _operation, ...base } = parts.operations;
  const listen = parts.config.admin?.listen;
  const configured = listen === undefined ? null : `${parts.config.admin?.tls === undefined ? 'http' : 'https'}://${listen.text}/`;
  return {
    ...(base as Omit<StatusReport, keyof ProcessStatus | 'started' | 'config_digest' | 'admin' | 'workers' | 'certificates' | 'counting'>),
    started: new Date(parts.startedAt).toISOString(),
    config_digest: parts.config.digest ?? '',
    admin: parts.adminUrl ?? configured,
    workers: parts.workers,
    certificates: parts.certificates,
    counting: parts.counting,
    ...withoutHistograms(parts.process),
    ...(parts.cluster === undefined ? {} : { cluster: parts.cluster }),
  };
}

/**
 * The cluster part of the report: the link's figures and the boxes the last heartbeat read (this box added when
 * it has not been read yet: Redis away since start). A box's digest differs when it is not the one most boxes have
 * (a tie: this box's), so every box of the cluster flags the same odd one out.
 */
export function clusterStatus(link: ClusterLink, heartbeat: Heartbeat): ClusterStatus {
  const self = heartbeat.record();
  const seen = heartbeat.seen.map((box) => ({ ...box, last_seen: new Date(box.seenAt).toISOString() as string | null }));
  if (!seen.some((box) => box.id === self.id)) seen.push({ ...self, seenAt: 0, last_seen: null });
  seen.sort((a, b) => a.name.localeCompare(b.name));
  const digest = commonDigest(seen.map((box) => box.digest), self.digest);
  // Boxes of an older version announce no fingerprint: they are not counted, nor flagged.
  const secrets = seen.flatMap((box) => (typeof box.secret_id === 'string' ? [box.secret_id] : []));
  const secret = commonDigest(secrets, self.secret_id ?? secrets[0] ?? '');
  const boxes = seen.map(
    (box): BoxStatus => ({
      name: box.name,
      version: box.version,
      digest: box.digest,
      address: box.address,
      admin: box.admin,
      host: box.host,
      pid: box.pid,
      started: box.started,
      last_seen: box.last_seen,
      self: box.id === self.id,
      digest_differs: box.digest !== digest,
      secret_differs: typeof box.secret_id === 'string' && box.secret_id !== secret,
    }),
  );
  const stats = link.stats();
  return {
    name: link.name,
    prefix: link.settings.prefix,
    redis: { up: stats.up, down_since: stats.down_since === null ? null : new Date(stats.down_since).toISOString(), outages: stats.outages, fallbacks: stats.fallbacks },
    digest,
    digest_differs: boxes.some((box) => box.digest_differs),
    secret_differs: boxes.some((box) => box.secret_differs),
    boxes,
  };
}

/** The digest most of `digests` are (a tie: `own` when it is among the most, else the first of them by text). */
export function commonDigest(digests: readonly string[], own: string): string {
  const counts = new Map<string, number>();
  for (const digest of digests) counts.set(digest, (counts.get(digest) ?? 0) + 1);
  const most = Math.max(0, ...counts.values());
  if ((counts.get(own) ?? 0) === most) return own;
  return [...counts].filter(([, n]) => n === most).map(([digest]) => digest).sort()[0] ?? own;
}

/** The report served: the per-route, per-upstream and per-server histograms (kept for merging) taken out. */
export function withoutHistograms<T extends ProcessStatus>(status: T): T {
  const strip = <S extends Counted>(stats: S): S => {
    const { histogram: _histogram, ...rest } = stats;
    return rest as S;
  };
  return {
    ...status,
    routes: status.routes.map(strip),
    upstreams: status.upstreams.map((u) => ({ ...strip(u), servers: u.servers.map(strip) })),
  };
}

/** What a certificate's PEM says, parsed once per PEM text. */
const parsed = new Map<string, { notAfter: number; selfSigned: boolean }>();

function certificateFacts(pem: string): { notAfter: number; selfSigned: boolean } | undefined {
  let facts = parsed.get(pem);
  if (facts === undefined) {
    try {
      const x509 = new X509Certificate(pem);
      facts = { notAfter: Date.parse(x509.validTo), selfSigned: x509.issuer === x509.subject };
    } catch {
      return undefined;
    }
    if (parsed.size > 1000) parsed.clear();
    parsed.set(pem, facts);
  }
  return facts;
}

const DAY_MS = 86_400_000;

/**
 * The certificates a config serves: each site's (its file, or its ACME manager's: the last renewal and its error
 * too; `not_after` empty while none was obtained), and each TLS listener's default (its hosts: the listener's
 * address) unless a site lists the same one.
 */
export function certificateStatuses(config: Config, managers: readonly AcmeManager[], now: number = Date.now()): CertificateStatus[] {
  const list: CertificateStatus[] = [];
  const listed = new Set<string>();
  const entry = (hosts: readonly string[], source: CertificateStatus['source'], notAfter: number | undefined, manager?: AcmeManager): CertificateStatus => ({
    hosts: [...hosts],
    source,
    not_after: notAfter === undefined ? '' : new Date(notAfter).toISOString(),
    days_left: notAfter === undefined ? 0 : Math.floor((notAfter - now) / DAY_MS),
    last_renewal: manager?.lastRenewal === undefined ? null : new Date(manager.lastRenewal).toISOString(),
    last_renewal_error: manager?.lastError ?? null,
  });
  for (const site of config.sites) {
    const tls = site.tls;
    if (tls === undefined || site.hosts === undefined) continue;
    if (tls.acme !== undefined) {
      const manager = managers.find((m) => m.hosts.length === site.hosts!.length && m.hosts.every((h, i) => h === site.hosts![i]));
      list.push(entry(site.hosts, 'acme', manager?.notAfter, manager));
      continue;
    }
    if (tls.pem === undefined) continue;
    const facts = certificateFacts(tls.pem.cert);
    if (facts === undefined) continue;
    listed.add(tls.pem.cert);
    list.push(entry(site.hosts, facts.selfSigned ? 'self-signed' : 'file', facts.notAfter));
  }
  for (const listener of config.listen) {
    const pem = listener.tls?.pem;
    if (pem === undefined || listed.has(pem.cert)) continue;
    const facts = certificateFacts(pem.cert);
    if (facts === undefined) continue;
    listed.add(pem.cert);
    list.push(entry([listener.addr.text], facts.selfSigned ? 'self-signed' : 'file', facts.notAfter));
  }
  return list;
}

/** What a serving process shows its metrics registry at scrape time. */
export interface SourceParts {
  /** Undefined while the process is not serving yet. */
  upstreams(): readonly Upstream[] | undefined;
  zones(): readonly CacheZone[];
  connections(): { open: number; streams: number };
  certificates(): readonly CertificateStatus[];
  /** The box's cluster link, when the config has `cluster`. */
  cluster?: ClusterLink | undefined;
}

/** The `ScrapeSource` of a process: servers, zones, connections and certificates, read when scraped. */
export function scrapeSource(parts: SourceParts): ScrapeSource {
  return {
    servers: () => {
      const now = Date.now();
      return parts.upstreams()?.flatMap((upstream) =>
        upstream.servers.map((server): ServerGauge => ({
          upstream: upstream.name,
          server: server.name,
          up: server.healthy && server.target !== undefined,
          inFlight: server.active,
          state: serverState(server, now),
        })),
      );
    },
    caches: () =>
      parts.zones().flatMap((zone) => {
        const stored = zone.stored;
        const tiers: CacheGauge[] = [{ zone: zone.name, tier: 'memory', ...stored.memory }];
        if (stored.disk !== undefined) tiers.push({ zone: zone.name, tier: 'disk', ...stored.disk });
        return tiers;
      }),
    connections: () => parts.connections(),
    certificates: () =>
      parts
        .certificates()
        .filter((c) => c.not_after !== '')
        .map((c) => ({ hosts: c.hosts, notAfter: Date.parse(c.not_after) })),
    cluster: () => {
      const link = parts.cluster;
      if (link === undefined) return undefined;
      const stats = link.stats();
      return { up: stats.up, boxes: link.boxes, outages: stats.outages, fallbacks: stats.fallbacks };
    },
  };
}
