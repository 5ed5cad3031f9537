/**
 * App servers found through DNS (`upstreams.<name>.discover`): the name's A, AAAA or SRV records, asked of the
 * `resolver` (else the system's), re-resolved at the records' TTL bounded by `interval` (max) and 1 s (min), as
 * nginx's `resolve` does. A resolution that fails (timeout, SERVFAIL, NXDOMAIN, no server answering) or finds no
 * server keeps the last good set: an upstream is never emptied by DNS. The failure is logged once per streak, and
 * its end too. Node's `dns.promises.Resolver` (c-ares) asks: A and AAAA with `{ ttl: true }`; an SRV answer
 * carries no TTL in Node's API, so SRV is re-resolved every `interval` (its targets' A/AAAA TTLs can shorten it).
 *
 * `resolveOnce` is one resolution, as records; `DnsDiscovery` runs them on their timer and says when the set
 * changed. The upstream turns records into servers (upstream.ts, `Upstream.#discovered`).
 */
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { DISCOVER_FLOOR_MS } from '../config/schema.js';
import type { Config } from '../config/load.js';

type DiscoverConfig = NonNullable<Config['upstreams'][string]['discover']>;

/** The weight a DNS answer may give a server at most (the config's own bound for `weight`). */
const MAX_WEIGHT = 1000;
/** How long one try of one query waits for an answer (c-ares `timeout`), and how many tries it makes. */
const QUERY_TIMEOUT_MS = 2000;
const QUERY_TRIES = 2;
/** The bound of a whole resolution (an SRV answer and its targets): past it the queries are cancelled. */
const RESOLUTION_TIMEOUT_MS = 10_000;

/** One app server a DNS answer names. */
export interface DiscoveredServer {
  /** `10.0.0.5` or `fd00::5`. */
  readonly ip: string;
  readonly port: number;
  /** 1 for A and AAAA; an SRV record's weight, divided by the answer's greatest common divisor (1 to 1000). */
  readonly weight: number;
  /** An SRV record of a priority above the answer's lowest: used only when no primary is available. */
  readonly backup: boolean;
}

/**
 * The most servers one answer gives an upstream: each is a connection pool and, with `health`, a check per
 * interval, so a DNS answer (a TCP one may hold thousands of records) must not grow the upstream without bound.
 * Past it the primaries come first, then by address; the rest are left out and logged.
 */
export const MAX_DISCOVERED = 256;

/**
 * What one resolution found: the servers (never empty), the shortest TTL seen (ms), if the answer had one, and the
 * records left out: addresses no app server can have (0.0.0.0, ::, multicast, broadcast), port 0, past `MAX_DISCOVERED`.
 */
export interface Resolution {
  readonly servers: readonly DiscoveredServer[];
  readonly ttlMs: number | undefined;
  readonly unusable: number;
  readonly beyond: number;
}

/**
 * Whether a record can name an app server: not the unspecified address (a connection to 0.0.0.0 or :: reaches this
 * machine: Portico's own listeners, its admin API), not multicast or broadcast, not port 0 (an SRV record's
 * "no service").
 */
function usable(server: DiscoveredServer): boolean {
  if (server.port < 1 || server.port > 65535) return false;
  if (isIP(server.ip) === 4) {
    const first = Number(server.ip.split('.')[0]);
    return first !== 0 && first < 224 && server.ip !== '255.255.255.255';
  }
  const ip = server.ip.toLowerCase();
  return ip !== '::' && !/^ff[0-9a-f]{2}:/.test(ip) && !/^::ffff:0\.0\.0\.0$|^::ffff:0:0$/.test(ip);
}

/**
 * `http://10.0.0.5:8080`, `http://[fd00::5]:8080`: a discovered server's URL (its label and hash identity);
 * `fcgi://10.0.0.5:9000` in a FastCGI upstream (PHP-FPM pools over TCP), as its configured servers are written.
 */
export function discoveredUrl(server: Pick<DiscoveredServer, 'ip' | 'port'>, fastcgi = false): string {
  return `${fastcgi ? 'fcgi' : 'http'}://${discoveredId(server)}`;
}

