/**
 * A cache zone's shared tier (docs/cluster.md, "A shared cache tier"): the zone's answers in the cluster's Redis,
 * behind each box's memory and disk, so that the app servers see one request per object per freshness lifetime,
 * not one per box.
 *
 * - **Entries.** One Redis hash per cache key (`PREFIX:cache:ZONE:e:KEY`), one field per Vary variant (its
 *   secondary key), each value binary-safe: a 4-byte length, the response's metadata as JSON, then the body. The
 *   hash expires (PX) at the end of the longest usable life of its variants: freshness left plus the stale windows
 *   the zone's rules allow (`usableFor`); a variant past its own end is skipped when read.
 * - **One fetch per key for the cluster.** A box about to fetch a key takes the key's lock (`SET NX PX`, the
 *   zone's `lock` TTL: a box that dies while holding it frees it by expiry). The others wait for the holder's
 *   answer: a `filled` message on the zone's channel (or a `released` one when it stored nothing), else short
 *   polls of the lock, bounded by the same TTL; then they read the entry, or fetch themselves.
 * - **Invalidations** (unsafe methods, Location / Content-Location, purges through the zone) delete the entry and
 *   its lock (a fetch in flight then does not write over the invalidation), and are published so that every other
 *   box drops the key from its memory and disk tiers. The message is published *before* the delete, on the same
 *   connection: when the delete's answer is back, Redis has handed the message to every box's subscriber socket,
 *   and the box that invalidated answers its client only after that (see `ProxyCache`).
 * - **Redis away.** Every call goes through `ClusterLink.attempt('cache', …)` with the cluster's deadline: a read
 *   that fails is a miss, a lock that cannot be taken means "fetch alone", a write or delete that fails is dropped.
 *   No request fails for it.
 */
import { randomBytes } from 'node:crypto';
import { validateHeaderName, validateHeaderValue } from 'node:http';
import type { ClusterLink, ClusterMessage } from '../cluster/link.js';
import type { EntryFacts } from './rules.js';
import type { StoredResponse } from './types.js';

/** A zone's `shared` settings. */
export interface SharedSettings {
  /** Larger answers are kept on the box only (bytes of body). */
  maxObjectSize: number;
  /** The lock's TTL, and how long the other boxes wait for its holder's answer (ms). */
  lockMs: number;
}

/** How often a box waiting for another's fill looks at the lock, when no message came (ms). */
const POLL_MS = 100;
/** Deadline of a write of an entry (not on a client's path: a large body may take longer than a read's deadline). */
const WRITE_TIMEOUT_MS = 1000;
/** Deadline of a purge by prefix or predicate (a SCAN of the zone's keys: an operator's call, not a client's). */
const SCAN_TIMEOUT_MS = 5000;
/** SCAN rounds of a purge at most (each up to 500 keys). */
const SCAN_ROUNDS = 10_000;

/**
 * Variants of one key kept in Redis at most. Every miss reads them all (HGETALL), and the variants a `Vary` makes
 * are the clients' to choose (a `Vary: User-Agent`): unbounded, 300 variants of 60 KB made every miss read 20 MB.
 * A new variant past this many starts the key afresh.
 */
export const MAX_SHARED_VARIANTS = 32;

/**
 * Writes a variant unless its fetch's lock was taken from it (an invalidation deleted it); then frees the lock. A
 * new variant of a key that has `ARGV[5]` already replaces them all.
 */
const PUT_SCRIPT = `
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('DEL', KEYS[2]) end
return 1`;

/** Frees a lock if this box still holds it. */
const RELEASE_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/** What a box waiting for another's fetch learnt. */
type WaitOutcome = 'filled' | 'released' | 'freed' | 'timeout';

/** How the zone is told of another box's invalidation. */
export type RemotePurge = (kind: 'key' | 'prefix', value: string) => void;

/**
 * How long after its response arrived an answer is of use in a shared tier (ms from `facts.responseTime`): its
 * freshness left then, plus the longest stale window the rules allow it (none for must-revalidate,
 * proxy-revalidate, s-maxage, no-cache). `staleWindow`: the route's configured stale-if-error and
 * stale_if_unreachable, the longer one.
 */
