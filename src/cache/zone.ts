/**
 * A cache zone: the memory tier, the optional disk tier behind it, the in-flight misses (for request
 * collapsing) and the hit-for-miss marks. Lookups go memory → disk (a disk hit is promoted to memory);
 * stores go to both. Purge by exact key and by prefix is exposed for the admin API.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { DiskStore } from './disk-store.js';
import type { GrowingBody } from './growing-body.js';
import { oneWriteText } from '../http/send.js';
import { MemoryStore, type MemoryVariant } from './memory-store.js';
import { entryFacts, headerValue, PORTICO_CACHE_CONTROL, varyKey, type EntryFacts, type RuleOptions } from './rules.js';
import type { PersistentStore, StoredResponse } from './types.js';
import type { ClusterLink } from '../cluster/link.js';
import { SharedTier, usableFor } from './shared-tier.js';

type ZoneConfig = Config['caches'][string];

/**
 * Disk-tier writes a zone has in flight at most. A burst of stores (a cold cache, a purge followed by a crowd)
 * would otherwise open as many files and queue as many writes as there are responses, each holding its body in
 * memory until written; past this many, a store stays in memory only (the disk is a second chance, not a
 * promise), as Varnish and nginx's cache loader give up work rather than pile it up.
 */
export const DISK_WRITES_IN_FLIGHT = 16;

/**
 * Disk-tier deletes a zone has in flight at most, beside its writes: a store whose write is dropped deletes the
 * key's older disk copy (else it would come back once memory lets the new one go). A delete is an unlink, far
 * cheaper than a write, and is needed only for a key the disk holds; past this many, the store is not kept at
 * all (see `store`).
 */
export const DISK_DELETES_IN_FLIGHT = 64;

/** What a zone keeps beside each stored variant. */
export interface VariantExtra {
  facts: EntryFacts;
  /** Header list to serve it with, less Age and Cache-Status (added per response); Content-Length exact. */
  baseHeaders: readonly string[];
  /** The body as a latin1 string when small, for a one-write answer (see `oneWriteText`). */
  text: string | undefined;
  /** This variant as a lookup result, made once. */
  lookup: Lookup;
  /** The header list of the last plain hit, with the Age and ttl (whole seconds) it was made for: reused while they hold. */
  served: { age: number; ttl: number; headers: string[] } | undefined;
}

/**
 * Builds a servable variant: facts once, and the header list with an exact Content-Length, no Age, and no
 * Portico-Cache-Control (kept in the stored response, where the facts of a reloaded entry are read from).
 */
export function makeVariant(entry: StoredResponse, options: RuleOptions): CachedVariant {
  const baseHeaders: string[] = [];
  for (let i = 0; i < entry.headers.length; i += 2) {
    const lower = entry.headers[i]!.toLowerCase();
    // X-Accel-Buffering is the app's word to the proxy that filled the entry, not to a client.
    if (lower === 'age' || lower === 'content-length' || lower === 'cache-status' || lower === PORTICO_CACHE_CONTROL || lower === 'x-accel-buffering') continue;
    baseHeaders.push(entry.headers[i]!, entry.headers[i + 1]!);
  }
  if (entry.status !== 204 && entry.status !== 304) baseHeaders.push('Content-Length', String(entry.body.length));
  const variant: CachedVariant = {
    stored: entry,
    extra: { facts: entryFacts(entry, options), baseHeaders, text: oneWriteText(entry.body), lookup: undefined!, served: undefined },
  };
  variant.extra.lookup = { hit: variant };
  return variant;
}

/** A cached variant ready to serve. */
export type CachedVariant = MemoryVariant<VariantExtra>;

/**
 * The outcome of a lookup: a variant (`shared`: just read from the cluster's shared tier), or which kind of miss
 * (RFC 9211 `fwd=uri-miss` / `fwd=vary-miss`).
 */
export type Lookup = { readonly hit: CachedVariant; readonly shared?: true } | { readonly miss: 'uri-miss' | 'vary-miss' };
const URI_MISS: Lookup = { miss: 'uri-miss' };
const VARY_MISS: Lookup = { miss: 'vary-miss' };

/** A miss being fetched: the leader publishes the response head, then streams the body into `body`. */
export interface Flight {
  /** Resolves when the leader knows whether its response can be shared with the waiters. */
  readonly decision: Promise<FlightDecision>;
}

