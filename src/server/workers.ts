/**
 * `workers: N`: one `portico run` process, the primary (node:cluster's), holds the control plane — the state
 * directory and its lock, the active health checks, the ACME orders, the Supervisor of spawned app servers and the
 * control socket (reload, deploy, status) — and N worker processes hold the data plane: the listeners and the app. The
 * primary sends the workers what they must know as IPC messages (the `ToWorker` union); workers answer with
 * `ToPrimary`. With `workers: 1` (the default) none of this runs: `portico run` is the single process it always
 * was.
 *
 * The scope of every piece of per-process state, and why, is written in docs/operations.md, "Workers". In short:
 * caches, request collapsing, passive health and policy state are per worker (purges and invalidations are sent
 * to every worker); the disk tier of a cache is a folder per worker (`<path>/w<N>`); rate limits and connection
 * limits are divided by N; active checks, ACME, TLS ticket keys and the sticky key are the primary's, shared.
 *
 * A cluster box (`cluster`, docs/cluster.md "Workers in a box") splits the same way one level up: each worker has
 * its own Redis link for its data plane (cluster-wide rate limits, not divided: one bucket in Redis; the shared cache
 * tier; http-01 token lookups), and the primary holds the box's place in the cluster on a link of its own: the one
 * heartbeat, the operator's actions and purges from the other boxes (`ClusterOperator`, passed to the workers as
 * `servers` / `purge*` messages), and ACME with the cluster's lock (`AcmeCluster`).
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { describeError, formatConfigIssue, PorticoError } from '../errors.js';
// A worker is restarted on the same clock as a crashed app instance: the same backoff and crash-loop bounds.
import { CRASH_LOOP_COUNT, CRASH_WINDOW_MS, FIRST_BACKOFF_MS, MAX_BACKOFF_MS } from '../supervise/crashes.js';
import { ControlServer } from '../control/server.js';
import type { OperationResult, Progress } from '../control/protocol.js';
import type { ProcessStatus, PurgeTarget, ServerAction, ServerStatus, StatusReport } from '../control/admin-types.js';
import { AggregatorRegistry, Gauge } from 'prom-client';
import { carryForgottenServers, Metrics, withoutNaN, type MetricsJson } from '../metrics/metrics.js';
import { certificateStatuses, mergeProcessStatus, scrapeSource, statusReport } from './status.js';
import { Supervisor } from '../supervise/supervisor.js';
import type { BoundAddress } from '../connections/listeners.js';
import type { AcmeSites, CertificateSink } from '../tls/acme.js';
import { Http01Challenges } from '../tls/challenges.js';
import { StateDir } from '../tls/state-dir.js';
import { Upstream } from '../upstream/upstream.js';
import { probeSlot } from '../upstream/health/active.js';
import { Portico } from './portico.js';
import { openControlDir } from './control-dir.js';
import { Operations } from './operations.js';
import { AdminService, adminParts, type AdminPlan } from './admin.js';
import type { AdminApiOptions } from '../control/admin-api.js';
import { PidFile, pidFilePath } from './pid-file.js';
import { restartOnlyChanges } from './restart-only.js';
import { reopenErrorLogFiles } from '../log/error-log.js';
import { childExecArgv, onReopenSignal } from '../log/reopen-signal.js';
import { hasSpawn, type SlotSink, type SupervisorFactory, type SupervisorLike } from './supervisor-seam.js';
import { checkServerId, configuredServerStatus, nextOverride, serverStatus, ServerOverrides, type OverrideList, type ServerOverride } from './operator.js';
import { planPurge } from './purge.js';
import { WorkerQuestions, type Asked, type Reply } from './worker-questions.js';
import type { ClusterReach } from '../control/admin-types.js';
import type { ClusterLink } from '../cluster/link.js';
import type { Heartbeat } from '../cluster/heartbeat.js';
import { clusterLink, heartbeat } from './cluster.js';
import { ClusterOperator } from './cluster-operator.js';
import { clusterStatus } from './status.js';

/** The environment variable that tells a worker its slot (1…N) and the count. */
export const WORKER_ENV = 'PORTICO_WORKER';
const COUNT_ENV = 'PORTICO_WORKERS';
/** Overrides how workers accept: `cluster` (node:cluster's primary accepts) or `reuseport`; for benchmarks. */
const ACCEPT_ENV = 'PORTICO_ACCEPT';

/** The state directory's file that keeps the sticky cookie's key (the same as a single process's). */
const STICKY_KEY_FILE = 'sticky.key';
/** How long a worker may take to start (load its config, open its disk tiers, bind). */
const START_TIMEOUT_MS = 30_000;
/** How long the workers may take to reload. */
const RELOAD_TIMEOUT_MS = 60_000;
/** How long the primary waits for each worker to say it reopened its logs. */
const REOPEN_TIMEOUT_MS = 2_000;
/** How long past a move's `drainMs` the primary waits for the workers to confirm it (then the Supervisor goes on). */
const MOVE_MARGIN_MS = 2_000;
/** How long the primary waits for each worker's answer to an operator's action or purge. */
const ASK_TIMEOUT_MS = 2_000;
/** How long the primary waits for each worker's status and metrics (a worker that does not answer is left out). */
const STATUS_TIMEOUT_MS = 2_000;
/** How long a cluster box's primary waits at start for its first re-sync of the operator's actions (Redis away: not more). */
const CLUSTER_SYNC_AT_START_MS = 1000;

/** A worker's cluster link figures (see `ClusterLink.stats`). */
type LinkStats = ReturnType<ClusterLink['stats']>;

/** A worker's reply to a reload or a reopen, as the text of its error (undefined: it did what it was asked). */
function replyError(slot: number, reply: Reply<{ error?: string }>, timeoutMs: number): string | undefined {
  switch (reply.kind) {
    case 'answer':
      return reply.answer.error === undefined ? undefined : `worker ${slot}: ${reply.answer.error}`;
    case 'timeout':
      return `worker ${slot} did not answer within ${timeoutMs / 1000} s`;
    case 'exited':
      return `worker ${slot} exited`;
    case 'unsent':
      return `worker ${slot}: ${reply.error.message}`;
  }
}

/** One worker's answer to `status` (undefined fields: it did not answer in time). */
interface WorkerAnswer {
  slot: number;
  pid: number | undefined;
  status: ProcessStatus | undefined;
  metrics: MetricsJson | undefined;
  link: LinkStats | undefined;
}

/**
 * How workers accept connections: `cluster`, node:cluster's round robin (the primary accepts each connection and
 * hands it to a worker over IPC); `shared`, node:cluster's SCHED_NONE (the primary binds, every worker accepts on
 * the one shared socket itself); `reuseport`, a socket per worker on the same address (SO_REUSEPORT, Node ≥
 * 22.12: the kernel spreads connections by hash).
 */
export type AcceptMode = 'cluster' | 'shared' | 'reuseport';

/** A certificate the primary's ACME orders installed, for every worker (and every later one). */
interface HeldCertificate {
  id: string;
  hosts: readonly string[];
  cert: string;
  key: string;
}

/**
 * Primary → worker. The Supervisor of spawned apps lives in the primary: its SlotSink sends `moved` to every worker
 * (each moves the slot in its upstreams and answers `moved` once the previous port drained) and resolves once
 * every worker answered; a worker started later gets the slots' ports in `init`. The control socket (also the
 * primary's) reloads every worker with `reload`.
 */
