/**
 * The running server as a value: built from a config, started, reloaded (the new app is built and started
 * first, swapped in, and only then is the old one drained and stopped, in the background — a bad config never
 * takes the server down, and a reload never waits for the previous config's long requests), stopped.
 *
 * What outlives an app lives here, keyed by what identifies it: cache zones by name and settings, upstreams by
 * name and settings (a changed one takes over its servers' state by address), values handlers keep (a rate
 * limit's buckets) by site, route and options, the listeners by bound address.
 */
import type { IncomingMessage } from 'node:http';
import type { ClientRequest, ClientResponse } from '../http/context.js';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { createErrorLog, reopenErrorLogFiles } from '../log/error-log.js';
import { PidFile, pidFilePath } from './pid-file.js';
import { restartOnlyChanges } from './restart-only.js';
import type { CacheZone } from '../cache/zone.js';
import type { Upstream } from '../upstream/upstream.js';
import type { UpstreamServer } from '../upstream/server.js';
import { CacheZones } from '../cache/zones.js';
import { formatConfigIssue, PorticoError } from '../errors.js';
import type { AcmeManager, AcmeOptions, AcmeSites, CertificateSink } from '../tls/acme.js';
import { Http01Challenges } from '../tls/challenges.js';
import { StateDir } from '../tls/state-dir.js';
import type { CertificateStore } from '../tls/certificates.js';
import { App, type AppState } from './app.js';
import type { RefusedLine } from '../connections/http1.js';
import { Listeners, type BoundAddress, type InheritedSocket, type ListenerOptions } from '../connections/listeners.js';
import { Supervisor } from '../supervise/supervisor.js';
import { upstreamSpecs } from '../supervise/spec.js';
import { hasSpawn, type SlotSink, type SupervisorFactory, type SupervisorLike } from './supervisor-seam.js';
import { ControlServer } from '../control/server.js';
import { openControlDir } from './control-dir.js';
import type { Progress } from '../control/protocol.js';
import type { ClusterReach, PurgeTarget, ServerAction, ServerStatus, StatusReport } from '../control/admin-types.js';
import { loadConfigFile } from './config.js';
import { Operations, type DeployFunction, type UpgradeFunction } from './operations.js';
import { KeptValues } from './kept.js';
import { AdminService, adminParts, type AdminPlan } from './admin.js';
import type { AdminApiOptions } from '../control/admin-api.js';
import { UpstreamRegistry } from '../upstream/registry.js';
import { probeSlot } from '../upstream/health/active.js';
import { checkServerId, nextOverride, serverStatus, ServerOverrides, type OverrideList, type ServerOverride } from './operator.js';
import { purgeInZone, planPurge } from './purge.js';
import type { UpstreamOptions } from '../upstream/upstream.js';
import { Metrics } from '../metrics/metrics.js';
import { ClusterLink } from '../cluster/link.js';
import { clusterKeys, clusterLink, heartbeat, type ClusterKeys } from './cluster.js';
import { lookUpTokens } from '../tls/acme-cluster.js';
import type { Heartbeat } from '../cluster/heartbeat.js';
import { ClusterOperator } from './cluster-operator.js';
import type { ProcessStatus } from '../control/admin-types.js';
import { certificateStatuses, clusterStatus, processStatus, scrapeSource, statusReport } from './status.js';

/** The state directory's file that keeps the sticky cookie's key across restarts. */
const STICKY_KEY_FILE = 'sticky.key';
/**
 * How long a previous config may go on answering what it took before a reload: an upload still arriving, a long
 * download, a tunnel. nginx's old workers wait without bound by default; past this, what is left is cut.
 */
const RELOAD_DRAIN_MS = 5 * 60_000;

/** How long a cluster box waits at start for its first re-sync of the operator's actions (Redis away: not more). */
const CLUSTER_SYNC_AT_START_MS = 1000;

/** What a server may be built with besides its config and logger. */
export interface PorticoOptions {
  /** The ACME managers' clock and retry delays (tests move the clock to bring a renewal near). */
  acme?: Pick<AcmeOptions, 'now' | 'retryFirstMs' | 'retryMaxMs'>;
  /** Builds the Supervisor of the app servers Portico runs (`spawn`); only called for a config that has some. */
  supervisor?: SupervisorFactory;
  /**
   * Serve the control socket (`config.control.socket`, in the state directory: `state_dir`, else `./var/NAME`
   * beside the config, opened and locked at start). `portico run` sets it; a server built in-process for a test
   * has none unless asked.
   */
  control?: boolean;
  /** How a reload asked by signal or control socket reads the config file (default: `loadConfigFile`). */
  loadConfig?: (file: string) => Config;
  /** The version `status` reports. */
  version?: string;
  /** The rolling deploy of a spawned upstream (the Supervisor's); without it, `deploy` is refused. */
  deploy?: DeployFunction;
  /** Portico's own upgrade in place; without it, `upgrade` is refused. */
  upgrade?: UpgradeFunction;
  /**
   * An upgrade's new process: the pid of the Portico it replaces (whose state directory lock it accepts until
   * `succeeded()`), and the listening sockets that one handed over (listened on instead of binding).
   */
  successorOf?: { predecessor: number; sockets: readonly InheritedSocket[] };
  /**
   * Whether a reload sets the logger's level to the config's `log.level`: true when Portico made the logger
   * itself (no `logger` given), else false unless set (a logger handed in is the caller's).
   */
  followLogLevel?: boolean;
  /** How long a previous config may go on answering what it took before a reload (default 5 minutes). */
  reloadGraceMs?: number;
  /** This server is a worker of `workers: N` (see `WorkerRole`); absent: a single process, as always. */
  worker?: WorkerRole;
  /** The admin API's options (tests: a shorter `/events` interval, another dashboard folder). */
  admin?: AdminApiOptions;
  /** With `cluster`: the shared keys to use (tests hand in keys on a clock of their own); default made from the config. */
  clusterKeys?: ClusterKeys;
}

/**
 * What a worker is given by the primary, which holds the control plane: the worker opens no state directory
 * (the primary holds its lock), runs no active checks (`applyCheck` takes the primary's outcomes) and orders no
 * certificates (the primary's are installed through `certificates`; its http-01 tokens are put in `challenges`).
 */
