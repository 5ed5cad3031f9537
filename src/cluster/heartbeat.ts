/**
 * A box's heartbeat (docs/cluster.md, "Boxes and status"): every `intervalMs` the box writes its record (name,
 * version, config digest, addresses, admin URL, pid, start time, its link's id) under `key('box', name)` with a
 * TTL of three intervals, and reads every box's record back in the same call (one Lua script, so that the TTLs are
 * Redis's clock, not the boxes'). What it read is the cluster's list of boxes for /status, and its size is
 * `link.boxes` (a rate limit's share while Redis is away). A box that stops deletes its record (only its own: an
 * upgrade's new process may have written one already); one that dies leaves it to expire.
 *
 * Two processes that use one box name overwrite each other's record: each sees the other's id in the record it
 * replaces, and says so once (a warning). A process's first beat may replace the record of its own previous life
 * (a crash, a restart within the TTL), and an upgrade's new process its predecessor's (the new record names the
 * predecessor, which from then on leaves the record alone): neither is a warning.
 *
 * Scope: box (one per `portico run`: a single process's, or with `workers: N` the primary's, never a worker's).
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { ClusterLink } from './link.js';

/** What a box says about itself in its heartbeat. */
export interface BoxRecord {
  /** Its `cluster.name`. */
  name: string;
  /** Its link's id (random per process start): two processes with one name tell themselves apart. */
  id: string;
  /** Portico's version. */
  version: string;
  /** Its config's meaning digest (`configDigest`). */
  digest: string;
  /** Each listener's URL (`http://10.0.0.5:80/`). */
  address: string[];
  /** Its admin API's URL (null: none on TCP). */
  admin: string | null;
  /** The machine's host name and the process's id. */
  host: string;
  pid: number;
  /** When the process started (ISO 8601). */
  started: string;
  /** The pid of the process an upgrade replaced with this one (on the same host), if any. */
  predecessor?: number;
  /** Its cluster secret's fingerprint (`secretId`): a box with another secret is flagged and warned about. */
  secret_id?: string;
}

/** A box as the last heartbeat read it. */
export interface BoxSeen extends BoxRecord {
  /** When its last heartbeat was (ms since the epoch, worked out from its record's TTL left in Redis). */
  seenAt: number;
}

/** The parts of a box's record that may change while it runs (a reload changes the digest, the admin URL). */
export type BoxFacts = Pick<BoxRecord, 'version' | 'digest' | 'address' | 'admin' | 'started' | 'secret_id'>;

/** How a heartbeat beats. */
export interface HeartbeatOptions {
  /** Between two beats, ms (default 2000). */
  intervalMs?: number;
  /** How long a record outlives its last beat, ms (default three intervals). */
  ttlMs?: number;
  /** The deadline of a beat (a control-plane call, not on a request's path), ms (default 1000). */
  timeoutMs?: number;
  /** The pid of the process an upgrade replaces (its record is no duplicate). */
  predecessor?: number;
}

/**
 * One beat: writes the box's record (the one it replaced is returned first, to spot a duplicate name) unless that
 * one is its successor's (an upgrade's new process, on the same host, naming this pid: the old process stands
 * down), renews the box's entry in the set of names (score: when it expires, Redis's clock), drops expired names,
 * and returns every live record with its TTL left. KEYS: the box's key, the set of names; ARGV: record, TTL ms,
 * name, records' key prefix, pid, host, link id.
 */
const BEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local previous = redis.call('GET', KEYS[1])
local successor = false
if previous then
  local ok, record = pcall(cjson.decode, previous)
  successor = ok and type(record) == 'table' and record.id ~= ARGV[7] and record.host == ARGV[6] and record.predecessor == tonumber(ARGV[5])
