/**
 * One process's link to the cluster's Redis (docs/cluster.md): a command connection and a subscriber connection,
 * every key under the cluster's prefix, and the one rule every caller follows: a call to Redis has a deadline and
 * a local fallback. While Redis is away (connection refused or lost, or three deadlines missed one after another)
 * the link is **down**: calls go straight to their fallback without waiting (a request never pays a timeout per
 * call; one call at a time probes Redis), the outage is logged once (and once more when it ends), and every fallback
 * is counted by feature. One missed deadline is no outage (a large value, a pause of Redis): until a call succeeds
 * again, one call at a time tries Redis and the others fall back at once, without a log line or a re-sync. When
 * Redis answers again the link is **up**, and the listeners of `onUp` re-sync what they keep there. A call Redis
 * answers with an error (OOM, WRONGTYPE) falls back alone: Redis is reachable, the link stays up.
 *
 * Scope: process. Each process (a single `portico run`, the primary and each worker of `workers: N`) has its own:
 * a worker's carries its data plane's calls (rate limits, the shared cache tier, http-01 token lookups), the
 * primary's the box's control plane (heartbeat, operator's actions, ACME).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { Redis, ReplyError, type RedisOptions } from 'ioredis';

/** How a link is made: from the `cluster` section (see config/schema.ts). */
export interface ClusterSettings {
  /** `redis://` or `rediss://` URL; with `sentinels`, its host is the master's name in Sentinel. */
  redis: string;
  /** Redis Sentinel's `host:port` addresses, when Redis is found through Sentinel. */
  sentinels?: readonly string[] | undefined;
  /** Every key and channel starts with it (`portico:shop`): two clusters may share one Redis. */
  prefix: string;
  /** This box's name (unique in the cluster). */
  name: string;
  /** The deadline of a call on a request's path, ms. */
  timeoutMs: number;
  /** The boxes the cluster is meant to have (`cluster.boxes`): the least count a rate limit's local share assumes. */
  expectedBoxes?: number;
  /**
   * The processes of this box that limit on their own while Redis is away (`workers: N`: each worker's link; default
   * 1): a cluster-wide rate limit's local share is divided among them too.
   */
  processes?: number;
}

/** What a feature gives up when Redis does not answer in time: counted per feature name. */
export type Feature = string;

/** A message on a cluster channel: JSON, with the sending process's id. */
export interface ClusterMessage {
  /** The sending link's id (`ClusterLink.id`). */
  from: string;
  /** The sending box's name. */
  box: string;
  [field: string]: unknown;
}

/** How long a link stays down after a failed call before it tries Redis again (the connection may still be open). */
const RETRY_AFTER_MS = 1000;
/** Deadlines missed in a row (no call answered between them) that make an outage. */
const MISSES_FOR_OUTAGE = 3;

/** A call that had no answer within its deadline. */
class MissedDeadline extends Error {}
/**
 * How long after `start` a link that is still not ready counts as an outage (logged, /status): a Redis that accepts
 * the connection but never answers (hung) raises no error, and would otherwise go unreported.
 */
const CONNECT_WAIT_MS = 3000;
/** How long `stop` waits for Redis to answer QUIT (a hung Redis never does) before it drops the connections. */
const QUIT_TIMEOUT_MS = 1000;

/** The process's Redis link (see the file comment). */
export class ClusterLink {
  readonly settings: ClusterSettings;
  /** This process's id in messages (random per process start): a box's processes tell their own messages apart. */
  readonly id = randomBytes(8).toString('hex');
  readonly #logger: Logger;
  readonly #redis: Redis;
  readonly #subscriber: Redis;
  /** Until when calls go to their fallback without trying (a failed call, a dropped connection). */
  #downUntil = 0;
  /** Whether an outage is under way (logged at its start and end). */
  #outage: { since: number; feature: Feature } | undefined;
  #outages = 0;
  readonly #fallbacks = new Map<Feature, number>();
  readonly #upListeners = new Set<() => void>();
  readonly #handlers = new Map<string, Set<(message: ClusterMessage) => void>>();
  #stopped = false;
  #boxes = 1;
  readonly #boxesListeners = new Set<(count: number) => void>();
  /** Features whose last call Redis answered with an error (logged once until one succeeds). */
  readonly #refusing = new Set<Feature>();
  /** Reports a link not ready `CONNECT_WAIT_MS` after `start` (see there). */
  #connectWait: NodeJS.Timeout | undefined;
  /** Whether a call is trying Redis during an outage or after a missed deadline (see `attempt`). */
  #probing = false;
  /** Deadlines missed since the last call Redis answered (see `MISSES_FOR_OUTAGE`). */
  #missed = 0;
  /**
   * Counts the misses counted in `#missed`: a call counts its miss only if none was counted since it began. The
   * calls in flight together when Redis slows (queued behind one large value on the one connection) miss together,
   * and are one miss, not an outage.
   */
  #missEpoch = 0;

