/**
 * ACME for a cluster (docs/cluster.md#certificates-and-acme), CertMagic's storage model on the cluster's Redis: the
 * boxes that share it share one ACME account, one certificate per site and its key, and the http-01 tokens of the
 * orders in progress. Private keys (the account's, each certificate's) are sealed (AES-256-GCM, a fresh nonce per
 * write, `cluster/sealed.ts`) under the Redis key they are written to; certificates are public and stored as PEM.
 *
 * One order per site for the whole cluster: a box orders only while it holds the site's lock (`SET NX PX lease`),
 * whose lease it renews (compare-and-extend) every third of it while the order runs and deletes when done
 * (compare-and-delete); a box that dies stops renewing, and another box takes the order once the lease has run out.
 * A certificate written to Redis is announced on the `acme` channel, and every box installs it.
 *
 * Redis keys, under the cluster's prefix: `acme:cert:<id>` (hash: cert, key sealed, not_after, serial, box),
 * `acme:account:<id>` (hash: key sealed, url), `acme:lock:<id>` (the holder: `box/process/nonce`), `acme:token:<token>`
 * (the key authorization, with a TTL). Every call goes through `ClusterLink.attempt`: while Redis is away the calls
 * answer `UNREACHABLE` and the managers order nothing (the state directory's copies keep serving).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { ClusterLink, ClusterMessage } from '../cluster/link.js';
import { deriveKey, seal, unseal } from '../cluster/sealed.js';
import type { Http01Challenges } from './challenges.js';

/** What a call answers when Redis did not (away, failing, past its deadline). */
export const UNREACHABLE: unique symbol = Symbol('redis unreachable');
type Unreachable = typeof UNREACHABLE;
/** The fallback of a call whose caller must know Redis did not answer. */
const unreachable = (): Unreachable => UNREACHABLE;

/** ACME's calls are on no request's path: they may wait this long for Redis (a request's lookups keep the link's deadline). */
const CONTROL_TIMEOUT_MS = 2000;
/** An http-01 token's life in Redis at most (an order whose box died never removes its tokens). */
const TOKEN_TTL_MS = 10 * 60_000;
/** The fallbacks of ACME's calls are counted under this feature; the challenge lookups under `acme_challenge`. */
const FEATURE = 'acme';
const CHANNEL = 'acme';
/** What an http-01 token may look like (RFC 8555 §8.3: base64url); anything else is not looked up. */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

/** Extends the lease when the lock is still the caller's (compare-and-extend). */
const EXTEND = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
/** Deletes the lock when it is still the caller's (compare-and-delete). */
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
/**
 * Writes a certificate unless the one stored lasts as long or longer (two boxes that both issued: the later one
 * stays). A `not_after` that is not a number is no certificate's: written over (comparing with it failed the script,
 * and every box then ordered and kept its own certificate).
 */
const WRITE_NEWER = `local kept = tonumber(redis.call('HGET', KEYS[1], 'not_after') or '')
if kept and kept >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'not_after', ARGV[1], 'cert', ARGV[2], 'key', ARGV[3], 'serial', ARGV[4], 'box', ARGV[5])
return 1`;

/** A certificate and its key (PEM) as stored in the cluster. */
export interface SharedCertificate {
  readonly cert: string;
  readonly key: string;
  /** The box that ordered it. */
  readonly box: string;
}

/** The lock on one site's order, held by this process: its lease is renewed until `release`. */
export class OrderLock {
  readonly #link: ClusterLink;
  readonly #key: string;
  readonly #token: string;
  readonly #leaseMs: number;
  readonly #logger: Logger;
  readonly #timer: NodeJS.Timeout;
  #released = false;
  /** Set when a renewal found the lock another's (this box was away past its lease): the order goes on, its result stored as any other. */
  lost = false;

  constructor(link: ClusterLink, key: string, token: string, leaseMs: number, logger: Logger) {
    this.#link = link;
    this.#key = key;
    this.#token = token;
    this.#leaseMs = leaseMs;
    this.#logger = logger;
    this.#timer = setInterval(() => void this.#renew(), Math.max(100, Math.floor(leaseMs / 3)));
    this.#timer.unref();
  }

