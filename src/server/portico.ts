/**
 * The running server as a value: built from a config, started, reloaded (the new app is built and started
 * first, swapped in, and only then is the old one stopped — a bad config never takes the server down), stopped.
 */
import type { IncomingMessage } from 'node:http';
import type { ClientRequest, ClientResponse } from '../http/context.js';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { createErrorLog } from '../log/error-log.js';
import type { CacheZone } from '../cache/zone.js';
import { CacheZones } from '../cache/zones.js';
import { PorticoError } from '../errors.js';
import type { AcmeManager, AcmeOptions, AcmeSites, CertificateSink } from '../tls/acme.js';
import { Http01Challenges } from '../tls/challenges.js';
import { StateDir } from '../tls/state-dir.js';
import type { CertificateStore } from '../tls/certificates.js';
import { App, type AppState } from './app.js';
import { Listeners, type BoundAddress, type ListenerOptions } from '../connections/listeners.js';

/** The state directory's file that keeps the sticky cookie's key across restarts. */
const STICKY_KEY_FILE = 'sticky.key';
/**
 * How long a previous config may go on answering what it took before a reload: an upload still arriving, a long
 * download, a tunnel. nginx's old workers wait without bound by default; past this, what is left is cut.
 */
const RELOAD_DRAIN_MS = 5 * 60_000;

/** What a server may be built with besides its config and logger. */
export interface PorticoOptions {
  /** The ACME managers' clock and retry delays (tests move the clock to bring a renewal near). */
  acme?: Pick<AcmeOptions, 'now' | 'retryFirstMs' | 'retryMaxMs'>;
  /** This server is a worker of `workers: N` (see `WorkerRole`); absent: a single process, as always. */
  worker?: WorkerRole;
}

/**
 * What a worker is given by the primary, which holds the control plane: the worker opens no state directory
 * (the primary holds its lock), runs no active checks (`applyCheck` takes the primary's outcomes) and orders no
 * certificates (the primary's are installed through `certificates`; its http-01 tokens are put in `challenges`).
 */
export interface WorkerRole {
  /** The sticky cookie's key from the primary's state directory (undefined: none there). */
  stickyKey: Buffer | undefined;
  /** The http-01 tokens the primary's ACME orders have pending, kept current by the primary's messages. */
  challenges: Http01Challenges;
  /** How the listeners bind (reusePort or node:cluster) and the TLS ticket keys shared by every worker. */
  listeners: ListenerOptions;
  /** A purge or invalidation made in one of this worker's zones, for the primary to pass on to the others. */
  purged(zone: string, kind: 'key' | 'prefix', value: string): void;
}

/** A Portico server: listeners plus the current app. */
export class Portico {
  #app: App;
  readonly #listeners: Listeners;
  readonly #logger: Logger;
  readonly #zones: CacheZones;
  #reloading: Promise<void> = Promise.resolve();
  /** The state directory (locked while this server lives), when the config names one or ACME needs one. */
  #state: StateDir | undefined;
  #acme: AcmeSites | undefined;
  #stopped = false;
  /** Previous configs still answering what they took before a reload (see `#reload`). */
  readonly #draining = new Set<Promise<void>>();
  readonly #appState: AppState = {};
  readonly #acmeOptions: NonNullable<PorticoOptions['acme']>;
  readonly #worker: WorkerRole | undefined;

