/**
 * An upstream: a named group of app-server instances, the policy that spreads requests over them, their
 * health (active checks and passive ejection), the values of the sticky cookie that name them
 * (sticky-values.ts) and the bounded queue for requests that wait for capacity (capacity-queue.ts).
 *
 * Selection filters, the policy chooses: candidates are the primaries that are healthy, not ejected, under
 * max_conns and not already tried for this request; only when no primary is available at all do the backup
 * servers serve. A sticky cookie that names an available candidate wins over the policy; so does the route of
 * the app's session (`sticky.app_cookie`), primary or backup, as in mod_proxy_balancer and HAProxy. When nothing
 * else is left, servers ejected by passive health are tried rather than answering 502/503 (see `select`). A server
 * the operator drained takes only the clients pinned to it (sticky cookie, app session route); one disabled, none.
 *
 * With `discover`, servers found through DNS join and leave while the upstream runs (see `#discover`): what selection
 * reads of the list (groups, policies, sticky values) is built again at each change, the servers that stay unchanged.
 */
import type { Logger } from 'pino';
import { fixedKeyRing } from '../cluster/keys.js';
import type { Config } from '../config/load.js';
import { slotName, slotRoute, speaksFastCgi } from '../config/schema.js';
import { readCookie } from '../http/template.js';
import { DnsDiscovery, discoveredServerConfig, discoveredUrl, type DiscoveredServer } from './discovery.js';
import { ActiveHealthChecker, errorWords, type CheckResult } from './health/active.js';
import { policyKind } from './policies/index.js';
import { createPolicy, type PickContext, type Policy } from './policies/types.js';
import { UpstreamServer } from './server.js';
import { sessionRoute } from './session-route.js';
import { stickyKeyRing, StickyValues, type StickyKey } from './sticky-values.js';
import { CapacityQueue, type CapacityWait, type QueuePlace } from './capacity-queue.js';
import type { Metrics } from '../metrics/metrics.js';

type UpstreamConfig = Config['upstreams'][string];


/** The port serving a spawned slot now, if any (asked when an upstream is built). */
export type SlotPort = (upstream: string, slot: string) => number | undefined;
/** How an upstream is run besides its config. */
export interface UpstreamOptions {
  /**
   * The active checks run elsewhere (with `workers`, in the primary), whose outcomes come through `applyCheck`:
   * this upstream runs none itself. Passive health stays this process's own.
   */
  remoteHealth?: boolean;
  /** Every active check's outcome (the primary hands them on to the workers). */
  onCheck?: (upstream: Upstream, server: UpstreamServer, passed: boolean, started: number) => void;
  /**
   * Which port serves a spawned slot now (a reload's new upstream starts where the previous one was); without
   * it, or when it says none, a slot starts down until `moveSlot` gives it a port.
   */
  slotPort?: SlotPort | undefined;
  /** The process's metrics when counting is on: each server's attempts are counted (see `UpstreamServer.traffic`). */
  metrics?: Metrics | undefined;
  /**
   * A server found through DNS joined `upstream` (it serves already): the operator's say on its id, if any, is
   * applied here (a drain or weight set through the admin API before DNS named it, or before a restart).
   */
  onDiscovered?: (upstream: Upstream, server: UpstreamServer) => void;
}

/** Why no server could be had: none is available at all, or those available are all at max_conns or their pool's size. */
export type NoServer = 'unavailable' | 'full';

/** The pick context of a probe (`select` with `probe`): no policy runs, so none of it is read. */
const PROBE_PICK: PickContext = Object.freeze({ clientIp: '', hashKey: '', random: () => 0 });