/** `10.0.0.5:8080`, `[fd00::5]:8080`: a discovered server's id (the admin API's, /status's). */
export function discoveredId(server: Pick<DiscoveredServer, 'ip' | 'port'>): string {
  return isIP(server.ip) === 6 ? `[${server.ip}]:${server.port}` : `${server.ip}:${server.port}`;
}

/** Error codes that mean "this name has no such record" (as opposed to "no answer"): NXDOMAIN, NODATA, REFUSED. */
const NO_RECORD = new Set(['ENOTFOUND', 'ENODATA', 'EREFUSED']);

/** A resolution's failure, in words for the log (`ECONNREFUSED`, `ETIMEOUT`, `no records`). */
export class ResolutionError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? 'EUNKNOWN';
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** The servers of an answer, without repeats (the first, which is the primary one if any, wins), in a stable order. */
function normalise(servers: DiscoveredServer[]): DiscoveredServer[] {
  const seen = new Map<string, DiscoveredServer>();
  for (const server of [...servers].sort((a, b) => Number(a.backup) - Number(b.backup))) {
    const id = discoveredId(server);
    if (!seen.has(id)) seen.set(id, server);
  }
  return [...seen.values()].sort((a, b) => (discoveredId(a) < discoveredId(b) ? -1 : 1));
}

/** The addresses of one name (A, else AAAA for SRV targets), with the shortest TTL; throws on failure. */
async function addresses(resolver: Resolver, name: string, type: 'A' | 'AAAA'): Promise<{ ips: string[]; ttl: number }> {
  const records = type === 'A' ? await resolver.resolve4(name, { ttl: true }) : await resolver.resolve6(name, { ttl: true });
  // Node reports the TTL of the first 256 records only (c-ares fills a fixed array): the rest read undefined, and
  // Math.min over them is NaN, which made the next resolution due at once (a query every millisecond).
  const ttls = records.map((r) => r.ttl).filter((ttl) => Number.isFinite(ttl));
  return { ips: records.map((r) => r.address), ttl: ttls.length === 0 ? Number.NaN : Math.min(...ttls) };
}

/** The addresses of an SRV target: an address as such, else its A records, else its AAAA records; none: []. */
async function targetAddresses(resolver: Resolver, target: string): Promise<{ ips: string[]; ttl: number | undefined }> {
  if (isIP(target) !== 0) return { ips: [target], ttl: undefined };
  for (const type of ['A', 'AAAA'] as const) {
    try {
      const found = await addresses(resolver, target, type);
      if (found.ips.length > 0) return found;
    } catch (err) {
      if (!NO_RECORD.has(codeOf(err))) throw err;
    }
  }
  return { ips: [], ttl: undefined };
}

/**
 * One resolution of `discover`'s name with `resolver`: the servers it names, or a `ResolutionError` (the query's
 * failure, or an answer that names no server).
 */
export async function resolveOnce(resolver: Resolver, discover: Pick<DiscoverConfig, 'dns' | 'type' | 'port'>): Promise<Resolution> {
  let servers: DiscoveredServer[];
  let ttlMs: number | undefined;
  try {
    if (discover.type === 'SRV') {
      const records = await resolver.resolveSrv(discover.dns);
      const lowest = Math.min(...records.map((r) => r.priority));
      const divisor = records.reduce((g, r) => gcd(g, Math.max(1, r.weight)), 0) || 1;
      const targets = new Map<string, Promise<{ ips: string[]; ttl: number | undefined }>>();
      for (const record of records) if (!targets.has(record.name)) targets.set(record.name, targetAddresses(resolver, record.name));
      servers = [];
      for (const record of records) {
        const target = await targets.get(record.name)!;
        if (target.ttl !== undefined && Number.isFinite(target.ttl)) ttlMs = Math.min(ttlMs ?? Infinity, target.ttl * 1000);
        const weight = Math.min(MAX_WEIGHT, Math.max(1, record.weight) / divisor);
        for (const ip of target.ips) servers.push({ ip, port: record.port, weight: Math.max(1, Math.round(weight)), backup: record.priority !== lowest });
      }
    } else {
      const found = await addresses(resolver, discover.dns, discover.type);
      servers = found.ips.map((ip) => ({ ip, port: discover.port!, weight: 1, backup: false }));
      ttlMs = found.ips.length === 0 || !Number.isFinite(found.ttl) ? undefined : found.ttl * 1000;
    }
  } catch (err) {
    const code = codeOf(err);
    throw new ResolutionError(code, code === 'ECANCELLED' ? `no answer within ${RESOLUTION_TIMEOUT_MS / 1000} s` : code);
  }
  if (servers.length === 0) throw new ResolutionError('EEMPTY', 'the answer names no server');
  const good = normalise(servers.filter(usable));
  const unusable = normalise(servers).length - good.length;
  if (good.length === 0) throw new ResolutionError('EUNUSABLE', `the answer names no usable server (${unusable} left out: address 0.0.0.0, ::, multicast or broadcast, or port 0)`);
  const kept = good.length <= MAX_DISCOVERED ? good : normalise([...good.filter((s) => !s.backup), ...good.filter((s) => s.backup)].slice(0, MAX_DISCOVERED));
  return { servers: kept, ttlMs, unusable, beyond: good.length - kept.length };
}

