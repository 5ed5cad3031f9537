/**
 * What Redis keeps of the operator's actions in a cluster, and the pure rules of a box's re-sync with it (see
 * `cluster-operator.ts` and docs/cluster.md, "Drains, weights and purges"): the entries' shapes, the Lua scripts that
 * write and publish them in one step, which of two states of a server wins, and which kept purges a box applies.
 */
import type { PurgeTarget } from '../control/admin-types.js';
import type { ServerOverride } from './operator.js';

/** How many purges Redis keeps (the newest), and how long after the last one. */
export const PURGE_CAP = 1000;
export const PURGE_KEEP_MS = 24 * 60 * 60_000;

/** What the operator said of one server, as Redis keeps it. */
export interface SharedOverride {
  admin: ServerOverride['admin'];
  weight?: number;
  /** When (ms, Redis's clock; this box's for a change made while Redis was away). */
  at: number;
  box?: string;
}

/** One purge, as Redis keeps it. */
export interface SharedPurge {
  id: string;
  zone: string;
  target: PurgeTarget;
  at: number;
  box?: string;
}

/**
 * Stores `ARGV[2]` (an override without `at`) for the field `ARGV[1]` and publishes it, in one step (an entry there
 * that is not one of ours counts as none: a corrupt value must not block every later action on the server). `ARGV[3]`
 * empty: a live action, stamped `max(TIME, stored at + 1)`; else a re-sync's change stamped `ARGV[3]`, stored only
 * when newer than what is there. Returns the stored entry and the number of subscriptions the message reached.
 */
export const SET_SERVER = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
local oldAt = 0
if old then
  local ok, decoded = pcall(cjson.decode, old)
  if ok and type(decoded) == 'table' then oldAt = tonumber(decoded.at) or 0 end
end
local at
if ARGV[3] == '' then
  local t = redis.call('TIME')
  at = math.max(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), oldAt + 1)
else
  at = tonumber(ARGV[3])
  if at <= oldAt then return {old, -1} end
end
local entry = cjson.decode(ARGV[2])
entry.at = at
entry.box = ARGV[4]
local text = cjson.encode(entry)
redis.call('HSET', KEYS[1], ARGV[1], text)
local message = cjson.encode({kind = 'server', field = ARGV[1], entry = entry, from = ARGV[5], box = ARGV[4]})
return {text, redis.call('PUBLISH', KEYS[2], message)}
`;

/**
 * Pushes the purge `ARGV[1]` (without `at`) onto the capped list, stamped after the newest, and publishes it (a
 * newest entry that is not one of ours counts as none: a corrupt value must not block every later purge).
 */
export const ADD_PURGE = `
local head = redis.call('LINDEX', KEYS[1], 0)
local last = 0
if head then
  local ok, decoded = pcall(cjson.decode, head)
  if ok and type(decoded) == 'table' then last = tonumber(decoded.at) or 0 end
end
local t = redis.call('TIME')
local entry = cjson.decode(ARGV[1])
entry.at = math.max(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), last + 1)
local text = cjson.encode(entry)
redis.call('LPUSH', KEYS[1], text)
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
entry.kind = 'purge'
entry.from = ARGV[4]
entry.box = ARGV[5]
return {text, redis.call('PUBLISH', KEYS[2], cjson.encode(entry))}
`;

/** Reads Redis's clock, the purges and the servers' hash in one step (a purge after it is stamped later). */
export const READ_ALL = `
local t = redis.call('TIME')
return {tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)), redis.call('LRANGE', KEYS[1], 0, -1), redis.call('HGETALL', KEYS[2])}
`;

/**
 * What a re-sync does with one server, from this box's stamp of it (0: none), whether this box has an override of
 * it, and Redis's entry: `take` Redis's (newer), `push` this box's (newer, or Redis has none), or `keep` (the same).
 */
export function reconcileServer(stamp: number, hasOverride: boolean, shared: { at: number } | undefined): 'take' | 'push' | 'keep' {
  if (shared !== undefined) return shared.at > stamp ? 'take' : stamp > shared.at ? 'push' : 'keep';
  return hasOverride || stamp > 0 ? 'push' : 'keep';
}

/**
 * Which of the purges Redis keeps (`purges`, newest first, `full` when the list is at its cap) a re-sync at `now`
 * (Redis's clock) applies, for a box that applied those up to `appliedUntil` (0: never synced) and the ones in
 * `seen` since: `gap` when it may have missed some the list no longer holds (then it empties its zones); `apply`,
 * oldest first; and how far it has applied after this one (`until`: a purge made later is stamped later).
 */
export function missedPurges(
  purges: readonly SharedPurge[],
  appliedUntil: number,
  seen: { has(id: string): boolean },
  now: number,
  full: boolean,
): { gap: boolean; apply: SharedPurge[]; until: number } {
  const oldest = purges.at(-1);
  const gap = appliedUntil > 0 && (oldest === undefined ? now - appliedUntil > PURGE_KEEP_MS : full && oldest.at > appliedUntil);
  const apply = gap ? [] : purges.filter((purge) => purge.at > appliedUntil && !seen.has(purge.id)).reverse();
  return { gap, apply, until: Math.max(now - 1, purges[0]?.at ?? 0, appliedUntil) };
}

/** The override an entry stands for (undefined: as the config has it). */
export function overrideOf(entry: { admin: ServerOverride['admin']; weight?: number }): ServerOverride | undefined {
  if (entry.admin === 'enabled' && entry.weight === undefined) return undefined;
  return entry.weight === undefined ? { admin: entry.admin } : { admin: entry.admin, weight: entry.weight };
}

/** A server's field in the hash. */
export function fieldOf(upstream: string, server: string): string {
  return JSON.stringify([upstream, server]);
}

/** The upstream and server of a field (undefined: not one). */
export function parseField(field: string): [string, string] | undefined {
  try {
    const parsed = JSON.parse(field) as unknown;
    if (Array.isArray(parsed) && parsed.length === 2 && typeof parsed[0] === 'string' && typeof parsed[1] === 'string') return [parsed[0], parsed[1]];
  } catch {
    // not a field of ours
  }
  return undefined;
}

/** A stored override, checked (undefined: not one). */
export function parseOverride(text: string): SharedOverride | undefined {
  try {
    const entry = JSON.parse(text) as Partial<SharedOverride>;
    if (entry.admin !== 'enabled' && entry.admin !== 'draining' && entry.admin !== 'disabled') return undefined;
    if (typeof entry.at !== 'number' || (entry.weight !== undefined && typeof entry.weight !== 'number')) return undefined;
    return entry as SharedOverride;
  } catch {
    return undefined;
  }
}

/** A stored purge, checked (undefined: not one). */
export function parsePurge(value: unknown): SharedPurge | undefined {
  const entry = (typeof value === 'string' ? safeJson(value) : value) as Partial<SharedPurge> | undefined;
  if (entry === undefined || entry === null || typeof entry !== 'object') return undefined;
  if (typeof entry.id !== 'string' || typeof entry.zone !== 'string' || typeof entry.at !== 'number' || typeof entry.target !== 'object' || entry.target === null) return undefined;
  return entry as SharedPurge;
}

/** JSON parsed, or undefined for text that is not JSON. */
export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