/** A group of servers with its policy and health state. */
export class Upstream {
  readonly name: string;
  readonly config: UpstreamConfig;
  /**
   * Every server serving now: the configured ones, the spawned slots, then those found through DNS (`discover`).
   * The list is replaced (never changed in place) when DNS adds or removes servers; its ids stay with the servers.
   */
  get servers(): readonly UpstreamServer[] {
    return this.#servers;
  }
  #servers: readonly UpstreamServer[];
  /** The configured and spawned servers: they never change in the life of the upstream. */
  readonly #own: readonly UpstreamServer[];
  #primaries: readonly UpstreamServer[] = [];
  #backups: readonly UpstreamServer[] = [];
  #policy!: Policy;
  #backupPolicy!: Policy;
  readonly #checker: ActiveHealthChecker | undefined;
  readonly #logger: Logger;
  /** Spawned servers by slot name. */
  readonly #slots: ReadonlyMap<string, UpstreamServer>;
  /** The values of Portico's sticky cookie that name the servers. */
  readonly #sticky: StickyValues;
  readonly #configDir: string;
  readonly #options: UpstreamOptions;
  /** The servers' DNS name (`discover`), resolved on its timer; undefined without `discover`. */
  readonly #discovery: DnsDiscovery | undefined;
  /** The servers found through DNS now, by URL. */
  readonly #discovered = new Map<string, UpstreamServer>();
  /** Servers DNS no longer names, until their requests and tunnels in flight have ended (their ids are kept until then). */
  readonly #leaving = new Set<UpstreamServer>();
  /** Servers by route, with `sticky.app_cookie` (undefined otherwise). */
  readonly #routes: ReadonlyMap<string, UpstreamServer> | undefined;
  /** Requests waiting for a server with capacity. */
  readonly #capacity: CapacityQueue;
  /** Reused candidate list: selection allocates nothing per request. */
  readonly #candidates: UpstreamServer[] = [];
  /**
   * The other upstream of the same name across a reload, while the previous one drains (see `adoptState`): a
   * request ending on either may give its turn to a request queued on the other.
   */
  #pair: Upstream | undefined = undefined;