  /** Opens (and locks) the state directory when the config has one: throws PORTICO_STATE_DIR when it cannot be used. */
  constructor(config: Config, logger: Logger = createErrorLog(config.log.level), options: PorticoOptions = {}) {
    this.#logger = logger;
    this.#acmeOptions = options.acme ?? {};
    this.#worker = options.worker;
    this.#zones = new CacheZones(logger);
    if (this.#worker === undefined) this.#openState(config.state_dir);
    else {
      this.#appState.stickyKey = this.#worker.stickyKey;
      this.#appState.challenges = this.#worker.challenges;
      this.#appState.upstreams = { remoteHealth: true };
    }
    const plan = this.#zones.resolve(config.caches);
    this.#sharePurges(plan.fresh);
    plan.commit();
    try {
      this.#app = new App(config, logger, plan.zones, this.#appState);
    } catch (err) {
      this.#state?.release();
      throw err;
    }
    this.#listeners = new Listeners(
      config.listen,
      {
        request: (req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https', redirectHttps?: number) =>
          this.#app.handle(req, res, scheme, redirectHttps),
        upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer, scheme: 'http' | 'https', refuse?: number) =>
          this.#app.handleUpgrade(req, socket, head, scheme, refuse),
        refuse: (req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https', status: number, close: boolean) =>
          this.#app.refuse(req, res, scheme, status, close),
        serverHeader: () => this.#app.config.server_header,
        trustedProxies: () => this.#app.trustedProxies,
        certificates: () => this.#app.certificates,
      },
      logger,
      this.#worker?.listeners,
    );
  }

  /** A worker's new zones tell the primary of their purges (see `WorkerRole.purged`). */
  #sharePurges(zones: readonly CacheZone[]): void {
    const worker = this.#worker;
    if (worker === undefined) return;
    for (const zone of zones) zone.onPurge = (kind, value) => worker.purged(zone.name, kind, value);
  }

  /**
   * A purge made elsewhere (another worker's invalidation, the primary's control path): this process's zone of
   * the name forgets the key or prefix, without telling it on. Resolves with the count removed (0: no such zone).
   */
  purge(zone: string, kind: 'key' | 'prefix', value: string): Promise<number> {
    const found = this.#app.cacheZone(zone);
    if (found === undefined) return Promise.resolve(0);
    return kind === 'key' ? found.purge(value, false) : found.purgePrefix(value, false);
  }

  /** An active check's outcome from the primary (see `Upstream.applyCheck`), for the app now serving. */
  applyCheck(upstream: string, label: string, healthy: boolean, passed: boolean, started: number): void {
    this.#app.upstream(upstream)?.applyCheck(label, healthy, passed, started);
  }

