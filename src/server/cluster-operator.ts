/**
 * The operator's actions across a cluster (docs/cluster.md, "Drains, weights and purges"): drains, disables,
 * enables and weights, and purges by URL or URL prefix, made on any box, reach every box.
 *
 * - **Servers.** Each change is kept in the Redis hash `PREFIX:operator:servers` (field `["upstream","id"]`, value
 *   `{ admin, weight?, at, box }`; `enable` is kept too, as `{ admin: "enabled" }`, so that it can beat an older
 *   drain) and published on the channel `operator`, in one script: the box that made it is answered with the
 *   number of subscriptions that received it. `at` is Redis's clock (`TIME`), and a new action's is always later
 *   than the one it replaces. A box applies a message whose `at` is newer than its own stamp of that server.
 * - **Purges.** Each is pushed onto the capped list `PREFIX:operator:purges` (newest first, `PURGE_CAP` entries,
 *   gone `PURGE_KEEP_MS` after the last push) with its `at`, and published; every box works out the keys from its
 *   own routes (`planPurge`), as the box that took it did.
 * - **Invalidations** (an unsafe method's, RFC 9111 §4.4) a zone makes are published (not kept): the other boxes'
 *   zones of the name forget the key too.
 *
 * A box re-syncs at its first connect, after every outage (`ClusterLink.onUp`) and every `SYNC_MS` (a message lost
 * while the subscriber reconnected): for each server, the newest stamp wins (a change made while Redis was away is
 * stamped with this box's clock, and is pushed to Redis when newer than what Redis has; a server Redis has nothing
 * on gets this box's override), and the purges kept that it has not applied are applied. Purges "applied" means:
 * up to `appliedUntil` (Redis's clock, kept in the state directory's `purges.json`, so that a restarted box's disk
 * tier forgets what was purged while it was down; its memory tier starts empty anyway). A box away longer than the
 * list reaches back forgets its zones whole (a purge it cannot replay must not be served).
 *
 * Scope: box. A single process holds it; with `workers: N`, the primary does, and its host passes what it applies to
 * every worker (`Primary`, server/workers.ts). Every Redis call runs under `ClusterLink.attempt`.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { ClusterLink, ClusterMessage } from '../cluster/link.js';
import type { Config } from '../config/load.js';
import type { ClusterReach, PurgeTarget } from '../control/admin-types.js';
import type { StateDir } from '../tls/state-dir.js';
import type { ServerOverride, ServerOverrides } from './operator.js';
import { planPurge, type KeyMatch } from './purge.js';
import {
  ADD_PURGE,
  fieldOf,
  missedPurges,
  overrideOf,
  parseField,
  parseOverride,
  parsePurge,
  PURGE_CAP,
  PURGE_KEEP_MS,
  READ_ALL,
  reconcileServer,
  safeJson,
  SET_SERVER,
  type SharedOverride,
  type SharedPurge,
} from './operator-shared.js';

/** The channel every operator message travels on. */
export const OPERATOR_CHANNEL = 'operator';
/** How often a box re-reads Redis besides at each (re)connect. */
export const SYNC_MS = 10_000;
/** The deadline of an operator's call to Redis (control plane: not on a request's path). */
const CONTROL_TIMEOUT_MS = 1000;
/** The state directory's file of how far this box has applied the cluster's purges. */
export const PURGES_FILE = 'purges.json';
/** Purges made while Redis was away, kept to be shared when it is back (the oldest dropped past it). */
const PENDING_CAP = 1000;