export type ToWorker =
  | {
      t: 'init';
      /** The text of the config the primary serves (not the file as it may be now: an edit not yet reloaded). */
      config: string;
      stickyKey: string | undefined;
      ticketKeys: string;
      accept: AcceptMode;
      ports: Array<[string, number]>;
      health: Array<[string, string, boolean]>;
      challenges: Array<[string, string]>;
      certificates: HeldCertificate[];
      /** The port serving each spawned slot now: upstream, slot, port. */
      slots: Array<[string, string, number]>;
      /** The operator's say on servers (drain, disable, weight), as the primary holds it. */
      servers: OverrideList;
      /** A cluster box: the boxes its heartbeat counts now (kept current by `boxes`). */
      boxes: number;
      /**
       * The `cluster` section the box started with (null: none), which the worker serves with whatever the config
       * now says: a reload's change of it takes effect on restart, so a worker started after one (a crash's
       * replacement) must join the cluster its box is in, not the one the edited config names.
       */
      cluster: Config['cluster'] | null;
      /**
       * A cluster box starting: the purges its first re-sync found (made while it was down), applied by the worker
       * before it listens (`purgeTargets` with seq 0, `purgeAll`, `purge`).
       */
      purges: ToWorker[];
    }
  | { t: 'purgeTargets'; seq: number; zone: string; targets: PurgeTarget[] }
  | { t: 'purgeAll' }
  | { t: 'boxes'; count: number }
  | { t: 'servers'; seq: number; upstream: string; id: string; override: ServerOverride | null }
  | { t: 'purgeTarget'; seq: number; zone: string; target: PurgeTarget }
  | { t: 'moved'; seq: number; upstream: string; slot: string; port: number | null; drainMs: number }
  | { t: 'check'; upstream: string; label: string; healthy: boolean; passed: boolean; started: number }
  | { t: 'purge'; zone: string; kind: 'key' | 'prefix'; value: string }
  | { t: 'reload'; seq: number; config: string }
  | { t: 'status'; seq: number }
  | { t: 'stop'; graceMs: number }
  | { t: 'reopen'; seq: number }
  | { t: 'challenge'; token: string; value: string | null }
  | { t: 'certificate'; certificate: HeldCertificate }
  | { t: 'uncertificate'; id: string };

/** Worker → primary. */
export type ToPrimary =
  | { t: 'hello' }
  | { t: 'ready'; addresses: BoundAddress[] }
  | { t: 'failed'; error: string }
  | { t: 'reloaded'; seq: number; error?: string }
  | { t: 'moved'; seq: number }
  | { t: 'purged'; zone: string; kind: 'key' | 'prefix'; value: string }
  /** The answer to `servers` (the server's status in that worker; null: its config has no such server) or `purgeTarget`. */
  | { t: 'answer'; seq: number; status?: ServerStatus | null; purged?: number; error?: string }
  | { t: 'status'; seq: number; status: ProcessStatus; metrics: MetricsJson; link?: LinkStats }
  | { t: 'reopened'; seq: number; error?: string };

