/**
 * One app-server instance behind an upstream: its connection pool (undici), its load (requests in flight,
 * peak-EWMA latency) and its health (active check state, passive ejection, slow start).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { Client, Pool, buildConnector, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { speaksFastCgi } from '../config/schema.js';
import { FastCgiPool } from './fastcgi/pool.js';
import { skippingContinue } from './continue.js';
import { H2Dispatcher, type H2Options } from './h2-transport.js';
import type { PolicyServer } from './policies/types.js';
import type { ServerTraffic } from '../metrics/metrics.js';

type UpstreamConfig = Config['upstreams'][string];
type ServerConfig = UpstreamConfig['servers'][number];

/** Decay time of the latency average: older samples weigh e^(-Δt/τ). */
const EWMA_TAU_MS = 10_000;
/**
 * The least latency a sample counts as: a server that answered within the clock's resolution (0 ms) has been
 * measured, and must not read as unmeasured (`ewmaMs` 0), which `ewma` takes as free while idle.
 */
const MIN_SAMPLE_MS = 0.001;

/** A spawned slot (`upstreams.<name>.spawn`): its stable name and route, and the port serving it now, if any. */
export interface SlotConfig {
  /** `app#1`: the server's label and address (sticky cookie, hash rings, logs), whatever port serves it. */
  readonly slot: string;
  /** `app1`: the slot's route for `sticky.app_cookie`. */
  readonly route: string;
  readonly port: number | undefined;
}

/**
 * Where a server's requests go: the dispatchers of one address (a fixed server has one target for good; a spawned
 * slot gets a new one on each move to another port), and the requests and tunnels begun on it, so that a move
 * can tell when the address it left is no longer used.
 */
export class ServerTarget {
  /** `http://127.0.0.1:3001`: for Host headers of checks, Location rewriting and logs. */
  readonly origin: string;
  /** The port of a spawned slot's target (undefined for a fixed server). */
  readonly port: number | undefined;
  readonly dispatcher: Dispatcher;
  /**
   * The active checks' own connection: never one of the traffic pool's, and each check opens a new one (as
   * HAProxy's checks do), so a passing check proves the server accepts connections now, not that an old
   * keep-alive connection from before a restart still answered.
   */
  readonly checkDispatcher: Dispatcher;
  /** Requests and tunnels begun on this target and not ended yet. */
  users = 0;
  /** Spoken to in HTTP/2 (h2c://, protocol h2 or auto): its answers' trailers are passed on. */
  readonly http2: boolean;
  /** The upstream sockets of the tunnels open on this target (cut when a retired target's wait runs out). */
  readonly tunnels = new Set<Duplex>();
  /** Called when the last user ends, once the target is retired. */
  #unused: (() => void) | undefined = undefined;

  constructor(origin: string, port: number | undefined, dispatcher: Dispatcher, checkDispatcher: Dispatcher, http2 = false) {
    this.origin = origin;
    this.http2 = http2;
    this.port = port;
    this.dispatcher = dispatcher;
    this.checkDispatcher = checkDispatcher;
  }

  /** A request or tunnel begun on this target ended. */
  end(): void {
    if (--this.users === 0) this.#unused?.();
  }

  /**
   * No new request comes here any more (a move replaced it): closes the dispatchers gracefully and resolves once
   * every request and tunnel begun here has ended; with `cutAfterMs`, what is left then is cut (the pool
   * destroyed, the tunnels' sockets destroyed) and it resolves.
   */
  async retire(cutAfterMs?: number): Promise<void> {
    const unused = this.users === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#unused = resolve));
    // A check still running on the old address says nothing of the new one: its answer is ignored (see active.ts).
    void this.checkDispatcher.destroy().catch(() => undefined);
    const done = Promise.all([unused, this.dispatcher.close().catch(() => this.dispatcher.destroy())]);
    if (cutAfterMs === undefined) {
      await done;
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const socket of this.tunnels) socket.destroy();
        resolve(this.dispatcher.destroy().catch(() => undefined));
      }, cutAfterMs);
    });
    await Promise.race([done, cut]);
    clearTimeout(timer);
  }

  /** Closes the dispatchers once their requests are done; with `cutAfterMs`, what is still in flight then is cut. */
  async close(cutAfterMs?: number): Promise<void> {
    await Promise.all([closeDispatcher(this.dispatcher, cutAfterMs), closeDispatcher(this.checkDispatcher, cutAfterMs)]);
  }
}

