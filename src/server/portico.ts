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
import { Listeners, type BoundAddress, type InheritedSocket } from '../connections/listeners.js';

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
  /**
   * An upgrade's new process: the pid of the Portico it replaces (whose state directory lock it accepts until
   * `succeeded()`), and the listening sockets that one handed over (listened on instead of binding).
   */
  upgrade?: { predecessor: number; sockets: readonly InheritedSocket[] };
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
  /** Until `start()`: what an upgrade handed over (see `PorticoOptions.upgrade`). */
  #upgrade: PorticoOptions['upgrade'];

  /** Opens (and locks) the state directory when the config has one: throws PORTICO_STATE_DIR when it cannot be used. */
  constructor(config: Config, logger: Logger = createErrorLog(config.log.level), options: PorticoOptions = {}) {
    this.#logger = logger;
    this.#acmeOptions = options.acme ?? {};
    this.#upgrade = options.upgrade;
    this.#zones = new CacheZones(logger);
    this.#openState(config.state_dir);
    const plan = this.#zones.resolve(config.caches);
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
    );
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
    const state = StateDir.open(dir, this.#logger, this.#upgrade?.predecessor);
    this.#state = state;
    this.#appState.stickyKey = state.secret(STICKY_KEY_FILE);
    this.#appState.challenges = new Http01Challenges();
  }

  /**
   * Hands the config's sites to the ACME managers (at start, and after a reload's swap). acme-client (a second
   * or so to load) is only loaded once a config has an ACME site.
   */
  async #updateAcme(config: Config): Promise<void> {
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

  /** The state directory's path (undefined: none). */
  get stateDir(): string | undefined {
    return this.#state?.path;
  }

  /** The listening sockets, to hand to the process of an upgrade. */
  listeningSockets(): InheritedSocket[] {
    return this.#listeners.sockets();
  }

  /**
   * An upgrade's old process, once the new one (`pid`, using the state directory `stateDir`) is ready: gives up
   * what only one Portico may hold. The cache zones' disk folders: nothing more is stored, writes in flight land.
   * The state directory lock is rewritten with the new pid when both use the same directory (else this one
   * releases its own when it stops).
   */
  async handOver(pid: number, stateDir: string | undefined): Promise<void> {
    await this.#zones.holdDisks();
    if (this.#state !== undefined && stateDir === this.#state.path) this.#state.handOver(pid);
  }

  /** An upgrade's old process whose new one failed after `handOver`: the lock and the disk folders are this one's again. */
  async takeBack(): Promise<void> {
    this.#state?.takeBack();
    await this.#zones.releaseDisks();
  }

  /**
   * An upgrade's new process, once the old one has handed over (or is gone): takes the state directory lock, and
   * stores into the cache zones' disk folders from now on.
   */
  async succeeded(): Promise<void> {
    this.#state?.claim(this.#logger);
    await this.#zones.releaseDisks();
  }

  /** Starts the app, then binds the listeners (or listens on the sockets an upgrade handed over). */
  async start(): Promise<void> {
    await this.#zones.start(this.#upgrade !== undefined);
    await this.#app.start();
    // An upgrade's new process accepts on the shared sockets from here: whatever must be ready to answer (the app,
    // and the supervised app instances once there are some) is started before this point, and so are the stored
    // ACME certificates (a handshake on a shared socket must find them; an order this starts may see its http-01
    // challenge answered by the old process, and is then retried).
    const upgrading = this.#upgrade !== undefined;
    const inherited = this.#upgrade?.sockets ?? [];
    this.#upgrade = this.#upgrade === undefined ? undefined : { predecessor: this.#upgrade.predecessor, sockets: [] };
    if (upgrading) await this.#updateAcme(this.#app.config);
    try {
      await this.#listeners.start(inherited);
    } catch (err) {
      this.#acme?.stop();
      await this.#app.stop();
      await this.#zones.stop();
      this.#state?.release();
      throw err;
    }
    // Orders start once the plain listeners can answer http-01.
    if (!upgrading) await this.#updateAcme(this.#app.config);
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
    this.#openState(config.state_dir);
    const caches = this.#zones.resolve(config.caches);
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

  /**
   * Stops accepting, lets requests in flight finish (up to `graceMs`), then stops the app. `lingerIdle`: the old
   * process of an upgrade (see `Listeners.stop`).
   */
  async stop(graceMs = 10_000, lingerIdle = false): Promise<void> {
    this.#stopped = true;
    this.#acme?.stop();
    await this.#listeners.stop(graceMs, lingerIdle);
    // Every client is gone: configs still draining after a reload stop now.
    await Promise.all(this.#draining);
    // Every client is gone by now: an upstream request still running (one read for nobody, a background cache
    // fill) must not hold the process past its grace period.
    await this.#app.stop(Math.min(graceMs, 1000));
    await this.#zones.stop();
    this.#state?.release();
  }
}