/** What the cluster side needs of the box's server (`Portico`). */
export interface OperatorHost {
  /** The config serving. */
  config(): Config;
  /** The box's overrides (servers.json). */
  readonly overrides: ServerOverrides;
  /** Applies an override to the live upstreams that have the server (none: nothing to do). */
  apply(upstream: string, server: string, override: ServerOverride | undefined): void;
  /**
   * Removes from the zone of the name what any of `targets` names (each checked against the config already),
   * in every process of the box; resolves with the count removed (undefined: no such zone here).
   */
  purge(zone: string, targets: readonly PurgeTarget[]): Promise<number | undefined>;
  /** Empties every cache zone of the box (a purge it cannot replay must not be served). */
  purgeAll(): Promise<void>;
  /** Another box's invalidation: the zone of the name forgets the key (or prefix) in every process, not told on. */
  invalidate(zone: string, kind: 'key' | 'prefix', value: string): Promise<void>;
  /** The state directory, when there is one. */
  state(): StateDir | undefined;
}

/** What an answer says when Redis did not take the action. */
const NOT_SHARED: ClusterReach = {
  shared: false,
  note: 'Redis is unreachable: applied on this box only; it is shared with the other boxes when Redis is back (the newest change of a server wins)',
};

/** One box's share of the operator's actions (see the file comment): started with the box, stopped with it. */
export class ClusterOperator {
  readonly #link: ClusterLink;
  readonly #host: OperatorHost;
  readonly #logger: Logger;
  /** Purges up to this `at` (Redis's clock) are applied here: read from `purges.json` at start. */
  #appliedUntil = 0;
  /** Purges after `appliedUntil` applied already (live messages, this box's own). */
  readonly #seen = new Map<string, number>();
  /** Purges taken while Redis was away, to share when it is back. */
  #pending: Array<{ id: string; zone: string; target: PurgeTarget }> = [];
  #syncing: Promise<void> | undefined;
  #again = false;
  #timer: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;
  #offUp: (() => void) | undefined;
  /** Writes of `purges.json`, one after the other. */
  #writing: Promise<void> = Promise.resolve();
  #stopped = false;
  /** Whether `purges.json` was read (the state directory may open after the first connect). */
  #loaded = false;
  /** Opened by `ready()`: the box's zones and upstreams are started (a disk tier's index read) and may be acted on. */
  #open!: () => void;
  readonly #opened = new Promise<void>((resolve) => (this.#open = resolve));
  /** Resolved by the first re-sync that read Redis. */
  #synced!: () => void;
  readonly #firstSync = new Promise<void>((resolve) => (this.#synced = resolve));

  constructor(link: ClusterLink, host: OperatorHost, logger: Logger) {
    this.#link = link;
    this.#host = host;
    this.#logger = logger;
  }

  /**
   * Listens to the other boxes and re-syncs at each (re)connect and every `SYNC_MS`; what it hears and re-syncs is
   * applied once `ready()` says the box's zones are started.
   */
  start(): void {
    this.#loadApplied();
    this.#unsubscribe = this.#link.subscribe(OPERATOR_CHANNEL, (message) => this.#heard(message));
    this.#offUp = this.#link.onUp(() => void this.sync());
    this.#timer = setInterval(() => void this.sync(), SYNC_MS);
    this.#timer.unref();
  }

