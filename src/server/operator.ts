/**
 * The operator's say on upstream servers (admin API: drain, enable, disable, weight), kept so that a maintenance
 * drain never silently ends: in the state directory's `servers.json` (written atomically, 0600), keyed by upstream
 * name and server id (`UpstreamServer.name`), applied to every upstream built (at start, at each reload), and with
 * `workers` held by the primary, which sends it to each worker (in `init`, then one `servers` message per change).
 * A process with no state directory keeps it in memory only.
 *
 * An entry whose server a reload removed is kept (the server may come back), applied to nothing, shown nowhere.
 *
 * In a cluster each change also carries a stamp (when it was made, ms: Redis's clock, or this box's while Redis was
 * away), `enable` included, kept beside the overrides in `servers.json` (`stamps`): the newest change of a server
 * wins when a box re-syncs with Redis (see `cluster-operator.ts`).
 */
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { slotName } from '../config/schema.js';
import type { ServerAction, ServerStatus } from '../control/admin-types.js';
import { PorticoError } from '../errors.js';
import type { StateDir } from '../tls/state-dir.js';
import type { Upstream } from '../upstream/upstream.js';
import type { UpstreamServer } from '../upstream/server.js';
import { serverStatus as reportedServerStatus } from './status.js';

/** The state directory's file of the operator's say on servers. */
export const SERVERS_FILE = 'servers.json';

/** What the operator set on one server: its state and, when set, its weight (else the config's). */
export interface ServerOverride {
  admin: 'enabled' | 'draining' | 'disabled';
  weight?: number;
}

/** Every override as a list (for IPC): upstream, server id, override. */
export type OverrideList = Array<[string, string, ServerOverride]>;

/** The operator's weights: as the config's `weight`. */
const MIN_WEIGHT = 1;
const MAX_WEIGHT = 1000;
const ADMIN_STATES: ReadonlySet<string> = new Set(['enabled', 'draining', 'disabled']);

/**
 * The override after `action` on a server whose override is `current`: `drain` and `disable` set the state (a
 * weight set stays); `weight` sets the weight (the state stays); `enable` goes back to the config (enabled, the
 * config's weight). Throws PORTICO_BAD_REQUEST (400) for a weight that is not an integer in 1..1000.
 */
export function nextOverride(current: ServerOverride | undefined, action: ServerAction): ServerOverride | undefined {
  const weight = current?.weight;
  switch (action.action) {
    case 'enable':
      return undefined;
    case 'drain':
      return weight === undefined ? { admin: 'draining' } : { admin: 'draining', weight };
    case 'disable':
      return weight === undefined ? { admin: 'disabled' } : { admin: 'disabled', weight };
    case 'weight': {
      const value = action.weight as unknown;
      if (typeof value !== 'number' || !Number.isInteger(value) || value < MIN_WEIGHT || value > MAX_WEIGHT) {
        throw new PorticoError('PORTICO_BAD_REQUEST', `weight must be an integer from ${MIN_WEIGHT} to ${MAX_WEIGHT} (got ${JSON.stringify(value)})`);
      }
      return { admin: current?.admin ?? 'enabled', weight: value };
    }
    default:
      throw new PorticoError('PORTICO_BAD_REQUEST', `unknown server action ${JSON.stringify((action as { action?: unknown }).action)}: drain, enable, disable or weight`);
  }
}

/** The stable ids of an upstream's servers as a config has them (`UpstreamServer.name`), in config order. */
export function configServerIds(name: string, upstream: Config['upstreams'][string]): string[] {
  const fixed = upstream.servers.map((server) => server.name ?? encodeURIComponent(server.url.text));
  const spawned = Array.from({ length: upstream.spawn?.instances ?? 0 }, (_, i) => slotName(name, i));
  return [...fixed, ...spawned];
}

/**
 * Checks that `upstream` and `server` name a server of `config`; throws PORTICO_UNKNOWN_UPSTREAM or PORTICO_UNKNOWN_SERVER (404) listing the known
 * names otherwise.
 */
export function checkServerId(config: Config, upstream: string, server: string): void {
  const upstreamConfig = Object.hasOwn(config.upstreams, upstream) ? config.upstreams[upstream] : undefined;
  if (upstreamConfig === undefined) {
    const known = Object.keys(config.upstreams);
    throw new PorticoError('PORTICO_UNKNOWN_UPSTREAM', `no upstream "${upstream}" (upstreams: ${known.length === 0 ? 'none' : known.join(', ')})`);
  }
  const ids = configServerIds(upstream, upstreamConfig);
  // A server found through DNS is named by its address and port (`10.0.0.5:8080`, `[fd00::5]:8080`): one DNS does
  // not name now is accepted too, and the change applies when it does (see `UpstreamOptions.onDiscovered`).
  if (upstreamConfig.discover !== undefined && /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}$/.test(server)) return;
  if (!ids.includes(server)) throw new PorticoError('PORTICO_UNKNOWN_SERVER', `upstream "${upstream}" has no server "${server}" (servers: ${ids.join(', ')})`);
}