/** What waiters of a flight get: a shareable response, or "go to the origin yourselves". */
export type FlightDecision =
  | { share: true; status: number; headers: readonly string[]; body: GrowingBody; vary: readonly string[] | undefined; varyKeyOf: string }
  /** `stored`: another box fetched it; the leader read its answer from the shared tier (serve it when it suits). */
  | { share: false; stored?: CachedVariant };

/** One named cache. */
export class CacheZone {
  readonly name: string;
  readonly maxObject: number;
  readonly memory: MemoryStore<VariantExtra>;
  readonly #disk: PersistentStore | undefined;
  /** The disk folder has another writer (an upgrade's other process): nothing is stored. */
  #diskHeld = false;
  /** `holdDisk()` closed the disk store. */
  #diskClosed = false;
  /**
   * Whether this zone opens and closes its disk store. A zone rebuilt by a reload on the same folder shares the
   * old zone's open store instead of opening a second one (two stores on one folder sweep each other's files):
   * the old zone owns it until the reload commits, then hands it over (`handOverDisk`).
   */
  #ownsDisk: boolean;
  readonly #diskSize: number;
  readonly #logger: Logger;
  readonly #flights = new Map<string, Flight>();
  readonly #hitForMiss = new Map<string, number>();
  #diskWrites = 0;
  #diskWritesDropped = 0;
  #diskDeletes = 0;
  /**
   * Keys whose disk copy is older than the memory tier's and is being deleted (→ deletes in flight for it): the
   * disk is not read for them meanwhile. At most DISK_DELETES_IN_FLIGHT keys.
   */
  readonly #supersededOnDisk = new Map<string, number>();
  /** Whether the drops of the current burst were logged (once per burst: cleared when no write is in flight). */
  #dropLogged = false;
  /** The tier in the cluster's Redis (`shared`), behind memory and disk. */
  readonly shared: SharedTier | undefined;
  /** Counts purges: an answer read from the shared tier while one happened is not kept (it may be the purged one). */
  #generation = 0;

  /** `link`: the cluster's, for a zone with `shared` (config checks make sure there is one). */
  constructor(name: string, config: ZoneConfig, logger: Logger, sharedDisk?: PersistentStore, link?: ClusterLink) {
    this.name = name;
    this.maxObject = config.max_object;
    this.memory = new MemoryStore<VariantExtra>(config.memory, (extra) => extra.text?.length ?? 0);
    this.#ownsDisk = sharedDisk === undefined;
    this.#disk = sharedDisk ?? (config.disk === undefined ? undefined : new DiskStore({ path: config.disk.path, maxSize: config.disk.size }));
    this.#diskSize = config.disk?.size ?? 0;
    this.#logger = logger;
    this.shared = config.shared === undefined || link === undefined ? undefined : new SharedTier(name, link, { maxObjectSize: config.shared.max_object_size, lockMs: Math.ceil(config.shared.lock) });
  }

  /** The disk tier, for a zone that takes the same folder over on a reload. */
  get disk(): PersistentStore | undefined {
    return this.#disk;
  }