  constructor(settings: ClusterSettings, logger: Logger) {
    this.settings = settings;
    this.#logger = logger;
    const options: RedisOptions = {
      lazyConnect: true,
      // A command sent while disconnected fails at once (the caller falls back) instead of queueing.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 2000,
      // Reconnects forever, at most every 2 s: a box outlives any Redis outage.
      retryStrategy: (times) => Math.min(100 * times, 2000),
    };
    this.#redis = connectRedis(settings, options);
    this.#subscriber = connectRedis(settings, { ...options, enableOfflineQueue: true, autoResubscribe: true });
    this.#redis.on('error', (err: Error) => this.#failed('connection', err));
    this.#subscriber.on('error', () => {});
    this.#redis.on('ready', () => this.#ready());
    this.#redis.on('close', () => {
      if (!this.#stopped) this.#failed('connection', new Error('connection closed'));
    });
    // Subscriptions made while Redis was away were dropped with the offline queue (maxRetriesPerRequest 0), and
    // autoResubscribe only renews those that were made: every channel is subscribed again once the connection is ready.
    this.#subscriber.on('ready', () => {
      for (const name of this.#handlers.keys()) this.#subscriber.subscribe(name).catch(() => {});
    });
    this.#subscriber.on('messageBuffer', (channel: Buffer, payload: Buffer) => this.#deliver(channel.toString(), payload));
  }

  /** This box's name. */
  get name(): string {
    return this.settings.name;
  }

  /**
   * Whether Redis is reachable: the connection is ready and no outage is under way (for /status and the
   * `portico_cluster_redis_up` metric, which must not read 1 between two failed retries of one outage).
   */
  get up(): boolean {
    return this.#redis.status === 'ready' && this.#outage === undefined;
  }

  /** Whether a call may try Redis now: connected, and past the pause after the last failure. */
  #mayTry(): boolean {
    return this.#redis.status === 'ready' && Date.now() >= this.#downUntil;
  }

  /**
   * How many boxes the cluster had at the last heartbeat this box read (this one included; 1 until one was read,
   * and kept through an outage): a rate limit's local share while Redis is away is its rate / boxes.
   */
  get boxes(): number {
    return this.#boxes;
  }

  /**
   * Set by the heartbeat when it reads the cluster's boxes (at least 1); a worker's, by its primary (which holds
   * the box's heartbeat).
   */
  set boxes(count: number) {
    const next = Math.max(1, Math.floor(count));
    if (next === this.#boxes) return;
    this.#boxes = next;
    for (const listener of [...this.#boxesListeners]) listener(next);
  }

  /** Calls `listener` with the count each time `boxes` changes (a primary passes it on to its workers). Returns the unsubscribe. */
  onBoxes(listener: (count: number) => void): () => void {
    this.#boxesListeners.add(listener);
    return () => this.#boxesListeners.delete(listener);
  }

  /** The command connection, for calls `attempt` wraps (scripts, pipelines). */
  get redis(): Redis {
    return this.#redis;
  }

  /** A key under the cluster's prefix: `key('box', name)` → `portico:shop:box:NAME`. */
  key(...parts: string[]): string {
    return [this.settings.prefix, ...parts].join(':');
  }

  /** Connects both connections in the background: a box starts (on its fallbacks) whether Redis is there or not. */
  start(): void {
    this.#redis.connect().catch(() => {});
    this.#subscriber.connect().catch(() => {});
    this.#connectWait = setTimeout(() => {
      if (this.#redis.status !== 'ready') this.#failed('connection', new Error(`no answer from Redis within ${CONNECT_WAIT_MS} ms of connecting`));
    }, CONNECT_WAIT_MS);
    this.#connectWait.unref();
  }

  /**
   * Runs `call` against Redis within `timeoutMs` (default: the settings' deadline); when the link is down, the call
   * fails or the deadline passes, resolves with `fallback()` instead (counted for `feature`; the outage logged once).
   */
  async attempt<T>(feature: Feature, call: (redis: Redis) => Promise<T>, fallback: () => T, timeoutMs = this.settings.timeoutMs): Promise<T> {
    if (!this.#mayTry()) return this.#fallBack(feature, fallback);
    // During an outage one call at a time tries Redis (the probe); the others fall back at once. A hung Redis
    // (connections open, no answers) otherwise made every call of the moment wait its whole deadline, and left its
    // command queued in the client for as long as the hang lasted (memory that grew with the traffic).
    const probe = this.#outage !== undefined || this.#missed > 0;
    const epoch = this.#missEpoch;
    // Only a call begun during an outage ends it by succeeding: one begun before (a read still in flight on a
    // master just demoted) says nothing of the Redis the link is going to.
    const outage = this.#outage === undefined ? -1 : this.#outages;
    if (probe && this.#probing) return this.#fallBack(feature, fallback);
    if (probe) this.#probing = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new MissedDeadline(`no answer within ${timeoutMs} ms`)), timeoutMs);
      });
      const answer = await Promise.race([call(this.#redis), deadline]);
      this.#missed = 0;
      if (this.#outage !== undefined && outage === this.#outages) this.#ready();
      if (this.#refusing.size > 0) this.#refusing.delete(feature);
      return answer;
    } catch (err) {
      // Redis answered with an error (OOM at maxmemory, WRONGTYPE, a script's error on a value that is not ours): it
      // is reachable, and this call alone falls back. Taking it for an outage made the link flap down and up, every
      // feature on its fallback for a second each time, and every re-sync run at each "reachable again". But a
      // master Sentinel has demoted (READONLY) is no Redis to write to: an outage, until the link finds the new one.
      if (err instanceof ReplyError && !(this.settings.sentinels !== undefined && isReadOnly(err as Error))) {
        this.#missed = 0;
        this.#refused(feature, err as Error);
      } else if (err instanceof MissedDeadline && this.#outage === undefined) this.#slow(feature, err, epoch);
      else this.#failed(feature, err as Error);
      return this.#fallBack(feature, fallback);
    } finally {
      clearTimeout(timer);
      if (probe) this.#probing = false;
    }
  }

  /** Publishes `message` on the cluster channel `channel` (fire and forget: a lost message is re-synced by `onUp`). */
  publish(channel: string, message: Record<string, unknown>): void {
    const payload = JSON.stringify({ ...message, from: this.id, box: this.name });
    void this.attempt('publish', (redis) => redis.publish(this.key('ch', channel), payload), () => 0);
  }

  /**
   * Calls `handler` with every message on `channel` from other processes (a process's own messages are not
   * delivered to it). Returns the unsubscribe.
   */
  subscribe(channel: string, handler: (message: ClusterMessage) => void): () => void {
    const name = this.key('ch', channel);
    let set = this.#handlers.get(name);
    if (set === undefined) {
      set = new Set();
      this.#handlers.set(name, set);
      this.#subscriber.subscribe(name).catch(() => {});
    }
    set.add(handler);
    return () => {
      set.delete(handler);
      if (set.size === 0) {
        this.#handlers.delete(name);
        this.#subscriber.unsubscribe(name).catch(() => {});
      }
    };
  }

  /** Calls `listener` whenever Redis becomes reachable (the first time and after each outage): re-sync there. */
  onUp(listener: () => void): () => void {
    this.#upListeners.add(listener);
    return () => this.#upListeners.delete(listener);
  }

  /** The link's figures for /status and /metrics. */
  stats(): { up: boolean; outages: number; down_since: number | null; fallbacks: Record<Feature, number> } {
    return { up: this.up, outages: this.#outages, down_since: this.#outage?.since ?? null, fallbacks: Object.fromEntries(this.#fallbacks) };
  }

  /**
   * Closes both connections: politely (QUIT) when Redis answers within `QUIT_TIMEOUT_MS`, else by dropping them (a
   * Redis that hangs, or a subscriber's QUIT queued behind commands for a Redis never reached, must not hold a box
   * that is stopping).
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#connectWait);
    this.#upListeners.clear();
    await Promise.all([closeWithin(this.#redis, QUIT_TIMEOUT_MS), closeWithin(this.#subscriber, QUIT_TIMEOUT_MS)]);
  }

  #fallBack<T>(feature: Feature, fallback: () => T): T {
    this.#fallbacks.set(feature, (this.#fallbacks.get(feature) ?? 0) + 1);
    return fallback();
  }

  /**
   * A call begun at `epoch` missed its deadline: counted unless another miss was counted since it began (see
   * `#missEpoch`); the third counted in a row is an outage. Short of that, said at debug level; the calls after it
   * probe (see `attempt`).
   */
  #slow(feature: Feature, err: Error, epoch: number): void {
    if (epoch !== this.#missEpoch) return;
    this.#missEpoch++;
    if (++this.#missed >= MISSES_FOR_OUTAGE) return this.#failed(feature, err);
    if (!this.#stopped) this.#logger.debug({ feature, err: err.message, missed: this.#missed }, 'cluster: a Redis call missed its deadline');
  }

  /** A call Redis answered with an error: logged once per feature until a call of that feature succeeds. */
  #refused(feature: Feature, err: Error): void {
    if (this.#stopped || this.#refusing.has(feature)) return;
    this.#refusing.add(feature);
    this.#logger.warn({ redis: describeRedis(this.settings), feature, err: err.message }, `cluster: Redis refused a ${feature} call: it took its local fallback (said once until one succeeds)`);
  }

  #failed(feature: Feature, err: Error): void {
    if (this.#stopped) return;
    this.#downUntil = Date.now() + RETRY_AFTER_MS;
    if (this.#outage !== undefined) return;
    this.#outage = { since: Date.now(), feature };
    this.#outages++;
    this.#logger.warn({ redis: describeRedis(this.settings), feature, err: err.message }, 'cluster: Redis unreachable: each box runs on its local fallbacks until it is back');
  }

  #ready(): void {
    this.#downUntil = 0;
    this.#missed = 0;
    const outage = this.#outage;
    this.#outage = undefined;
    if (outage !== undefined) {
      this.#logger.warn({ redis: describeRedis(this.settings), down_ms: Date.now() - outage.since }, 'cluster: Redis reachable again: re-syncing');
    }
    for (const listener of [...this.#upListeners]) {
      try {
        listener();
      } catch (err) {
        this.#logger.error({ err }, 'cluster: a re-sync failed');
      }
    }
  }

  #deliver(channel: string, payload: Buffer): void {
    const handlers = this.#handlers.get(channel);
    if (handlers === undefined) return;
    let message: ClusterMessage;
    try {
      message = JSON.parse(payload.toString('utf8')) as ClusterMessage;
    } catch {
      return;
    }
    // Anything but an object is no message of ours (`null` read as one threw in the client's event: every box died).
    if (typeof message !== 'object' || message === null || Array.isArray(message) || message.from === this.id) return;
    for (const handler of [...handlers]) {
      try {
        handler(message);
      } catch (err) {
        this.#logger.error({ err, channel }, 'cluster: a message handler failed');
      }
    }
  }
}

/** QUIT, or a disconnect when it fails or has no answer within `timeoutMs`. */
async function closeWithin(client: Redis, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)));
  try {
    const outcome = await Promise.race([client.quit().catch(() => 'failed' as const), late]);
    if (outcome !== 'OK') client.disconnect();
  } finally {
    clearTimeout(timer);
  }
}

/** The Redis URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'redis';
  }
}

/**
 * A client of the cluster's Redis: the URL's, or, with sentinels, the master Sentinel names (the URL's host), its
 * user, password and database from the URL (not `rediss://`: config/cluster.ts refuses it). After a failover the
 * client asks Sentinel again when its connection drops, and at once when Sentinel announces the new master
 * (`failoverDetector`).
 */
function connectRedis(settings: ClusterSettings, options: RedisOptions): Redis {
  if (settings.sentinels === undefined) return new Redis(settings.redis, options);
  const url = new URL(settings.redis);
  return new Redis({
    ...options,
    sentinels: settings.sentinels.map((address) => {
      const at = address.lastIndexOf(':');
      return { host: address.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(address.slice(at + 1)) };
    }),
    name: decodeURIComponent(url.hostname),
    role: 'master',
    failoverDetector: true,
    // A master demoted without the link hearing of it (Sentinel unreachable at the switch) answers writes READONLY:
    // the connection is made again, through Sentinel, to the master of the moment (the write itself falls back).
    reconnectOnError: isReadOnly,
    ...(url.username === '' ? {} : { username: decodeURIComponent(url.username) }),
    ...(url.password === '' ? {} : { password: decodeURIComponent(url.password) }),
    db: Number(url.pathname.slice(1) || 0),
  });
}

/**
 * Whether Redis refused a write as a replica: `READONLY You can't write against a read only replica.`, or inside
 * a script's error before Redis 7 (`ERR Error running script (call to f_…): … -READONLY …`).
 */
export function isReadOnly(err: Error): boolean {
  return err.message.includes('READONLY');
}

/** The Redis a link reaches, for its log lines: the URL without its password, and the sentinels if any. */
export function describeRedis(settings: ClusterSettings): string {
  const url = redactUrl(settings.redis);
  return settings.sentinels === undefined ? url : `${url} through the sentinels ${settings.sentinels.join(', ')}`;
}