export function usableFor(facts: EntryFacts, staleWindow: number): number {
  const fresh = facts.lifetime - facts.initialAge;
  if (facts.neverStale || facts.cc.noCache !== false) return fresh;
  const own = Math.max(facts.cc.staleWhileRevalidate ?? 0, facts.cc.staleIfError ?? 0) * 1000;
  return fresh + Math.max(own, staleWindow);
}

/** Encodes a stored variant as one binary-safe value (length of the metadata, the metadata as JSON, the body). */
export function encodeEntry(entry: StoredResponse, until: number): Buffer {
  const meta = Buffer.from(JSON.stringify({ s: entry.status, h: entry.headers, q: entry.requestTime, r: entry.responseTime, u: until }), 'utf8');
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(meta.length, 0);
  return Buffer.concat([head, meta, entry.body]);
}

/** Decodes a value `encodeEntry` made; `undefined` when it is not one, or is past its usable end. */
export function decodeEntry(key: string, varyKey: string, value: Buffer, now: number): StoredResponse | undefined {
  if (value.length < 4) return undefined;
  const length = value.readUInt32BE(0);
  if (4 + length > value.length) return undefined;
  try {
    const meta = JSON.parse(value.subarray(4, 4 + length).toString('utf8')) as { s: number; h: string[]; q: number; r: number; u: number };
    // Checked as Node's response writer checks them: a value Portico did not write (corrupt, hand-made) is a miss,
    // not a 500 for every request of the key (a status or header Node refuses throws when the hit is served).
    if (!Number.isInteger(meta.s) || meta.s < 100 || meta.s > 999 || !Array.isArray(meta.h) || meta.h.length % 2 !== 0) return undefined;
    for (let i = 0; i < meta.h.length; i += 2) {
      const [name, field] = [meta.h[i], meta.h[i + 1]];
      if (typeof name !== 'string' || typeof field !== 'string') return undefined;
      validateHeaderName(name);
      validateHeaderValue(name, field);
    }
    if (!Number.isFinite(meta.q) || !Number.isFinite(meta.r)) return undefined;
    if (typeof meta.u !== 'number' || meta.u <= now) return undefined;
    // A copy: the value may be a slice of the client's read buffer, which would stay alive (and uncounted) with it.
    return { key, varyKey, status: meta.s, headers: meta.h, body: Buffer.from(value.subarray(4 + length)), requestTime: meta.q, responseTime: meta.r };
  } catch {
    return undefined;
  }
}

/** A glob pattern matching the text as it is (SCAN MATCH). */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/** One zone's tier in Redis (see the file comment). */
export class SharedTier {
  readonly settings: SharedSettings;
  readonly #zone: string;
  readonly #link: ClusterLink;
  readonly #channel: string;
  /** The locks this box holds: key → its token. */
  readonly #held = new Map<string, string>();
  /** One wait per key at a time, shared by this box's requests for it. */
  readonly #waits = new Map<string, { promise: Promise<WaitOutcome>; settle: (outcome: WaitOutcome) => void }>();
  #unsubscribe: (() => void) | undefined;
  /** Entries written, reads that found one, and objects kept on the box for their size: for tests and status. */
  readonly counts = { writes: 0, hits: 0, tooLarge: 0 };

  constructor(zone: string, link: ClusterLink, settings: SharedSettings) {
    this.#zone = zone;
    this.#link = link;
    this.settings = settings;
    this.#channel = `cache:${zone}`;
  }

  /** Listens for the other boxes' fills and invalidations; `purged` drops a key (or prefix) from the box's tiers. */
  start(purged: RemotePurge): void {
    if (this.#unsubscribe !== undefined) return;
    this.#unsubscribe = this.#link.subscribe(this.#channel, (message) => this.#heard(message, purged));
  }

  /** Stops listening; waits in progress end (their requests fetch alone). */
  stop(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    for (const wait of [...this.#waits.values()]) wait.settle('released');
  }

  #entryKey(key: string): string {
    return this.#link.key('cache', this.#zone, 'e', key);
  }

  #lockKey(key: string): string {
    return this.#link.key('cache', this.#zone, 'lock', key);
  }

  /** Every usable variant of a key in Redis (none when Redis is away). */
  async get(key: string): Promise<StoredResponse[]> {
    const values = await this.#link.attempt('cache', (redis) => redis.hgetallBuffer(this.#entryKey(key)), () => ({}) as Record<string, Buffer>);
    return this.#decode(key, values);
  }

  /** The usable variants of a hash's values. */
  #decode(key: string, values: Record<string, Buffer>): StoredResponse[] {
    const now = Date.now();
    const out: StoredResponse[] = [];
    for (const [varyKey, value] of Object.entries(values)) {
      const entry = decodeEntry(key, varyKey, value, now);
      if (entry !== undefined) out.push(entry);
    }
    if (out.length > 0) this.counts.hits++;
    return out;
  }