export interface WorkerRole {
  /** The sticky cookie's key from the primary's state directory (undefined: none there). */
  stickyKey: Buffer | undefined;
  /** The http-01 tokens the primary's ACME orders have pending, kept current by the primary's messages. */
  challenges: Http01Challenges;
  /** How the listeners bind (reusePort or node:cluster) and the TLS ticket keys shared by every worker. */
  listeners: ListenerOptions;
  /** A purge or invalidation made in one of this worker's zones, for the primary to pass on to the others. */
  purged(zone: string, kind: 'key' | 'prefix', value: string): void;
  /**
   * Which port serves a spawned slot now, as the primary's Supervisor last told (see `moveSlot`): a worker runs no
   * Supervisor of its own, and its upstreams' slots start where the primary has them.
   */
  slotPort(upstream: string, slot: string): number | undefined;
  /** The operator's say on servers, as the primary holds it (see `setServerOverride` for later changes). */
  servers: OverrideList;
  /** The box's worker count: with a `cluster`, a cluster-wide rate limit's share while Redis is away is divided by it. */
  count: number;
  /**
   * Called once the zones and upstreams are started, before the listeners bind: a cluster box's worker applies the
   * purges its primary's first re-sync found (made while the box was down) there.
   */
  beforeListen?(): Promise<void>;
}

/** The app servers Portico runs (`spawn`), as `portico run` has them. */
const SUPERVISOR: SupervisorFactory = (config, logger, sink) => new Supervisor(config, logger, sink, probeSlot);

/** A Portico server: listeners plus the current app. */
export class Portico {
  #app: App;
  readonly #listeners: Listeners;
  readonly #logger: Logger;
  readonly #zones: CacheZones;
  readonly #upstreams: UpstreamRegistry;
  readonly #kept = new KeptValues();
  readonly #followLogLevel: boolean;
  readonly #reloadGraceMs: number;
  /** The state directory (locked while this server lives), when the config names one, ACME needs one, or the control socket does. */
  #state: StateDir | undefined;
  /** Whether the config names the state directory (its keys are then set up): not when only the control socket uses it. */
  #stateNamed = false;
  /** Reloads, deploys and upgrades, one at a time whoever asks. */
  readonly #operations: Operations;
  #control: ControlServer | undefined;
  readonly #options: PorticoOptions;
  readonly #startedAt = Date.now();
  #acme: AcmeSites | undefined;
  #stopped = false;
  /** Previous configs still answering what they took before a reload (see `#reload`). */
  readonly #draining = new Set<Promise<void>>();
  /** The previous configs' apps still draining (their access logs are reopened too). */
  readonly #retiring = new Set<App>();
  /** The pid file (`portico run`, or `pid_file` set), written at start. */
  #pidFile: PidFile | undefined;
  readonly #appState: AppState = {};
  readonly #acmeOptions: NonNullable<PorticoOptions['acme']>;
  readonly #supervisorFactory: SupervisorFactory;
  /** The app servers Portico runs: made with the first config that has `spawn`, it outlives the apps. */
  #supervisor: SupervisorLike | undefined;
  /** Background deploys of the upstreams whose `spawn` a reload changed. */
  #deploys: Promise<void> = Promise.resolve();
  /** Where the Supervisor says which port serves a slot: every live app's upstream moves it. */
  readonly #sink: SlotSink = {
    moved: async (upstream, slot, port, drainMs) => {
      // The upstream now held and those a reload replaced that still drain: requests in flight there must end on a
      // port the Supervisor still runs.
      await Promise.all(this.#upstreams.live(upstream).map((held) => held.moveSlot(slot, port, drainMs)));
    },
  };
  /** Until `start()`: what an upgrade handed over (see `PorticoOptions.upgrade`). */
  #upgrade: PorticoOptions['successorOf'];
  readonly #worker: WorkerRole | undefined;
  /** The operator's say on upstream servers (drain, disable, weight): kept in the state directory when there is one. */
  readonly #operator: ServerOverrides;
  /** The admin API (docs/operations.md, "Admin API"): on the control socket, and at `admin.listen`; none in a worker. */
  readonly #admin: AdminService | undefined;
  /**
   * The process's metrics: made with the first config that has `admin` (counting on), or when first asked for its
   * text; kept for good (counters never go back), counting only while the config serving has `admin`.
   */
  #metrics: Metrics | undefined;
  /** The options every upstream is built with (the registry's): `metrics` is set here once counting starts. */
  readonly #upstreamOptions: UpstreamOptions;
  /** Whether the config serving counts traffic (has `admin`): TLS handshakes read it. */
  #counting = false;
  /** The link to the cluster's Redis (docs/cluster.md), made with the first config that has `cluster`; a reload keeps it. */
  readonly #cluster: ClusterLink | undefined;
  /** The operator's actions and purges shared with the other boxes (docs/cluster.md, "Drains, weights and purges"). */
  readonly #shared: ClusterOperator | undefined;
  /** This box's heartbeat in the cluster (its record, the boxes seen): started once the listeners are bound. */
  readonly #heartbeat: Heartbeat | undefined;
  /** The sticky and session-ticket keys every box of the cluster shares, rotating (made with `#cluster`). */
  readonly #clusterKeys: ClusterKeys | undefined;

