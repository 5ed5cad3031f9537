/**
 * The admin API's wiring in the server layer: its parts built from a serving Portico (a single process, or the
 * workers' primary; never a worker), and its life beside that server: started with it (the listener at
 * `admin.listen`, the token read from its variable), changed by a reload (the token read again, the listener
 * rebound when its address or TLS changed, a new certificate for new handshakes), released for an upgrade's new
 * process, stopped with it.
 */
import type { Logger } from 'pino';
import { tokenWeakness } from '../config/admin.js';
import type { Config } from '../config/load.js';
import { AdminApi, type AdminApiOptions, type AdminSettings } from '../control/admin-api.js';
import { AdminListener, type AdminAddress } from '../control/admin-listener.js';
import type { AdminParts } from '../control/admin-types.js';
import type { OperationRequest } from '../control/protocol.js';
import { PorticoError } from '../errors.js';
import { deployProblem, type Operations } from './operations.js';

/**
 * What a serving Portico (`Portico`, `Primary`) offers the admin API: `AdminParts`' methods under the servers' own
 * names (typed from the contract, not copied), with its operations queue and config.
 */
export interface AdminHost {
  statusReport: AdminParts['status'];
  metricsText: AdminParts['metrics'];
  serverAction: AdminParts['serverAction'];
  purgeTarget: AdminParts['purge'];
  reopenLogs: AdminParts['reopen'];
  readonly operations: Operations;
  readonly config: Config;
}

/** Names for a message: `"a", "b"`, or `none`. */
function known(names: readonly string[]): string {
  return names.length === 0 ? 'none' : names.map((name) => `"${name}"`).join(', ');
}

/** The admin API's parts from a serving Portico's methods and its operations queue. */
export function adminParts(host: AdminHost): AdminParts {
  return {
    status: () => host.statusReport(),
    metrics: () => host.metricsText(),
    serverAction: async (upstream, server, action) => {
      const names = Object.keys(host.config.upstreams);
      if (!Object.hasOwn(host.config.upstreams, upstream)) throw new PorticoError('PORTICO_UNKNOWN_UPSTREAM', `unknown upstream "${upstream}" (the config has ${known(names)})`);
      return host.serverAction(upstream, server, action);
    },
    purge: async (zone, target) => {
      const names = Object.keys(host.config.caches);
      if (!Object.hasOwn(host.config.caches, zone)) throw new PorticoError('PORTICO_UNKNOWN_ZONE', `unknown cache zone "${zone}" (the config has ${known(names)})`);
      return host.purgeTarget(zone, target);
    },
    reopen: () => host.reopenLogs(),
    operations: host.operations,
    preflight: (request: OperationRequest) => {
      if (request.operation === 'upgrade') {
        const refused = host.operations.upgradeProblem();
        if (refused !== undefined) throw refused;
        return;
      }
      if (request.operation !== 'deploy' || request.upstream === undefined) return;
      const problem = deployProblem(host.config, request.upstream);
      if (problem !== undefined) throw problem;
    },
  };
}

/**
 * The admin settings of a config: the token of its file (checked at load), else of its variable, checked here (a
 * weak one is no token: every POST is refused, saying why).
 */
function settingsOf(config: Config): AdminSettings {
  const admin = config.admin;
  const tokenEnv = admin?.token_env ?? 'PORTICO_ADMIN_TOKEN';
  const common = { tokenEnv, openReads: admin?.open_reads ?? false, hosts: admin?.hosts ?? [] };
  // A token file (read at load, so at every reload too) wins over the variable.
  if (admin?.token !== undefined) return { ...common, token: admin.token };
  const token = process.env[tokenEnv];
  if (token === undefined || token === '') return { ...common, token: undefined };
  const weak = tokenWeakness(token);
  if (weak !== undefined) return { ...common, token: undefined, tokenProblem: `the token in $${tokenEnv} ${weak.replace(/^it /, '')}` };
  return { ...common, token };
}

/** The listener address of a config (undefined: no admin listener). */
function addressOf(config: Config): AdminAddress | undefined {
  const listen = config.admin?.listen;
  if (listen === undefined) return undefined;
  return { host: listen.host, port: listen.port, text: listen.text, tls: config.admin?.tls?.pem };
}

/** Whether two addresses need two listeners (a new address, or TLS turned on or off). */
function rebind(a: AdminAddress | undefined, b: AdminAddress | undefined): boolean {
  return a?.text !== b?.text || (a?.tls === undefined) !== (b?.tls === undefined);
}

/** What a reload prepared for the admin API: applied at the swap, or undone. */
export interface AdminPlan {
  commit(): void;
  discard(): Promise<void>;
}