/** When the next resolution is due after a good one: the TTL, bounded by the floor (1 s) and `interval`. */
export function nextResolution(ttlMs: number | undefined, intervalMs: number): number {
  if (ttlMs === undefined || Number.isNaN(ttlMs)) return intervalMs;
  return Math.min(intervalMs, Math.max(DISCOVER_FLOOR_MS, ttlMs));
}

/** Whether two sets of servers (normalised: same order for the same servers) are the same. */
function sameServers(a: readonly DiscoveredServer[], b: readonly DiscoveredServer[]): boolean {
  return a.length === b.length && a.every((s, i) => s.ip === b[i]!.ip && s.port === b[i]!.port && s.weight === b[i]!.weight && s.backup === b[i]!.backup);
}

/** Told the new set each time a resolution finds one that differs from the last good one. */
export type DiscoveryChange = (servers: readonly DiscoveredServer[]) => void;

/** Resolves an upstream's `discover` on its timer; `stop()` leaves no timer or query behind. */
export class DnsDiscovery {
  readonly #upstream: string;
  readonly #config: DiscoverConfig;
  readonly #logger: Logger;
  readonly #onChange: DiscoveryChange;
  readonly #resolver: Resolver;
  #timer: NodeJS.Timeout | undefined = undefined;
  #running = false;
  /** The last good set (undefined: no resolution has worked yet). */
  #servers: readonly DiscoveredServer[] | undefined = undefined;
  /** Failures in a row (the streak logged once), and the next retry's delay. */
  #failures = 0;
  /** Resolutions run so far (tests and /status may read it). */
  resolutions = 0;
  /** When the last resolution ended (ms since the epoch), and when the next is due. */
  lastAt = 0;
  nextAt = 0;
  /** The failure of the last resolution (undefined: it worked). */
  lastError: string | undefined = undefined;
  /** Resolves when the first resolution has ended, whatever its outcome (or at `stop`). */
  readonly #first: Promise<void>;
  #firstDone!: () => void;

  constructor(upstream: string, config: DiscoverConfig, logger: Logger, onChange: DiscoveryChange) {
    this.#upstream = upstream;
    this.#config = config;
    this.#logger = logger;
    this.#onChange = onChange;
    this.#first = new Promise((resolve) => (this.#firstDone = resolve));
    this.#resolver = new Resolver({ timeout: QUERY_TIMEOUT_MS, tries: QUERY_TRIES });
    if (config.resolver !== undefined) this.#resolver.setServers(config.resolver);
  }

  /** The last good set of servers (undefined before the first resolution that worked). */
  get servers(): readonly DiscoveredServer[] | undefined {
    return this.#servers;
  }

