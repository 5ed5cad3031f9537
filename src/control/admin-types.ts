/**
 * The admin API's shapes: what `GET /status` answers (and `portico status` prints, and the dashboard draws), and
 * what the server layer hands the admin API to act with (`AdminParts`). The one contract between the parts of the
 * operations issue: the server layer builds a `StatusReport` (in a single process from its own parts; with
 * workers, the primary's parts plus every worker's `ProcessStatus`, merged), the admin API serves it.
 */
import type { BoxRecord } from '../cluster/heartbeat.js';
import type { ControlHandler } from './server.js';
import type { OperationRequest } from './protocol.js';

/** Responses by status class. */
export interface StatusClasses {
  '1xx': number;
  '2xx': number;
  '3xx': number;
  '4xx': number;
  '5xx': number;
}

/** Latency percentiles in milliseconds, estimated from a histogram's buckets (null: no request yet). */
export interface Percentiles {
  p50: number | null;
  p90: number | null;
  p99: number | null;
}

/** Traffic figures of one route, upstream or server since Portico started (summed over workers). */
export interface TrafficStats {
  requests: number;
  classes: StatusClasses;
  latency_ms: Percentiles;
  /**
   * The latency histogram the percentiles come from: in a worker's `ProcessStatus` (the primary sums them
   * bucket-wise), left out of the report served.
   */
  histogram?: LatencyHistogram;
}

/** One route's traffic: `id` is `host` + `path` (`a.example/api/`), the host being `*` for a site without hosts. */
export interface RouteStatus extends TrafficStats {
  id: string;
  /** The handler kind (`static`, `proxy`, `respond`, `redirect`...). */
  handler: string;
  /** gRPC (and gRPC-Web) calls by the `grpc-status` they ended with (`"0"`, `"14"`, `"other"`); absent: none. */
  grpc?: Record<string, number>;
}

/** What state a server is in, worst first: the operator's say, then health. */
export type ServerState = 'disabled' | 'draining' | 'down' | 'unhealthy' | 'ejected' | 'healthy';

/** One upstream server. */
export interface ServerStatus extends TrafficStats {
  /** The stable id of the admin API's `/upstreams/{name}/servers/{id}/…` (see `UpstreamServer.name`). */
  id: string;
  /** Its address as configured (`http://127.0.0.1:3001`, `unix:/run/app.sock`) or the slot (`app#1`). */
  address: string;
  /** Found through DNS (`discover`), not configured: its id is its address and port (`10.0.0.5:8080`). */
  discovered?: boolean;
  state: ServerState;
  /** The operator's say (`UpstreamServer.admin`). */
  admin: 'enabled' | 'draining' | 'disabled';
  backup: boolean;
  /** The weight in force (the operator's when set, else the config's), and the config's. */
  weight: number;
  configured_weight: number;
  in_flight: number;
  /** Passive failures within the window now, and ejections since start. */
  failures: number;
  ejections: number;
  /** The last active check (null: none yet, or checks off). */
  last_check: { at: string; ok: boolean } | null;
  /**
   * An HTTP/2 server's protocol as spoken now (`h2c`, `h2`, `auto: h2`, `auto: http/1.1`, `auto` before a first
   * connection); absent for HTTP/1.1 and FastCGI servers.
   */
  protocol?: string;
  /** An HTTP/2 server's open connections, streams in flight and requests waiting for a stream. */
  http2?: { connections: number; streams: number; waiting: number };
}

/** One upstream. */
export interface UpstreamStatus extends TrafficStats {
  name: string;
  /** Whether Portico starts its servers (`spawn`): then it can be deployed. */
  spawned: boolean;
  /**
   * The DNS name its servers are found through (`discover`), null without: when it was last resolved, when it is
   * next, and the last resolution's failure (null: it worked; the servers last found keep serving meanwhile).
   */
  discovery?: { dns: string; type: string; resolved_at: string | null; next_at: string | null; error: string | null } | null;
  servers: ServerStatus[];
}

/** One cache zone. */
export interface CacheStatus {
  zone: string;
  entries: number;
  bytes: number;
  hits: number;
  misses: number;
  /** Stale answers served (stale-while-revalidate, stale-if-error). */
  stale: number;
  /** hits / (hits + misses), null before the first lookup. */
  hit_ratio: number | null;
  /**
   * A zone with a shared tier (docs/cluster.md): this box's reads of Redis that found an answer, answers it wrote
   * there, and answers it kept to itself as larger than `max_object_size`.
   */
  shared?: { hits: number; writes: number; too_large: number };
}

/** One certificate Portico serves. */
export interface CertificateStatus {
  /** The site's hosts (or the listener it is the default of). */
  hosts: string[];
  source: 'file' | 'acme' | 'self-signed';
  not_after: string;
  days_left: number;
  last_renewal: string | null;
  last_renewal_error: string | null;
}

/**
 * Every request's latency histogram, cumulative since start: the dashboard takes the difference of two reports to
 * draw requests/s and the p50/p99 of the seconds between them. `buckets[i]` counts requests of at most
 * `bounds_ms[i]` (cumulative, Prometheus's `le`); the last bucket is +Inf (`count`).
 */
export interface LatencyHistogram {
  bounds_ms: number[];
  buckets: number[];
  count: number;
  sum_ms: number;
}