/** An app-server instance and what Portico knows of its state. */
export class UpstreamServer implements PolicyServer {
  readonly id: number;
  /** The config's `weight` (1 for a spawned slot; a server found through DNS: its SRV record's, which may change). */
  configWeight: number;
  /** Used only when no primary is available (a server found through DNS: an SRV record of a higher priority). */
  backup: boolean;
  /** Found through DNS (`discover`), not configured: DNS adds and removes it (see `Upstream.#discover`). */
  readonly discovered: boolean;
  /** `http://127.0.0.1:3001`, `unix:/run/app.sock`, or a spawned slot's name (`app#1`): for logs only, never sent to a client. */
  readonly label: string;
  /** Stable identity for hash rings (survives reordering the config; a spawned slot's name survives its moves). */
  readonly address: string;
  /**
   * The server's stable id in the admin API, /status and metrics: its config `name`, else its URL percent-encoded
   * (`encodeURIComponent`), a spawned slot's name (`app#1`, percent-encoded in a URL path as `app%231`).
   */
  readonly name: string;
  /** The slot name of a spawned server (`app#1`); undefined for a fixed one. */
  readonly slot: string | undefined;
  /**
   * The operator's say (admin API, kept in the state directory): `enabled` (the config's), `draining` (no new
   * requests but those pinned to it by a sticky cookie; in flight ones finish), `disabled` (no requests at all).
   */
  admin: 'enabled' | 'draining' | 'disabled' = 'enabled';
  /** The operator's weight (admin API), in force over the config's `weight` while set. */
  adminWeight: number | undefined = undefined;
  /** The weight in force: the operator's (`adminWeight`) when set, else the config's. Policies weigh by it. */
  get weight(): number {
    return this.adminWeight ?? this.configWeight;
  }
  /** The server's route for `sticky.app_cookie`, if it has one. */
  readonly route: string | undefined;
  /** Path prefix of the server URL (`''` or `/base`), prepended to forwarded paths. */
  readonly basePath: string;
  readonly maxConns: number;
  /** Connections of the pool (`keepalive`): a request past them would wait inside undici, unbounded. */
  poolSize: number;
  /**
   * Where requests go now. Undefined only for a spawned slot that no instance serves (not started yet, crashed,
   * stopped): such a server is down and not checked. A request or tunnel keeps the target it began on.
   */
  target: ServerTarget | undefined;
  /** Requests in flight (tunnels included). */
  active = 0;
  /** Where its attempts are counted when counting is on (the same figures for the same id across reloads). */
  traffic: ServerTraffic | undefined = undefined;
  /** The last active check's outcome: when it began (ms since the epoch; 0: none yet) and whether it passed. */
  lastCheckAt = 0;
  lastCheckPassed = false;
  /**
   * The same app server in the other config while a reload's previous config drains (see `pairWith`): its
   * requests in flight count under `max_conns` here too, so that two configs never send it more than that.
   */
  #pair: UpstreamServer | undefined = undefined;
  /** Requests holding one of the pool's connections (an open tunnel has left the pool). */
  pooled = 0;
  ewmaMs = 0;
  #ewmaAt = 0;

  /**
   * Active-check verdict (true before the first check: see docs/proxy.md, "Health checks"). A spawned slot starts
   * down, and is up only while an instance serves it (see `retarget`).
   */
  healthy = true;
  /** Consecutive passing / failing active checks. */
  passes = 0;
  fails = 0;
  /** Passive health: recent failure times within the window, and the ejection in force. */
  #failures: number[] = [];
  ejectedUntil = 0;
  /** When the ejection in force began. */
  ejectedAt = 0;
  ejections = 0;
  /** Ejections since this server was built (status; `ejections` is the backoff step, reset once well). */
  ejectionsTotal = 0;
  /** When the server last became available again (for slow start). */
  recoveredAt = 0;
  readonly #slowStartMs: number;
  readonly #upstream: UpstreamConfig;
  /** How an HTTP/2 server was configured (undefined: HTTP/1.1 or FastCGI). */
  #http2: 'h2c' | 'h2' | 'auto' | undefined = undefined;
  /** Targets left by moves, until their requests and tunnels ended (a shutdown cuts them). */
  readonly #retiring = new Set<ServerTarget>();
  /** A spawned slot's logger, for the pools of the ports it moves to (a FastCGI pool logs PHP's stderr). */
  #logger: Logger | undefined = undefined;
  #closed = false;