/** The stamps a `servers.json` holds (`stamps`: upstream → server id → ms); an entry that is not one is skipped. */
function parseStamps(data: { stamps?: unknown }): Map<string, Map<string, number>> {
  const out = new Map<string, Map<string, number>>();
  if (typeof data.stamps !== 'object' || data.stamps === null) return out;
  for (const [upstream, servers] of Object.entries(data.stamps as Record<string, unknown>)) {
    if (typeof servers !== 'object' || servers === null) continue;
    const entries = new Map<string, number>();
    for (const [id, at] of Object.entries(servers as Record<string, unknown>)) if (typeof at === 'number' && Number.isFinite(at) && at > 0) entries.set(id, at);
    if (entries.size > 0) out.set(upstream, entries);
  }
  return out;
}

/** Reads the overrides a `servers.json` holds; throws on a file that is not one. */
function parseServersFile(text: string): Map<string, Map<string, ServerOverride>> {
  const data = JSON.parse(text) as { upstreams?: unknown };
  const out = new Map<string, Map<string, ServerOverride>>();
  if (typeof data !== 'object' || data === null || typeof data.upstreams !== 'object' || data.upstreams === null) throw new Error('no "upstreams" object');
  for (const [upstream, servers] of Object.entries(data.upstreams as Record<string, unknown>)) {
    if (typeof servers !== 'object' || servers === null) throw new Error(`upstreams.${upstream} is not an object`);
    const entries = new Map<string, ServerOverride>();
    for (const [id, raw] of Object.entries(servers as Record<string, unknown>)) {
      const entry = raw as { admin?: unknown; weight?: unknown };
      if (typeof entry !== 'object' || entry === null || typeof entry.admin !== 'string' || !ADMIN_STATES.has(entry.admin)) {
        throw new Error(`upstreams.${upstream}.${id}: expected { "admin": "enabled" | "draining" | "disabled", "weight"?: n }`);
      }
      const weight = entry.weight;
      if (weight !== undefined && (typeof weight !== 'number' || !Number.isInteger(weight) || weight < MIN_WEIGHT || weight > MAX_WEIGHT)) {
        throw new Error(`upstreams.${upstream}.${id}: weight must be an integer from ${MIN_WEIGHT} to ${MAX_WEIGHT}`);
      }
      entries.set(id, weight === undefined ? { admin: entry.admin as ServerOverride['admin'] } : { admin: entry.admin as ServerOverride['admin'], weight });
    }
    if (entries.size > 0) out.set(upstream, entries);
  }
  return out;
}

/** The operator's overrides of one process: in memory, and in the state directory once it has one. */
export class ServerOverrides {
  readonly #entries = new Map<string, Map<string, ServerOverride>>();
  /** When each server's last change was made (a cluster's stamps; see the file comment), `enable` included. */
  readonly #stamps = new Map<string, Map<string, number>>();
  readonly #logger: Logger;
  #state: StateDir | undefined;
  /** Writes of `servers.json`, one after the other (the last change is the file's). */
  #writing: Promise<void> = Promise.resolve();

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Whether the overrides are kept in a state directory (else in memory only). */
  get kept(): boolean {
    return this.#state !== undefined;
  }

