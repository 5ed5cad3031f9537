/**
 * Active health checks: every `interval`, a GET of `path` to each server (never overlapping for one server),
 * bounded by `timeout`. `fall` consecutive failures mark a server down, `rise` consecutive passes mark it up
 * again. A server starts up (see docs/proxy.md, "Health checks") and the first round runs at once on start().
 */
import type { Config } from '../../config/load.js';
import type { UpstreamServer } from '../server.js';

type HealthConfig = NonNullable<Config['upstreams'][string]['health']>;

/** Runs the checks of one upstream; `stop()` leaves no timer or request behind. */
export class ActiveHealthChecker {
  readonly #servers: readonly UpstreamServer[];
  readonly #config: HealthConfig;
  readonly #onChange: (server: UpstreamServer, healthy: boolean) => void;
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #aborts = new Set<AbortController>();
  #running = false;

  constructor(servers: readonly UpstreamServer[], config: HealthConfig, onChange: (server: UpstreamServer, healthy: boolean) => void) {
    this.#servers = servers;
    this.#config = config;
    this.#onChange = onChange;
  }

  start(): void {
    this.#running = true;
    for (const server of this.#servers) void this.#check(server);
  }

  stop(): void {
    this.#running = false;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const abort of this.#aborts) abort.abort();
    this.#aborts.clear();
  }

  #schedule(server: UpstreamServer): void {
    if (!this.#running) return;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      void this.#check(server);
    }, this.#config.interval);
    this.#timers.add(timer);
  }

  /** One check of one server, then the next is scheduled. */
  async #check(server: UpstreamServer): Promise<void> {
    const abort = new AbortController();
    this.#aborts.add(abort);
    const started = Date.now();
    const timer = setTimeout(() => abort.abort(), this.#config.timeout);
    let ok = false;
    try {
      const res = await server.checkDispatcher.request({
        path: server.basePath + this.#config.path,
        method: 'GET',
        headers: { host: this.#config.host ?? new URL(server.origin).host, 'user-agent': 'Portico-health-check' },
        signal: abort.signal,
        headersTimeout: this.#config.timeout,
        bodyTimeout: this.#config.timeout,
        // A new connection for every check: the next check must see a restart, not a pooled connection.
        reset: true,
      });
      await res.body.dump();
      ok = this.#config.expect.some(([low, high]) => res.statusCode >= low && res.statusCode <= high);
    } catch {
      ok = false;
    } finally {
      clearTimeout(timer);
      this.#aborts.delete(abort);
    }
    if (!this.#running) return;
    this.#record(server, ok, started);
    this.#schedule(server);
  }

  #record(server: UpstreamServer, ok: boolean, started: number): void {
    if (ok) {
      server.fails = 0;
      server.passes++;
      if (!server.healthy && server.passes >= this.#config.rise) {
        server.healthy = true;
        server.recoveredAt = Date.now();
        server.clearEjection();
        this.#onChange(server, true);
      } else if (server.healthy && server.ejectedUntil > Date.now() && started >= server.ejectedAt) {
        // Live traffic ejected it (a restart faster than `fall` checks), and a check begun since then, on a new
        // connection, passed: the server is back. Envoy's successful_active_health_check_uneject_host.
        server.clearEjection();
        this.#onChange(server, true);
      }
    } else {
      server.passes = 0;
      server.fails++;
      if (server.healthy && server.fails >= this.#config.fall) {
        server.healthy = false;
        this.#onChange(server, false);
      }
    }
  }
}