  /**
   * Opens the disk tier (when this zone owns it). `shared`: an upgrade's new process, while the old one still
   * writes the folder: the disk is read, and nothing is stored (nor purged from disk) until `releaseDisk()`.
   */
  async start(shared = false): Promise<void> {
    // Another box's invalidation drops the key here too (memory and disk; Redis was done by that box).
    this.shared?.start((kind, value) => void (kind === 'key' ? this.purge(value, false) : this.purgePrefix(value, false)));
    if (!this.#ownsDisk || this.#disk === undefined) return;
    this.#diskHeld = shared;
    await this.#disk.open(shared);
  }

  /**
   * An upgrade's old process, once the new one is ready: stores nothing more and lets its disk writes in flight
   * finish (the disk store is closed; answers come from memory or the app), so that the folder has one writer.
   */
  async holdDisk(): Promise<void> {
    if (!this.#ownsDisk || this.#disk === undefined) return;
    this.#diskHeld = true;
    this.#diskClosed = true;
    await this.#disk.close();
  }

  /**
   * The other process of an upgrade no longer writes the disk folder (the old one is draining, or the new one
   * failed before it took over): this one stores again, its disk store reopened when `holdDisk()` closed it.
   */
  async releaseDisk(): Promise<void> {
    if (!this.#diskHeld) return;
    if (this.#diskClosed) await this.#disk?.open();
    this.#diskClosed = false;
    this.#diskHeld = false;
  }

  /** The reload committed: `to` (built on this zone's folder) owns the disk store from now on. */
  handOverDisk(to: CacheZone): void {
    if (this.#disk === undefined || to.#disk !== this.#disk) return;
    this.#ownsDisk = false;
    to.#ownsDisk = true;
    if (to.#diskSize > 0) this.#disk.resize(to.#diskSize);
  }

  async stop(): Promise<void> {
    this.shared?.stop();
    if (this.#ownsDisk) await this.#disk?.close();
    this.memory.clear();
    this.#flights.clear();
    this.#hitForMiss.clear();
  }

  /** Finds the variant of `key` whose Vary matches the request's headers. */
  /**
   * The lookup answered from memory alone, without a promise (the hit path); `undefined` when the memory tier
   * has nothing for the key and the disk tier must be asked (`lookup`).
   */
  lookupMemory(key: string, headers: Record<string, string | string[] | undefined>): Lookup | undefined {
    const variants = this.memory.get(key);
    if (variants === undefined && this.#disk !== undefined) return undefined;
    const found = this.#pick(variants, headers);
    // A miss here may be a hit in the shared tier (not for a key known to be uncacheable: no round trip for it).
    if ('miss' in found && this.shared !== undefined && !this.isHitForMiss(key, Date.now())) return undefined;
    return found;
  }

  async lookup(key: string, headers: Record<string, string | string[] | undefined>, options: RuleOptions): Promise<Lookup> {
    let variants = this.memory.get(key);
    if (variants === undefined && this.#disk !== undefined && !this.#supersededOnDisk.has(key)) {
      const stored = await this.#disk.get(key).catch((err: unknown) => {
        this.#logger.warn({ err, zone: this.name }, 'disk cache read failed');
        return [] as StoredResponse[];
      });
      for (const entry of stored) this.memory.put(makeVariant(entry, options));
      variants = this.memory.get(key);
    }
    const found = this.#pick(variants, headers);
    if ('hit' in found || this.shared === undefined || this.isHitForMiss(key, Date.now())) return found;
    const generation = this.#generation;
    const entries = await this.shared.get(key);
    if (entries.length === 0 || generation !== this.#generation) return found;
    const fetched = entries.map((entry) => makeVariant(entry, options));
    const picked = this.#pick(fetched, headers);
    this.#adopt(fetched);
    return 'hit' in picked ? { hit: picked.hit, shared: true } : found;
  }

  /** Keeps variants read from the shared tier in the memory tier (not over newer ones this box has). */
  #adopt(variants: readonly CachedVariant[]): void {
    for (const variant of variants) {
      const mine = this.memory.get(variant.stored.key)?.find((v) => v.stored.varyKey === variant.stored.varyKey);
      if (mine === undefined || mine.stored.responseTime < variant.stored.responseTime) this.memory.put(variant);
    }
  }

  /**
   * Before this box fetches `key` (a miss, or a revalidation) with a shared tier: takes the cluster-wide lock of the
   * key, or waits for the box holding it; returns that box's answer when it suits the request (`usable`), else
   * `undefined`: fetch (and `releaseClaim` after, in case nothing was stored).
   */
  async claim(key: string, headers: Record<string, string | string[] | undefined>, options: RuleOptions, usable: (variant: CachedVariant) => boolean): Promise<Lookup | undefined> {
    const shared = this.shared;
    if (shared === undefined) return undefined;
    const generation = this.#generation;
    let found: CachedVariant | undefined;
    const outcome = await shared.claim(key, (entries) => {
      const fetched = entries.map((entry) => makeVariant(entry, options));
      const picked = this.#pick(fetched, headers);
      found = 'hit' in picked && usable(picked.hit) ? picked.hit : undefined;
      if (found !== undefined && generation === this.#generation) this.#adopt(fetched);
      return found !== undefined;
    });
    return Array.isArray(outcome) && found !== undefined && generation === this.#generation ? { hit: found, shared: true } : undefined;
  }

  /** This box's fetch of `key` ended: frees the cluster-wide lock if nothing was stored (see `claim`). */
  releaseClaim(key: string): void {
    this.shared?.release(key);
  }

  #pick(variants: readonly CachedVariant[] | undefined, headers: Record<string, string | string[] | undefined>): Lookup {
    if (variants === undefined || variants.length === 0) return URI_MISS;
    for (const variant of variants) {
      const wanted = varyKey(variant.extra.facts.vary, headers);
      if (wanted !== undefined && wanted === variant.stored.varyKey) return variant.extra.lookup;
    }
    return VARY_MISS;
  }

  /**
   * Stores a response (both tiers); returns the variant as it will be served. When the disk is so far behind that
   * neither the write nor the delete of the key's older disk copy can be started, it is kept nowhere: the cache
   * answers as if it had never seen it (an older copy the disk holds is then the only one stored, never served
   * over a newer one).
   */
  store(entry: StoredResponse, options: RuleOptions, staleWindow = 0): CachedVariant {
    const variant = makeVariant(entry, options);
    // Not even in memory: a newer copy there could be evicted and an older one on disk served after it.
    if (this.#diskHeld) {
      this.shared?.release(entry.key);
      return variant;
    }
    if (this.#disk === undefined || this.#writeToDisk(this.#disk, entry)) this.memory.put(variant);
    else this.memory.delete(entry.key);
    this.#hitForMiss.delete(entry.key);
    this.shared?.put(entry, entry.responseTime + usableFor(variant.extra.facts, staleWindow) - Date.now());
    return variant;
  }

  /** Keys and bytes stored per tier, for status and metrics (`disk` undefined: the zone has no disk tier). */
  get stored(): { memory: { entries: number; bytes: number }; disk: { entries: number; bytes: number } | undefined } {
    const disk = this.#disk;
    return { memory: { entries: this.memory.entries, bytes: this.memory.size }, disk: disk === undefined ? undefined : { entries: disk.entries, bytes: disk.size } };
  }

  /** Disk-tier writes in flight now (at most DISK_WRITES_IN_FLIGHT). */
  get diskWritesInFlight(): number {
    return this.#diskWrites;
  }

  /** Disk-tier writes dropped since the zone was made because DISK_WRITES_IN_FLIGHT were in flight. */
  get diskWritesDropped(): number {
    return this.#diskWritesDropped;
  }

  /**
   * Writes `entry` to the disk tier, or drops the write (memory only) when the bound of writes in flight is
   * reached; a dropped write deletes the key's older disk copy, if any. False when that delete could not be
   * started either (the entry must then not be kept in memory).
   */
  #writeToDisk(disk: PersistentStore, entry: StoredResponse): boolean {
    if (this.#diskWrites >= DISK_WRITES_IN_FLIGHT) {
      this.#diskWritesDropped++;
      if (!this.#dropLogged) {
        this.#dropLogged = true;
        this.#logger.warn({ zone: this.name, inFlight: this.#diskWrites }, 'disk cache writes are behind: new entries stay in memory only until they catch up');
      }
      return this.#deleteSuperseded(disk, entry.key);
    }
    this.#diskWrites++;
    disk
      .put(entry)
      .catch((err: unknown) => this.#logger.warn({ err, zone: this.name }, 'disk cache write failed'))
      .finally(() => {
        if (--this.#diskWrites === 0) this.#dropLogged = false;
      });
    return true;
  }

  /**
   * The memory tier gets a newer copy of `key` than the disk holds (or is writing): the disk's is deleted, and not
   * read meanwhile. False when DISK_DELETES_IN_FLIGHT are in flight already.
   */
  #deleteSuperseded(disk: PersistentStore, key: string): boolean {
    if (!disk.holds(key)) return true;
    if (this.#diskDeletes >= DISK_DELETES_IN_FLIGHT) return false;
    this.#diskDeletes++;
    this.#supersededOnDisk.set(key, (this.#supersededOnDisk.get(key) ?? 0) + 1);
    disk
      .delete(key)
      .catch((err: unknown) => this.#logger.warn({ err, zone: this.name }, 'disk cache delete failed'))
      .finally(() => {
        this.#diskDeletes--;
        const left = this.#supersededOnDisk.get(key)! - 1;
        if (left === 0) this.#supersededOnDisk.delete(key);
        else this.#supersededOnDisk.set(key, left);
      });
    return true;
  }

  /**
   * Told of every purge and invalidation made here (not of those `shared` is false for): with `workers`, each
   * worker's zone sends them to the primary, which has every other worker's zone of the name purge the same.
   */
  onPurge: ((kind: 'key' | 'prefix', value: string) => void) | undefined = undefined;

  /**
   * Removes every variant of a key from both tiers; returns how many were removed. `shared` false: a purge told
   * by another process (see `onPurge`), not told on again.
   */
  async purge(key: string, shared = true): Promise<number> {
    this.#generation++;
    if (shared) this.onPurge?.('key', key);
    const fromMemory = this.memory.delete(key);
    // Told to every box, and deleted from Redis, before this returns (see SharedTier.invalidate).
    if (shared) await this.shared?.invalidate(key);
    const fromDisk = this.#diskHeld ? 0 : ((await this.#disk?.delete(key)) ?? 0);
    return Math.max(fromMemory, fromDisk);
  }

  /** Removes every key starting with `prefix` from both tiers (`shared`: see `purge`). */
  async purgePrefix(prefix: string, shared = true): Promise<number> {
    this.#generation++;
    if (shared) this.onPurge?.('prefix', prefix);
    const fromMemory = this.memory.deletePrefix(prefix);
    if (shared) await this.shared?.invalidatePrefix(prefix);
    const fromDisk = this.#diskHeld ? 0 : ((await this.#disk?.deletePrefix(prefix)) ?? 0);
    return Math.max(fromMemory, fromDisk);
  }

  /**
   * Removes every key `match` accepts from both tiers (the admin API's purge by URL or URL prefix, whose keys each
   * process works out from its own routes: not told on, see `onPurge`); returns how many variants were removed.
   */
  async purgeMatching(match: (key: string) => boolean): Promise<number> {
    this.#generation++;
    const fromMemory = this.memory.deleteMatching(match);
    await this.shared?.deleteMatching(match);
    const fromDisk = this.#diskHeld ? 0 : ((await this.#disk?.deleteMatching(match)) ?? 0);
    return Math.max(fromMemory, fromDisk);
  }

  /** The miss in flight for a key, if any. */
  flight(key: string): Flight | undefined {
    return this.#flights.get(key);
  }

  /** Registers the leader's flight for a key until `decision` settles and the body is complete. */
  beginFlight(key: string, flight: Flight, done: Promise<unknown>): void {
    this.#flights.set(key, flight);
    const clear = () => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key);
    };
    done.then(clear, clear);
  }

  /** Ends the flight of a key early (its body will not be stored): later requests no longer join it. */
  endFlight(key: string): void {
    this.#flights.delete(key);
  }

  /** Marks a key uncacheable for a while, so later bursts do not queue behind a leader in vain. */
  markHitForMiss(key: string, until: number): void {
    // Nothing will be stored: the boxes waiting for this one's answer fetch their own.
    this.shared?.release(key);
    this.#hitForMiss.set(key, until);
    if (this.#hitForMiss.size > 10_000) {
      const now = Date.now();
      for (const [k, t] of this.#hitForMiss) if (t <= now) this.#hitForMiss.delete(k);
    }
  }

  /** Whether a key is marked uncacheable now. */
  isHitForMiss(key: string, now: number): boolean {
    const until = this.#hitForMiss.get(key);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#hitForMiss.delete(key);
    return false;
  }
}

/** Strips Set-Cookie from a header list (for `ignore_set_cookie`). */
export function withoutSetCookie(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() !== 'set-cookie') out.push(headers[i]!, headers[i + 1]!);
  }
  return out;
}

/**
 * The header list less Portico's own targeted field (`Portico-Cache-Control`), which never reaches a client; the
 * same list when it has none (the usual case: no copy). `accel` also drops `X-Accel-Buffering` (for answers
 * shared from the cache: the field was for the proxy that filled it; a filling client's sink reads and drops it).
 */
export function withoutPorticoField(headers: readonly string[], accel = false): readonly string[] {
  let found = false;
  for (let i = 0; i < headers.length; i += 2) {
    if (isPorticoField(headers[i]!, accel)) {
      found = true;
      break;
    }
  }
  if (!found) return headers;
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (!isPorticoField(headers[i]!, accel)) out.push(headers[i]!, headers[i + 1]!);
  }
  return out;
}

function isPorticoField(name: string, accel: boolean): boolean {
  // Length first: most fields are neither.
  if (name.length === PORTICO_CACHE_CONTROL.length) return name.toLowerCase() === PORTICO_CACHE_CONTROL;
  return accel && name.length === 17 && name.toLowerCase() === 'x-accel-buffering';
}

/** Whether a Location/Content-Location value names the same origin (for §4.4 invalidation). */
export function sameOriginPath(value: string | undefined, host: string): string | undefined {
  if (value === undefined) return undefined;
  if (value.startsWith('/') && !value.startsWith('//')) return value;
  try {
    const url = new URL(value);
    return url.host.toLowerCase() === host.toLowerCase() ? url.pathname + url.search : undefined;
  } catch {
    return undefined;
  }
}

export { headerValue };