  /**
   * Keeps the overrides in `state` from now on: reads its `servers.json` (a file that cannot be read is logged
   * and left to be replaced by the next change: the servers start as the config has them). Overrides set in
   * memory before (a reload that named a state directory) win over the file's and are written to it.
   */
  load(state: StateDir): void {
    if (this.#state !== undefined) return;
    this.#state = state;
    let fromFile = new Map<string, Map<string, ServerOverride>>();
    let stamps = new Map<string, Map<string, number>>();
    try {
      const text = state.read(SERVERS_FILE)?.toString('utf8');
      if (text !== undefined) {
        fromFile = parseServersFile(text);
        stamps = parseStamps(JSON.parse(text) as { stamps?: unknown });
      }
    } catch (err) {
      this.#logger.error({ err, file: `${state.path}/${SERVERS_FILE}` }, `${SERVERS_FILE} cannot be read: the operator's drains, disables and weights in it are not applied`);
    }
    const memory = this.list();
    const memoryStamps = this.stamped();
    this.#entries.clear();
    this.#stamps.clear();
    for (const [upstream, servers] of fromFile) this.#entries.set(upstream, servers);
    for (const [upstream, servers] of stamps) this.#stamps.set(upstream, servers);
    for (const [upstream, id, override] of memory) this.#put(upstream, id, override);
    for (const [upstream, id, at] of memoryStamps) this.#stamp(upstream, id, at);
    if (memory.length > 0) void this.#save().catch((err: unknown) => this.#logger.error({ err }, `writing ${SERVERS_FILE} failed`));
  }

  /** The override of a server, if any. */
  get(upstream: string, id: string): ServerOverride | undefined {
    return this.#entries.get(upstream)?.get(id);
  }

  /** Every override. */
  list(): OverrideList {
    const out: OverrideList = [];
    for (const [upstream, servers] of this.#entries) for (const [id, override] of servers) out.push([upstream, id, override]);
    return out;
  }

  /** When a server's last change was made (0: never stamped: a change from before the box was in a cluster). */
  stamp(upstream: string, id: string): number {
    return this.#stamps.get(upstream)?.get(id) ?? 0;
  }

  /** Every stamp (a server `enable`d has one and no override). */
  stamped(): Array<[string, string, number]> {
    const out: Array<[string, string, number]> = [];
    for (const [upstream, servers] of this.#stamps) for (const [id, at] of servers) out.push([upstream, id, at]);
    return out;
  }

  /** Replaces every override (a worker's, from the primary's `init`). */
  replace(list: OverrideList): void {
    this.#entries.clear();
    for (const [upstream, id, override] of list) this.#put(upstream, id, override);
  }

  /**
   * Sets (undefined: removes) a server's override, stamped `at` when given (a cluster's change), and, with a state
   * directory, writes `servers.json`; resolves once written. A write that fails throws, and changes nothing in
   * memory either.
   */
  async set(upstream: string, id: string, override: ServerOverride | undefined, at?: number): Promise<void> {
    const before = this.get(upstream, id);
    const stampBefore = this.stamp(upstream, id);
    this.#put(upstream, id, override);
    if (at !== undefined) this.#stamp(upstream, id, at);
    if (this.#state === undefined) return;
    try {
      await this.#save();
    } catch (err) {
      this.#put(upstream, id, before);
      this.#stamp(upstream, id, stampBefore);
      throw new PorticoError('PORTICO_STATE_DIR', `cannot keep the change in ${this.#state.path}/${SERVERS_FILE}: ${(err as Error).message}`, { cause: err });
    }
  }

  #put(upstream: string, id: string, override: ServerOverride | undefined): void {
    let servers = this.#entries.get(upstream);
    if (override === undefined) {
      servers?.delete(id);
      if (servers?.size === 0) this.#entries.delete(upstream);
      return;
    }
    if (servers === undefined) this.#entries.set(upstream, (servers = new Map()));
    servers.set(id, override.weight === undefined ? { admin: override.admin } : { admin: override.admin, weight: override.weight });
  }

  #stamp(upstream: string, id: string, at: number): void {
    let servers = this.#stamps.get(upstream);
    if (at <= 0) {
      servers?.delete(id);
      if (servers?.size === 0) this.#stamps.delete(upstream);
      return;
    }
    if (servers === undefined) this.#stamps.set(upstream, (servers = new Map()));
    servers.set(id, at);
  }

  /** Writes the file (temporary file, flushed, renamed: see `StateDir.write`), after the writes before it. */
  #save(): Promise<void> {
    const state = this.#state!;
    const upstreams: Record<string, Record<string, ServerOverride>> = {};
    for (const [upstream, servers] of this.#entries) upstreams[upstream] = Object.fromEntries(servers);
    const stamps: Record<string, Record<string, number>> = {};
    for (const [upstream, servers] of this.#stamps) stamps[upstream] = Object.fromEntries(servers);
    const text = `${JSON.stringify(this.#stamps.size === 0 ? { upstreams } : { upstreams, stamps }, null, 2)}\n`;
    const write = this.#writing.catch(() => undefined).then(() => state.write(SERVERS_FILE, text));
    this.#writing = write;
    return write;
  }

  /**
   * Applies the overrides to every server of `upstream` (one just built: at start or a reload; `rampUp` false, no
   * slow start for state read back); a server without one is as the config has it.
   */
  applyTo(upstream: Upstream, rampUp = false): void {
    const servers = this.#entries.get(upstream.name);
    for (const server of upstream.servers) {
      const override = servers?.get(server.name);
      if (override === undefined && server.admin === 'enabled' && server.adminWeight === undefined) continue;
      upstream.setOperator(server, override?.admin ?? 'enabled', override?.weight, rampUp);
    }
  }

  /** Waits for the writes under way (at stop). */
  async settled(): Promise<void> {
    await this.#writing.catch(() => undefined);
  }
}

/** A server's status as an action answers it: the status report's (src/server/status.ts), without its histogram. */
export function serverStatus(server: UpstreamServer, now = Date.now()): ServerStatus {
  const { histogram: _histogram, ...status } = reportedServerStatus(server, now);
  return status;
}

/**
 * A server's status from the config alone and its override (the primary of `workers` when no worker answered and
 * it has no health-checking copy of the upstream): state from the override, health unknown (taken as healthy).
 */
export function configuredServerStatus(config: Config, upstream: string, id: string, override: ServerOverride | undefined): ServerStatus {
  const upstreamConfig = config.upstreams[upstream]!;
  const fixed = upstreamConfig.servers.find((server) => (server.name ?? encodeURIComponent(server.url.text)) === id);
  const weight = fixed?.weight ?? 1;
  const admin = override?.admin ?? 'enabled';
  return {
    id,
    address: fixed?.url.text ?? id,
    state: admin === 'enabled' ? 'healthy' : admin,
    admin,
    backup: fixed?.backup ?? false,
    weight: override?.weight ?? weight,
    configured_weight: weight,
    in_flight: 0,
    failures: 0,
    ejections: 0,
    last_check: null,
    requests: 0,
    classes: { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 },
    latency_ms: { p50: null, p90: null, p99: null },
  };
}
