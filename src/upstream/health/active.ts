/**
 * Active health checks: every `interval`, a GET of `path` to each server (or, `type: grpc`, the gRPC health
 * checking protocol's Check: see grpc-health.ts), never overlapping for one server,
 * bounded by `timeout`. `fall` consecutive failures mark a server down, `rise` consecutive passes mark it up
 * again. A server starts up (see docs/proxy.md, "Health checks") and the first round runs at once on start().
 * A spawned slot that no instance serves is not checked; a check begun on a target the slot has left since is
 * not counted.
 */
import type { Config } from '../../config/load.js';
import { readAtMost } from '../../http/read-at-most.js';
import { slotTarget, type ServerTarget, type UpstreamServer } from '../server.js';
import { HEALTH_CHECK_PATH, healthCheckRequest, servingStatus } from './grpc-health.js';

type UpstreamConfig = Config['upstreams'][string];
type HealthConfig = NonNullable<UpstreamConfig['health']>;

/** A change of a server's state, with its cause in words and the URL checked (for the error log). */
export type HealthChange = (server: UpstreamServer, healthy: boolean, reason: string, url: string) => void;

/** Transport errors by code, in words; other codes are logged as they are. */
const ERROR_WORDS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  // A unix socket (PHP-FPM's) that is not there, or that Portico's user may not open (listen.owner, listen.mode).
  ENOENT: 'socket file not found',
  EACCES: 'permission denied',
  UND_ERR_SOCKET: 'connection closed',
  UND_ERR_HEADERS_OVERFLOW: 'response head too large',
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: 'response body shorter than its Content-Length',
  PORTICO_FCGI_INVALID_HEAD: 'invalid response head',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host not found (DNS lookup failed)',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/** `1 s` for whole seconds, else `300 ms`. */
function duration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/** A transport error in words for the error log: `connection refused`, `TLS: CERT_HAS_EXPIRED`, its code or message. */
export function errorWords(err: unknown): string {
  const error = err as NodeJS.ErrnoException | undefined;
  const code = error?.code ?? (error?.cause as NodeJS.ErrnoException | undefined)?.code;
  if (code === undefined) return error?.message ?? String(err);
  if (TIMEOUTS.has(code)) return 'timeout';
  return ERROR_WORDS[code] ?? (code.startsWith('ERR_TLS') || /CERT|SSL/.test(code) ? `TLS: ${code}` : code);
}

/**
 * A transport error in words, a timeout with the limit it ran into (`timeoutMs`): `connection refused`,
 * `timeout after 1 s` (for the error log: a failed check, a failed proxy attempt).
 */
export function failureWords(err: unknown, timeoutMs: number): string {
  const words = errorWords(err);
  return words === 'timeout' ? `timeout after ${duration(timeoutMs)}` : words;
}

/** Why a check failed with an error (not a status): the connection's error, or the timeout. */
function checkError(err: unknown, timedOut: boolean, timeoutMs: number): string {
  return timedOut ? `timeout after ${duration(timeoutMs)}` : failureWords(err, timeoutMs);
}

/**
 * Every check's outcome, after it is recorded: whether it passed, when it began (ms since the epoch), and the
 * server's health then. With `workers`, the primary runs the checks and sends each outcome to the workers.
 */
export type CheckResult = (server: UpstreamServer, passed: boolean, started: number) => void;

/**
 * Runs the checks of one upstream; `stop()` leaves no timer or request behind. Servers found through DNS come and
 * go (`add`, `remove`); a new one is checked at once.
 */
export class ActiveHealthChecker {
  readonly #servers: Set<UpstreamServer>;
  readonly #config: HealthConfig;
  readonly #onChange: HealthChange;
  readonly #onResult: CheckResult | undefined;
  /** Each server's next check. */
  readonly #timers = new Map<UpstreamServer, NodeJS.Timeout>();
  /** Each server's check under way. */
  readonly #aborts = new Map<UpstreamServer, AbortController>();
  #running = false;

  constructor(servers: readonly UpstreamServer[], config: HealthConfig, onChange: HealthChange, onResult?: CheckResult) {
    this.#servers = new Set(servers);
    this.#config = config;
    this.#onChange = onChange;
    this.#onResult = onResult;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const server of this.#servers) void this.#check(server);
  }