  async #renew(): Promise<void> {
    if (this.#released || this.lost) return;
    const extended = await this.#link.attempt<number | Unreachable>(FEATURE, (redis) => redis.eval(EXTEND, 1, this.#key, this.#token, this.#leaseMs) as Promise<number>, unreachable, CONTROL_TIMEOUT_MS);
    if (extended !== 0 || this.#released) return;
    this.lost = true;
    clearInterval(this.#timer);
    this.#logger.warn({ lock: this.#key }, 'acme: the order lock was lost (its lease ran out); the order goes on, and the certificate that lasts longer is kept');
  }

  /** Stops renewing and deletes the lock when it is still this process's. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#timer);
    await this.#link.attempt(FEATURE, (redis) => redis.eval(RELEASE, 1, this.#key, this.#token) as Promise<number>, () => 0, CONTROL_TIMEOUT_MS);
  }
}

/**
 * No order now: another box holds the order's lock (`holder`, for `ttlMs` at most), or the cluster's last order
 * failed (`failed`: the box whose order failed), and every box holds back for `ttlMs`.
 */
export interface LockHeld {
  readonly holder: string;
  readonly ttlMs: number;
  readonly failed?: boolean;
}

/** The cluster's side of ACME for one process (see the file comment). */
export class AcmeCluster {
  /** The lease of an order's lock (`cluster.acme_lease`). */
  readonly leaseMs: number;
  readonly #link: ClusterLink;
  readonly #sealKey: Buffer;
  readonly #logger: Logger;
  readonly #watchers = new Map<string, Set<() => void>>();
  readonly #unsubscribe: () => void;
  readonly #offUp: () => void;
  #challenges: Http01Challenges | undefined;

  /** `secret`: the cluster's (`cluster.key`); private keys are sealed under a key derived from it. */
  constructor(link: ClusterLink, secret: string, leaseMs: number, logger: Logger) {
    this.#link = link;
    this.#sealKey = deriveKey(secret, 'sealed');
    this.leaseMs = leaseMs;
    this.#logger = logger;
    this.#unsubscribe = link.subscribe(CHANNEL, (message) => this.#heard(message));
    // Redis back (or reached for the first time): every manager compares what Redis has with what it installed.
    this.#offUp = link.onUp(() => {
      for (const set of this.#watchers.values()) for (const watcher of [...set]) watcher();
    });
  }

  /** Whether Redis answered the last call. */
  get up(): boolean {
    return this.#link.up;
  }

  /** Calls `watcher` when another box stored a certificate for `id`, and when Redis becomes reachable. Returns the unwatch. */
  watch(id: string, watcher: () => void): () => void {
    let set = this.#watchers.get(id);
    if (set === undefined) {
      set = new Set();
      this.#watchers.set(id, set);
    }
    set.add(watcher);
    return () => {
      set.delete(watcher);
      if (set.size === 0) this.#watchers.delete(id);
    };
  }

  /** The certificate stored for `id` (undefined: none). Throws when its key does not open (another cluster secret). */
  async readCertificate(id: string): Promise<SharedCertificate | undefined | Unreachable> {
    const key = this.#link.key('acme', 'cert', id);
    const fields = await this.#link.attempt<Record<string, string> | Unreachable>(FEATURE, (redis) => redis.hgetall(key), unreachable, CONTROL_TIMEOUT_MS);
    if (fields === UNREACHABLE) return UNREACHABLE;
    if (fields.cert === undefined || fields.key === undefined) return undefined;
    return { cert: fields.cert, key: this.#open(fields.key, key).toString(), box: fields.box ?? '' };
  }

  /**
   * Stores a certificate and its key (sealed) unless the one stored lasts as long or longer, and tells the other
   * boxes; false when it was not written (an older one, or Redis unreachable).
   */
  async writeCertificate(id: string, cert: string, keyPem: string, notAfter: number, serial: string): Promise<boolean> {
    const key = this.#link.key('acme', 'cert', id);
    const sealed = seal(this.#sealKey, keyPem, key);
    const written = await this.#link.attempt(
      FEATURE,
      (redis) => redis.eval(WRITE_NEWER, 1, key, String(notAfter), cert, sealed, serial, this.#link.name) as Promise<number>,
      () => 0,
      CONTROL_TIMEOUT_MS,
    );
    if (written !== 1) return false;
    this.#link.publish(CHANNEL, { type: 'certificate', id, serial });
    return true;
  }

  /** The account stored for `id`: its key and URL, each when known. Throws when the key does not open. */
  async readAccount(id: string): Promise<{ key?: Buffer; url?: string } | Unreachable> {
    const key = this.#link.key('acme', 'account', id);
    const fields = await this.#link.attempt<Array<string | null> | Unreachable>(FEATURE, (redis) => redis.hmget(key, 'key', 'url'), unreachable, CONTROL_TIMEOUT_MS);
    if (fields === UNREACHABLE) return UNREACHABLE;
    const [sealed, url] = fields;
    return { ...(sealed === null || sealed === undefined ? {} : { key: this.#open(sealed, key) }), ...(url === null || url === undefined ? {} : { url }) };
  }

  /**
   * Offers `accountKey` as account `id`'s key: stored when there is none yet; resolves with the key that is stored
   * (this one, or one another box stored first), so that every box signs as the same account.
   */
  async claimAccountKey(id: string, accountKey: Buffer): Promise<Buffer | Unreachable> {
    const key = this.#link.key('acme', 'account', id);
    const sealed = seal(this.#sealKey, accountKey, key);
    const kept = await this.#link.attempt<string | null | Unreachable>(
      FEATURE,
      async (redis) => {
        const replies = await redis.multi().hsetnx(key, 'key', sealed).hget(key, 'key').exec();
        return (replies?.[1]?.[1] as string | null | undefined) ?? null;
      },
      unreachable,
      CONTROL_TIMEOUT_MS,
    );
    if (kept === UNREACHABLE) return UNREACHABLE;
    if (kept === null) throw new Error('the account key was not stored in Redis');
    return this.#open(kept, key);
  }

  /** Stores the URL the CA gave account `id` (best effort: a box that misses it registers the same key again). */
  async saveAccountUrl(id: string, url: string): Promise<void> {
    await this.#link.attempt(FEATURE, (redis) => redis.hset(this.#link.key('acme', 'account', id), 'url', url), () => 0, CONTROL_TIMEOUT_MS);
  }

  /**
   * Takes the lock on `id`'s order for this process, or says who holds it, or that the cluster holds back after a
   * failed order (see `holdBack`).
   */
  async lock(id: string): Promise<OrderLock | LockHeld | Unreachable> {
    const key = this.#link.key('acme', 'lock', id);
    const retryKey = this.#link.key('acme', 'retry', id);
    const token = `${this.#link.name}/${this.#link.id}/${randomBytes(6).toString('hex')}`;
    const answer = await this.#link.attempt<LockHeld | 'taken' | Unreachable>(
      FEATURE,
      async (redis): Promise<LockHeld | 'taken'> => {
        const [failedBy, retryTtl] = await Promise.all([redis.get(retryKey), redis.pttl(retryKey)]);
        if (failedBy !== null && retryTtl > 0) return { holder: failedBy, ttlMs: retryTtl, failed: true };
        if ((await redis.set(key, token, 'PX', this.leaseMs, 'NX')) === 'OK') return 'taken';
        const [holder, ttl] = await Promise.all([redis.get(key), redis.pttl(key)]);
        return { holder: holder ?? '', ttlMs: ttl > 0 ? ttl : 0 };
      },
      unreachable,
      CONTROL_TIMEOUT_MS,
    );
    if (answer === UNREACHABLE) return UNREACHABLE;
    if (answer !== 'taken') return answer;
    return new OrderLock(this.#link, key, token, this.leaseMs, this.#logger);
  }

  /**
   * After a failed order: no box orders `id` for `delayMs` (the failing box's backoff), so that a CA that refuses
   * (down, rate-limited, failing validations) is asked once per backoff by the cluster, not once per box.
   */
  async holdBack(id: string, delayMs: number): Promise<void> {
    await this.#link.attempt(FEATURE, (redis) => redis.set(this.#link.key('acme', 'retry', id), this.#link.name, 'PX', Math.max(1, Math.round(delayMs))), () => null, CONTROL_TIMEOUT_MS);
  }

  /** Puts an http-01 token where every box finds it; false when Redis did not take it. */
  async setToken(token: string, keyAuthorization: string): Promise<boolean> {
    const done = await this.#link.attempt<string | null>(FEATURE, (redis) => redis.set(this.#link.key('acme', 'token', token), keyAuthorization, 'PX', TOKEN_TTL_MS), () => null, CONTROL_TIMEOUT_MS);
    return done === 'OK';
  }

  /** Removes an http-01 token (its order is done). */
  async deleteToken(token: string): Promise<void> {
    await this.#link.attempt(FEATURE, (redis) => redis.del(this.#link.key('acme', 'token', token)), () => 0, CONTROL_TIMEOUT_MS);
  }

  /**
   * Makes `challenges` look a token that is not pending here up in Redis (another box's order), under the link's
   * deadline for a request: the CA's validation may reach any box.
   */
  shareChallenges(challenges: Http01Challenges): void {
    this.#challenges = challenges;
    lookUpTokens(this.#link, challenges);
  }

  /** Stops listening to the other boxes (the link itself is the server's). */
  stop(): void {
    this.#unsubscribe();
    this.#offUp();
    this.#watchers.clear();
    this.#challenges?.share(undefined);
  }

  #heard(message: ClusterMessage): void {
    if (message.type !== 'certificate' || typeof message.id !== 'string') return;
    for (const watcher of [...(this.#watchers.get(message.id) ?? [])]) watcher();
  }

  #open(sealed: string, label: string): Buffer {
    try {
      return unseal(this.#sealKey, sealed, label);
    } catch (err) {
      throw new Error(`cannot open ${label} from Redis (${(err as Error).message}): is every box given the same cluster secret?`, { cause: err });
    }
  }
}

/**
 * Makes `challenges` look a token that is not pending in this process up in Redis (another box's order), under the
 * link's deadline for a request: the CA's validation may reach any box, and any worker of a box (each worker of
 * `workers: N` looks up on its own link).
 */
export function lookUpTokens(link: ClusterLink, challenges: Http01Challenges): void {
  challenges.share((token) => {
    if (!TOKEN.test(token)) return Promise.resolve(undefined);
    return link.attempt<string | undefined>('acme_challenge', async (redis) => (await redis.get(link.key('acme', 'token', token))) ?? undefined, () => undefined);
  });
}