/** What one serving process knows (a worker sends its own to the primary, which merges them). */
export interface ProcessStatus {
  connections: { open: number; streams: number };
  /** All requests: counts by class and the latency histogram (see `LatencyHistogram`). */
  totals: { requests: number; classes: StatusClasses; latency: LatencyHistogram };
  routes: RouteStatus[];
  upstreams: UpstreamStatus[];
  caches: CacheStatus[];
}

/** `GET /status`: the whole view. */
export interface StatusReport extends ProcessStatus {
  version: string;
  pid: number;
  started: string;
  uptime_s: number;
  config: string;
  /** sha256 of the config file's text as loaded, hex, first 16 characters. */
  config_digest: string;
  state_dir: string | null;
  control_socket: string | null;
  admin: string | null;
  /** Each listener: its bound address (`127.0.0.1:8080`) and URL. */
  listeners: Array<{ address: string; url: string }>;
  /** With `workers: N`: each worker; null for a single process. */
  workers: Array<{ slot: number; pid: number | undefined; answered?: boolean }> | null;
  /** The operation running now (reload, deploy, upgrade) and how many wait. */
  running: { id: number; operation: string; for_ms: number } | null;
  queued: number;
  /** Spawned app instances (the Supervisor's). */
  instances: Array<{ upstream: string; slot: string; state: string; pid?: number; port?: number; restarts: number; recentCrashes?: number }>;
  certificates: CertificateStatus[];
  /** Whether traffic is counted (the config has an `admin` section). */
  counting: boolean;
  /** With a `cluster` section: this box, its Redis link and every box seen (docs/cluster.md, "Boxes and status"). */
  cluster?: ClusterStatus;
}

/**
 * One box of the cluster, as the heartbeats in Redis show it: what the box says of itself (its name, version,
 * config digest, listeners' URLs, admin URL, host, pid, start; see `BoxRecord`) and what the box answering makes of it.
 */
export interface BoxStatus extends Pick<BoxRecord, 'name' | 'version' | 'digest' | 'address' | 'admin' | 'host' | 'pid' | 'started'> {
  /** Its last heartbeat (ISO 8601; null: this box, not written yet). */
  last_seen: string | null;
  /** Whether this is the box answering. */
  self: boolean;
  /** Whether its digest is not the cluster's (the one most boxes have; a tie: this box's). */
  digest_differs: boolean;
  /**
   * Whether its cluster secret is not the one most boxes have (a tie: this box's), by the fingerprint each box
   * announces: sealed values, sticky cookies and TLS tickets do not carry across to it.
   */
  secret_differs: boolean;
}

/** The cluster part of `GET /status`. */
export interface ClusterStatus {
  /** This box's name and the cluster's key prefix. */
  name: string;
  prefix: string;
  /** This box's link to Redis: up or down (since when), outages since start, local fallbacks by feature. */
  redis: { up: boolean; down_since: string | null; outages: number; fallbacks: Record<string, number> };
  /** The cluster's config digest: the one most boxes have (a tie: this box's). */
  digest: string;
  /** Whether any box's digest is not the cluster's. */
  digest_differs: boolean;
  /** Whether any box's cluster secret is not the one most boxes have. */
  secret_differs: boolean;
  /** Every box seen by the last heartbeat (kept while Redis is away; `last_seen` then ages), by name. */
  boxes: BoxStatus[];
}

/** An operator's action on one server. */
export type ServerAction = { action: 'drain' } | { action: 'enable' } | { action: 'disable' } | { action: 'weight'; weight: number };

/** What a cache purge names: one URL (its key from the route's key template) or every URL under a prefix. */
export type PurgeTarget = { url: string } | { url_prefix: string };

/**
 * How far an operator's action or purge went in a cluster (docs/cluster.md, "Drains, weights and purges"): kept in
 * Redis and published (`published_to`: the boxes' subscriptions that received it, this box's included), or not
 * (Redis away: applied on this box only, and shared when Redis is back). Absent without a cluster.
 */
export interface ClusterReach {
  shared: boolean;
  published_to?: number;
  note?: string;
}

/**
 * What the admin API acts with, built by the server layer (a single process, or the primary with workers). Every
 * method throws a `PorticoError` with a 4xx status for a bad argument (unknown upstream, server or zone: 404).
 */
export interface AdminParts {
  /** The whole view (with workers: theirs merged). */
  status(): Promise<StatusReport>;
  /** Prometheus text (prom-client's registry; with workers, aggregated), with its content type. */
  metrics(): Promise<{ contentType: string; body: string }>;
  /** Applies, keeps (state directory) and reports an operator's action; resolves with the server's status after it. */
  serverAction(upstream: string, server: string, action: ServerAction): Promise<ServerStatus & { cluster?: ClusterReach }>;
  /** Purges a zone in every process; resolves with the count of entries removed. */
  purge(zone: string, target: PurgeTarget): Promise<{ purged: number; cluster?: ClusterReach }>;
  /** Reopens the log files (every worker). */
  reopen(): Promise<void>;
  /** The serialised operations (reload, deploy, upgrade, status): the control socket's handler. */
  operations: ControlHandler;
  /**
   * Throws the PorticoError an operation would fail with at once (a deploy of an unknown upstream: 404), so that
   * the admin API refuses it instead of answering with a job that fails. Optional.
   */
  preflight?(request: OperationRequest): void;
}