end
if not successor then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
local out = { previous or '' }
for _, name in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local key = ARGV[4] .. name
  local record = redis.call('GET', key)
  if record then
    out[#out + 1] = record
    out[#out + 1] = tostring(redis.call('PTTL', key))
  end
end
return out
`;

/** Deletes the box's record and name if the record is this process's. KEYS: the box's key, the set; ARGV: id, name. */
const LEAVE = `
local record = redis.call('GET', KEYS[1])
local ok, decoded = pcall(cjson.decode, record or '')
if ok and type(decoded) == 'table' and decoded.id == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
`;

/** A box's heartbeat (see the file comment): `start()` after the listeners are bound, `stop()` first when stopping. */
export class Heartbeat {
  readonly #link: ClusterLink;
  readonly #facts: () => BoxFacts;
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #ttlMs: number;
  readonly #timeoutMs: number;
  readonly #predecessor: number | undefined;
  readonly #host = hostname();
  #timer: NodeJS.Timeout | undefined;
  #offUp: (() => void) | undefined;
  #seen: BoxSeen[] = [];
  #beats = 0;
  #beating: Promise<void> | undefined;
  readonly #warned = new Set<string>();
  #stopped = false;
  /** When Redis last came back (0: not yet): for a TTL from then, the others may not have re-announced themselves. */
  #upAt = 0;

  constructor(link: ClusterLink, facts: () => BoxFacts, logger: Logger, options: HeartbeatOptions = {}) {
    this.#link = link;
    this.#facts = facts;
    this.#logger = logger;
    this.#intervalMs = options.intervalMs ?? 2000;
    this.#ttlMs = options.ttlMs ?? this.#intervalMs * 3;
    this.#timeoutMs = options.timeoutMs ?? 1000;
    this.#predecessor = options.predecessor;
  }

  /** The boxes the last beat read (kept through an outage), this one included once it has beaten. */
  get seen(): readonly BoxSeen[] {
    return this.#seen;
  }

  /** This box's record now. */
  record(): BoxRecord {
    const record: BoxRecord = { name: this.#link.name, id: this.#link.id, host: this.#host, pid: process.pid, ...this.#facts() };
    if (this.#predecessor !== undefined) record.predecessor = this.#predecessor;
    return record;
  }

  /** Beats now (or once Redis is reached) and every interval, and at once when Redis comes back (the re-sync). */
  start(): void {
    if (this.#timer !== undefined || this.#stopped) return;
    this.#timer = setInterval(() => void this.beat(), this.#intervalMs);
    this.#timer.unref();
    this.#offUp = this.#link.onUp(() => {
      this.#upAt = Date.now();
      void this.beat();
    });
    // Not connected yet (the link connects in the background): its first `onUp` brings the first beat.
    if (this.#link.up) void this.beat();
  }

  /** One beat (at most one at a time: a beat asked for during one is that one). Never rejects. */
  beat(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    this.#beating ??= this.#beat().finally(() => (this.#beating = undefined));
    return this.#beating;
  }

  async #beat(): Promise<void> {
    const link = this.#link;
    const record = this.record();
    const answer = await link.attempt(
      'heartbeat',
      (redis) => redis.eval(BEAT, 2, link.key('box', record.name), link.key('boxes'), JSON.stringify(record), this.#ttlMs, record.name, link.key('box', ''), process.pid, this.#host, link.id) as Promise<unknown>,
      () => undefined,
      this.#timeoutMs,
    );
    if (!Array.isArray(answer) || this.#stopped) return;
    const readAt = Date.now();
    this.#checkPrevious(String(answer[0] ?? ''));
    const seen: BoxSeen[] = [];
    for (let i = 1; i + 1 < answer.length; i += 2) {
      const box = parseRecord(String(answer[i]));
      const left = Number(answer[i + 1]);
      if (box === undefined) continue;
      seen.push({ ...box, seenAt: readAt - Math.max(0, this.#ttlMs - (Number.isFinite(left) ? left : 0)) });
    }
    seen.sort((a, b) => a.name.localeCompare(b.name));
    this.#checkSecrets(seen);
    this.#seen = seen;
    this.#beats++;
    // Redis back empty (a restart): the boxes re-announce themselves over one beat. Until a TTL has passed, the
    // count a rate limit shares by while Redis is away does not drop (a second outage right away would otherwise
    // find it at 1, and every box limiting at the whole rate).
    link.boxes = readAt - this.#upAt < this.#ttlMs ? Math.max(link.boxes, seen.length) : seen.length;
  }

  /** The record this beat replaced: another process's, on a beat but the first, is a second process with this name. */
  #checkPrevious(text: string): void {
    if (text === '') return;
    const previous = parseRecord(text);
    if (previous === undefined || previous.id === this.#link.id || this.#beats === 0) return;
    // An upgrade: the new process replaces its predecessor's record; the old one then reads the new one's (and leaves it).
    if (previous.host === this.#host && (previous.pid === this.#predecessor || previous.predecessor === process.pid)) return;
    if (this.#warned.has(previous.id)) return;
    this.#warned.add(previous.id);
    this.#logger.warn(
      { box: previous.name, other: { host: previous.host, pid: previous.pid, address: previous.address }, self: { host: this.#host, pid: process.pid } },
      `cluster: another process uses the box name "${previous.name}": give each box its own cluster.name`,
    );
  }

  /**
   * A box whose secret's fingerprint is not this one's: sealed values (ACME keys), sticky cookies and TLS session
   * tickets do not work between the two, which nothing else would say. Warned about once per process of it.
   */
  #checkSecrets(seen: readonly BoxSeen[]): void {
    const own = this.#facts().secret_id;
    if (own === undefined) return;
    for (const box of seen) {
      if (typeof box.secret_id !== 'string' || box.secret_id === own || box.id === this.#link.id || this.#warned.has(`secret:${box.id}`)) continue;
      this.#warned.add(`secret:${box.id}`);
      this.#logger.warn(
        { box: box.name, other: { host: box.host, pid: box.pid, secret_id: box.secret_id }, self: { secret_id: own } },
        `cluster: box "${box.name}" has another cluster secret than this box: certificates' keys sealed by one cannot be opened by the other, and sticky cookies and TLS session tickets do not carry across; give every box the same secret (cluster.key_env)`,
      );
    }
  }

  /** Stops beating and deletes this box's record (if it is still this process's), waiting at most the beat's deadline. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#offUp?.();
    await this.#beating;
    const link = this.#link;
    const name = link.name;
    await link.attempt('heartbeat', (redis) => redis.eval(LEAVE, 2, link.key('box', name), link.key('boxes'), link.id, name), () => 0, this.#timeoutMs);
  }
}

/** A record read from Redis (undefined: not one). */
function parseRecord(text: string): BoxRecord | undefined {
  try {
    const record = JSON.parse(text) as BoxRecord;
    return typeof record === 'object' && record !== null && typeof record.name === 'string' && typeof record.id === 'string' ? record : undefined;
  } catch {
    return undefined;
  }
}
