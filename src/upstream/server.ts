/**
 * One app-server instance behind an upstream: its connection pool (undici), its load (requests in flight,
 * peak-EWMA latency) and its health (active check state, passive ejection, slow start).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Client, Pool, buildConnector, type Dispatcher } from 'undici';
import type { Config } from '../config/load.js';
import { skippingContinue } from './continue.js';
import type { PolicyServer } from './policies/types.js';

type UpstreamConfig = Config['upstreams'][string];
type ServerConfig = UpstreamConfig['servers'][number];

/** Decay time of the latency average: older samples weigh e^(-Δt/τ). */
const EWMA_TAU_MS = 10_000;

/** An app-server instance and what Portico knows of its state. */
export class UpstreamServer implements PolicyServer {
  readonly id: number;
  readonly weight: number;
  readonly backup: boolean;
  /** `http://127.0.0.1:3001` or `unix:/run/app.sock`: for logs only, never sent to a client. */
  readonly label: string;
  /** Stable identity for hash rings (survives reordering the config). */
  readonly address: string;
  readonly origin: string;
  /** Path prefix of the server URL (`''` or `/base`), prepended to forwarded paths. */
  readonly basePath: string;
  readonly maxConns: number;
  /** Connections of the pool (`keepalive`): a request past them would wait inside undici, unbounded. */
  readonly poolSize: number;
  readonly dispatcher: Dispatcher;
  /**
   * The active checks' own connection: never one of the traffic pool's, and each check opens a new one (as
   * HAProxy's checks do), so a passing check proves the server accepts connections now, not that an old
   * keep-alive connection from before a restart still answered.
   */
  readonly checkDispatcher: Dispatcher;
  /** Requests in flight (tunnels included). */
  active = 0;
  /**
   * The same app server in the other config while a reload's previous config drains (see `pairWith`): its
   * requests in flight count under `max_conns` here too, so that two configs never send it more than that.
   */
  #pair: UpstreamServer | undefined = undefined;
  /** Requests holding one of the pool's connections (an open tunnel has left the pool). */
  pooled = 0;
  ewmaMs = 0;
  #ewmaAt = 0;

  /** Active-check verdict (true before the first check: see docs/proxy.md, "Health checks"). */
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
  /** When the server last became available again (for slow start). */
  recoveredAt = 0;
  readonly #slowStartMs: number;

  constructor(id: number, config: ServerConfig, upstream: UpstreamConfig, configDir: string) {
    this.id = id;
    this.weight = config.weight;
    this.backup = config.backup;
    this.label = config.url.text;
    this.address = config.url.text;
    this.origin = config.url.origin;
    this.basePath = config.url.basePath;
    this.maxConns = config.max_conns ?? upstream.max_conns;
    this.poolSize = upstream.keepalive;
    this.#slowStartMs = upstream.slow_start;
    const tls = config.tls;
    const connect = {
      timeout: upstream.timeouts.connect,
      ...(tls?.ca !== undefined ? { ca: readFileSync(resolvePath(configDir, tls.ca)) } : {}),
      rejectUnauthorized: tls?.insecure_skip_verify !== true,
    };
    const pool = new Pool(config.url.origin, {
      connections: upstream.keepalive,
      pipelining: 1,
      keepAliveTimeout: upstream.timeouts.idle,
      keepAliveMaxTimeout: upstream.timeouts.idle,
      headersTimeout: upstream.timeouts.response_header,
      bodyTimeout: upstream.timeouts.read,
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
    this.dispatcher = config.url.kind === 'https' ? withServername(pool, config.url.origin) : pool;
    const checks = new Client(config.url.origin, {
      pipelining: 0,
      socketPath: config.url.socketPath,
      connect: config.url.kind === 'https' ? pinnedTlsConnector(connect, tls?.servername, new URL(config.url.origin).hostname) : connect,
    });
    this.checkDispatcher = config.url.kind === 'https' ? withServername(checks as unknown as Pool, config.url.origin) : checks;
  }

  /** Weight after slow start: ramps linearly from 10 % to 100 % over `slow_start` after a recovery. */
  get effectiveWeight(): number {
    if (this.#slowStartMs === 0 || this.recoveredAt === 0) return this.weight;
    const since = Date.now() - this.recoveredAt;
    if (since >= this.#slowStartMs) return this.weight;
    return this.weight * Math.max(0.1, since / this.#slowStartMs);
  }

  /** Whether the server may receive new requests now (health and ejection; capacity is separate). */
  isAvailable(now: number): boolean {
    return this.healthy && this.ejectedUntil <= now;
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
  observeLatency(ms: number, now: number): void {
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

  /** Ejects the server; each ejection soon after the last lasts twice as long (at most 8× the base). */
  eject(now: number, baseMs: number): void {
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
    }
    this.#failures = [...previous.#failures];
    this.ejectedUntil = previous.ejectedUntil;
    this.ejectedAt = previous.ejectedAt;
    this.ejections = previous.ejections;
    this.recoveredAt = previous.recoveredAt;
    this.ewmaMs = previous.ewmaMs;
    this.#ewmaAt = previous.#ewmaAt;
  }

  /**
   * Closes the pool's connections once their requests are done; with `cutAfterMs`, whatever is still in flight
   * then is cut (a shutdown: past the listeners' grace period no client waits for it any more).
   */
  async close(cutAfterMs?: number): Promise<void> {
    await Promise.all([closeDispatcher(this.dispatcher, cutAfterMs), closeDispatcher(this.checkDispatcher, cutAfterMs)]);
  }
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