  constructor(name: string, config: UpstreamConfig, configDir: string, logger: Logger, stickyKey?: StickyKey, options: UpstreamOptions = {}) {
    this.name = name;
    this.config = config;
    this.#logger = logger;
    this.#configDir = configDir;
    this.#options = options;
    const fixed = config.servers.map((server, i) => new UpstreamServer(i, server, config, configDir, false, logger));
    const spawned = Array.from({ length: config.spawn?.instances ?? 0 }, (_, i) => {
      const slot = slotName(name, i);
      return new UpstreamServer(fixed.length + i, { slot, route: slotRoute(name, i), port: options.slotPort?.(name, slot) }, config, configDir, false, logger);
    });
    this.#own = [...fixed, ...spawned];
    this.#servers = this.#own;
    if (options.metrics !== undefined) for (const server of this.servers) server.traffic = options.metrics.server(name, server.name);
    this.#slots = new Map(spawned.map((server) => [server.slot!, server]));
    // A configured secret wins over the process's, the state directory's and the cluster's keys.
    const ring = config.sticky?.secret !== undefined ? fixedKeyRing(Buffer.from(config.sticky.secret, 'utf8')) : stickyKeyRing(stickyKey);
    this.#sticky = new StickyValues(name, ring, () => [...this.#servers, ...this.#leaving]);
    this.#capacity = new CapacityQueue(config.queue, {
      anyCapacity: () => this.servers.some((s) => s.hasCapacity()),
      probe: (tried, sticky) => {
        const server = this.select(tried, PROBE_PICK, sticky, true);
        return typeof server === 'string' ? undefined : server;
      },
      hold: (server) => this.acquire(server),
      unhold: (server) => this.#unacquire(server),
    });
    this.#arrange(undefined);
    this.#routes =
      config.sticky?.app_cookie === undefined
        ? undefined
        : new Map(this.servers.flatMap((server) => (server.route === undefined ? [] : [[server.route, server] as const])));
    if (config.health !== undefined && options.remoteHealth !== true) {
      const onCheck = options.onCheck;
      const onResult: CheckResult | undefined = onCheck === undefined ? undefined : (server, passed, started) => onCheck(this, server, passed, started);
      this.#checker = new ActiveHealthChecker(
        this.servers,
        config.health,
        (server, healthy, reason, check) => {
          this.#logger.warn({ upstream: name, server: server.label, check, reason }, healthy ? 'server is up' : 'server is down');
          if (healthy) this.#capacity.wake();
        },
        onResult,
      );
    }
    this.#discovery = config.discover === undefined ? undefined : new DnsDiscovery(name, config.discover, logger, (found) => this.#discover(found));
  }

  /**
   * Builds what selection reads from the list of servers: primaries and backups, their policies, the sticky
   * values. `before` (the lists as they were, at a change of the servers found through DNS): the policies take over
   * the position of the servers that stay in the same group, as at a reload (see `Policy.adopt`).
   */
  #arrange(before: { primaries: readonly UpstreamServer[]; backups: readonly UpstreamServer[] } | undefined): void {
    this.#primaries = this.#servers.filter((s) => !s.backup);
    this.#backups = this.#servers.filter((s) => s.backup);
    const kind = policyKind(this.config.policy)!;
    const previous = [this.#policy, this.#backupPolicy] as const;
    this.#policy = createPolicy(kind, this.#primaries);
    this.#backupPolicy = createPolicy(kind, this.#backups);
    if (before !== undefined) {
      const kept = (was: readonly UpstreamServer[], now: readonly UpstreamServer[]) => new Map(now.filter((s) => was.includes(s)).map((s) => [s.id, s.id]));
      this.#policy.adopt?.(previous[0], kept(before.primaries, this.#primaries));
      this.#backupPolicy.adopt?.(previous[1], kept(before.backups, this.#backups));
    }
    this.#sticky.rekey(true);
  }

  /**
   * The servers found through DNS are now `found` (see discovery.ts): a server that stays is the same object (its
   * health, counts, latency and sticky value go on; an SRV answer may change its weight or backup role); a new one
   * is checked as a configured one (up until its checks say otherwise) and ramps up under `slow_start`; one no
   * longer named leaves: no new requests, and its requests and tunnels in flight finish (see `UpstreamServer.leave`).
   * An address that is also a configured server's is that server.
   */
  #discover(found: readonly DiscoveredServer[]): void {
    // A configured server is named by its URL's text (`http://10.0.0.5:8080/`, `http://10.0.0.5`): compared by
    // origin when it has no path, as the discovered one's (`http://10.0.0.5:8080`; port 80 is no port in an origin).
    // In a FastCGI upstream they are `fcgi://10.0.0.5:9000`, as its configured servers (whose origin is their text).
    const fastcgi = speaksFastCgi(this.config);
    const configured = new Set(this.config.servers.flatMap((s) => ((s.url.kind === 'http' || s.url.kind === 'fcgi') && s.url.basePath === '' ? [s.url.text, s.url.origin] : [s.url.text])));
    const isConfigured = (d: DiscoveredServer): boolean => configured.has(discoveredUrl(d, fastcgi)) || (!fastcgi && configured.has(new URL(discoveredUrl(d)).origin));
    const next = new Map(found.filter((d) => !isConfigured(d)).map((d) => [discoveredUrl(d, fastcgi), d]));
    const before = { primaries: this.#primaries, backups: this.#backups };
    const now = Date.now();
    const joined: UpstreamServer[] = [];
    for (const [url, server] of this.#discovered) {
      if (next.has(url)) continue;
      this.#discovered.delete(url);
      this.#checker?.remove(server);
      this.#leaving.add(server);
      void server.leave().finally(() => {
        this.#leaving.delete(server);
        this.#logger.debug({ upstream: this.name, server: server.name }, 'server no longer found through DNS: its last request ended');
      });
    }
    for (const [url, record] of next) {
      const held = this.#discovered.get(url);
      if (held !== undefined) {
        held.rediscover(record.weight, record.backup);
        continue;
      }
      const server = new UpstreamServer(this.#freeId(), discoveredServerConfig(record, fastcgi), this.config, this.#configDir, true, this.#logger);
      if (this.#options.metrics !== undefined) server.traffic = this.#options.metrics.server(this.name, server.name);
      if (this.config.slow_start > 0) server.recoveredAt = now;
      this.#discovered.set(url, server);
      this.#checker?.add(server);
      joined.push(server);
    }
    this.#servers = [...this.#own, ...this.#discovered.values()];
    this.#arrange(before);
    for (const server of joined) this.#options.onDiscovered?.(this, server);
    // Requests queued for capacity may use a new server.
    this.#capacity.wake();
  }

  /** The lowest id no server has, serving or leaving (ids index the policies' and sticky values' arrays). */
  #freeId(): number {
    const taken = new Set([...this.#servers, ...this.#discovered.values(), ...this.#leaving].map((s) => s.id));
    let id = this.#own.length;
    while (taken.has(id)) id++;
    return id;
  }

  /** What `discover` found and when (undefined without `discover`), for /status. */
  get discovery(): { dns: string; type: string; resolvedAt: number; nextAt: number; error: string | undefined } | undefined {
    const d = this.#discovery;
    if (d === undefined) return undefined;
    return { dns: this.config.discover!.dns, type: this.config.discover!.type, resolvedAt: d.lastAt, nextAt: d.nextAt, error: d.lastError };
  }

  /**
   * An active check's outcome from elsewhere (see `UpstreamOptions.remoteHealth`), for the server labelled
   * `label`: its health as the checker holds it (rise and fall counted there), whether this check passed and when
   * it began. The same rules as a local check: back up clears a passive ejection; so does a pass begun after the
   * ejection (a restart faster than `fall` checks). The checker logs the changes; this does not.
   */
  applyCheck(label: string, healthy: boolean, passed: boolean, started: number): void {
    const server = this.servers.find((s) => s.label === label);
    if (server === undefined || this.config.health === undefined) return;
    const now = Date.now();
    // `started` 0: a worker's start-up snapshot of the health, not a check.
    if (started !== 0) {
      server.lastCheckAt = started;
      server.lastCheckPassed = passed;
    }
    if (healthy && !server.healthy) {
      server.healthy = true;
      server.recoveredAt = now;
      server.clearEjection();
      this.#capacity.wake();
    } else if (!healthy) {
      server.healthy = false;
    } else if (passed && server.ejectedUntil > now && started >= server.ejectedAt) {
      server.clearEjection();
      this.#capacity.wake();
    }
  }

  /** Starts the active checks (their first round at once). */
  start(): void {
    this.#checker?.start();
    this.#discovery?.start();
  }

  /**
   * A reload's new upstream, before the swap: starts `discover` and resolves once its first resolution has ended (or
   * after `timeoutMs`), so that the swap does not leave a renamed upstream without servers (503) until DNS answers.
   * Its health checks start with the rest at the swap.
   */
  resolveFirst(timeoutMs: number): Promise<void> {
    this.#discovery?.start();
    return this.firstResolution(timeoutMs);
  }

  /** Resolves once `discover`'s first resolution has ended (at once without `discover`), or after `timeoutMs`. */
  firstResolution(timeoutMs: number): Promise<void> {
    return this.#discovery?.firstResolution(timeoutMs) ?? Promise.resolve();
  }

  /**
   * A spawned slot is now served by 127.0.0.1:`port`, or by nothing (see `UpstreamServer.retarget`): resolves when
   * nothing uses its previous port any more, or at `cutAfterMs`. A slot this upstream does not have (a reload
   * changed `instances`) is no error: there is nothing to move.
   */
  async moveSlot(slot: string, port: number | undefined, cutAfterMs?: number): Promise<void> {
    const server = this.#slots.get(slot);
    if (server === undefined) return;
    const moved = server.retarget(port, cutAfterMs);
    this.#logger.debug({ upstream: this.name, server: slot, port }, port === undefined ? 'slot has no instance' : 'slot moved');
    // Requests queued for capacity may use it now.
    if (port !== undefined) this.#capacity.wake();
    await moved;
  }

  /**
   * Moves every spawned slot whose port differs from where `portOf` (the Supervisor) has it now: for an upstream
   * built while instances were starting or moving (a reload's), before it was held and followed their moves.
   */
  syncSlots(portOf: SlotPort): void {
    for (const [slot, server] of this.#slots) {
      const port = portOf(this.name, slot);
      if (server.target?.port !== port) void this.moveSlot(slot, port);
    }
  }

  /**
   * At a reload's swap, takes over what `previous` (the same upstream name under the previous config) knew of
   * each server this config still has, by address (a URL's text, a spawned slot's name): health, passive
   * failures and ejection, slow start, latency (see `UpstreamServer.adoptState`), and the policy's position when
   * the policy is the same kind. Until `previous` stops, the two are paired: a server's requests in flight on
   * either count under its `max_conns` on both, and a request ending on one wakes the queue of the other.
   */
  adoptState(previous: Upstream): void {
    // One pairing at a time: the previous upstream's own predecessor (a reload before the last) lets go first.
    if (previous.#pair !== undefined) previous.#pair.#unpair();
    if (this.#pair !== undefined) this.#pair.#unpair();
    // The servers the previous upstream found through DNS serve at once here, until this one's first resolution.
    const found = previous.#discovery?.servers;
    const discover = this.config.discover;
    const was = previous.config.discover;
    // Not when this one has its own answer already (see `resolveFirst`): it is the newer.
    if (this.#discovery !== undefined && this.#discovery.servers === undefined && found !== undefined && discover?.dns === was?.dns && discover?.type === was?.type && discover?.port === was?.port) {
      this.#discovery.seed(found);
      this.#discover(found);
    }
    const before = new Map(previous.servers.map((server) => [server.address, server]));
    const checked = this.#checker !== undefined;
    const ids = new Map<number, number>();
    for (const server of this.servers) {
      const old = before.get(server.address);
      if (old === undefined) continue;
      server.adoptState(old, checked);
      server.pairWith(old);
      ids.set(old.id, server.id);
    }
    if (previous.config.policy === this.config.policy) {
      this.#policy.adopt?.(previous.#policy, ids);
      this.#backupPolicy.adopt?.(previous.#backupPolicy, ids);
    }
    this.#pair = previous;
    previous.#pair = this;
  }

  /** Ends the pairing of `adoptState` (the previous upstream stopped). */
  #unpair(): void {
    const other = this.#pair;
    if (other === undefined) return;
    this.#pair = undefined;
    if (other.#pair === this) other.#pair = undefined;
    for (const server of this.servers) server.pairWith(undefined);
  }

  /**
   * The operator's say on a server (admin API; see `UpstreamServer.setOperator`): `admin` and `weight` (undefined:
   * the config's). A weight change reaches the policies that built something from the weights (a hash ring).
   * `rampUp` false: state read back at a start or reload, not a change now (no slow start).
   */
  setOperator(server: UpstreamServer, admin: UpstreamServer['admin'], weight: number | undefined, rampUp = true): void {
    const reweigh = server.weight !== (weight ?? server.configWeight);
    server.setOperator(admin, weight, rampUp);
    if (!reweigh) return;
    if (server.backup) this.#backupPolicy.reweigh?.();
    else this.#policy.reweigh?.();
  }

  /** The server of this upstream whose stable id (`UpstreamServer.name`) is `id`. */
  server(id: string): UpstreamServer | undefined {
    return this.servers.find((server) => server.name === id);
  }

  /** A reload replaced this upstream: its checks stop (the new one has its own); requests in flight go on. */
  drain(): void {
    this.#checker?.stop();
    this.#discovery?.stop();
  }

  /** Stops the checks, lets queued requests go (503), closes the pools (see `UpstreamServer.close` for `cutAfterMs`). */
  async stop(cutAfterMs?: number): Promise<void> {
    this.#checker?.stop();
    this.#discovery?.stop();
    this.#unpair();
    this.#capacity.clear();
    await Promise.all([...this.servers, ...this.#leaving].map((s) => s.close(cutAfterMs)));
  }

  /**
   * The `Set-Cookie` value that pins a client to `server`, or undefined when the upstream is not sticky or the
   * client's cookie (`current`) already names it.
   */
  stickyCookie(server: UpstreamServer, current: string | undefined): string | undefined {
    const sticky = this.config.sticky;
    if (sticky?.cookie === undefined) return undefined;
    const id = this.#sticky.of(server);
    return current === id ? undefined : `${sticky.cookie}=${id}; Path=/; HttpOnly; SameSite=Lax`;
  }

  /**
   * What a request says of where it belongs: the value of Portico's sticky cookie, or with `app_cookie` the route
   * its session names (`target` is the raw request target, for `;jsessionid=`); undefined when not sticky.
   */
  pinOf(cookieHeader: string | undefined, target: string): string | undefined {
    const sticky = this.config.sticky;
    if (sticky === undefined) return undefined;
    return sticky.app_cookie === undefined ? readCookie(cookieHeader, sticky.cookie!) : sessionRoute(cookieHeader, target, sticky.app_cookie, sticky.separator);
  }

  /**
   * The Set-Cookie for a client answered without a forward (from the cache): it pins the client to the server
   * the policy would choose for it now, unless its cookie already names one its requests would go to (at
   * max_conns or not: no request is made now). Pinning to the server that filled the entry instead would send
   * every first-time visitor of a popular cached page to that one server.
   */
  stickyCookieUnforwarded(pick: PickContext, current: string | undefined): string | undefined {
    if (this.config.sticky?.cookie === undefined) return undefined;
    const now = Date.now();
    const id = this.#sticky.pinned(current);
    const pinned = id === -1 ? undefined : this.servers.find((s) => s.id === id);
    // A pin to a draining server holds (its clients stay until the operator disables it); a value under a previous
    // key is signed again under the current one.
    if (pinned?.takesPinned(now) === true && (!pinned.backup || !this.#primaries.some((s) => s.isAvailable(now)))) return this.stickyCookie(pinned, current);
    const server = this.select(undefined, pick, current);
    return typeof server === 'string' ? undefined : this.stickyCookie(server, current);
  }

  /** The sticky-cookie value that names a server. */
  stickyId(server: UpstreamServer): string {
    return this.#sticky.of(server);
  }

  /**
   * Picks a server for one attempt, or says why none can be had. `tried` holds the ids already tried for this
   * request (a retry never re-picks the server that just failed). `probe` only asks whether some server could be
   * had: the policy is not run (its state does not move), and the server returned is any one that could be.
   */
  select(tried: ReadonlySet<number> | undefined, pick: PickContext, sticky: string | undefined, probe = false): UpstreamServer | NoServer {
    const now = Date.now();
    if (this.#routes !== undefined) {
      // The app's session lives on its routed server, backup or not; one that cannot take the request now
      // (down, ejected, full, tried) leaves it to the policy, and that server's app starts a new session.
      const routed = sticky === undefined ? undefined : this.#routes.get(sticky);
      if (routed !== undefined && routed.takesPinned(now) && tried?.has(routed.id) !== true) {
        // Busy is not gone: the request waits for its own server (as HAProxy queues a persistent request on its
        // server), rather than start a new session elsewhere.
        return routed.hasCapacity() ? routed : 'full';
      }
      sticky = undefined;
    }
    const pinned = this.#sticky.pinned(sticky);
    const primary = this.#choose(this.#primaries, this.#policy, tried, pick, pinned, now, false, probe);
    if (typeof primary !== 'string' || primary === 'full') return primary;
    if (this.#backups.length > 0) {
      const backup = this.#choose(this.#backups, this.#backupPolicy, tried, pick, pinned, now, false, probe);
      if (typeof backup !== 'string' || backup === 'full') return backup;
    }
    // Nothing else is left: a server ejected for failing live traffic may well be back (when every server went
    // down at once, the first to return is usually one of the ejected), and it is a better bet than no answer.
    // nginx and Envoy ("panic") do the same. A server the active checks hold down is never used.
    const ejected = this.#choose(this.#primaries, this.#policy, tried, pick, pinned, now, true, probe);
    if (typeof ejected !== 'string' || this.#backups.length === 0) return ejected;
    return this.#choose(this.#backups, this.#backupPolicy, tried, pick, pinned, now, true, probe);
  }

  #choose(
    group: readonly UpstreamServer[],
    policy: Policy,
    tried: ReadonlySet<number> | undefined,
    pick: PickContext,
    pinnedId: number,
    now: number,
    ejectedToo: boolean,
    probe: boolean,
  ): UpstreamServer | NoServer {
    const candidates = this.#candidates;
    candidates.length = 0;
    let full = false;
    for (const server of group) {
      const pinned = server.id === pinnedId;
      // A draining server takes only the clients pinned to it; a disabled one nobody (see `UpstreamServer.admin`).
      const usable = ejectedToo
        ? server.healthy && server.target !== undefined && (server.admin === 'enabled' || (pinned && server.admin === 'draining'))
        : pinned
          ? server.takesPinned(now)
          : server.isAvailable(now);
      if (!usable || tried?.has(server.id) === true) continue;
      if (!server.hasCapacity()) {
        // A client pinned to a busy server waits for it (see the routes in `select`).
        if (pinned) return 'full';
        full = true;
        continue;
      }
      if (pinned) return server;
      candidates.push(server);
    }
    if (candidates.length === 0) return full ? 'full' : 'unavailable';
    const chosen = candidates.length === 1 || probe ? candidates[0] : policy.pick(candidates, pick);
    return (chosen as UpstreamServer | undefined) ?? 'unavailable';
  }

  /** Whether some available server (primary, or backup when no primary is) has not been tried yet. */
  hasUntried(tried: ReadonlySet<number>): boolean {
    const now = Date.now();
    const primary = this.#primaries.some((s) => s.isAvailable(now));
    for (const server of primary ? this.#primaries : this.#backups) {
      if (server.isAvailable(now) && !tried.has(server.id)) return true;
    }
    return false;
  }

  /**
   * Waits (within the queue's size and timeout) until some server may have capacity for this request: one
   * `select` with the same `sticky` and `tried` would return (under max_conns and with a pool connection free).
   * The wait ends false on timeout, or when cancelled (its client went away), and leaves the queue then.
   */
  waitForCapacity(place?: QueuePlace, sticky?: string, tried?: ReadonlySet<number>): CapacityWait {
    // A sticky value that names no server is no pin: such values share the unpinned lane, so that made-up cookies
    // cannot multiply the lanes.
    const pin = sticky !== undefined && (this.#routes?.has(sticky) ?? this.#sticky.pinned(sticky) !== -1) ? sticky : undefined;
    return this.#capacity.wait(place, pin, tried);
  }

  /** Marks a request as started on a server (holding one of its pool's connections). */
  acquire(server: UpstreamServer): void {
    server.active++;
    server.pooled++;
  }

  /** Undoes `acquire` for a request that did not start after all. */
  #unacquire(server: UpstreamServer): void {
    server.active--;
    server.pooled--;
  }

  /** A tunnel opened: its connection left the pool (it still counts under max_conns until `release`). */
  leavePool(server: UpstreamServer): void {
    server.pooled--;
    this.#capacity.wake();
  }

  /** Marks a request as finished on a server and lets one queued request that can use it go on; `pooled` false for a tunnel. */
  release(server: UpstreamServer, pooled = true): void {
    server.active--;
    if (pooled) server.pooled--;
    this.#capacity.wake();
    // During a reload's drain the same app servers serve both configs: a turn freed here may be the other's.
    if (this.#pair !== undefined) this.#pair.#capacity.wake();
  }

  /**
   * Records a live-traffic failure; ejects the server when allowed by max_ejection_percent. `reason` is the
   * failure in `passive.on` terms (`503`, `connect_error`, `timeout`, `reset`), `err` the transport error if any:
   * the ejection's log line says the last one.
   */
  recordFailure(server: UpstreamServer, reason: string, err?: unknown): void {
    const passive = this.config.passive;
    const now = Date.now();
    if (!server.recordFailure(now, passive.max_fails, passive.fail_timeout)) return;
    const ejected = this.servers.filter((s) => s.ejectedUntil > now).length;
    if (ejected + 1 > Math.floor((this.servers.length * passive.max_ejection_percent) / 100)) return;
    server.eject(now, passive.fail_timeout);
    const last = /^\d{3}$/.test(reason) ? `status ${reason}` : err === undefined || reason === 'timeout' ? reason : errorWords(err);
    const why = `${passive.max_fails} failures within ${passive.fail_timeout} ms, the last: ${last}`;
    this.#logger.warn({ upstream: this.name, server: server.label, reason: why, until: new Date(server.ejectedUntil).toISOString() }, 'server ejected');
  }

  /** Records a live-traffic success. */
  recordSuccess(server: UpstreamServer): void {
    server.recordSuccess(Date.now(), this.config.passive.fail_timeout);
  }
}