  constructor(id: number, config: ServerConfig | SlotConfig, upstream: UpstreamConfig, configDir: string, discovered = false, logger?: Logger) {
    this.id = id;
    this.discovered = discovered;
    this.#upstream = upstream;
    this.maxConns = upstream.max_conns;
    this.poolSize = upstream.keepalive;
    this.#slowStartMs = upstream.slow_start;
    if ('slot' in config) {
      this.configWeight = 1;
      this.backup = false;
      this.label = config.slot;
      this.name = config.slot;
      this.address = config.slot;
      this.slot = config.slot;
      this.route = config.route;
      this.basePath = '';
      if (upstream.spawn?.protocol === 'h2c') this.poolSize = upstream.http2.connections * upstream.http2.max_concurrent_streams;
      this.#logger = logger;
      this.target = config.port === undefined ? undefined : slotTarget(config.port, upstream, config.slot, logger);
      this.healthy = this.target !== undefined;
      return;
    }
    this.configWeight = config.weight;
    this.backup = config.backup;
    this.label = config.url.text;
    this.name = config.name ?? encodeURIComponent(config.url.text);
    this.address = config.url.text;
    this.slot = undefined;
    this.route = config.route;
    this.basePath = config.url.basePath;
    if (config.max_conns !== undefined) this.maxConns = config.max_conns;
    if (speaksFastCgi(upstream)) {
      // Checks get a pool of their own, as over HTTP: a passing check is a connection made now.
      const pool = (connections: number): FastCgiPool => fastCgiPool(config.url, upstream, connections, this.label, logger);
      this.target = new ServerTarget(config.url.kind === 'fcgi' ? config.url.origin : config.url.text, undefined, pool(upstream.keepalive), pool(1));
      return;
    }
    const tls = config.tls;
    const http2 = config.url.kind === 'h2c' || (config.url.kind === 'https' && (config.protocol === 'h2' || config.protocol === 'auto'));
    if (http2) {
      this.#http2 = config.url.kind === 'h2c' ? 'h2c' : config.protocol === 'auto' ? 'auto' : 'h2';
      // Many requests share a connection: the capacity is the streams of all connections, not the connections.
      this.poolSize = upstream.http2.connections * upstream.http2.max_concurrent_streams;
      const h2 = h2Options(config, upstream, configDir);
      // `auto`: a server that answers ALPN with http/1.1 gets the usual pool.
      const fallback = config.protocol === 'auto' ? this.#http1Pool(config, upstream, configDir) : undefined;
      const checks = new H2Dispatcher({ ...h2, fallback: fallback === undefined ? undefined : this.#http1Checks(config, upstream, configDir), fresh: true });
      this.target = new ServerTarget(config.url.origin, undefined, new H2Dispatcher({ ...h2, fallback }), checks, true);
      return;
    }
    this.target = new ServerTarget(config.url.origin, undefined, this.#http1Pool(config, upstream, configDir), this.#http1Checks(config, upstream, configDir));
  }

  /**
   * An HTTP/2 server's protocol as spoken now (`h2c`, `h2`, `auto: h2`, `auto: http/1.1`, or `auto` before its
   * first connection) and its connections, streams in flight and requests waiting for a stream; undefined for
   * an HTTP/1.1 or FastCGI server.
   */
  get http2Load(): { protocol: string; connections: number; streams: number; waiting: number } | undefined {
    const dispatcher = this.target?.dispatcher;
    if (this.#http2 === undefined || !(dispatcher instanceof H2Dispatcher)) return undefined;
    const load = dispatcher.load;
    const protocol = this.#http2 !== 'auto' ? this.#http2 : load.http1 ? 'auto: http/1.1' : load.sessions > 0 ? 'auto: h2' : 'auto';
    return { protocol, connections: load.sessions, streams: load.streams, waiting: load.waiting };
  }

  /** The HTTP/1.1 traffic pool of a fixed server. */
  #http1Pool(config: ServerConfig, upstream: UpstreamConfig, configDir: string): Dispatcher {
    const tls = config.tls;
    const connect = {
      timeout: upstream.timeouts.connect,
      ...(tls?.ca !== undefined ? { ca: readFileSync(resolvePath(configDir, tls.ca)) } : {}),
      rejectUnauthorized: tls?.insecure_skip_verify !== true,
    };
    const pool = new Pool(config.url.origin, {
      ...poolOptions(upstream),
      socketPath: config.url.socketPath,
      // undici adds the socket path to a connector it builds itself; one built here is given it.
      connect: skippingContinue(
        config.url.kind === 'https'
          ? pinnedTlsConnector(connect, tls?.servername, new URL(config.url.origin).hostname)
          : buildConnector(config.url.socketPath === undefined ? connect : { ...connect, socketPath: config.url.socketPath }),
      ),
    });
    // undici takes each request's TLS server name from its Host header, which is the *client's* Host here: a
    // changing name would also make it drop the pooled connection. Every request names the same one instead.
    return config.url.kind === 'https' ? withServername(pool, config.url.origin) : pool;
  }

  /** The HTTP/1.1 checks' client of a fixed server (a new connection per check). */
  #http1Checks(config: ServerConfig, upstream: UpstreamConfig, configDir: string): Dispatcher {
    const tls = config.tls;
    const connect = {
      timeout: upstream.timeouts.connect,
      ...(tls?.ca !== undefined ? { ca: readFileSync(resolvePath(configDir, tls.ca)) } : {}),
      rejectUnauthorized: tls?.insecure_skip_verify !== true,
    };
    const checks = new Client(config.url.origin, {
      pipelining: 0,
      socketPath: config.url.socketPath,
      connect: config.url.kind === 'https' ? pinnedTlsConnector(connect, tls?.servername, new URL(config.url.origin).hostname) : connect,
    });
    return config.url.kind === 'https' ? withServername(checks as unknown as Pool, config.url.origin) : checks;
  }

  /** The origin requests go to now (`''` for a spawned slot that no instance serves). */
  get origin(): string {
    return this.target?.origin ?? '';
  }

  /**
   * Moves a spawned slot to the instance on 127.0.0.1:`port`, or to none (`undefined`: it is down and not
   * checked). New requests use the new target at once; the previous one's dispatchers close gracefully, and the
   * promise resolves when every request and tunnel begun on it has ended, or at `cutAfterMs` (what is left is
   * cut). A move to a port makes the server healthy (the Supervisor checked the instance's readiness) with its
   * passive failures, ejection and latency figures cleared: they were the previous instance's.
   */
  async retarget(port: number | undefined, cutAfterMs?: number): Promise<void> {
    if (this.slot === undefined) throw new Error(`${this.label} is not a spawned slot: only a slot moves`);
    const previous = this.target;
    if (port === undefined && previous === undefined) return;
    // The same port again is a new instance too (restarted on the port it had): new connections, clean health.
    this.target = port === undefined || this.#closed ? undefined : slotTarget(port, this.#upstream, this.label, this.#logger);
    this.passes = 0;
    this.fails = 0;
    this.clearEjection();
    this.ejections = 0;
    this.ewmaMs = 0;
    this.#ewmaAt = 0;
    this.healthy = this.target !== undefined;
    if (this.target !== undefined && this.#slowStartMs > 0) this.recoveredAt = Date.now();
    if (previous === undefined) return;
    this.#retiring.add(previous);
    try {
      await previous.retire(cutAfterMs);
    } finally {
      this.#retiring.delete(previous);
    }
  }

  /** A new DNS answer still names this server, with this weight and backup role (an SRV record's). */
  rediscover(weight: number, backup: boolean): void {
    this.configWeight = weight;
    this.backup = backup;
  }

  /**
   * DNS no longer names this server: it takes no new request (it has no target any more, as a slot without an
   * instance), and the promise resolves once every request and tunnel begun on it has ended (the connections then
   * close). A shutdown (`close`) cuts what is left.
   */
  async leave(): Promise<void> {
    const target = this.target;
    this.target = undefined;
    this.healthy = false;
    if (target === undefined) return;
    this.#retiring.add(target);
    try {
      await target.retire();
    } finally {
      this.#retiring.delete(target);
    }
  }

  /** Weight after slow start: ramps linearly from 10 % to 100 % over `slow_start` after a recovery. */
  get effectiveWeight(): number {
    if (this.#slowStartMs === 0 || this.recoveredAt === 0) return this.weight;
    const since = Date.now() - this.recoveredAt;
    if (since >= this.#slowStartMs) return this.weight;
    return this.weight * Math.max(0.1, since / this.#slowStartMs);
  }

  /**
   * Whether the server may receive new requests now (health, ejection and the operator's say: neither draining nor
   * disabled; capacity is separate).
   */
  isAvailable(now: number): boolean {
    return this.healthy && this.ejectedUntil <= now && this.target !== undefined && this.admin === 'enabled';
  }

  /**
   * Whether a request pinned to this server (a sticky cookie, an app session's route) may go to it now: as
   * `isAvailable`, but a draining server still takes its pinned clients (nginx Plus's drain); a disabled one none.
   */
  takesPinned(now: number): boolean {
    return this.healthy && this.ejectedUntil <= now && this.target !== undefined && this.admin !== 'disabled';
  }

  /**
   * Sets the operator's say (`admin`) and weight (`adminWeight`, undefined: the config's). Back to `enabled` from
   * draining or disabled, the server ramps up again under `slow_start` as after a recovery.
   */
  setOperator(admin: 'enabled' | 'draining' | 'disabled', weight: number | undefined, rampUp = true): void {
    if (rampUp && admin === 'enabled' && this.admin !== 'enabled' && this.#slowStartMs > 0) this.recoveredAt = Date.now();
    this.admin = admin;
    this.adminWeight = weight;
  }

  /**
   * Whether one more request fits under `max_conns` and in the pool. Past the pool's connections undici would
   * queue the request itself, with no timeout and no way to leave when its client goes; Portico's queue has both.
   */
  hasCapacity(): boolean {
    return (this.maxConns === 0 || this.active + (this.#pair === undefined ? 0 : this.#pair.active) < this.maxConns) && this.pooled < this.poolSize;
  }

  /**
   * Pairs this server with the same one of a previous config still draining (or, `undefined`, unpairs it): each
   * counts the other's requests in flight under `max_conns`. A server is paired with one other at most.
   */
  pairWith(other: UpstreamServer | undefined): void {
    const old = this.#pair;
    if (old !== undefined && old.#pair === this) old.#pair = undefined;
    this.#pair = other;
    if (other === undefined) return;
    if (other.#pair !== undefined && other.#pair !== this && other.#pair.#pair === other) other.#pair.#pair = undefined;
    other.#pair = this;
  }

  /** Folds a response-header latency into the peak-EWMA. */
  observeLatency(sampled: number, now: number): void {
    const ms = Math.max(sampled, MIN_SAMPLE_MS);
    if (this.#ewmaAt === 0 || ms > this.ewmaMs) {
      this.ewmaMs = ms;
    } else {
      const w = Math.exp(-(now - this.#ewmaAt) / EWMA_TAU_MS);
      this.ewmaMs = this.ewmaMs * w + ms * (1 - w);
    }
    this.#ewmaAt = now;
  }

  /**
   * Records a failure in live traffic; returns true when it reaches `maxFails` within `windowMs` (the caller
   * decides whether ejecting is allowed under max_ejection_percent).
   */
  recordFailure(now: number, maxFails: number, windowMs: number): boolean {
    if (maxFails === 0) return false;
    this.#failures.push(now);
    while (this.#failures.length > 0 && this.#failures[0]! <= now - windowMs) this.#failures.shift();
    return this.#failures.length >= maxFails;
  }

  /** Passive failures recorded within the upstream's `passive.fail_timeout` before `now` (for status). */
  recentFailures(now: number): number {
    const since = now - this.#upstream.passive.fail_timeout;
    let n = 0;
    for (const at of this.#failures) if (at > since) n++;
    return n;
  }

  /** Ejects the server; each ejection soon after the last lasts twice as long (at most 8× the base). */
  eject(now: number, baseMs: number): void {
    this.ejectionsTotal++;
    this.ejections = Math.min(this.ejections + 1, 4);
    this.ejectedUntil = now + baseMs * 2 ** (this.ejections - 1);
    this.ejectedAt = now;
    this.recoveredAt = this.ejectedUntil;
    this.#failures = [];
  }

  /**
   * Lifts an ejection: the active checks saw the server come back, which is better evidence than the failures
   * that ejected it (Envoy unejects on a passing active check too). Without this, a server restarted under
   * load stays out for fail_timeout after its checks pass, because live traffic ejected it before they noticed.
   */
  clearEjection(): void {
    this.ejectedUntil = 0;
    this.#failures = [];
  }

  /** A success in live traffic: forgets past ejections once the server has stayed well for a while. */
  recordSuccess(now: number, baseMs: number): void {
    if (this.ejections > 0 && now > this.ejectedUntil + baseMs * 2) this.ejections = 0;
  }

  /**
   * Takes over what Portico knew of the same server (same `address`) under the previous config, at a reload's
   * swap: passive failures and ejection, the slow-start clock, the latency average, and, when this config checks
   * the server actively (`checked`), the checks' verdict and counts (else the server counts as up, as it would
   * with no checks: nothing would ever bring it back). Requests in flight stay counted on the previous one.
   */
  adoptState(previous: UpstreamServer, checked: boolean): void {
    if (checked) {
      this.healthy = previous.healthy;
      this.passes = previous.passes;
      this.fails = previous.fails;
      this.lastCheckAt = previous.lastCheckAt;
      this.lastCheckPassed = previous.lastCheckPassed;
    }
    this.#failures = [...previous.#failures];
    this.ejectedUntil = previous.ejectedUntil;
    this.ejectedAt = previous.ejectedAt;
    this.ejections = previous.ejections;
    this.ejectionsTotal = previous.ejectionsTotal;
    this.recoveredAt = previous.recoveredAt;
    this.ewmaMs = previous.ewmaMs;
    this.#ewmaAt = previous.#ewmaAt;
  }

  /**
   * Closes the pool's connections once their requests are done (those of targets a move left too); with
   * `cutAfterMs`, whatever is still in flight then is cut (a shutdown: past the listeners' grace period no client
   * waits for it any more). A slot is not moved any more afterwards.
   */
  async close(cutAfterMs?: number): Promise<void> {
    this.#closed = true;
    const targets = [...this.#retiring, ...(this.target === undefined ? [] : [this.target])];
    await Promise.all(targets.map((target) => target.close(cutAfterMs)));
  }
}

/** A FastCGI server's connections (`fcgi://host:port`, or `unix:/path` in a FastCGI upstream). */
function fastCgiPool(url: ServerConfig['url'], upstream: UpstreamConfig, connections: number, label: string, logger: Logger | undefined): FastCgiPool {
  const address = url.socketPath === undefined ? new URL(url.origin) : undefined;
  return new FastCgiPool({
    socketPath: url.socketPath,
    host: address?.hostname.replace(/^\[|\]$/g, ''),
    port: address === undefined ? undefined : Number(address.port),
    connections,
    keepConn: upstream.fastcgi.keep_conn,
    connectTimeout: upstream.timeouts.connect,
    idleTimeout: upstream.timeouts.idle,
    headersTimeout: upstream.timeouts.response_header,
    bodyTimeout: upstream.timeouts.read,
    // PHP's notices, warnings and fatal errors, as nginx logs "FastCGI sent in stderr".
    onStderr: logger === undefined ? undefined : (text, script) => logger.warn({ server: label, script, stderr: text.trimEnd() }, 'FastCGI sent in stderr'),
  });
}

/** The traffic pool's options, alike for a fixed server and a spawned slot. */
function poolOptions(upstream: UpstreamConfig): Pool.Options {
  return {
    connections: upstream.keepalive,
    pipelining: 1,
    keepAliveTimeout: upstream.timeouts.idle,
    keepAliveMaxTimeout: upstream.timeouts.idle,
    headersTimeout: upstream.timeouts.response_header,
    bodyTimeout: upstream.timeouts.read,
  };
}

/** How to reach an HTTP/2 server (`h2c://`, `https://` with protocol h2 or auto) and use its connections. */
function h2Options(config: ServerConfig, upstream: UpstreamConfig, configDir: string): H2Options {
  const tls = config.tls;
  return {
    origin: config.url.origin,
    tls:
      config.url.kind === 'https'
        ? {
            ...(tls?.ca !== undefined ? { ca: readFileSync(resolvePath(configDir, tls.ca)) } : {}),
            rejectUnauthorized: tls?.insecure_skip_verify !== true,
            servername: tls?.servername,
          }
        : undefined,
    fallback: undefined,
    ...h2Connections(upstream),
  };
}

/** An upstream's HTTP/2 connection options: its timeouts and `http2` limits. */
function h2Connections(upstream: UpstreamConfig): Omit<H2Options, 'origin' | 'tls' | 'fallback'> {
  return {
    connectTimeout: upstream.timeouts.connect,
    headersTimeout: upstream.timeouts.response_header,
    bodyTimeout: upstream.timeouts.read,
    idleTimeout: upstream.timeouts.idle,
    connections: upstream.http2.connections,
    maxConcurrentStreams: upstream.http2.max_concurrent_streams,
    pingInterval: upstream.http2.ping_interval,
    pingTimeout: upstream.http2.ping_timeout,
  };
}

/**
 * The target of a spawned instance on 127.0.0.1:`port`, in what it speaks: FastCGI in a FastCGI upstream (a PHP-FPM
 * pool), HTTP/2 without TLS with `spawn.protocol: h2c`, else HTTP/1.1.
 */
export function slotTarget(port: number, upstream: UpstreamConfig, label: string, logger?: Logger): ServerTarget {
  if (speaksFastCgi(upstream)) {
    const url = { kind: 'fcgi' as const, origin: `fcgi://127.0.0.1:${port}`, socketPath: undefined, basePath: '', text: `fcgi://127.0.0.1:${port}` };
    const pool = (connections: number): FastCgiPool => fastCgiPool(url, upstream, connections, label, logger);
    return new ServerTarget(url.origin, port, pool(upstream.keepalive), pool(1));
  }
  const origin = `http://127.0.0.1:${port}`;
  if (upstream.spawn?.protocol === 'h2c') {
    const h2: H2Options = { ...h2Connections(upstream), origin, tls: undefined, fallback: undefined };
    return new ServerTarget(origin, port, new H2Dispatcher(h2), new H2Dispatcher({ ...h2, fresh: true }), true);
  }
  const connect = { timeout: upstream.timeouts.connect };
  const pool = new Pool(origin, { ...poolOptions(upstream), connect: skippingContinue(buildConnector(connect)) });
  return new ServerTarget(origin, port, pool, new Client(origin, { pipelining: 0, connect }));
}

/** Closes a dispatcher gracefully, or destroys it on failure or after `cutAfterMs`. */
async function closeDispatcher(dispatcher: Dispatcher, cutAfterMs: number | undefined): Promise<void> {
  const closed = dispatcher.close().catch(() => dispatcher.destroy());
  if (cutAfterMs === undefined) return closed;
  let timer: NodeJS.Timeout | undefined;
  const cut = new Promise<void>((resolve) => {
    timer = setTimeout(() => resolve(dispatcher.destroy().catch(() => undefined)), cutAfterMs);
  });
  await Promise.race([closed, cut]);
  clearTimeout(timer);
}

/**
 * A TLS connector that verifies the app server as `servername` (else the URL's host name; an IP address is
 * checked against the certificate's IP entries and sends no SNI), never as whatever name a request carried.
 */
function pinnedTlsConnector(options: buildConnector.BuildOptions, servername: string | undefined, hostname: string): buildConnector.connector {
  const connector = buildConnector(options);
  const name = servername ?? (isIP(hostname.replace(/^\[|\]$/g, '')) === 0 ? hostname : undefined);
  return function connectPinned(opts, callback) {
    connector({ ...opts, servername: name }, callback);
  };
}

/**
 * The pool, with every request given the same TLS server name so that it never reconnects over a Host. This is
 * what undici's `compose()` does, minus its handler re-wrapping, which folds repeated fields such as Set-Cookie.
 */
function withServername(pool: Pool, key: string): Dispatcher {
  const dispatch = function dispatchWithServername(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    (opts as Dispatcher.DispatchOptions & { servername?: string }).servername = key;
    return pool.dispatch(opts, handler);
  };
  return new Proxy(pool, { get: (target, name) => (name === 'dispatch' ? dispatch : Reflect.get(target, name)) });
}

function resolvePath(dir: string, file: string): string {
  return file.startsWith('/') ? file : `${dir}/${file}`;
}