/** Whether this Node can give each worker its own listening socket (`reusePort`: Node ≥ 22.12, ≥ 23.1). */
export function reusePortAvailable(version: string = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

/**
 * How workers accept, as measured (bench/RESULTS.md, "Workers"): `reuseport` where Node has it, else the shared
 * socket. Either way each worker accepts for itself; node:cluster's round robin (Node's default) costs the primary
 * an accept and an IPC hand-off per connection, twice the CPU of a new connection, for no better balance here.
 * PORTICO_ACCEPT overrides (benchmarks).
 */
export function acceptMode(): AcceptMode {
  const forced = process.env[ACCEPT_ENV];
  if (forced === 'cluster' || forced === 'shared' || forced === 'reuseport') return forced;
  return reusePortAvailable() ? 'reuseport' : 'shared';
}

/** `value` divided among `count` workers, at least 1 each; 0 (no limit) stays 0. */
function share(value: number, count: number): number {
  return value === 0 ? 0 : Math.max(1, Math.floor(value / count));
}

/**
 * A worker's view of the config: what is counted per process is divided by the worker count, so that N workers
 * together never allow N times the configured value — rate limits (rate and burst; not a cluster-wide one, whose
 * bucket is in Redis), connection limits per
 * listener and per client address, `max_conns` per upstream server; cache memory and disk sizes (the config's
 * sizes stay the machine's budget). Each worker's disk tier is its own folder, `<path>/w<slot>`: a disk tier's
 * index lives in the memory of the process that opened it, so two processes must never write one folder.
 */
export function workerConfig(config: Config, slot: number, count: number): Config {
  if (count <= 1) return config;
  const caches = Object.fromEntries(
    Object.entries(config.caches).map(([name, zone]) => {
      const memory = share(zone.memory, count);
      const disk = zone.disk === undefined ? undefined : { path: path.join(zone.disk.path, `w${slot}`), size: share(zone.disk.size, count) };
      return [name, { ...zone, memory, max_object: Math.min(zone.max_object, memory), ...(disk === undefined ? {} : { disk }) }];
    }),
  );
  const middlewares = <T extends { kind: string; options: unknown }>(list: readonly T[]): T[] =>
    list.map((used) => {
      if (used.kind !== 'rate_limit') return used;
      const options = used.options as { rate: number; burst?: number; scope?: string };
      // A cluster-wide rule is one bucket in Redis for the whole fleet: not divided (its local share while Redis is
      // away is divided by the workers through the link's `processes`).
      if (config.cluster !== undefined && options.scope !== 'box') return used;
      const burst = options.burst === undefined ? undefined : share(options.burst, count);
      return { ...used, options: { ...options, rate: options.rate / count, ...(burst === undefined ? {} : { burst }) } };
    });
  const sites = config.sites.map((site) => ({
    ...site,
    middlewares: middlewares(site.middlewares),
    routes: site.routes.map((route) => ({ ...route, middlewares: middlewares(route.middlewares) })),
  }));
  const listen = config.listen.map((listener) => ({
    ...listener,
    max_connections: share(listener.max_connections, count),
    max_connections_per_ip: share(listener.max_connections_per_ip, count),
  }));
  const upstreams = Object.fromEntries(
    Object.entries(config.upstreams).map(([name, upstream]) => [
      name,
      {
        ...upstream,
        max_conns: share(upstream.max_conns, count),
        servers: upstream.servers.map((server) => (server.max_conns === undefined ? server : { ...server, max_conns: share(server.max_conns, count) })),
      },
    ]),
  );
  return { ...config, caches, sites, listen, upstreams } as unknown as Config;
}

/**
 * When to replace a worker that exited: after `FIRST_BACKOFF_MS`, doubling with each exit within the last
 * `CRASH_WINDOW_MS`, up to `MAX_BACKOFF_MS`; `CRASH_LOOP_COUNT` exits within the window is a crash loop (reported once
 * per loop; replacements go on at the longest delay, as a server with no worker serves nothing).
 */
export class RestartBackoff {
  readonly #exits: number[] = [];
  #looping = false;

  /** An exit at `now` (ms): the delay before its replacement, and whether this exit began a crash loop. */
  exited(now: number): { delayMs: number; recent: number; loopBegins: boolean } {
    this.#exits.push(now);
    while (this.#exits.length > 0 && this.#exits[0]! <= now - CRASH_WINDOW_MS) this.#exits.shift();
    const recent = this.#exits.length;
    const delayMs = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (recent - 1));
    const looping = recent >= CRASH_LOOP_COUNT;
    const loopBegins = looping && !this.#looping;
    this.#looping = looping;
    return { delayMs, recent, loopBegins };
  }
}

interface Slot {
  index: number;
  worker: Worker | undefined;
  pid: number | undefined;
  /** When its current worker started (a worker that lived long resets nothing, but is not a crash loop). */
  startedAt: number;
  /** Its current worker was sent `init`: later messages reach it (earlier ones are in that snapshot). */
  told: boolean;
  timer: NodeJS.Timeout | undefined;
}

/** A config and the text it was parsed from (what the workers are sent). */
export interface LoadedConfig {
  config: Config;
  text: string;
}

/** What the primary needs besides the config. */
export interface PrimaryOptions {
  /** The text the config was parsed from. */
  text: string;
  /** Loads the config file again (the same as at start: `--dev`'s certificate included); throws ConfigError. */
  load: () => LoadedConfig;
  /** The version `status` reports. */
  version?: string;
  /** Builds the Supervisor of the app servers (`spawn`); default: the real one. */
  supervisor?: SupervisorFactory;
  /** Where the primary's lines go (stderr in `portico run`). */
  say: (line: string, level?: 'info' | 'warn' | 'error') => void;
  /** Extra environment for every worker (`--dev`'s certificate folder). */
  env?: Record<string, string>;
  /** The admin API's options (tests: a shorter `/events` interval). */
  admin?: AdminApiOptions;
}

/**
 * The primary of `workers: N`: the control plane of the machine. It runs the Supervisor of spawned app servers
 * (one, whatever the worker count: its moves reach every worker), the active health checks, the ACME orders and
 * the control socket, whose operations (reload, deploy, status) take one serialised path (`Operations`), as in a
 * single process. Hook points: `reload()` (SIGHUP), `purge()` (an admin path), `broadcast()`, `workers()`.
 */
export class Primary {
  #config: Config;
  /** The text of `#config`: every worker, a replacement too, serves this, whatever the file says now. */
  #text: string;
  readonly #logger: Logger;
  readonly #options: PrimaryOptions;
  readonly #count: number;
  readonly #accept: AcceptMode;
  readonly #slots: Slot[] = [];
  readonly #ticketKeys = randomBytes(48);
  #state: StateDir | undefined;
  readonly #stickyKey: Buffer;
  /** The health-checking upstreams (one per upstream with `health`), built from the current config. */
  #checkers: Upstream[] = [];
  /** Each checked server's health, `upstream\0label` → healthy, for workers started later. */
  readonly #health = new Map<string, boolean>();
  readonly #challenges: Http01Challenges;
  readonly #certificates = new Map<string, HeldCertificate>();
  #acme: AcmeSites | undefined;
  /** Port per listen text for addresses written with port 0 (reusePort: every worker must bind the same). */
  readonly #ports = new Map<string, number>();
  #addresses: BoundAddress[] = [];
  #stopping = false;
  readonly #backoff = new RestartBackoff();
  /** Questions to the workers waiting for their answers (moves, reloads, status, actions and purges, reopens). */
  readonly #questions = new WorkerQuestions<ToWorker, Extract<ToPrimary, { seq: number }>>();
  /** The app servers (`spawn`), made with the first config that has some. */
  #supervisor: SupervisorLike | undefined;
  readonly #supervisorFactory: SupervisorFactory;
  /** Where each spawned slot is served, `upstream\0slot` → port, as the Supervisor told: for workers started later. */
  readonly #slotPorts = new Map<string, number>();
  /** The Supervisor's moves go to the primary's health checks and to every worker. */
  readonly #sink: SlotSink = { moved: (upstream, slot, port, drainMs) => this.#moved(upstream, slot, port, drainMs) };
  /** Reloads and deploys, one at a time whoever asks (SIGHUP, the control socket). */
  readonly #operations: Operations;
  #control: ControlServer | undefined;
  readonly #startedAt = Date.now();
  /** Each worker slot's metrics at the last scrape, with its pid (see `metricsText`). */
  readonly #lastMetrics = new Map<number, { pid: number | undefined; metrics: MetricsJson }>();
  /** Deploys of the upstreams whose `spawn` a reload changed (queued behind it). */
  #deploys: Promise<void> = Promise.resolve();
  /** The operator's say on servers: the truth, kept in the state directory; every worker gets it. */
  readonly #operator: ServerOverrides;
  /** The admin API (on the control socket, and at `admin.listen`): the primary's, never a worker's. */
  readonly #admin: AdminService;
  /**
   * The primary's own metrics: its process's, and the certificates it holds (the workers count the traffic and
   * report the servers and zones; the primary's own health checkers would say nothing of their operator state).
   */
  #metrics: { metrics: Metrics; answered: Gauge } | undefined;
  /** The pid file, written once every worker serves. */
  #pidFile: PidFile | undefined;
  /** A cluster box: the primary's Redis link (its control plane; each worker has its own for its data plane). */
  readonly #cluster: ClusterLink | undefined;
  /** A cluster box: its one heartbeat (the box's, whatever its worker count). */
  readonly #heartbeat: Heartbeat | undefined;
  /** A cluster box: the operator's actions and purges shared with the other boxes, passed on to every worker. */
  readonly #shared: ClusterOperator | undefined;
  /** While starting: the purges the cluster's re-sync made, for the `init` of workers not told yet (see `ToWorker`). */
  #startPurges: ToWorker[] | undefined = [];
  #offBoxes: (() => void) | undefined;
  /** The `cluster` section at start: the box's link is made of it, and so is every worker's (see `init`). */
  readonly #startCluster: Config['cluster'];

  constructor(config: Config, logger: Logger, options: PrimaryOptions) {
    this.#config = config;
    this.#startCluster = config.cluster;
    this.#text = options.text;
    this.#logger = logger;
    this.#options = options;
    this.#count = config.workers;
    this.#accept = acceptMode();
    const primary = this;
    // http-01 tokens of the primary's orders, answered by whichever worker the challenge reaches.
    this.#challenges = new (class extends Http01Challenges {
      override set(token: string, keyAuthorization: string): void {
        super.set(token, keyAuthorization);
        primary.broadcast({ t: 'challenge', token, value: keyAuthorization });
      }
      override delete(token: string): void {
        super.delete(token);
        primary.broadcast({ t: 'challenge', token, value: null });
      }
    })();
    if (config.state_dir !== undefined) this.#state = StateDir.open(config.state_dir, logger);
    this.#operator = new ServerOverrides(logger);
    if (this.#state !== undefined) this.#operator.load(this.#state);
    // Without a state directory a single process makes a random key of its own; the workers must share one.
    this.#stickyKey = this.#state?.secret(STICKY_KEY_FILE) ?? randomBytes(32);
    this.#supervisorFactory = options.supervisor ?? ((c, l, sink) => new Supervisor(c, l, sink, probeSlot));

    this.#operations = new Operations(
      {
        config: () => this.#config,
        reloadFile: (progress) => this.#reloadFile(progress),
        status: () => this.#status(),
        deploy: (upstream, progress) => {
          const supervisor = this.#supervisor;
          if (supervisor === undefined) return Promise.reject(new PorticoError('PORTICO_UNSUPPORTED', 'this Portico runs no app servers (no upstream has spawn)'));
          return supervisor.deploy(upstream, progress);
        },
        reopen: () => this.#reopen(),
        cannotUpgrade: `an upgrade in place is not supported with workers (workers: ${this.#count}): restart Portico to run new code`,
      },
      logger,
    );
    this.#admin = new AdminService(adminParts(this), logger, options.admin);
    this.#cluster = clusterLink(config, logger);
    this.#heartbeat = heartbeat(this.#cluster, () => ({ config: this.#config, listeners: this.#listenerList(), admin: this.adminUrl }), logger, {
      version: options.version ?? 'unknown',
      startedAt: this.#startedAt,
    });
    this.#shared = this.#cluster === undefined ? undefined : this.#clusterOperator(this.#cluster);
  }

  /** The cluster's side of the operator's actions, on the primary's overrides and checkers, passed on to every worker. */
  #clusterOperator(link: ClusterLink): ClusterOperator {
    return new ClusterOperator(
      link,
      {
        config: () => this.#config,
        overrides: this.#operator,
        apply: (upstream, server, override) => {
          for (const checker of this.#checkers) {
            const held = checker.name === upstream ? checker.server(server) : undefined;
            if (held !== undefined) checker.setOperator(held, override?.admin ?? 'enabled', override?.weight);
          }
          void this.#tellOverride(upstream, server, override);
        },
        purge: (zone, targets) => this.#purgeInWorkers(zone, targets),
        purgeAll: async () => this.#toWorkers({ t: 'purgeAll' }),
        invalidate: async (zone, kind, value) => this.#toWorkers({ t: 'purge', zone, kind, value }),
        state: () => this.#state,
      },
      this.#logger,
    );
  }

  /** A purge for every worker: sent to those running, and while starting kept for the `init` of the others. */
  #toWorkers(message: ToWorker): void {
    this.#startPurges?.push(message);
    this.broadcast(message);
  }

  /** Purges from another box (see `OperatorHost.purge`), made by every worker with its own routes' keys. */
  async #purgeInWorkers(zone: string, targets: readonly PurgeTarget[]): Promise<number | undefined> {
    if (this.#config.caches[zone] === undefined) return undefined;
    this.#startPurges?.push({ t: 'purgeTargets', seq: 0, zone, targets: [...targets] });
    const answers = await this.#ask((seq) => ({ t: 'purgeTargets', seq, zone, targets: [...targets] }));
    return answers.reduce((sum, { answer }) => sum + (answer?.purged ?? 0), 0);
  }

  /** The config now serving. */
  get config(): Config {
    return this.#config;
  }

  /** The admin listener's URL (null: none). */
  get adminUrl(): string | null {
    return this.#admin.url;
  }

  /** Reloads, deploys and status, serialised: what SIGHUP and the control socket call. */
  get operations(): Operations {
    return this.#operations;
  }

  /** The Supervisor of the spawned app servers, when the config has `spawn`. */
  get supervisor(): SupervisorLike | undefined {
    return this.#supervisor;
  }

  /** How the workers accept connections. */
  get accept(): AcceptMode {
    return this.#accept;
  }

  /** Where the workers' listeners are bound (the first worker's report). */
  get addresses(): readonly BoundAddress[] {
    return this.#addresses;
  }

  /** The workers now running: slot and pid. */
  workers(): Array<{ slot: number; pid: number | undefined }> {
    return this.#slots.map((slot) => ({ slot: slot.index, pid: slot.pid }));
  }

  /**
   * Starts the health checks and the workers (the first alone, so that an address written with port 0 is the
   * same in each), and resolves once every worker serves; then the ACME orders start. Rejects (everything
   * stopped) when a worker cannot start.
   */
  async start(): Promise<void> {
    // Read by node:cluster when the first worker listens: set before any fork.
    cluster.schedulingPolicy = this.#accept === 'cluster' ? cluster.SCHED_RR : cluster.SCHED_NONE;
    // Workers start with --disable-sigusr1 where Node has it: no SIGUSR1 can open the inspector while one loads.
    cluster.setupPrimary({ exec: process.argv[1]!, args: process.argv.slice(2), execArgv: childExecArgv() });
    cluster.on('message', (worker, message: ToPrimary) => this.#onMessage(worker, message));
    cluster.on('exit', (worker, code, signal) => this.#onExit(worker, code, signal));
    try {
      // The app servers first: the workers start with every slot's port (a slot joins only once ready).
      if (hasSpawn(this.#config)) {
        this.#supervisor = this.#supervisorFactory(this.#config, this.#logger, this.#sink);
        await this.#supervisor.start();
      }
      // The control socket's folder (the state directory, or the default one beside the config when it names none)
      // is opened before the workers start: the operator's drains kept there are in their `init`.
      this.#state ??= openControlDir(this.#config, this.#logger);
      if (this.#state !== undefined) this.#operator.load(this.#state);
      this.#startChecks(this.#config);
      // A cluster box: its drains and the purges made while it was down are in the workers' `init` (bounded wait).
      this.#cluster?.start();
      this.#shared?.start();
      await this.#shared?.ready(CLUSTER_SYNC_AT_START_MS);
      this.#offBoxes = this.#cluster?.onBoxes((count) => this.broadcast({ t: 'boxes', count }));
      for (let i = 1; i <= this.#count; i++) this.#slots.push({ index: i, worker: undefined, pid: undefined, startedAt: 0, told: false, timer: undefined });
      const [first, ...rest] = this.#slots;
      this.#addresses = await this.#fork(first!);
      this.#config.listen.forEach((listener, i) => {
        if (listener.addr.port === 0 && this.#addresses[i] !== undefined) this.#ports.set(listener.addr.text, this.#addresses[i]!.port);
      });
      await Promise.all(rest.map((slot) => this.#fork(slot)));
      this.#startPurges = undefined;
      // The control socket once every worker serves (a reload must reach them all).
      if (this.#state !== undefined) {
        const control = new ControlServer(this.#config.control.socket, this.#operations, this.#logger, { admin: this.#admin.api });
        await control.start();
        this.#control = control;
      }
      await this.#admin.start(this.#config);
      // The box joins the cluster's list once it serves.
      this.#heartbeat?.start();
      const pidFile = pidFilePath(this.#config, this.#state?.path);
      if (pidFile !== undefined) {
        this.#pidFile = new PidFile(pidFile, this.#logger);
        this.#pidFile.write();
      }
    } catch (err) {
      await this.stop(1000);
      throw err;
    }
    await this.#updateAcme(this.#config);
  }

  /** Forks the worker of a slot; resolves with its bound addresses once it serves, rejects if it fails to. */
  #fork(slot: Slot): Promise<BoundAddress[]> {
    const worker = cluster.fork({ ...this.#options.env, [WORKER_ENV]: String(slot.index), [COUNT_ENV]: String(this.#count) });
    slot.worker = worker;
    slot.pid = worker.process.pid;
    slot.startedAt = Date.now();
    slot.told = false;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        done();
        worker.process.kill('SIGKILL');
        reject(new PorticoError('PORTICO_WORKER_FAILED', `worker ${slot.index} did not start within ${START_TIMEOUT_MS / 1000} s`));
      }, START_TIMEOUT_MS);
      const onMessage = (message: ToPrimary) => {
        // A message sent before the worker listens would be lost: it asks when it is ready to be told.
        if (message.t === 'hello') {
          slot.told = true;
          worker.send(this.#init(), (err: Error | null) => void err);
        }
        else if (message.t === 'ready') {
          done();
          this.#options.say(`portico: worker ${slot.index} serving (pid ${worker.process.pid})`);
          resolve(message.addresses);
        } else if (message.t === 'failed') {
          done();
          reject(new PorticoError('PORTICO_WORKER_FAILED', `worker ${slot.index}: ${message.error}`));
        }
      };
      const onExit = (code: number | null, signal: string | null) => {
        done();
        reject(new PorticoError('PORTICO_WORKER_FAILED', `worker ${slot.index} exited while starting (${signal ?? `code ${code}`})`));
      };
      const done = () => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('exit', onExit);
    });
  }

  /** What a new worker is told before it starts. */
  #init(): ToWorker {
    return {
      t: 'init',
      config: this.#text,
      stickyKey: this.#stickyKey.toString('hex'),
      ticketKeys: this.#ticketKeys.toString('hex'),
      accept: this.#accept,
      // node:cluster shares one socket per address as written (port 0 included); reusePort needs the port.
      ports: this.#accept === 'reuseport' ? [...this.#ports] : [],
      health: [...this.#health].map(([key, healthy]) => {
        const [upstream, label] = key.split('\0') as [string, string];
        return [upstream, label, healthy];
      }),
      challenges: this.#challenges.entries(),
      certificates: [...this.#certificates.values()],
      slots: [...this.#slotPorts].map(([key, port]) => {
        const [upstream, slot] = key.split('\0') as [string, string];
        return [upstream, slot, port];
      }),
      servers: this.#operator.list(),
      boxes: this.#cluster?.boxes ?? 1,
      cluster: this.#startCluster ?? null,
      purges: this.#startPurges ?? [],
    };
  }

  /**
   * The Supervisor's SlotSink: slot `slot` of `upstream` is served by `port` now (or by nothing). Kept for workers
   * started later, followed by the primary's health checks, and sent to every worker told its `init` (one not told
   * yet finds the port in it); resolves once each has drained the previous port, or died, bounded by `drainMs` and
   * a margin.
   */
  async #moved(upstream: string, slot: string, port: number | undefined, drainMs: number): Promise<void> {
    const key = `${upstream}\0${slot}`;
    if (port === undefined) this.#slotPorts.delete(key);
    else this.#slotPorts.set(key, port);
    // No request goes through the checkers: nothing to drain.
    for (const checker of this.#checkers) if (checker.name === upstream) void checker.moveSlot(slot, port, 0);
    // A worker gone (exited, or not reachable) has nothing in flight on the previous port: only silence is late.
    const limitMs = drainMs + MOVE_MARGIN_MS;
    const replies = await this.#questions.ask('moved', this.#told(), (seq) => ({ t: 'moved', seq, upstream, slot, port: port ?? null, drainMs }), limitMs);
    if (replies.some(({ reply }) => reply.kind === 'timeout')) {
      this.#logger.warn({ upstream, slot, port }, `${slot}: not every worker confirmed the move to port ${port ?? '(none)'} within ${limitMs} ms; going on`);
    }
  }

  /** The workers now running that were told their `init` (every message sent since reaches them), by slot. */
  #told(): Asked[] {
    return this.#slots.flatMap((slot) => (slot.told && slot.worker?.isConnected() ? [{ slot: slot.index, worker: slot.worker }] : []));
  }

  /** Sends a message to every worker now running. */
  broadcast(message: ToWorker): void {
    for (const slot of this.#slots) {
      const worker = slot.worker;
      if (worker !== undefined && worker.isConnected()) worker.send(message, (err: Error | null) => void err);
    }
  }

  /**
   * Purges a key (or every key under a prefix) from zone `zone` in every worker: the primary's purge, for an
   * admin or control path. Workers send their own purges and invalidations here, which goes on to the others.
   */
  purge(zone: string, kind: 'key' | 'prefix', value: string): void {
    this.broadcast({ t: 'purge', zone, kind, value });
  }

  #onMessage(worker: Worker, message: ToPrimary): void {
    if (message.t === 'purged') {
      // The other boxes forget it too; a zone with a shared tier has told them itself (see `SharedTier`).
      if (this.#config.caches[message.zone]?.shared === undefined) this.#shared?.invalidated(message.zone, message.kind, message.value);
      for (const slot of this.#slots) {
        if (slot.worker !== undefined && slot.worker !== worker && slot.worker.isConnected()) {
          slot.worker.send({ t: 'purge', zone: message.zone, kind: message.kind, value: message.value } satisfies ToWorker, (err: Error | null) => void err);
        }
      }
    } else if ('seq' in message) {
      // An answer to one of the primary's questions (reloaded, moved, answer, status, reopened).
      this.#questions.answered(worker.id, message);
    }
  }

  /** A worker exited: one that crashed is replaced, after a backoff that grows with the exits of the last minute. */
  #onExit(worker: Worker, code: number | null, signal: string | null): void {
    const slot = this.#slots.find((s) => s.worker === worker);
    if (slot === undefined) return;
    slot.worker = undefined;
    slot.pid = undefined;
    slot.told = false;
    this.#questions.gone(worker.id);
    if (this.#stopping) return;
    const { delayMs: delay, recent, loopBegins } = this.#backoff.exited(Date.now());
    const how = signal === null ? `with code ${code}` : `on ${signal}`;
    this.#options.say(`portico: worker ${slot.index} (pid ${worker.process.pid}) exited ${how}; replacing it in ${delay} ms`, 'warn');
    if (loopBegins) this.#options.say(`portico: workers crash loop: ${recent} exits within ${CRASH_WINDOW_MS / 1000} s; replacements wait up to ${MAX_BACKOFF_MS / 1000} s`, 'error');
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (this.#stopping) return;
      this.#fork(slot).catch((err: unknown) => this.#options.say(`portico: ${describeError(err)}`, 'error'));
    }, delay);
  }

  /** Builds the health-checking upstreams of a config, carrying each server's health over by its label. */
  #startChecks(config: Config): void {
    const previous = this.#checkers;
    this.#checkers = [];
    for (const [name, upstreamConfig] of Object.entries(config.upstreams)) {
      if (upstreamConfig.health === undefined) continue;
      const upstream = new Upstream(name, upstreamConfig as Upstream['config'], config.dir, this.#logger, this.#stickyKey, {
        // Spawned slots are checked where the Supervisor has them (see `#moved`).
        slotPort: (upstreamName, slot) => this.#slotPorts.get(`${upstreamName}\0${slot}`),
        onCheck: (checked, server, passed, started) => {
          this.#health.set(`${checked.name}\0${server.label}`, server.healthy);
          this.broadcast({ t: 'check', upstream: checked.name, label: server.label, healthy: server.healthy, passed, started });
        },
      });
      const before = previous.find((p) => p.name === name);
      for (const server of upstream.servers) {
        const held = before?.servers.find((s) => s.label === server.label);
        if (held === undefined) continue;
        server.healthy = held.healthy;
        server.passes = held.passes;
        server.fails = held.fails;
      }
      this.#checkers.push(upstream);
    }
    for (const key of [...this.#health.keys()]) {
      const [upstream, label] = key.split('\0') as [string, string];
      if (!this.#checkers.some((u) => u.name === upstream && u.servers.some((s) => s.label === label))) this.#health.delete(key);
    }
    for (const upstream of previous) void upstream.stop(0);
    this.#applyToCheckers();
    for (const upstream of this.#checkers) upstream.start();
  }

  /** The health-checking upstreams carry the operator's say too (what the primary's status reads of a server). */
  #applyToCheckers(): void {
    for (const upstream of this.#checkers) this.#operator.applyTo(upstream);
  }

  /** The primary's ACME orders (one per site, whatever the worker count); certificates go to every worker. */
  async #updateAcme(config: Config): Promise<void> {
    if (this.#acme === undefined) {
      if (this.#state === undefined || !config.sites.some((site) => site.tls?.acme !== undefined)) return;
      const { AcmeSites } = await import('../tls/acme.js');
      const sink: CertificateSink = {
        install: (id, hosts, cert, key) => {
          const certificate = { id, hosts: [...hosts], cert, key };
          this.#certificates.set(id, certificate);
          this.broadcast({ t: 'certificate', certificate });
        },
        remove: (id) => {
          this.#certificates.delete(id);
          this.broadcast({ t: 'uncertificate', id });
        },
      };
      // A cluster box: the account, certificates and tokens are shared through Redis, one order per site (docs/cluster.md).
      const link = this.#cluster;
      const settings = config.cluster;
      const cluster = link === undefined || settings === undefined ? undefined : new (await import('../tls/acme-cluster.js')).AcmeCluster(link, settings.key, settings.acme_lease, this.#logger);
      this.#acme = new AcmeSites({ state: this.#state, sink, challenges: this.#challenges, logger: this.#logger, cluster });
    }
    if (this.#stopping) return;
    try {
      this.#acme.update(config.sites);
    } catch (err) {
      this.#logger.error({ err }, 'acme: cannot manage the certificates of this config');
    }
  }

  /**
   * Reloads the config file (SIGHUP): the operations queue's reload, as `portico reload` asks it. See `#reloadFile`.
   */
  reload(): Promise<OperationResult> {
    return this.#operations.reload();
  }

  /**
   * A reload, in the operations queue: the primary loads and validates the config first (an invalid one changes
   * nothing: every worker keeps serving the previous one; throws ConfigError with every issue), the app servers a
   * new config adds start, then every worker reloads it; then the primary's checks and orders follow, and the
   * upstreams whose `spawn` changed are deployed (queued behind this reload).
   */
  async #reloadFile(progress: Progress): Promise<Record<string, unknown>> {
    const file = this.#config.file;
    progress({ message: `reading ${file}` });
    const { config, text } = this.#options.load();
    const warnings = [...config.warnings.map((w) => formatConfigIssue({ ...w, message: `warning: ${w.message}` })), ...restartOnlyChanges(this.#config, config)];
    for (const warning of warnings) progress({ message: warning });
    if (config.workers !== this.#count) this.#options.say(`portico: workers changed from ${this.#count} to ${config.workers}: takes effect on restart`, 'warn');
    if (config.state_dir !== this.#config.state_dir) {
      throw new PorticoError('PORTICO_STATE_DIR', `state_dir changed from ${this.#config.state_dir ?? '(none)'} to ${config.state_dir ?? '(none)'}: restart Portico to move it`);
    }
    // A new admin address is bound first: a port in use refuses the reload before anything changed.
    const admin: AdminPlan = await this.#admin.prepare(config);
    try {
      return await this.#reloadWith(config, text, warnings, progress, admin);
    } catch (err) {
      await admin.discard();
      throw err;
    }
  }

  /** The rest of `#reloadFile`, once the admin listener's new address (if any) is bound: committed with the workers'. */
  async #reloadWith(config: Config, text: string, warnings: string[], progress: Progress, admin: AdminPlan): Promise<Record<string, unknown>> {
    // The first config with `spawn` brings the Supervisor; a running one starts the upstreams this config adds
    // (refusing a user/group it cannot use): before the workers swap, so that no new route answers 503.
    const fresh = this.#supervisor === undefined && hasSpawn(config) ? this.#supervisorFactory(config, this.#logger, this.#sink) : undefined;
    const prepared = fresh === undefined ? this.#supervisor : undefined;
    if (fresh !== undefined) {
      this.#supervisor = fresh;
      try {
        await fresh.start();
      } catch (err) {
        this.#supervisor = undefined;
        await fresh.stop();
        throw err;
      }
    } else await prepared?.prepare?.(config);
    progress({ message: `the config is valid: reloading ${this.#count} workers` });
    const errors = await this.#reloadWorkers(text);
    const workers = this.#slots.filter((slot) => slot.worker !== undefined).length;
    if (errors.length > 0 && errors.length >= workers) {
      // No worker serves the new config: what was started for it goes again.
      if (fresh !== undefined) {
        this.#supervisor = undefined;
        await fresh.stop();
      } else if (prepared !== undefined) {
        try {
          prepared.update(this.#config);
        } catch (undo) {
          this.#logger.error({ err: undo }, 'reload failed: stopping the app servers it started failed');
        }
      }
      throw Object.assign(new PorticoError('PORTICO_RELOAD_FAILED', errors[0]!), { issues: errors });
    }
    this.#config = config;
    this.#text = text;
    admin.commit();
    this.#startChecks(config);
    const deploying = prepared === undefined ? [] : prepared.update(config);
    this.#deploy(deploying, progress);
    await this.#updateAcme(config);
    if (errors.length > 0) throw Object.assign(new PorticoError('PORTICO_RELOAD_FAILED', `some workers did not reload: ${errors.join('; ')}`), { issues: errors });
    return { config: config.file, warnings, workers, deploying };
  }

  /** Sends every worker the config text to reload; resolves with the errors of those that did not. */
  async #reloadWorkers(text: string): Promise<string[]> {
    // Every running worker, told its `init` or not yet (unlike the other questions).
    const running = this.#slots.flatMap((slot) => (slot.worker?.isConnected() ? [{ slot: slot.index, worker: slot.worker }] : []));
    const replies = await this.#questions.ask('reloaded', running, (seq) => ({ t: 'reload', seq, config: text }), RELOAD_TIMEOUT_MS);
    return replies.flatMap(({ slot, reply }) => replyError(slot, reply, RELOAD_TIMEOUT_MS) ?? []);
  }

  /** Rolls the upstreams whose `spawn` a reload changed: each a deploy queued behind it; each outcome is logged. */
  #deploy(upstreams: readonly string[], progress?: Progress): void {
    const done = this.#operations.deployChanged(upstreams, progress);
    this.#deploys = this.#deploys.then(() => done);
  }


  /** What `status` reports: this primary, its workers and the app servers. */
  #status(): Record<string, unknown> {
    return {
      version: this.#options.version ?? 'unknown',
      pid: process.pid,
      uptime_s: Math.round((Date.now() - this.#startedAt) / 1000),
      config: this.#config.file,
      state_dir: this.#state?.path ?? null,
      control_socket: this.#control?.socket ?? null,
      listeners: this.#listenerList(),
      workers: this.workers(),
      instances: this.#supervisor?.slots() ?? [],
    };
  }

  /** Each listener's bound address and URL (the workers'). */
  #listenerList(): Array<{ address: string; url: string }> {
    return this.#addresses.map((address, i) => {
      const host = address.host.includes(':') ? `[${address.host}]` : address.host;
      return { address: `${host}:${address.port}`, url: `${this.#config.listen[i]?.tls === undefined ? 'http' : 'https'}://${host}:${address.port}/` };
    });
  }

  /** The primary's own metrics, made on first need (a scrape). */
  #ownMetrics(): { metrics: Metrics; answered: Gauge } {
    if (this.#metrics !== undefined) return this.#metrics;
    const metrics = new Metrics({ cluster: this.#cluster !== undefined });
    const answered = new Gauge({
      name: 'portico_workers_answered',
      help: 'Workers whose metrics are in this scrape (the others did not answer within 2 s).',
      registers: [metrics.registry],
    });
    metrics.source = scrapeSource({
      upstreams: () => [],
      zones: () => [],
      connections: () => ({ open: 0, streams: 0 }),
      certificates: () => this.#certificateStatuses(),
      cluster: this.#cluster,
    });
    this.#metrics = { metrics, answered };
    return this.#metrics;
  }

  /** The certificates the primary's config and ACME orders serve. */
  #certificateStatuses(): StatusReport['certificates'] {
    return certificateStatuses(this.#config, this.#acme?.managers() ?? []);
  }

  /**
   * Asks every worker for its status and metrics; resolves with each slot's answer, a worker that does not answer
   * within STATUS_TIMEOUT_MS (or exits meanwhile, or has none running) left without one.
   */
  async #askWorkers(): Promise<WorkerAnswer[]> {
    // Each slot's pid as it was asked (a worker that exits meanwhile is still reported by it).
    const slots = this.#slots.map((slot) => ({ slot: slot.index, pid: slot.pid }));
    const replies = await this.#questions.ask('status', this.#told(), (seq) => ({ t: 'status', seq }), STATUS_TIMEOUT_MS);
    return slots.map(({ slot, pid }) => {
      const reply = replies.find((r) => r.slot === slot)?.reply;
      if (reply?.kind !== 'answer') return { slot, pid, status: undefined, metrics: undefined, link: undefined };
      return { slot, pid, status: reply.answer.status, metrics: reply.answer.metrics, link: reply.answer.link };
    });
  }

  // --- The admin API's parts (docs/operations.md, "Admin API"): see `AdminParts` in control/admin-types.ts. ---

  /**
   * `GET /status`: the primary's view (operations, certificates, instances) and every worker's traffic, servers and
   * caches, merged (see `mergeProcessStatus`); a worker that did not answer within 2 s is marked `answered: false`.
   */
  async statusReport(): Promise<StatusReport> {
    const answers = await this.#askWorkers();
    return statusReport({
      operations: this.#operations.status(),
      startedAt: this.#startedAt,
      config: this.#config,
      adminUrl: this.adminUrl,
      workers: answers.map((a) => ({ slot: a.slot, pid: a.pid, answered: a.status !== undefined })),
      certificates: this.#certificateStatuses(),
      counting: this.#config.admin !== undefined,
      process: mergeProcessStatus(answers.flatMap((a) => (a.status === undefined ? [] : [a.status]))),
      cluster: this.#clusterStatus(answers),
    });
  }

  /**
   * The cluster part of /status: the boxes as the primary's heartbeat reads them (this box once, whatever its worker
   * count), and Redis as every process of the box sees it: up only when the primary's link and every worker's that
   * answered are, the fallbacks and outages summed over them.
   */
  #clusterStatus(answers: readonly WorkerAnswer[]): StatusReport['cluster'] {
    if (this.#cluster === undefined || this.#heartbeat === undefined) return undefined;
    const status = clusterStatus(this.#cluster, this.#heartbeat);
    const redis = { ...status.redis, fallbacks: { ...status.redis.fallbacks } };
    for (const { link } of answers) {
      if (link === undefined) continue;
      redis.up &&= link.up;
      redis.outages += link.outages;
      if (link.down_since !== null && (redis.down_since === null || link.down_since < Date.parse(redis.down_since))) redis.down_since = new Date(link.down_since).toISOString();
      for (const [feature, n] of Object.entries(link.fallbacks)) redis.fallbacks[feature] = (redis.fallbacks[feature] ?? 0) + n;
    }
    return { ...status, redis };
  }



  /**
   * `GET /metrics`: every worker's registry and the primary's own, aggregated by prom-client
   * (`AggregatorRegistry.aggregate`: counters and histograms summed, each gauge by its aggregator). A worker that
   * did not answer within 2 s is left out (`portico_workers_answered` says how many did).
   */
  async metricsText(): Promise<{ contentType: string; body: string }> {
    const answers = await this.#askWorkers();
    // A gone server a worker forgot keeps that worker's last figures while another process still has it (see
    // `carryForgottenServers`), a worker that did not answer this time counting with its last figures; a worker
    // started again (another pid) counts from zero anyway.
    const lastOf = (a: WorkerAnswer): MetricsJson | undefined => {
      const last = this.#lastMetrics.get(a.slot);
      return last !== undefined && last.pid === a.pid ? last.metrics : undefined;
    };
    const fresh = answers.flatMap((a) => {
      const metrics = a.metrics ?? lastOf(a);
      return metrics === undefined ? [] : [metrics];
    });
    const lists = answers.flatMap((a) => {
      if (a.metrics === undefined) return [];
      const carried = carryForgottenServers(lastOf(a), a.metrics, fresh);
      this.#lastMetrics.set(a.slot, { pid: a.pid, metrics: carried });
      return [carried];
    });
    const own = this.#ownMetrics();
    own.answered.set(lists.length);
    lists.push(await own.metrics.json());
    const registry = AggregatorRegistry.aggregate(lists.map(withoutNaN));
    return { contentType: registry.contentType, body: await registry.metrics() };
  }

  /**
   * An operator's action on one server (see `nextOverride`): checked against the config (404 unknown upstream or
   * server id, 400 bad weight), kept in the state directory (memory only without one), then sent to every worker
   * (a worker started later gets it in `init`). Resolves with the server's status (in flight summed over the
   * workers that answered within 2 s; with none, from the primary's own view).
   */
  async serverAction(upstream: string, server: string, action: ServerAction): Promise<ServerStatus & { cluster?: ClusterReach }> {
    const status = await this.#serverAction(upstream, server, action);
    // A cluster box: then kept in Redis and published to every box (`cluster` says how far it went).
    if (this.#shared === undefined) return status;
    return { ...status, cluster: await this.#shared.shareServer(upstream, server, this.#operator.get(upstream, server)) };
  }

  async #serverAction(upstream: string, server: string, action: ServerAction): Promise<ServerStatus> {
    checkServerId(this.#config, upstream, server);
    const override = nextOverride(this.#operator.get(upstream, server), action);
    await this.#operator.set(upstream, server, override, this.#shared === undefined ? undefined : Date.now());
    const checker = this.#checkers.find((u) => u.name === upstream);
    const held = checker?.server(server);
    if (checker !== undefined && held !== undefined) checker.setOperator(held, override?.admin ?? 'enabled', override?.weight);
    const answers = await this.#tellOverride(upstream, server, override);
    const statuses = answers.flatMap(({ answer }) => (answer?.status === undefined || answer.status === null ? [] : [answer.status]));
    const [first, ...rest] = statuses;
    if (first === undefined) return held === undefined ? configuredServerStatus(this.#config, upstream, server, override) : serverStatus(held);
    return { ...first, in_flight: rest.reduce((sum, status) => sum + status.in_flight, first.in_flight) };
  }

  /**
   * The operator's say on a server as the primary holds it (undefined: as the config has it): for the status
   * report of a server the primary has no health-checking copy of.
   */
  serverOverride(upstream: string, id: string): ServerOverride | undefined {
    return this.#operator.get(upstream, id);
  }

  /** Sends one server's override to every worker told its `init`; resolves with their answers (within 2 s). */
  #tellOverride(upstream: string, id: string, override: ServerOverride | undefined): Promise<Array<{ slot: number; answer: Extract<ToPrimary, { t: 'answer' }> | undefined }>> {
    return this.#ask((seq) => ({ t: 'servers', seq, upstream, id, override: override ?? null }));
  }

  /**
   * A purge by URL or URL prefix in the zone `zone` (see `planPurge`: checked here against the config, 404 unknown
   * zone, 400 bad URL), made by every worker with its own routes' keys; resolves with the sum of their counts. A
   * worker that does not answer within 2 s is named in `unanswered` (its slot numbers).
   */
  async purgeTarget(zone: string, target: PurgeTarget): Promise<{ purged: number; unanswered?: number[]; cluster?: ClusterReach }> {
    planPurge(this.#config, zone, target);
    const answers = await this.#ask((seq) => ({ t: 'purgeTarget', seq, zone, target }));
    let purged = 0;
    const unanswered: number[] = [];
    for (const { slot, answer } of answers) {
      if (answer === undefined || answer.error !== undefined || answer.purged === undefined) unanswered.push(slot);
      else purged += answer.purged;
    }
    // A cluster box: then kept in Redis and published to every box.
    const cluster = this.#shared === undefined ? undefined : await this.#shared.sharePurge(zone, target);
    return { purged, ...(unanswered.length === 0 ? {} : { unanswered }), ...(cluster === undefined ? {} : { cluster }) };
  }

  /**
   * Asks every worker told its `init` one question (`make(seq)`) and resolves with each one's answer, or undefined
   * for one that did not answer within ASK_TIMEOUT_MS (or exited).
   */
  async #ask(make: (seq: number) => ToWorker): Promise<Array<{ slot: number; answer: Extract<ToPrimary, { t: 'answer' }> | undefined }>> {
    const replies = await this.#questions.ask('answer', this.#told(), make, ASK_TIMEOUT_MS);
    return replies.map(({ slot, reply }) => ({ slot, answer: reply.kind === 'answer' ? reply.answer : undefined }));
  }

  /** Reopens the log files (access log, error log file) after a rotation: the primary's, then every worker's. */
  async reopenLogs(): Promise<void> {
    await this.#reopen();
  }

  /**
   * SIGUSR1, `portico reopen`: the primary reopens its error-log file, then every worker reopens its own and its
   * access log (`{ t: 'reopen' }`); each worker answers, or is reported after REOPEN_TIMEOUT_MS. A worker started
   * later opens the files anew anyway. Throws PORTICO_REOPEN_FAILED naming the workers that did not.
   */
  async #reopen(): Promise<Record<string, unknown>> {
    const errorFiles = reopenErrorLogFiles();
    const live = this.#told();
    const replies = await this.#questions.ask('reopened', live, (seq) => ({ t: 'reopen', seq }), REOPEN_TIMEOUT_MS);
    const errors = replies.flatMap(({ slot, reply }) => replyError(slot, reply, REOPEN_TIMEOUT_MS) ?? []);
    const files = [this.#config.log.access, this.#config.log.error].filter((file) => !['stdout', 'stderr', 'off'].includes(file));
    if (errors.length > 0) {
      this.#logger.warn({ files, errors }, `logs reopened; not by every worker: ${errors.join('; ')}`);
      throw new PorticoError('PORTICO_REOPEN_FAILED', `not every worker reopened its logs: ${errors.join('; ')}`);
    }
    this.#logger.info({ files, error_log_files: errorFiles, workers: live.length }, 'logs reopened');
    return { pid: process.pid, files, workers: live.length };
  }

  /** The pid file's path (undefined: none). */
  get pidFile(): string | undefined {
    return this.#pidFile?.path;
  }

  /**
   * Stops: the control socket, ACME and checks end, every worker stops gracefully (its requests in flight finish,
   * up to `graceMs`; one still running after that and a little more is killed), then the app servers (nothing
   * forwards to them any more), and the state directory is released.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.#stopping = true;
    this.#operations.stop();
    this.#admin.stopping();
    // The box leaves the cluster's list first: it takes no new connections from here.
    await Promise.all([this.#control?.stop(), this.#admin.stop(), this.#heartbeat?.stop()]);
    this.#acme?.stop();
    this.#offBoxes?.();
    for (const upstream of this.#checkers) void upstream.stop(0);
    const exits = this.#slots.map((slot) => {
      if (slot.timer !== undefined) clearTimeout(slot.timer);
      const worker = slot.worker;
      if (worker === undefined) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const kill = setTimeout(() => worker.process.kill('SIGKILL'), graceMs + 5000);
        worker.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        if (worker.isConnected()) worker.send({ t: 'stop', graceMs } satisfies ToWorker, (err: Error | null) => void (err !== null && worker.process.kill('SIGTERM')));
        else worker.process.kill('SIGTERM');
      });
    });
    await Promise.all(exits);
    await this.#supervisor?.stop();
    await this.#deploys;
    await this.#shared?.stop();
    await this.#operator.settled();
    await this.#cluster?.stop();
    this.#pidFile?.remove();
    this.#state?.release();
  }
}

/** A cluster purge the primary passes on (see `OperatorHost`), made in this worker; resolves with the count removed. */
async function applyPurge(server: Portico, message: ToWorker): Promise<number> {
  switch (message.t) {
    case 'purgeTargets':
      return (await server.purgeTargets(message.zone, message.targets)) ?? 0;
    case 'purgeAll':
      await server.purgeAll();
      return 0;
    case 'purge':
      return server.purge(message.zone, message.kind, message.value);
    default:
      return 0;
  }
}

/** How a worker is started. */
export interface WorkerOptions {
  /** Parses the config text the primary sends (as the primary parsed it: `--dev`'s certificate included). */
  parse: (text: string) => Config | undefined;
}

/**
 * Runs this process as worker `slot` of `count`: waits for the primary's `init`, builds and starts a Portico
 * with the worker role, and serves until the primary says stop (or is gone). Never resolves while serving.
 */
export async function serveWorker(logger: Logger, options: WorkerOptions): Promise<number> {
  const slot = Number(process.env[WORKER_ENV]);
  const count = Number(process.env[COUNT_ENV]);
  const send = (message: ToPrimary): void => {
    if (process.connected) process.send!(message, undefined, {}, (err: Error | null) => void err);
  };
  const log = logger.child({ worker: slot });
  /** Tells the primary why this worker cannot serve, then exits (the IPC channel would keep it alive). */
  const fail = (error: string): Promise<number> => {
    if (!process.connected) process.exit(1);
    process.send!({ t: 'failed', error } satisfies ToPrimary, undefined, {}, () => process.exit(1));
    return new Promise<number>(() => {});
  };
  // Messages before `init` are in its snapshot (IPC keeps their order): dropped. Those after it, while this worker
  // starts (a certificate, a verdict, a purge, a reload), are kept and handled once it serves.
  const early: ToWorker[] = [];
  let told = false;
  let handle: ((message: ToWorker) => void) | undefined;
  const init = await new Promise<Extract<ToWorker, { t: 'init' }> | undefined>((resolve) => {
    process.on('message', (message: ToWorker) => {
      if (handle !== undefined) return handle(message);
      // Stopped while starting (the primary is stopping): nothing to drain yet.
      if (message.t === 'stop') process.exit(0);
      if (message.t === 'init') {
        told = true;
        return resolve(message);
      }
      if (told) early.push(message);
    });
    process.once('disconnect', () => resolve(undefined));
    send({ t: 'hello' });
  });
  if (init === undefined) process.exit(1);
  // The cluster the box started in, whatever the config says now (see `init.cluster`).
  const inBox = (config: Config): Config => ({ ...config, cluster: init.cluster ?? undefined });
  const parsed = options.parse(init.config);
  if (parsed === undefined) return fail('the config is invalid');
  const loaded = inBox(parsed);
  const challenges = new Http01Challenges();
  for (const [token, value] of init.challenges) challenges.set(token, value);
  const ports = new Map(init.ports);
  // Where the primary's Supervisor has each spawned slot, kept current by its `moved` messages.
  const slotPorts = new Map(init.slots.map(([upstream, name, port]) => [`${upstream}\0${name}`, port]));
  let server: Portico;
  try {
    server = new Portico(workerConfig(loaded, slot, count), log, {
      worker: {
        stickyKey: init.stickyKey === undefined ? undefined : Buffer.from(init.stickyKey, 'hex'),
        challenges,
        listeners: { ticketKeys: Buffer.from(init.ticketKeys, 'hex'), reusePort: init.accept === 'reuseport', ports },
        purged: (zone, kind, value) => send({ t: 'purged', zone, kind, value }),
        slotPort: (upstream, name) => slotPorts.get(`${upstream}\0${name}`),
        servers: init.servers,
        count,
        // A cluster box starting: the purges made while it was down, before this worker serves.
        beforeListen: async () => {
          for (const message of init.purges) await applyPurge(server, message).catch((err: unknown) => log.warn({ err }, 'a cluster purge failed'));
        },
      },
    });
    server.clusterBoxes = init.boxes;
    for (const certificate of init.certificates) server.certificates.install(certificate.id, certificate.hosts, certificate.cert, certificate.key);
    for (const [upstream, label, healthy] of init.health) server.applyCheck(upstream, label, healthy, false, 0);
    await server.start();
  } catch (err) {
    return fail(describeError(err));
  }
  let stopping = false;
  const stop = (graceMs = 10_000): void => {
    if (stopping) return;
    stopping = true;
    server.stop(graceMs).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  // The primary drives reloads and stops; a terminal's signals reach the whole group, so a worker takes them too.
  process.on('SIGHUP', () => undefined);
  // SIGUSR1 sent to a worker itself (the primary passes its own on as `reopen`): this worker's logs.
  onReopenSignal(() => void server.reopenLogs().catch((err: unknown) => log.error({ err }, 'reopening the logs failed')));
  process.on('SIGINT', () => stop());
  process.on('SIGTERM', () => stop());
  // The primary is gone (killed): no one will replace or stop this worker; it stops serving.
  process.on('disconnect', () => stop());
  let reloading: Promise<void> = Promise.resolve();
  handle = (message: ToWorker) => {
    switch (message.t) {
      case 'check':
        server.applyCheck(message.upstream, message.label, message.healthy, message.passed, message.started);
        break;
      case 'purge':
        void server.purge(message.zone, message.kind, message.value).catch((err: unknown) => log.warn({ err }, 'purge failed'));
        break;
      case 'servers':
        send({ t: 'answer', seq: message.seq, status: server.setServerOverride(message.upstream, message.id, message.override ?? undefined) ?? null });
        break;
      case 'purgeTargets':
        applyPurge(server, message).then(
          (purged) => send({ t: 'answer', seq: message.seq, purged }),
          (err: unknown) => send({ t: 'answer', seq: message.seq, error: describeError(err) }),
        );
        break;
      case 'purgeAll':
        void applyPurge(server, message).catch((err: unknown) => log.warn({ err }, 'purge failed'));
        break;
      case 'boxes':
        server.clusterBoxes = message.count;
        break;
      case 'purgeTarget':
        server.purgeTarget(message.zone, message.target).then(
          ({ purged }) => send({ t: 'answer', seq: message.seq, purged }),
          (err: unknown) => send({ t: 'answer', seq: message.seq, error: describeError(err) }),
        );
        break;
      case 'challenge':
        if (message.value === null) challenges.delete(message.token);
        else challenges.set(message.token, message.value);
        break;
      case 'certificate':
        server.certificates.install(message.certificate.id, message.certificate.hosts, message.certificate.cert, message.certificate.key);
        break;
      case 'uncertificate':
        server.certificates.remove(message.id);
        break;
      case 'reload':
        reloading = reloading.then(async () => {
          const next = options.parse(message.config);
          if (next === undefined) return send({ t: 'reloaded', seq: message.seq, error: 'the config is invalid' });
          try {
            await server.reload(workerConfig(inBox(next), slot, count));
            send({ t: 'reloaded', seq: message.seq });
          } catch (err) {
            send({ t: 'reloaded', seq: message.seq, error: describeError(err) });
          }
        });
        break;
      case 'moved': {
        // New requests go to the new port at once; the primary is answered once the previous one drained here.
        const key = `${message.upstream}\0${message.slot}`;
        if (message.port === null) slotPorts.delete(key);
        else slotPorts.set(key, message.port);
        void server
          .moveSlot(message.upstream, message.slot, message.port ?? undefined, message.drainMs)
          .catch((err: unknown) => log.warn({ err, slot: message.slot }, 'moving a spawned slot failed'))
          .finally(() => send({ t: 'moved', seq: message.seq }));
        break;
      }
      case 'status':
        Promise.all([server.processStatus(), server.metricsJson()]).then(
          ([status, metrics]) => {
            const link = server.clusterLinkStats();
            send({ t: 'status', seq: message.seq, status, metrics, ...(link === undefined ? {} : { link }) });
          },
          (err: unknown) => log.warn({ err }, 'status for the primary failed'),
        );
        break;
      case 'reopen':
        void server.reopenLogs().then(
          () => send({ t: 'reopened', seq: message.seq }),
          (err: unknown) => send({ t: 'reopened', seq: message.seq, error: describeError(err) }),
        );
        break;
      case 'stop':
        stop(message.graceMs);
        break;
      default:
        break;
    }
  };
  for (const message of early.splice(0)) handle(message);
  send({ t: 'ready', addresses: [...server.addresses] });
  return new Promise<number>(() => {});
}