  /** Opens (and locks) the state directory when the config has one: throws PORTICO_STATE_DIR when it cannot be used. */
  constructor(config: Config, logger?: Logger, options: PorticoOptions = {}) {
    this.#followLogLevel = options.followLogLevel ?? logger === undefined;
    logger ??= createErrorLog(config.log.level);
    this.#logger = logger;
    this.#acmeOptions = options.acme ?? {};
    this.#supervisorFactory = options.supervisor ?? SUPERVISOR;
    this.#options = options;
    this.#operations = new Operations(
      {
        config: () => this.#app.config,
        reloadFile: (progress) => this.#reloadFile(progress),
        status: () => this.#status(),
        deploy: options.deploy ?? ((upstream, progress) => this.#deployUpstream(upstream, progress)),
        upgrade: options.upgrade,
        reopen: () => this.#reopen(),
      },
      logger,
    );
    this.#upgrade = options.successorOf;
    this.#reloadGraceMs = options.reloadGraceMs ?? RELOAD_DRAIN_MS;
    // A worker's link carries its data plane (docs/cluster.md, "Workers in a box"); the heartbeat, the operator's
    // actions and ACME are the primary's.
    this.#cluster = clusterLink(config, logger, options.worker?.count);
    this.#zones = new CacheZones(logger, this.#cluster);
    this.#worker = options.worker;
    this.#operator = new ServerOverrides(logger);
    if (this.#worker !== undefined) this.#operator.replace(this.#worker.servers);
    this.#admin = this.#worker === undefined ? new AdminService(adminParts(this), logger, options.admin) : undefined;
    // A worker's upstreams take their active checks' outcomes from the primary.
    this.#upstreamOptions = {
      slotPort: (upstream, slot) => (this.#worker === undefined ? this.#supervisor?.port(upstream, slot) : this.#worker.slotPort(upstream, slot)),
      ...(this.#worker === undefined ? {} : { remoteHealth: true }),
      // A server found through DNS takes the operator's say on its id (kept in the state directory).
      onDiscovered: (upstream, server) => {
        const override = this.#operator.get(upstream.name, server.name);
        if (override !== undefined) upstream.setOperator(server, override.admin, override.weight, false);
      },
    };
    this.#upstreams = new UpstreamRegistry(logger, this.#upstreamOptions);
    this.#shared = this.#cluster === undefined || this.#worker !== undefined ? undefined : this.#clusterOperator(this.#cluster);
    this.#heartbeat = heartbeat(this.#worker === undefined ? this.#cluster : undefined, () => ({ config: this.#app.config, listeners: this.#listenerList(), admin: this.adminUrl }), logger, {
      version: options.version ?? 'unknown',
      startedAt: this.#startedAt,
      predecessor: options.successorOf?.predecessor,
    });
    this.#clusterKeys = config.cluster === undefined ? undefined : (options.clusterKeys ?? clusterKeys(config));
    this.#count(config);
    if (this.#worker === undefined) this.#openState(config.state_dir);
    if (this.#clusterKeys !== undefined) this.#appState.stickyKey = this.#clusterKeys.sticky;
    if (this.#worker !== undefined) {
      // A cluster box's worker derives the cluster's keys itself (the same on every process of every box, rotating on
      // its own timer): the primary's key is for a box alone.
      this.#appState.stickyKey = this.#clusterKeys?.sticky ?? this.#worker.stickyKey;
      this.#appState.challenges = this.#worker.challenges;
      // The CA's validation may reach this worker for another box's order: its token is looked up in Redis.
      if (this.#cluster !== undefined) lookUpTokens(this.#cluster, this.#worker.challenges);
    }
    const plan = this.#zones.resolve(config.caches);
    this.#sharePurges(plan.fresh);
    plan.commit();
    const upstreams = this.#upstreams.resolve(config, this.#appState.stickyKey);
    upstreams.commit();
    for (const upstream of upstreams.fresh) this.#operator.applyTo(upstream);
    const kept = this.#kept.plan();
    try {
      // A worker's app servers are the primary's Supervisor's (see `moveSlot`).
      if (this.#worker === undefined && hasSpawn(config)) this.#supervisor = this.#supervisorFactory(config, logger, this.#sink);
      this.#app = new App(config, logger, { zones: plan.zones, upstreams: upstreams.upstreams, keep: kept.keep, metrics: this.#upstreamOptions.metrics, cluster: this.#cluster }, this.#appState);
    } catch (err) {
      void kept.discard();
      this.#state?.release();
      throw err;
    }
    kept.commit();
    this.#listeners = new Listeners(
      config.listen,
      {
        request: (req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https', redirectHttps?: number) =>
          this.#app.handle(req, res, scheme, redirectHttps),
        upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer, scheme: 'http' | 'https', refuse?: number) =>
          this.#app.handleUpgrade(req, socket, head, scheme, refuse),
        refuse: (req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https', status: number, close: boolean) =>
          this.#app.refuse(req, res, scheme, status, close),
        parserRefused: (socket: Socket, status: number, line: RefusedLine | undefined, requestId: string) => this.#app.parserRefused(socket, status, line, requestId),
        serverHeader: () => this.#app.config.server_header,
        trustedProxies: () => this.#app.trustedProxies,
        certificates: () => this.#app.certificates,
        handshakes: () => (this.#counting ? this.#metrics : undefined),
      },
      logger,
      this.#clusterKeys === undefined ? this.#worker?.listeners : { ...this.#worker?.listeners, ticketKeys: this.#clusterKeys.tickets.current },
    );
  }

  /**
   * A worker's new zones tell the primary of their purges (see `WorkerRole.purged`); a cluster box's tell the other
   * boxes of their invalidations (see `ClusterOperator.invalidated`), but for a zone with a shared tier, which tells
   * them itself (see `SharedTier`).
   */
  #sharePurges(zones: readonly CacheZone[]): void {
    const worker = this.#worker;
    const shared = this.#shared;
    if (worker !== undefined) for (const zone of zones) zone.onPurge = (kind, value) => worker.purged(zone.name, kind, value);
    else if (shared !== undefined) for (const zone of zones) if (zone.shared === undefined) zone.onPurge = (kind, value) => shared.invalidated(zone.name, kind, value);
  }

  /** The cluster's side of the operator's actions, on this server's overrides, upstreams and zones. */
  #clusterOperator(link: ClusterLink): ClusterOperator {
    return new ClusterOperator(
      link,
      {
        config: () => this.#app.config,
        overrides: this.#operator,
        apply: (upstream, server, override) => void this.#setLive(upstream, server, override),
        purge: (zone, targets) => this.purgeTargets(zone, targets),
        purgeAll: () => this.purgeAll(),
        invalidate: async (zone, kind, value) => void (await this.purge(zone, kind, value)),
        state: () => this.#state,
      },
      this.#logger,
    );
  }

  /**
   * A purge made elsewhere (another worker's invalidation, the primary's control path): this process's zone of
   * the name forgets the key or prefix, without telling it on. Resolves with the count removed (0: no such zone).
   */
  purge(zone: string, kind: 'key' | 'prefix', value: string): Promise<number> {
    const found = this.#app.cacheZone(zone);
    if (found === undefined) return Promise.resolve(0);
    return kind === 'key' ? found.purge(value, false) : found.purgePrefix(value, false);
  }

  /**
   * Purges made on another box (see `ClusterOperator`): this process's zone of the name forgets what any of
   * `targets` names (each worked out from this config's routes, see `planPurge`), without telling it on. Resolves
   * with the count removed (undefined: no such zone here).
   */
  async purgeTargets(zone: string, targets: readonly PurgeTarget[]): Promise<number | undefined> {
    const found = this.#app.cacheZone(zone);
    if (found === undefined) return undefined;
    const matches = targets.map((target) => planPurge(this.#app.config, zone, target));
    return found.purgeMatching((key) => matches.some((match) => match(key)));
  }

  /** Empties every cache zone of the config serving (a box away longer than the cluster's purges reach back). */
  async purgeAll(): Promise<void> {
    for (const zone of this.#liveZones()) await zone.purgeMatching(() => true);
  }

  /**
   * A worker: the primary's Supervisor moved a spawned slot (see `SlotSink.moved`); resolves once nothing is in
   * flight on its previous port here (bounded by `drainMs`).
   */
  moveSlot(upstream: string, slot: string, port: number | undefined, drainMs: number): Promise<void> {
    return this.#sink.moved(upstream, slot, port, drainMs);
  }

  /** A worker: how many boxes the primary's heartbeat counts now (a cluster-wide rate limit's share while Redis is away). */
  set clusterBoxes(count: number) {
    if (this.#cluster !== undefined) this.#cluster.boxes = count;
  }

  /** This process's cluster link's figures (undefined: no cluster): a worker's, for its primary's /status. */
  clusterLinkStats(): ReturnType<ClusterLink['stats']> | undefined {
    return this.#cluster?.stats();
  }

  /** An active check's outcome from the primary (see `Upstream.applyCheck`), for the app now serving. */
  applyCheck(upstream: string, label: string, healthy: boolean, passed: boolean, started: number): void {
    this.#app.upstream(upstream)?.applyCheck(label, healthy, passed, started);
  }

  /**
   * Opens the state directory and what lives in it. Once per process: a reload may add one, or drop the key (the
   * directory stays in use), but not move it.
   */
  #openState(dir: string | undefined): void {
    if (dir === undefined || (this.#stateNamed && dir === this.#state?.path)) return;
    if (this.#state !== undefined && dir !== this.#state.path) {
      const what = this.#stateNamed
        ? `state_dir changed from ${this.#state.path} to ${dir}`
        : `state_dir ${dir} is not the state directory in use, ${this.#state.path} (the default, which holds the control socket)`;
      throw new PorticoError('PORTICO_STATE_DIR', `${what}: restart Portico to move it`);
    }
    const state = this.#state ?? StateDir.open(dir, this.#logger, this.#upgrade?.predecessor);
    this.#state = state;
    this.#stateNamed = true;
    // A cluster's key pins a client on every box; the state directory's, on this one across restarts.
    this.#appState.stickyKey = this.#clusterKeys?.sticky ?? state.secret(STICKY_KEY_FILE);
    this.#appState.challenges = new Http01Challenges();
    this.#loadOverrides(state);
  }

  /** Reads the operator's overrides kept in `state` and applies them to every upstream running (a first state directory). */
  #loadOverrides(state: StateDir): void {
    if (this.#operator.kept) return;
    this.#operator.load(state);
    // The constructor's upstreams are not built yet when it opens the state directory: they get them when built.
    const app = this.#app as App | undefined;
    if (app === undefined) return;
    for (const name of Object.keys(app.config.upstreams)) for (const upstream of this.#upstreams.live(name)) this.#operator.applyTo(upstream);
  }

  /**
   * Opens the control socket's folder (the state directory) when the config names none: `./var/NAME` beside the
   * config (see `openControlDir`). An upgrade's new process accepts its predecessor's lock on it, as for a named one.
   */
  #openControlDir(config: Config): boolean {
    if (this.#state !== undefined) return true;
    this.#state = openControlDir(config, this.#logger, this.#upgrade?.predecessor);
    if (this.#state !== undefined) this.#loadOverrides(this.#state);
    return this.#state !== undefined;
  }

  /** Binds the control socket (its folder opened by `#openControlDir`). */
  async #startControl(config: Config): Promise<void> {
    if (this.#control !== undefined || this.#state === undefined) return;
    const control = new ControlServer(config.control.socket, this.#operations, this.#logger, { admin: this.#admin?.api });
    await control.start();
    this.#control = control;
  }

  /**
   * An upgrade's old process, once its new one is about to take over: the control socket stops accepting (answers
   * under way, such as the reply to `portico upgrade`, are written), so that the new process may bind it.
   */
  async releaseControl(): Promise<void> {
    const control = this.#control;
    this.#control = undefined;
    await Promise.all([control?.unbind(), this.#admin?.release()]);
  }

  /** Undoes `releaseControl` when the new process failed at the last moment. */
  async restoreControl(): Promise<void> {
    if (this.#options.control === true && !this.#stopped) await this.#startControl(this.#app.config);
    if (!this.#stopped) await this.#admin?.restore(this.#app.config);
  }

  /** A reload asked by signal or control socket: the running process reads and checks the file itself. */
  async #reloadFile(progress: Progress): Promise<Record<string, unknown>> {
    const file = this.#app.config.file;
    progress({ message: `reading ${file}` });
    const config = (this.#options.loadConfig ?? loadConfigFile)(file);
    const warnings = [...config.warnings.map((w) => formatConfigIssue({ ...w, message: `warning: ${w.message}` })), ...restartOnlyChanges(this.#app.config, config)];
    for (const warning of warnings) progress({ message: warning });
    progress({ message: 'the config is valid: starting it beside the one serving' });
    const deploying = await this.#reload(config, progress);
    return { config: config.file, warnings, deploying };
  }

  /** Each listener's bound address and URL. */
  #listenerList(): Array<{ address: string; url: string }> {
    const config = this.#app.config;
    return this.#listeners.addresses.map((address, i) => {
      const host = address.host.includes(':') ? `[${address.host}]` : address.host;
      return { address: `${host}:${address.port}`, url: `${config.listen[i]?.tls === undefined ? 'http' : 'https'}://${host}:${address.port}/` };
    });
  }

  /** What `status` reports about this process. */
  #status(): Record<string, unknown> {
    const config = this.#app.config;
    return {
      version: this.#options.version ?? 'unknown',
      pid: process.pid,
      uptime_s: Math.round((Date.now() - this.#startedAt) / 1000),
      config: config.file,
      state_dir: this.#state?.path ?? null,
      control_socket: this.#control?.socket ?? null,
      listeners: this.#listenerList(),
      instances: this.#supervisor?.slots() ?? [],
    };
  }

  /**
   * Counting follows the config about to serve: with `admin`, the metrics exist (made now if need be) and the
   * upstreams and app built next count; without, those built next do not (the hot path is then as it always was).
   */
  #count(config: Config): void {
    if (config.admin === undefined) {
      this.#upstreamOptions.metrics = undefined;
      return;
    }
    this.#upstreamOptions.metrics = this.#metricsNow();
    if (this.#app === undefined) this.#counting = true;
  }

  /**
   * After a reload's swap: the servers of the upstreams it kept (built before counting started or stopped) count
   * as the config serving says, as those it built do.
   */
  #countUpstreams(): void {
    const metrics = this.#counting ? this.#metrics : undefined;
    for (const upstream of this.#liveUpstreams()) {
      for (const server of upstream.servers) server.traffic = metrics?.server(upstream.name, server.name);
    }
  }

  /** The process's metrics, made (with their scrape-time view of this server) on first need. */
  #metricsNow(): Metrics {
    if (this.#metrics !== undefined) return this.#metrics;
    const metrics = new Metrics({ cluster: this.#cluster !== undefined });
    metrics.source = scrapeSource({
      // Made while the first app is built (its upstreams count their servers): until it serves, none to ask.
      upstreams: () => (this.#app === undefined ? undefined : this.#liveUpstreams()),
      zones: () => this.#liveZones(),
      connections: () => ({ open: this.#listeners.openConnections, streams: this.#app.openStreams() }),
      // A worker's certificates are the primary's: it reports them.
      certificates: () => (this.#worker === undefined ? this.#certificateStatuses() : []),
      cluster: this.#cluster,
    });
    this.#metrics = metrics;
    return metrics;
  }

  /** The named upstreams of the config serving. */
  #liveUpstreams(): Upstream[] {
    const app = this.#app;
    return Object.keys(app.config.upstreams).flatMap((name) => app.upstream(name) ?? []);
  }

  /** The cache zones of the config serving. */
  #liveZones(): CacheZone[] {
    const app = this.#app;
    return Object.keys(app.config.caches).flatMap((name) => app.cacheZone(name) ?? []);
  }

  #certificateStatuses(): StatusReport['certificates'] {
    return certificateStatuses(this.#app.config, this.#acme?.managers() ?? []);
  }

  // --- The admin API's parts (docs/operations.md, "Admin API"): see `AdminParts` in control/admin-types.ts. ---

  /**
   * What this process knows (a worker's part of the primary's report), with every route's, upstream's and
   * server's latency histogram (for merging; the report served leaves them out).
   */
  processStatus(): ProcessStatus {
    const counting = this.#counting;
    const metrics = counting ? this.#metrics : undefined;
    return processStatus({
      routes: counting ? this.#app.routeTraffic : [],
      all: metrics?.routes() ?? [],
      upstreams: this.#liveUpstreams(),
      zones: this.#liveZones(),
      metrics,
      connections: { open: this.#listeners.openConnections, streams: this.#app.openStreams() },
    });
  }

  /** This process's registry as JSON (a worker's, for the primary to aggregate). */
  metricsJson(): ReturnType<Metrics['json']> {
    return this.#metricsNow().json();
  }

  /** `GET /status`: this process's whole view: traffic, servers, caches, certificates (see `StatusReport`). */
  async statusReport(): Promise<StatusReport> {
    return statusReport({
      operations: this.#operations.status(),
      startedAt: this.#startedAt,
      config: this.#app.config,
      adminUrl: this.adminUrl,
      workers: null,
      certificates: this.#certificateStatuses(),
      counting: this.#counting,
      process: this.processStatus(),
      cluster: this.#cluster === undefined || this.#heartbeat === undefined ? undefined : clusterStatus(this.#cluster, this.#heartbeat),
    });
  }


  /**
   * `GET /metrics`: Prometheus text of this process's registry. With counting off (no `admin`), only the process
   * metrics have values.
   */
  async metricsText(): Promise<{ contentType: string; body: string }> {
    const metrics = this.#metricsNow();
    return { contentType: metrics.registry.contentType, body: await metrics.text() };
  }

  /**
   * An operator's action on one server (see `nextOverride`): kept in the state directory (memory only without
   * one), then applied to every live upstream of the name (the one serving and those a reload replaced that still
   * drain). In a cluster it is then kept in Redis and published to every box (`cluster` in the answer says how far it
   * went). Resolves with the server's status after it. 404 for an unknown upstream or server id, 400 for a bad
   * weight (PorticoError).
   */
  async serverAction(upstream: string, server: string, action: ServerAction): Promise<ServerStatus & { cluster?: ClusterReach }> {
    checkServerId(this.#app.config, upstream, server);
    const override = nextOverride(this.#operator.get(upstream, server), action);
    await this.#operator.set(upstream, server, override, this.#shared === undefined ? undefined : Date.now());
    const status = this.#applyOverride(upstream, server, override);
    if (this.#shared === undefined) return status;
    return { ...status, cluster: await this.#shared.shareServer(upstream, server, override) };
  }

  /**
   * A worker: the primary's override of one server (which the primary checked and kept), applied here; the
   * server's status here after it (undefined: this config has no such server).
   */
  setServerOverride(upstream: string, server: string, override: ServerOverride | undefined): ServerStatus | undefined {
    void this.#operator.set(upstream, server, override);
    const held = this.#app.upstream(upstream)?.server(server);
    return held === undefined ? undefined : this.#applyOverride(upstream, server, override);
  }

  /** Applies an override to every live upstream of the name that has the server; the first such server. */
  #setLive(upstream: string, server: string, override: ServerOverride | undefined): UpstreamServer | undefined {
    let last: UpstreamServer | undefined;
    for (const live of this.#upstreams.live(upstream)) {
      const found = live.server(server);
      if (found === undefined) continue;
      live.setOperator(found, override?.admin ?? 'enabled', override?.weight);
      last ??= found;
    }
    return last;
  }

  #applyOverride(upstream: string, server: string, override: ServerOverride | undefined): ServerStatus {
    const last = this.#setLive(upstream, server, override);
    // A reload that dropped the server while the change was being written: it is kept for when it comes back.
    const serving = this.#app.upstream(upstream)?.server(server) ?? last;
    if (serving === undefined) throw new PorticoError('PORTICO_UNKNOWN_SERVER', `upstream "${upstream}" has no server "${server}" now (a reload removed it, or DNS does not name it); the change is kept for when it comes back`);
    return serverStatus(serving);
  }

  /**
   * A purge by URL or URL prefix in the zone `zone` (keys from the routes' key templates: see `planPurge`), in this
   * process; in a cluster, then kept in Redis and published to every box (`cluster` in the answer says how far it
   * went). 404 for an unknown zone, 400 for a URL that is not absolute http(s) or a prefix the zone's keys cannot be
   * matched on (PorticoError).
   */
  async purgeTarget(zone: string, target: PurgeTarget): Promise<{ purged: number; cluster?: ClusterReach }> {
    const match = planPurge(this.#app.config, zone, target);
    const found = this.#app.cacheZone(zone);
    const purged = found === undefined ? 0 : await purgeInZone(found, match);
    if (this.#shared === undefined) return { purged };
    return { purged, cluster: await this.#shared.sharePurge(zone, target) };
  }

  /** Reopens the log files (access log, error log file) after a rotation. */
  async reopenLogs(): Promise<void> {
    await this.#reopen();
  }

  /**
   * Reopens this process's log files at their paths (SIGUSR1, `portico reopen`): the error log's file and the
   * access log of the config serving and of those still draining after a reload. What was buffered is written to
   * the file as it was (the renamed one) first.
   */
  async #reopen(): Promise<Record<string, unknown>> {
    const errorFiles = reopenErrorLogFiles();
    this.#app.reopenLog();
    for (const app of this.#retiring) app.reopenLog();
    const config = this.#app.config;
    const files = [config.log.access, config.log.error].filter((file) => !['stdout', 'stderr', 'off'].includes(file));
    this.#logger.info({ files, error_log_files: errorFiles }, 'logs reopened');
    return { pid: process.pid, files };
  }

  /** Reloads, deploys, upgrades and status, serialised: what SIGHUP and the control socket call. */
  get operations(): Operations {
    return this.#operations;
  }

  /**
   * Hands the config's sites to the ACME managers (at start, and after a reload's swap). acme-client (a second
   * or so to load) is only loaded once a config has an ACME site.
   */
  async #updateAcme(config: Config): Promise<void> {
    // A worker's certificates are ordered by the primary.
    if (this.#worker !== undefined) return;
    const state = this.#state;
    if (this.#acme === undefined) {
      if (state === undefined || !config.sites.some((site) => site.tls?.acme !== undefined)) return;
      const { AcmeSites } = await import('../tls/acme.js');
      // Into the store of the app serving at the time: a reload's new app adopts what the previous one had.
      const sink: CertificateSink = {
        install: (id, hosts, cert, key) => this.#app.certificates.install(id, hosts, cert, key),
        remove: (id) => void this.#app.certificates.remove(id),
      };
      // In a cluster, the account, certificates and tokens are shared through Redis (docs/cluster.md).
      const link = this.#cluster;
      const settings = config.cluster;
      const cluster = link === undefined || settings === undefined ? undefined : new (await import('../tls/acme-cluster.js')).AcmeCluster(link, settings.key, settings.acme_lease, this.#logger);
      this.#acme = new AcmeSites({ state, sink, challenges: this.#appState.challenges!, logger: this.#logger, ...this.#acmeOptions, cluster });
    }
    if (this.#stopped) return;
    try {
      this.#acme.update(config.sites);
    } catch (err) {
      // A trusted_roots file gone since the config was checked: the sites are served, without new certificates.
      this.#logger.error({ err }, 'acme: cannot manage the certificates of this config');
    }
  }

  /** The ACME manager of the site naming `host` (for tests and status). */
  acmeManager(host: string): AcmeManager | undefined {
    return this.#acme?.manager(host);
  }

  /** The config of the app now serving. */
  get config(): Config {
    return this.#app.config;
  }

  /**
   * The certificate store of the app now serving: `install(id, hosts, certPem, keyPem)` swaps a certificate in
   * for new handshakes (see `tls/certificates.ts`); a reload carries installed certificates over.
   */
  get certificates(): CertificateStore {
    return this.#app.certificates;
  }

  /** A cache zone of the app now serving, for purging (admin API, tests). */
  cacheZone(name: string): CacheZone | undefined {
    return this.#app.cacheZone(name);
  }

  /** Where the listeners are bound (ports chosen by the system when the config said 0). */
  get addresses(): readonly BoundAddress[] {
    return this.#listeners.addresses;
  }

  /** The Supervisor of the app servers Portico runs (status, deploys), when the config has `spawn`. */
  get supervisor(): SupervisorLike | undefined {
    return this.#supervisor;
  }

  /** The admin listener's URL (null: none). */
  get adminUrl(): string | null {
    return this.#admin?.url ?? null;
  }

  /** The state directory's path (undefined: none). */
  get stateDir(): string | undefined {
    return this.#state?.path;
  }

  /** The listening sockets, to hand to the process of an upgrade. */
  listeningSockets(): InheritedSocket[] {
    return this.#listeners.sockets();
  }

  /**
   * An upgrade's old process, once the new one (`pid`, using the state directory `stateDir`) is ready: gives up
   * what only one Portico may hold. The cache zones' disk folders: nothing more is stored, writes in flight land.
   * The state directory lock is rewritten with the new pid when both use the same directory (else this one
   * releases its own when it stops).
   */
  async handOver(pid: number, stateDir: string | undefined): Promise<void> {
    // The pid file is the new process's to write: this one no longer removes it at its stop (a read-then-unlink
    // there could remove the file the new one had just renamed in).
    this.#pidFile?.leave();
    await this.#zones.holdDisks();
    if (this.#state !== undefined && stateDir === this.#state.path) this.#state.handOver(pid);
  }

  /** An upgrade's old process whose new one failed after `handOver`: the lock and the disk folders are this one's again. */
  async takeBack(): Promise<void> {
    this.#state?.takeBack();
    // The pid file names this process again, should the new one have written its own before it failed.
    this.#pidFile?.write();
    await this.#zones.releaseDisks();
  }

  /**
   * An upgrade's new process, once the old one has handed over (or is gone): takes the state directory lock, and
   * stores into the cache zones' disk folders from now on.
   */
  async succeeded(): Promise<void> {
    this.#state?.claim(this.#logger);
    await this.#zones.releaseDisks();
    if (this.#options.control === true) await this.#startControl(this.#app.config);
    await this.#admin?.start(this.#app.config);
    // The pid file names the process that serves: this one from now (the old one leaves it when it stops).
    this.#writePidFile();
    this.#heartbeat?.start();
  }

  /** Writes the pid file: `portico run`'s (default in the state directory), or one the config names. */
  #writePidFile(): void {
    if (this.#worker !== undefined) return;
    const config = this.#app.config;
    if (this.#options.control !== true && config.pid_file === undefined) return;
    const file = pidFilePath(config, this.#state?.path);
    if (file === undefined) return;
    this.#pidFile = new PidFile(file, this.#logger);
    this.#pidFile.write();
  }

  /** The pid file's path (undefined: none written). */
  get pidFile(): string | undefined {
    return this.#pidFile?.path;
  }

  /**
   * Starts the app and the app servers (so that the first requests find instances: each joins its upstream once
   * ready), then binds the listeners (or listens on the sockets an upgrade handed over).
   */
  async start(): Promise<void> {
    this.#cluster?.start();
    // Before anything awaits: the first connect's re-sync must find it listening.
    this.#shared?.start();
    this.#clusterKeys?.start((keys) => this.#listeners.setTicketKeys(keys));
    await this.#zones.start(this.#upgrade !== undefined);
    this.#upstreams.start();
    // Servers found through DNS: the first answer is waited for (3 s at most), so the first requests find them.
    await this.#upstreams.firstResolutions(3000);
    await this.#app.start();
    // An upgrade's new process accepts on the shared sockets from here: whatever must be ready to answer (the app,
    // and the supervised app instances once there are some) is started before this point, and so are the stored
    // ACME certificates (a handshake on a shared socket must find them; an order this starts may see its http-01
    // challenge answered by the old process, and is then retried).
    const upgrading = this.#upgrade !== undefined;
    const inherited = this.#upgrade?.sockets ?? [];
    this.#upgrade = this.#upgrade === undefined ? undefined : { predecessor: this.#upgrade.predecessor, sockets: [] };
    if (upgrading) await this.#updateAcme(this.#app.config);
    try {
      // The control socket's folder opens before anything is served: the operator's drains kept there apply first.
      const controlDir = this.#options.control === true && this.#openControlDir(this.#app.config);
      // A cluster box serves with the cluster's drains and without what was purged while it was down (bounded).
      await this.#shared?.ready(CLUSTER_SYNC_AT_START_MS);
      await this.#worker?.beforeListen?.();
      await this.#supervisor?.start();
      await this.#listeners.start(inherited);
      // An upgrade's new process binds the control socket once it has taken over (`succeeded`): the old one's
      // listener would otherwise be closed over it.
      if (controlDir && !upgrading) await this.#startControl(this.#app.config);
      // Likewise the admin listener: an upgrade's new process binds it in `succeeded`.
      if (!upgrading) await this.#admin?.start(this.#app.config);
      if (!upgrading) this.#writePidFile();
      if (!upgrading) this.#heartbeat?.start();
    } catch (err) {
      await this.#admin?.stop(0);
      await this.#control?.stop(0);
      this.#control = undefined;
      this.#acme?.stop();
      await this.#listeners.stop(0);
      await this.#app.stop();
      await this.#upstreams.stop(0);
      await this.#supervisor?.stop();
      await this.#zones.stop();
      await this.#shared?.stop();
      await this.#cluster?.stop();
      this.#clusterKeys?.stop();
      this.#state?.release();
      throw err;
    }
    // Orders start once the plain listeners can answer http-01.
    if (!upgrading) await this.#updateAcme(this.#app.config);
  }

  /**
   * Builds and starts an app from a new config and binds its new listen addresses; only when all of that worked
   * is it swapped in. If anything fails (a port in use: PORTICO_LISTEN_FAILED), what was started for the new
   * config is stopped and the error thrown: the old config keeps serving, unchanged. Resolves at the swap: the
   * previous config drains in the background (see `#retire`), and a next reload does not wait for it.
   */
  reload(config: Config): Promise<void> {
    // One operation at a time: each plans against what the previous one left (zones held, addresses bound).
    return this.#operations.serialise('reload', async () => void (await this.#reload(config)));
  }

  /** Resolves at the swap with the upstreams whose `spawn` changed (their deploys are queued behind it). */
  async #reload(config: Config, progress?: Progress): Promise<string[]> {
    if (this.#worker === undefined) this.#openState(config.state_dir);
    const caches = this.#zones.resolve(config.caches);
    this.#sharePurges(caches.fresh);
    // The first config with `spawn` brings the Supervisor; its instances start before the swap, as at start.
    const supervisor = this.#worker === undefined && this.#supervisor === undefined && hasSpawn(config) ? this.#supervisorFactory(config, this.#logger, this.#sink) : undefined;
    if (supervisor !== undefined) this.#supervisor = supervisor;
    // Counting starts with the first config that has `admin` (and stops for the apps and upstreams of one without).
    this.#count(config);
    const upstreams = this.#upstreams.resolve(config, this.#appState.stickyKey);
    const kept = this.#kept.plan();
    let next: App | undefined;
    let listeners;
    let prepared: SupervisorLike | undefined;
    let admin: AdminPlan | undefined;
    try {
      // Upstreams this config adds start before the swap, as the first ones do (their routes must not answer 503
      // until their instances are up); a user/group the Supervisor cannot use is refused here, before anything
      // starts: its update() after the swap must not throw (the swap would be half done).
      if (supervisor === undefined && this.#supervisor !== undefined) {
        if (this.#supervisor.prepare === undefined) upstreamSpecs(config);
        else await this.#supervisor.prepare(config);
        prepared = this.#supervisor;
      }
      next = new App(config, this.#logger, { zones: caches.zones, upstreams: upstreams.upstreams, keep: kept.keep, metrics: this.#upstreamOptions.metrics, cluster: this.#cluster }, this.#appState);
      for (const zone of caches.fresh) await zone.start();
      await next.start();
      // Upstreams this config adds or changes that find servers through DNS have their first answer before the swap
      // (3 s at most, as at start): a renamed one would otherwise answer 503 until DNS did.
      await Promise.all(upstreams.fresh.map((upstream) => upstream.resolveFirst(3000)));
      await supervisor?.start();
      admin = await this.#admin?.prepare(config);
      listeners = await this.#listeners.prepare(config.listen);
    } catch (err) {
      await admin?.discard();
      await next?.stop();
      if (supervisor !== undefined) {
        this.#supervisor = undefined;
        await supervisor.stop();
      }
      // What prepare() started for this config goes again (the upstreams it added are not in the serving config).
      if (prepared !== undefined) {
        try {
          prepared.update(this.#app.config);
        } catch (undo) {
          this.#logger.error({ err: undo }, 'reload failed: stopping the app servers it started failed');
        }
      }
      await Promise.all(caches.fresh.map((zone) => zone.stop()));
      await upstreams.discard();
      await kept.discard();
      throw err;
    }
    // The swap: from here on nothing fails, and nothing waits for the previous config.
    caches.commit();
    upstreams.commit();
    // The operator's say holds across reloads: the new upstreams take it before they serve (nothing awaits from
    // here to the swap, so no action can come in between).
    for (const upstream of upstreams.fresh) this.#operator.applyTo(upstream);
    // Instances that started or moved while the new upstreams were being built: their slots catch up.
    const running = this.#supervisor;
    if (running !== undefined) for (const upstream of upstreams.fresh) upstream.syncSlots((name, slot) => running.port(name, slot));
    const worker = this.#worker;
    if (worker !== undefined) for (const upstream of upstreams.fresh) upstream.syncSlots((name, slot) => worker.slotPort(name, slot));
    const dropped = kept.commit();
    this.#upstreams.start();
    const previous = this.#app;
    next.certificates.adopt(previous.certificates);
    this.#app = next;
    this.#counting = config.admin !== undefined;
    this.#countUpstreams();
    if (this.#followLogLevel) this.#logger.level = config.log.level;
    // A Supervisor from before learns the new config: instance counts apply at once, changed commands roll.
    const deploying = supervisor === undefined && this.#supervisor !== undefined ? this.#supervisor.update(config) : [];
    this.#deploy(deploying, progress);
    // The addresses no longer listed drain in the background (cut after the grace period; `stop()` waits for
    // them): a long-lived tunnel on one must not hold the reload up.
    void listeners.commit();
    admin?.commit();
    this.#retire(previous, upstreams.retired, caches.retired, dropped);
    await this.#updateAcme(config);
    return deploying;
  }

  /**
   * The previous config drains in the background: what it took (an upload still arriving, a download, a wait in
   * a queue, a WebSocket) ends with its handlers and access log, or is cut at the grace period; then its log is
   * closed and the upstreams, zones and kept values the new config dropped are stopped. `stop()` waits for it.
   */
  #retire(previous: App, upstreams: readonly Upstream[], zones: readonly CacheZone[], dropped: () => Promise<void>): void {
    const started = Date.now();
    // A config still draining from an earlier reload may use what this one retires (an upstream two configs kept).
    const earlier = [...this.#draining];
    this.#retiring.add(previous);
    const drained = previous
      .drain(this.#reloadGraceMs)
      .then(async ({ open, cut }) => {
        if (open > 0) {
          const line = { open, cut, ms: Date.now() - started };
          if (cut > 0) this.#logger.warn(line, `previous config drained: ${cut} of ${open} requests and tunnels cut at the grace period`);
          else this.#logger.info(line, 'previous config drained');
        }
        await previous.stop();
        this.#retiring.delete(previous);
        await Promise.all(earlier);
        // Every client of the previous configs is gone: an upstream request still running is for nobody.
        await this.#upstreams.stopRetired(upstreams, 1000);
        await dropped();
        await Promise.all(zones.map((zone) => zone.stop()));
      })
      .catch((err: unknown) => this.#logger.error({ err }, 'stopping the previous config after a reload failed'));
    this.#draining.add(drained);
    void drained.finally(() => this.#draining.delete(drained));
  }

  /** A rolling deploy of a spawned upstream (the operations queue's `deploy`), by the Supervisor. */
  #deployUpstream(upstream: string, progress: (event: unknown) => void): Promise<unknown> {
    const supervisor = this.#supervisor;
    if (supervisor === undefined) return Promise.reject(new PorticoError('PORTICO_UNSUPPORTED', 'this Portico runs no app servers (no upstream has spawn)'));
    return supervisor.deploy(upstream, progress);
  }

  /**
   * Rolls the instances of the upstreams whose `spawn` a reload changed: each a deploy queued behind the reload
   * on the one serialised path (the reload resolved at its swap); each outcome is logged.
   */
  #deploy(upstreams: readonly string[], progress?: Progress): void {
    const done = this.#operations.deployChanged(upstreams, progress);
    this.#deploys = this.#deploys.then(() => done);
  }


  /**
   * Stops accepting, lets requests in flight finish (up to `graceMs`), then stops the app, and only then the app
   * servers it forwarded to.
   */
  /**
   * Stops accepting, lets requests in flight finish (up to `graceMs`), then stops the app. `lingerIdle`: the old
   * process of an upgrade (see `Listeners.stop`).
   */
  async stop(graceMs = 10_000, lingerIdle = false): Promise<void> {
    this.#stopped = true;
    this.#operations.stop();
    this.#admin?.stopping();
    // The box leaves the cluster's list first: it takes no new connections from here.
    await Promise.all([this.#control?.stop(), this.#admin?.stop(), this.#heartbeat?.stop()]);
    this.#acme?.stop();
    await this.#listeners.stop(graceMs, lingerIdle);
    // Every client is gone: configs still draining after a reload stop now.
    await Promise.all(this.#draining);
    // Every client is gone by now: an upstream request still running (one read for nobody, a background cache
    // fill) must not hold the process past its grace period.
    await this.#app.stop();
    await this.#upstreams.stop(Math.min(graceMs, 1000));
    await this.#kept.stop();
    await this.#supervisor?.stop();
    await this.#deploys;
    await this.#zones.stop();
    await this.#shared?.stop();
    await this.#operator.settled();
    await this.#cluster?.stop();
    this.#clusterKeys?.stop();
    this.#pidFile?.remove();
    this.#state?.release();
  }
}