  stop(): void {
    this.#running = false;
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    for (const abort of this.#aborts.values()) abort.abort();
    this.#aborts.clear();
  }

  /** Checks `server` too (found through DNS): at once when the checks run, else from `start`. */
  add(server: UpstreamServer): void {
    if (this.#servers.has(server)) return;
    this.#servers.add(server);
    if (this.#running) void this.#check(server);
  }

  /** Checks `server` no more (DNS no longer names it): its next check is cancelled, one under way aborted and ignored. */
  remove(server: UpstreamServer): void {
    this.#servers.delete(server);
    clearTimeout(this.#timers.get(server));
    this.#timers.delete(server);
    this.#aborts.get(server)?.abort();
    this.#aborts.delete(server);
  }

  #schedule(server: UpstreamServer): void {
    if (!this.#running || !this.#servers.has(server)) return;
    const timer = setTimeout(() => {
      this.#timers.delete(server);
      void this.#check(server);
    }, this.#config.interval);
    this.#timers.set(server, timer);
  }

  /** One check of one server, then the next is scheduled. */
  async #check(server: UpstreamServer): Promise<void> {
    const target = server.target;
    if (target === undefined) return this.#schedule(server);
    const abort = new AbortController();
    this.#aborts.set(server, abort);
    const started = Date.now();
    const timer = setTimeout(() => abort.abort(), this.#config.timeout);
    // Undefined: the check passed; else why it failed.
    let failure: string | undefined;
    try {
      failure = await checkOnce(target, server.basePath, this.#config, abort.signal);
    } catch (err) {
      failure = checkError(err, abort.signal.aborted, this.#config.timeout);
    } finally {
      clearTimeout(timer);
      if (this.#aborts.get(server) === abort) this.#aborts.delete(server);
    }
    if (!this.#running || !this.#servers.has(server)) return;
    if (server.target === target) {
      server.lastCheckAt = started;
      server.lastCheckPassed = failure === undefined;
      this.#record(server, failure, started);
      this.#onResult?.(server, failure === undefined, started);
    }
    this.#schedule(server);
  }

  /** The URL a check of `server` asks. */
  #url(server: UpstreamServer): string {
    return server.origin + server.basePath + (this.#config.type === 'grpc' ? `${HEALTH_CHECK_PATH} (${JSON.stringify(this.#config.service)})` : this.#config.path);
  }

  #record(server: UpstreamServer, failure: string | undefined, started: number): void {
    if (failure === undefined) {
      server.fails = 0;
      server.passes++;
      if (!server.healthy && server.passes >= this.#config.rise) {
        server.healthy = true;
        server.recoveredAt = Date.now();
        server.clearEjection();
        this.#onChange(server, true, `${server.passes} checks passed (rise ${this.#config.rise})`, this.#url(server));
      } else if (server.healthy && server.ejectedUntil > Date.now() && started >= server.ejectedAt) {
        // Live traffic ejected it (a restart faster than `fall` checks), and a check begun since then, on a new
        // connection, passed: the server is back. Envoy's successful_active_health_check_uneject_host.
        server.clearEjection();
        this.#onChange(server, true, 'a check passed since live traffic ejected it', this.#url(server));
      }
    } else {
      server.passes = 0;
      server.fails++;
      if (server.healthy && server.fails >= this.#config.fall) {
        server.healthy = false;
        this.#onChange(server, false, `${failure} (${server.fails} checks failed, fall ${this.#config.fall})`, this.#url(server));
      }
    }
  }
}

/**
 * One check of `target` (its own connection, never a pooled one): the `path` GET, or with `type: grpc` the gRPC
 * health checking protocol's Check. Resolves to undefined when it passed, else why not; rejects on a transport error.
 */
async function checkOnce(target: ServerTarget, basePath: string, check: HealthConfig, signal: AbortSignal): Promise<string | undefined> {
  if (check.type === 'grpc') return grpcCheck(target, basePath, check, signal);
  const res = await target.checkDispatcher.request({
    path: basePath + check.path,
    method: 'GET',
    headers: { host: check.host ?? new URL(target.origin).host, 'user-agent': 'Portico-health-check' },
    signal,
    headersTimeout: check.timeout,
    bodyTimeout: check.timeout,
    // A new connection for every check: the next check must see a restart, not a pooled connection.
    reset: true,
  });
  await res.body.dump();
  const expect = check.expect;
  if (expect.some(([low, high]) => res.statusCode >= low && res.statusCode <= high)) return undefined;
  return `status ${res.statusCode} (expected ${expect.map(([low, high]) => (low === high ? low : `${low}-${high}`)).join(', ')})`;
}

/**
 * A gRPC health check (`grpc.health.v1.Health/Check` for `service`): passes on SERVING with grpc-status 0;
 * resolves to why it failed otherwise (`NOT_SERVING`, `grpc-status 12 (unknown service)`, `status 404`).
 */
async function grpcCheck(target: ServerTarget, basePath: string, check: HealthConfig, signal: AbortSignal): Promise<string | undefined> {
  const res = await target.checkDispatcher.request({
    path: basePath + HEALTH_CHECK_PATH,
    method: 'POST',
    headers: { host: check.host ?? new URL(target.origin).host, 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'Portico-health-check' },
    body: healthCheckRequest(check.service),
    signal,
    headersTimeout: check.timeout,
    bodyTimeout: check.timeout,
    reset: true,
  });
  const body = await readAtMost(res.body, GRPC_ANSWER_MAX);
  if (res.statusCode !== 200) return `status ${res.statusCode} (expected 200 from a gRPC server)`;
  if (body === undefined) return `an answer over ${GRPC_ANSWER_MAX} bytes (a HealthCheckResponse is a few)`;
  const grpcStatus = res.trailers['grpc-status'] ?? res.headers['grpc-status'];
  if (grpcStatus !== '0') {
    const message = res.trailers['grpc-message'] ?? res.headers['grpc-message'];
    return `grpc-status ${String(grpcStatus ?? 'missing')}${message === undefined ? '' : ` (${decodeURIComponent(String(message))})`}`;
  }
  const serving = servingStatus(body);
  return serving === 'SERVING' ? undefined : serving;
}

/** The most of a gRPC health check's answer read: a HealthCheckResponse is a few bytes, a server's answer is not trusted. */
const GRPC_ANSWER_MAX = 64 * 1024;

/**
 * A spawned instance's readiness probe in what it speaks (FastCGI, HTTP/2 without TLS): the upstream's active
 * check, once, on 127.0.0.1:`port`, within `timeoutMs`. Resolves to undefined when it passed, else why not (the
 * Supervisor's readiness loop counts `rise` passes). An HTTP/1.1 instance is probed by the Supervisor itself.
 */
export async function probeSlot(upstream: UpstreamConfig, port: number, timeoutMs: number): Promise<string | undefined> {
  const check = upstream.health;
  if (check === undefined) return undefined;
  const target = slotTarget(port, upstream, `127.0.0.1:${port}`);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    return await checkOnce(target, '', { ...check, timeout: timeoutMs }, abort.signal);
  } catch (err) {
    return checkError(err, abort.signal.aborted, timeoutMs);
  } finally {
    clearTimeout(timer);
    void target.close(0);
  }
}