  /**
   * Starts from a set found before (a reload's previous upstream had it): it serves until a resolution says
   * otherwise, and a failure keeps it. Call before `start`.
   */
  seed(servers: readonly DiscoveredServer[]): void {
    if (this.#servers === undefined) this.#servers = servers;
  }

  /**
   * Resolves once the first resolution has ended (found servers or failed), or after `timeoutMs`: a start waits
   * for it (bounded) so that its first requests find the servers.
   */
  async firstResolution(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#first, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  /** Resolves now, then on the records' timer. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#schedule(0);
  }

  /** Stops the timer and cancels a resolution under way (its answer is ignored). */
  stop(): void {
    this.#running = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#resolver.cancel();
    this.#firstDone();
  }

  #schedule(delay: number): void {
    if (!this.#running) return;
    this.nextAt = Date.now() + delay;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#resolve();
    }, delay);
  }

  async #resolve(): Promise<void> {
    const bound = setTimeout(() => this.#resolver.cancel(), RESOLUTION_TIMEOUT_MS);
    let found: Resolution | undefined;
    let failure: ResolutionError | undefined;
    try {
      found = await resolveOnce(this.#resolver, this.#config);
    } catch (err) {
      failure = err instanceof ResolutionError ? err : new ResolutionError(codeOf(err), String(err));
    } finally {
      clearTimeout(bound);
    }
    if (!this.#running) return;
    this.resolutions++;
    // Told after the servers were taken in (below, synchronously), in a later microtask.
    this.#firstDone();
    this.lastAt = Date.now();
    const where = { upstream: this.#upstream, dns: this.#config.dns, type: this.#config.type };
    if (failure !== undefined) {
      this.lastError = failure.message;
      if (this.#failures++ === 0) {
        const kept = this.#servers;
        this.#logger.warn(
          { ...where, reason: failure.message, kept: kept?.length ?? 0 },
          kept === undefined
            ? 'DNS resolution failed: no servers found through DNS yet (the configured servers serve, if any); retrying'
            : `DNS resolution failed: keeping the last ${kept.length} server${kept.length === 1 ? '' : 's'} found; retrying`,
        );
      }
      // Retried at 1 s, 2 s, 4 s... up to `interval`, so that a first resolution that failed is soon retried.
      this.#schedule(Math.min(this.#config.interval, DISCOVER_FLOOR_MS * 2 ** Math.min(this.#failures - 1, 10)));
      return;
    }
    const resolution = found!;
    this.lastError = undefined;
    if (this.#failures > 0) {
      this.#logger.info({ ...where, failures: this.#failures, servers: resolution.servers.length }, 'DNS resolution works again');
      this.#failures = 0;
    }
    const previous = this.#servers;
    if (previous === undefined || !sameServers(previous, resolution.servers)) {
      this.#servers = resolution.servers;
      const before = new Set((previous ?? []).map(discoveredId));
      const after = new Set(resolution.servers.map(discoveredId));
      this.#logger.info(
        { ...where, added: [...after].filter((id) => !before.has(id)), removed: [...before].filter((id) => !after.has(id)), servers: after.size },
        'servers found through DNS changed',
      );
      if (resolution.unusable > 0 || resolution.beyond > 0) {
        this.#logger.warn(
          { ...where, unusable: resolution.unusable, beyond: resolution.beyond, max: MAX_DISCOVERED },
          'records found through DNS left out: addresses no app server can have (0.0.0.0, ::, multicast, broadcast, port 0), or more servers than an upstream takes',
        );
      }
      this.#onChange(resolution.servers);
    }
    this.#schedule(nextResolution(resolution.ttlMs, this.#config.interval));
  }
}

/**
 * The server config of a server found through DNS: plain HTTP to its address and port (FastCGI over TCP in a
 * FastCGI upstream), named by them (`10.0.0.5:8080`).
 */
export function discoveredServerConfig(record: DiscoveredServer, fastcgi = false): Config['upstreams'][string]['servers'][number] {
  const text = discoveredUrl(record, fastcgi);
  return {
    url: { kind: fastcgi ? 'fcgi' : 'http', origin: text, socketPath: undefined, basePath: '', text },
    name: discoveredId(record),
    weight: record.weight,
    backup: record.backup,
    tls: undefined,
    max_conns: undefined,
    route: undefined,
  };
}