  /**
   * Writes a variant stored on this box, usable for `usableMs` more: when it fits `max_object_size`, and when this
   * box holds the key's lock, only if it still does (then frees it and tells the waiting boxes). Fire and forget.
   */
  put(entry: StoredResponse, usableMs: number): void {
    const token = this.#held.get(entry.key);
    this.#held.delete(entry.key);
    if (entry.body.length > this.settings.maxObjectSize || usableMs <= 0) {
      if (entry.body.length > this.settings.maxObjectSize) this.counts.tooLarge++;
      if (token !== undefined) this.#free(entry.key, token);
      return;
    }
    const px = Math.ceil(usableMs);
    const value = encodeEntry(entry, Date.now() + px);
    void this.#link
      .attempt(
        'cache',
        (redis) => redis.eval(PUT_SCRIPT, 2, this.#entryKey(entry.key), this.#lockKey(entry.key), entry.varyKey, value, String(px), token ?? '', String(MAX_SHARED_VARIANTS)) as Promise<number>,
        () => -1,
        Math.max(WRITE_TIMEOUT_MS, this.#link.settings.timeoutMs),
      )
      .then((written) => {
        if (written === 1) this.counts.writes++;
        if (token === undefined) return;
        // Written: the waiting boxes read it. Not (the lock was taken by an invalidation, or Redis is away): they fetch.
        const outcome: WaitOutcome = written === 1 ? 'filled' : 'released';
        this.#link.publish(this.#channel, { op: outcome, key: entry.key });
        this.#waits.get(entry.key)?.settle(outcome);
      });
  }

  /**
   * Before this box fetches `key` from the app: takes the key's cluster-wide lock ('lead': fetch, and `put` or
   * `release` frees it), or waits for the box holding it and returns what it stored (the caller serves it when
   * `usable` says so). 'alone': fetch without the lock (Redis away, the holder stored nothing, the wait ran out).
   */
  async claim(key: string, usable: (entries: StoredResponse[]) => boolean): Promise<'lead' | 'alone' | StoredResponse[]> {
    const deadline = Date.now() + this.settings.lockMs;
    // Bounded: each round waits for a holder that then went away (its lock expired) before trying again.
    for (let round = 0; round < 8 && Date.now() < deadline; round++) {
      const token = randomBytes(9).toString('base64');
      // The lock, and the entry read in the same round trip: another box may have filled the key between this
      // box's lookup and the lock (then its answer serves, and the lock is given back).
      const taken = await this.#link.attempt(
        'cache',
        async (redis) => {
          const replies = await redis.multi().set(this.#lockKey(key), token, 'PX', this.settings.lockMs, 'NX').hgetallBuffer(this.#entryKey(key)).exec();
          if (replies === null) throw new Error('the lock transaction failed');
          // Redis's own error (OOM at maxmemory...) as it is: Redis answered, the link is not down for it.
          const failed = replies.find(([err]) => err !== null)?.[0];
          if (failed !== undefined && failed !== null) throw failed;
          return { ok: replies[0]![1] === 'OK', values: replies[1]![1] as Record<string, Buffer> };
        },
        () => undefined,
      );
      if (taken === undefined) return 'alone';
      if (taken.ok) {
        this.#held.set(key, token);
        const entries = this.#decode(key, taken.values);
        if (entries.length > 0 && usable(entries)) {
          this.release(key, false);
          this.#waits.get(key)?.settle('freed');
          return entries;
        }
        return 'lead';
      }
      const outcome = await this.#wait(key, deadline);
      if (outcome === 'released' || outcome === 'timeout') return 'alone';
      const entries = await this.get(key);
      if (entries.length > 0) return usable(entries) ? entries : 'alone';
      // 'freed' with nothing stored: the holder died (its lock expired): take the lock in turn.
    }
    return 'alone';
  }

  /** This box's fetch of `key` ended without `put` (not storable, failed): frees the lock and tells the waiters. */
  release(key: string, tell = true): void {
    const token = this.#held.get(key);
    if (token === undefined) return;
    this.#held.delete(key);
    this.#free(key, token, tell);
  }

  #free(key: string, token: string, tell = true): void {
    if (tell) {
      this.#link.publish(this.#channel, { op: 'released', key });
      this.#waits.get(key)?.settle('released');
    }
    void this.#link.attempt('cache', (redis) => redis.eval(RELEASE_SCRIPT, 1, this.#lockKey(key), token) as Promise<number>, () => 0);
  }

  /**
   * Waits (one wait per key on this box) until the holder of `key`'s lock tells what it did, the lock is gone
   * (polled every POLL_MS, in case a message was lost), or `deadline`.
   */
  #wait(key: string, deadline: number): Promise<WaitOutcome> {
    const existing = this.#waits.get(key);
    if (existing !== undefined) return existing.promise;
    let settle!: (outcome: WaitOutcome) => void;
    const promise = new Promise<WaitOutcome>((resolve) => (settle = resolve));
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const wait = {
      promise,
      settle: (outcome: WaitOutcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (this.#waits.get(key) === wait) this.#waits.delete(key);
        settle(outcome);
      },
    };
    this.#waits.set(key, wait);
    const poll = () => {
      if (done) return;
      if (Date.now() >= deadline) return wait.settle('timeout');
      void this.#link.attempt('cache', (redis) => redis.exists(this.#lockKey(key)), () => -1).then((held) => {
        if (held === -1) wait.settle('released');
        else if (held === 0) wait.settle('freed');
        else if (!done) timer = setTimeout(poll, Math.min(POLL_MS, Math.max(1, deadline - Date.now())));
      });
    };
    timer = setTimeout(poll, Math.min(POLL_MS, Math.max(1, deadline - Date.now())));
    return promise;
  }

  /**
   * Deletes `key`'s entry and lock from Redis and tells every other box to drop it (see the file comment for the
   * order); resolves when Redis has answered (or its deadline passed).
   */
  async invalidate(key: string): Promise<void> {
    this.#link.publish(this.#channel, { op: 'purge', kind: 'key', value: key });
    // A fetch of this box's in flight for the key no longer holds the lock: its `put` writes nothing.
    if (this.#held.has(key)) this.#held.set(key, 'invalidated');
    await this.#link.attempt('cache', (redis) => redis.del(this.#entryKey(key), this.#lockKey(key)), () => 0);
  }

  /** Deletes every entry whose key starts with `prefix` and tells every other box to drop them. */
  async invalidatePrefix(prefix: string): Promise<number> {
    this.#link.publish(this.#channel, { op: 'purge', kind: 'prefix', value: prefix });
    return this.deleteMatching(() => true, prefix);
  }

  /**
   * Deletes every entry whose key `match` accepts (a SCAN of the zone's keys, under `prefix` when given); not told
   * to the other boxes (a purge by URL reaches each box through the operator's actions, and each works its keys
   * out itself). Returns how many keys were deleted.
   */
  async deleteMatching(match: (key: string) => boolean, prefix = ''): Promise<number> {
    const base = this.#entryKey('');
    const pattern = `${globEscape(base + prefix)}*`;
    return this.#link.attempt(
      'cache',
      async (redis) => {
        let cursor = '0';
        let deleted = 0;
        for (let round = 0; round < SCAN_ROUNDS; round++) {
          const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
          const doomed = keys.filter((name) => match(name.slice(base.length)));
          if (doomed.length > 0) deleted += await redis.del(...doomed);
          cursor = next;
          if (cursor === '0') break;
        }
        return deleted;
      },
      () => 0,
      SCAN_TIMEOUT_MS,
    );
  }

  #heard(message: ClusterMessage, purged: RemotePurge): void {
    const op = message.op;
    if (op === 'purge' && (message.kind === 'key' || message.kind === 'prefix') && typeof message.value === 'string') {
      purged(message.kind, message.value);
      return;
    }
    if ((op === 'filled' || op === 'released') && typeof message.key === 'string') this.#waits.get(message.key)?.settle(op);
  }
}