  /**
   * Opens the state directory and what lives in it. Once per process: a reload may add one, or drop the key (the
   * directory stays in use), but not move it.
   */
  #openState(dir: string | undefined): void {
    if (dir === this.#state?.path || dir === undefined) return;
    if (this.#state !== undefined) {
      throw new PorticoError('PORTICO_STATE_DIR', `state_dir changed from ${this.#state.path} to ${dir}: restart Portico to move it`);
    }
    const state = StateDir.open(dir, this.#logger);
    this.#state = state;
    this.#appState.stickyKey = state.secret(STICKY_KEY_FILE);
    this.#appState.challenges = new Http01Challenges();
  }

  /**
   * Hands the config's sites to the ACME managers (at start, and after a reload's swap). acme-client (a second
   * or so to load) is only loaded once a config has an ACME site.
   */
  async #updateAcme(config: Config): Promise<void> {
    // A worker's certificates are ordered by the primary.
    if (this.#worker !== undefined) return;
    const state = this.#state;
    if (this.#acme === undefined) {
      if (state === undefined || !config.sites.some((site) => site.tls?.acme !== undefined)) return;
      const { AcmeSites } = await import('../tls/acme.js');
      // Into the store of the app serving at the time: a reload's new app adopts what the previous one had.
      const sink: CertificateSink = {
        install: (id, hosts, cert, key) => this.#app.certificates.install(id, hosts, cert, key),
        remove: (id) => void this.#app.certificates.remove(id),
      };
      this.#acme = new AcmeSites({ state, sink, challenges: this.#appState.challenges!, logger: this.#logger, ...this.#acmeOptions });
    }
    if (this.#stopped) return;
    try {
      this.#acme.update(config.sites);
    } catch (err) {
      // A trusted_roots file gone since the config was checked: the sites are served, without new certificates.
      this.#logger.error({ err }, 'acme: cannot manage the certificates of this config');
    }
  }

  /** The ACME manager of the site naming `host` (for tests and status). */
  acmeManager(host: string): AcmeManager | undefined {
    return this.#acme?.manager(host);
  }

  /** The config of the app now serving. */
  get config(): Config {
    return this.#app.config;
  }

  /**
   * The certificate store of the app now serving: `install(id, hosts, certPem, keyPem)` swaps a certificate in
   * for new handshakes (see `tls/certificates.ts`); a reload carries installed certificates over.
   */
  get certificates(): CertificateStore {
    return this.#app.certificates;
  }

  /** A cache zone of the app now serving, for purging (admin API, tests). */
  cacheZone(name: string): CacheZone | undefined {
    return this.#app.cacheZone(name);
  }

  /** Where the listeners are bound (ports chosen by the system when the config said 0). */
  get addresses(): readonly BoundAddress[] {
    return this.#listeners.addresses;
  }

  /** Starts the app, then binds the listeners. */
  async start(): Promise<void> {
    await this.#zones.start();
    await this.#app.start();
    try {
      await this.#listeners.start();
    } catch (err) {
      await this.#app.stop();
      await this.#zones.stop();
      this.#state?.release();
      throw err;
    }
    // Orders start once the plain listeners can answer http-01.
    await this.#updateAcme(this.#app.config);
  }

  /**
   * Builds and starts an app from a new config and binds its new listen addresses; only when all of that worked
   * is it swapped in, and then the old app and the addresses no longer listed are stopped. If anything fails
   * (a port in use: PORTICO_LISTEN_FAILED), what was started for the new config is stopped and the error thrown:
   * the old config keeps serving, unchanged.
   */
  reload(config: Config): Promise<void> {
    // One reload at a time: each plans against what the previous one left (zones held, addresses bound).
    const run = this.#reloading.then(() => this.#reload(config));
    this.#reloading = run.catch(() => undefined);
    return run;
  }

  async #reload(config: Config): Promise<void> {
    if (this.#worker === undefined) this.#openState(config.state_dir);
    const caches = this.#zones.resolve(config.caches);
    this.#sharePurges(caches.fresh);
    const next = new App(config, this.#logger, caches.zones, this.#appState);
    let listeners;
    try {
      for (const zone of caches.fresh) await zone.start();
      await next.start();
      listeners = await this.#listeners.prepare(config.listen);
    } catch (err) {
      await next.stop();
      await Promise.all(caches.fresh.map((zone) => zone.stop()));
      throw err;
    }
    caches.commit();
    const previous = this.#app;
    next.certificates.adopt(previous.certificates);
    this.#app = next;
    // The swap is done. The addresses no longer listed drain in the background (cut after the grace period;
    // `stop()` waits for them): a long-lived tunnel on one must not hold the reload up.
    void listeners.commit();
    await this.#updateAcme(config);
    // The previous app drains: what it took (an upload still arriving, a download, a wait in a queue) ends with its
    // upstreams and access log, and only then are they closed. The reload does not wait for it, unless it is idle.
    const retired = caches.retired;
    const drained = previous
      .drain(RELOAD_DRAIN_MS)
      .then(() => previous.stop(1000))
      .then(() => Promise.all(retired.map((zone) => zone.stop())))
      .then(
        () => undefined,
        (err: unknown) => this.#logger.error({ err }, 'stopping the previous config after a reload failed'),
      );
    if (previous.idle) return drained;
    this.#draining.add(drained);
    void drained.finally(() => this.#draining.delete(drained));
  }

  /** Stops accepting, lets requests in flight finish (up to `graceMs`), then stops the app. */
  async stop(graceMs = 10_000): Promise<void> {
    this.#stopped = true;
    this.#acme?.stop();
    await this.#listeners.stop(graceMs);
    // Every client is gone: configs still draining after a reload stop now.
    await Promise.all(this.#draining);
    // Every client is gone by now: an upstream request still running (one read for nobody, a background cache
    // fill) must not hold the process past its grace period.
    await this.#app.stop(Math.min(graceMs, 1000));
    await this.#zones.stop();
    this.#state?.release();
  }
}