  /**
   * Resolves once the first re-sync has read Redis and applied what it holds (a box starting serves with the
   * cluster's drains and without the objects purged while it was down), or after `timeoutMs` (Redis away: the box
   * serves with its `servers.json`, and re-syncs when Redis is back). Resolves true when it synced.
   */
  async ready(timeoutMs: number): Promise<boolean> {
    this.#open();
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    // Given up at the deadline, or as soon as the link knows Redis is unreachable (a refused connection).
    const late = new Promise<boolean>((resolve) => {
      const check = (): void => {
        if (Date.now() - started >= timeoutMs || this.#link.stats().down_since !== null) resolve(false);
        else timer = setTimeout(check, 25);
      };
      check();
    });
    try {
      const synced = await Promise.race([this.#firstSync.then(() => true), late]);
      if (!synced) this.#logger.warn({ waited_ms: Date.now() - started }, 'cluster: Redis did not answer at start: serving with the operator\'s actions kept in servers.json until it does');
      return synced;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops listening; waits for a re-sync under way and the last write. */
  async stop(): Promise<void> {
    this.#stopped = true;
    // A box stopped before it opened: the re-sync waiting for it ends without acting.
    this.#open();
    clearInterval(this.#timer);
    this.#unsubscribe?.();
    this.#offUp?.();
    await this.#syncing?.catch(() => undefined);
    await this.#writing.catch(() => undefined);
  }

  /**
   * Shares an action this box applied (its override after it; stamped `at` here with this box's clock): kept in
   * Redis and published. Resolves with how far it went; on success, the box's stamp becomes Redis's.
   */
  async shareServer(upstream: string, server: string, override: ServerOverride | undefined): Promise<ClusterReach> {
    const stored = await this.#setServer(upstream, server, override, undefined);
    if (stored === undefined) return NOT_SHARED;
    await this.#host.overrides.set(upstream, server, override, stored.entry.at).catch((err: unknown) => this.#logger.error({ err }, 'cluster: keeping a server action\'s stamp failed'));
    return { shared: true, published_to: stored.receivers };
  }

  /** Shares a purge this box made: kept in Redis and published, or kept here until Redis is back. */
  async sharePurge(zone: string, target: PurgeTarget): Promise<ClusterReach> {
    const purge = { id: randomBytes(8).toString('hex'), zone, target };
    const receivers = await this.#addPurge(purge);
    if (receivers !== undefined) return { shared: true, published_to: receivers };
    this.#pending.push(purge);
    if (this.#pending.length > PENDING_CAP) this.#pending.shift();
    return NOT_SHARED;
  }

  /** An invalidation a zone of this box made (an unsafe method's): the other boxes' zones of the name forget it too. */
  invalidated(zone: string, kind: 'key' | 'prefix', value: string): void {
    this.#link.publish(OPERATOR_CHANNEL, { kind: 'invalidate', zone, how: kind, value });
  }

  /**
   * Re-syncs with Redis (one at a time; a call during one runs once more after it): shares what was done here while
   * Redis was away, then applies what Redis has that is newer (see the file comment).
   */
  sync(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (this.#syncing !== undefined) {
      this.#again = true;
      return this.#syncing;
    }
    const run = async (): Promise<void> => {
      await this.#opened;
      try {
        do {
          this.#again = false;
          if (!this.#stopped) await this.#syncOnce();
        } while (this.#again && !this.#stopped);
      } catch (err) {
        this.#logger.error({ err }, 'cluster: re-syncing the operator\'s actions failed');
      } finally {
        this.#syncing = undefined;
      }
    };
    this.#syncing = run();
    return this.#syncing;
  }

  /** Reads how far purges were applied before this process started (`purges.json`), once there is a state directory. */
  #loadApplied(): void {
    const state = this.#host.state();
    if (this.#loaded || state === undefined) return;
    this.#loaded = true;
    const raw = state.read(PURGES_FILE)?.toString('utf8');
    const kept = raw === undefined ? undefined : (safeJson(raw) as { applied_until?: unknown } | undefined);
    if (typeof kept?.applied_until === 'number') this.#appliedUntil = Math.max(this.#appliedUntil, kept.applied_until);
  }

  async #syncOnce(): Promise<void> {
    this.#loadApplied();
    while (this.#pending.length > 0) {
      const purge = this.#pending[0]!;
      if ((await this.#addPurge(purge)) === undefined) return;
      this.#pending.shift();
    }
    const read = await this.#link.attempt(
      'operator',
      (redis) => redis.eval(READ_ALL, 2, this.#link.key('operator', 'purges'), this.#link.key('operator', 'servers')) as Promise<[string, string[], string[]]>,
      () => undefined,
      CONTROL_TIMEOUT_MS,
    );
    if (read === undefined || this.#stopped) return;
    const [now, purges, flat] = read;
    await this.#syncServers(flat);
    await this.#syncPurges(Number(now), purges);
    this.#synced();
  }

  /** Each server: the newest of Redis's entry and this box's stamp wins; a server Redis has nothing on gets ours. */
  async #syncServers(flat: readonly string[]): Promise<void> {
    const overrides = this.#host.overrides;
    const shared = new Map<string, SharedOverride>();
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const entry = parseOverride(flat[i + 1]!);
      if (entry !== undefined && parseField(flat[i]!) !== undefined) shared.set(flat[i]!, entry);
    }
    const local = new Set<string>();
    for (const [upstream, server] of overrides.list()) local.add(fieldOf(upstream, server));
    for (const [upstream, server] of overrides.stamped()) local.add(fieldOf(upstream, server));
    for (const field of new Set([...shared.keys(), ...local])) {
      const [upstream, server] = parseField(field)!;
      const entry = shared.get(field);
      const stamp = overrides.stamp(upstream, server);
      const override = overrides.get(upstream, server);
      switch (reconcileServer(stamp, override !== undefined, entry)) {
        case 'take':
          await this.#take(upstream, server, entry!);
          break;
        case 'push': {
          // Made here while Redis was away, or kept here from before the cluster (stamp 0): Redis takes it unless it
          // has a newer one by now (then that one is applied here).
          const stored = await this.#setServer(upstream, server, override, Math.max(stamp, 1));
          if (stored === undefined) return;
          if (stored.receivers < 0) await this.#take(upstream, server, stored.entry);
          else await overrides.set(upstream, server, override, stored.entry.at).catch(() => undefined);
          break;
        }
        case 'keep':
          break;
      }
    }
  }

  /** Applies the purges kept that this box has not (see the file comment), then moves `appliedUntil` to `now`. */
  async #syncPurges(now: number, texts: readonly string[]): Promise<void> {
    const purges = texts.flatMap((text) => parsePurge(text) ?? []);
    const { gap, apply, until } = missedPurges(purges, this.#appliedUntil, this.#seen, now, texts.length >= PURGE_CAP);
    if (gap) {
      this.#logger.warn({ applied_until: new Date(this.#appliedUntil).toISOString() }, 'cluster: this box was away longer than the purges kept in Redis reach back: every cache zone is emptied');
      await this.#host.purgeAll();
    }
    const byZone = new Map<string, PurgeTarget[]>();
    for (const purge of apply) {
      if (this.#plan(purge) === undefined) continue;
      let list = byZone.get(purge.zone);
      if (list === undefined) byZone.set(purge.zone, (list = []));
      list.push(purge.target);
    }
    for (const [name, targets] of byZone) {
      const removed = await this.#host.purge(name, targets);
      if (removed === undefined) continue;
      this.#logger.info({ zone: name, purges: targets.length, removed }, 'cluster: purges made while this box was away applied');
    }
    for (const [id, at] of this.#seen) if (at <= until) this.#seen.delete(id);
    if (until !== this.#appliedUntil) {
      this.#appliedUntil = until;
      this.#savePurges();
    }
  }

  /** The keys a purge takes in this box's config (undefined: its zone or route is not here; logged). */
  #plan(purge: SharedPurge): KeyMatch | undefined {
    try {
      return planPurge(this.#host.config(), purge.zone, purge.target);
    } catch (err) {
      this.#logger.warn({ zone: purge.zone, target: purge.target, box: purge.box, err: (err as Error).message }, 'cluster: a purge from another box does not apply to this config');
      return undefined;
    }
  }

  #savePurges(): void {
    const state = this.#host.state();
    if (state === undefined) return;
    const text = `${JSON.stringify({ applied_until: this.#appliedUntil })}\n`;
    this.#writing = this.#writing
      .catch(() => undefined)
      .then(() => state.write(PURGES_FILE, text))
      .catch((err: unknown) => this.#logger.error({ err }, `cluster: writing ${PURGES_FILE} failed`));
  }

  /** An entry from Redis applied here (stamped with its `at`). */
  async #take(upstream: string, server: string, entry: SharedOverride): Promise<void> {
    const override = overrideOf(entry);
    try {
      await this.#host.overrides.set(upstream, server, override, entry.at);
    } catch (err) {
      this.#logger.error({ err, upstream, server }, 'cluster: keeping another box\'s server action failed (applied in memory)');
    }
    this.#host.apply(upstream, server, override);
    this.#logger.info({ upstream, server, admin: entry.admin, weight: entry.weight, box: entry.box }, 'cluster: server action from another box applied');
  }

  /** Runs SET_SERVER; undefined: Redis did not answer. `at` undefined: a live action. */
  async #setServer(upstream: string, server: string, override: ServerOverride | undefined, at: number | undefined): Promise<{ entry: SharedOverride; receivers: number } | undefined> {
    const link = this.#link;
    const body = JSON.stringify(override ?? { admin: 'enabled' });
    const answer = await link.attempt(
      'operator',
      (redis) =>
        redis.eval(SET_SERVER, 2, link.key('operator', 'servers'), link.key('ch', OPERATOR_CHANNEL), fieldOf(upstream, server), body, at === undefined ? '' : String(at), link.name, link.id) as Promise<
          [string, number]
        >,
      () => undefined,
      CONTROL_TIMEOUT_MS,
    );
    if (answer === undefined) return undefined;
    const entry = parseOverride(answer[0]);
    return entry === undefined ? undefined : { entry, receivers: Number(answer[1]) };
  }

  /** Runs ADD_PURGE; resolves with the subscriptions reached (undefined: Redis did not answer). */
  async #addPurge(purge: { id: string; zone: string; target: PurgeTarget }): Promise<number | undefined> {
    const link = this.#link;
    const answer = await link.attempt(
      'operator',
      (redis) =>
        redis.eval(ADD_PURGE, 2, link.key('operator', 'purges'), link.key('ch', OPERATOR_CHANNEL), JSON.stringify({ ...purge, box: link.name }), String(PURGE_CAP), String(PURGE_KEEP_MS), link.id, link.name) as Promise<
          [string, number]
        >,
      () => undefined,
      CONTROL_TIMEOUT_MS,
    );
    if (answer === undefined) return undefined;
    const stored = parsePurge(answer[0]);
    if (stored !== undefined) this.#seen.set(stored.id, stored.at);
    return Number(answer[1]);
  }

  /** A message from another box (applied once the box is open, in the order heard). */
  #heard(message: ClusterMessage): void {
    void this.#opened.then(() => this.#handle(message));
  }

  #handle(message: ClusterMessage): void {
    if (this.#stopped) return;
    switch (message.kind) {
      case 'server': {
        const place = typeof message.field === 'string' ? parseField(message.field) : undefined;
        const entry = typeof message.entry === 'object' && message.entry !== null ? parseOverride(JSON.stringify(message.entry)) : undefined;
        if (place === undefined || entry === undefined) return;
        if (entry.at <= this.#host.overrides.stamp(place[0], place[1])) return;
        void this.#take(place[0], place[1], entry);
        return;
      }
      case 'purge': {
        const purge = parsePurge(message);
        if (purge === undefined || purge.at <= this.#appliedUntil || this.#seen.has(purge.id)) return;
        this.#seen.set(purge.id, purge.at);
        if (this.#plan(purge) === undefined) return;
        void this.#host.purge(purge.zone, [purge.target]).then(
          (removed) => void (removed !== undefined && this.#logger.info({ zone: purge.zone, target: purge.target, box: purge.box, removed }, 'cluster: purge from another box applied')),
          (err: unknown) => this.#logger.warn({ err, zone: purge.zone }, 'cluster: a purge from another box failed'),
        );
        return;
      }
      case 'invalidate': {
        const { zone: name, how, value } = message;
        if (typeof name !== 'string' || typeof value !== 'string' || (how !== 'key' && how !== 'prefix')) return;
        void this.#host.invalidate(name, how, value).catch((err: unknown) => this.#logger.warn({ err, zone: name }, 'cluster: an invalidation from another box failed'));
        return;
      }
      default:
        return;
    }
  }
}