/** The admin API of one serving Portico, and its listener. */
export class AdminService {
  /** The API (served on the control socket too). */
  readonly api: AdminApi;
  readonly #logger: Logger;
  #listener: AdminListener | undefined;
  /** Listeners a reload replaced, still closing. */
  readonly #closing = new Set<Promise<void>>();
  #released = false;

  /** The admin API on `parts`; nothing listens until `start`. */
  constructor(parts: AdminParts, logger: Logger, options: AdminApiOptions = {}) {
    this.api = new AdminApi(parts, logger, options);
    this.#logger = logger;
  }

  /** The listener's URL (null: none). */
  get url(): string | null {
    return this.#listener?.url ?? null;
  }

  /** The listener's bound port (undefined: none). */
  get port(): number | undefined {
    return this.#listener?.port;
  }

  /** Applies the config's admin settings and binds its listener, if it has one. Throws PORTICO_LISTEN_FAILED. */
  async start(config: Config): Promise<void> {
    this.#released = false;
    this.#configure(config);
    const address = addressOf(config);
    if (address === undefined) return;
    const listener = new AdminListener(this.api, address, this.#logger);
    await listener.start();
    this.#listener = listener;
  }

  #configure(config: Config): void {
    const settings = settingsOf(config);
    if (config.admin?.listen !== undefined && settings.tokenProblem !== undefined) {
      this.#logger.error({ token_env: settings.tokenEnv }, `admin: ${settings.tokenProblem}: the admin listener refuses every POST (set a strong one and restart Portico, or use admin.token_file)`);
    } else if (config.admin?.listen !== undefined && settings.token === undefined) {
      this.#logger.warn(
        { token_env: settings.tokenEnv },
        `admin: no token in $${settings.tokenEnv}: the admin listener refuses every POST (set it and restart Portico: a running process's environment cannot change; or use admin.token_file, read again at every reload)`,
      );
    }
    this.api.configure(settings);
  }

  /**
   * A reload's part, before its swap: binds the listener of a new address (a port in use fails the reload, the old
   * config keeps serving). At the commit the token is read again and the previous listener closes.
   */
  async prepare(config: Config): Promise<AdminPlan> {
    const next = addressOf(config);
    const current = this.#listener?.address;
    let fresh: AdminListener | undefined;
    const sameAddress = next !== undefined && current !== undefined && next.text === current.text;
    // The same address with TLS turned on or off cannot be bound twice: swapped at the commit instead.
    if (!this.#released && next !== undefined && rebind(current, next) && !sameAddress) {
      fresh = new AdminListener(this.api, next, this.#logger);
      await fresh.start();
    }
    let committed = false;
    return {
      commit: () => {
        committed = true;
        this.#configure(config);
        if (this.#released) return;
        if (fresh !== undefined || next === undefined || rebind(current, next)) {
          const previous = this.#listener;
          this.#listener = fresh;
          if (previous !== undefined) this.#retire(previous);
          if (fresh !== undefined) this.#logger.info({ admin: fresh.url }, `admin API on ${fresh.url}`);
          if (fresh === undefined && next !== undefined) {
            // TLS turned on or off at the same address: bound once the previous listener has closed.
            const swapped = new AdminListener(this.api, next, this.#logger);
            const closed = previous === undefined ? Promise.resolve() : previous.stop(0);
            void closed
              .then(() => swapped.start())
              .then(() => {
                this.#listener = swapped;
                this.#logger.info({ admin: swapped.url }, `admin API on ${swapped.url}`);
              })
              .catch((err: unknown) => this.#logger.error({ err }, 'admin: cannot bind the admin listener after a reload'));
          }
        } else if (next.tls !== undefined) this.#listener?.setCertificate(next.tls);
      },
      discard: async () => {
        if (!committed) await fresh?.stop(0);
      },
    };
  }

  #retire(listener: AdminListener): void {
    const closing = listener.stop(1000);
    this.#closing.add(closing);
    void closing.finally(() => this.#closing.delete(closing));
  }

  /** An upgrade's old process: the listener closes (requests under way are answered) so that the new one may bind it. */
  async release(): Promise<void> {
    this.#released = true;
    const listener = this.#listener;
    this.#listener = undefined;
    await listener?.stop(1000);
  }

  /** Undoes `release` when the new process failed. */
  async restore(config: Config): Promise<void> {
    if (this.#released) await this.start(config);
  }

  /** Portico is stopping: `/healthz` answers 503 from now on. */
  stopping(): void {
    this.api.stopping();
  }

  /** Ends the event streams and closes the listener (bounded by `graceMs`). */
  async stop(graceMs = 1000): Promise<void> {
    this.api.stop();
    const listener = this.#listener;
    this.#listener = undefined;
    await listener?.stop(graceMs);
    await Promise.all(this.#closing);
  }
}
