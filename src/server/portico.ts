/**
 * The running server as a value: built from a config, started, reloaded (the new app is built and started
 * first, swapped in, and only then is the old one drained and stopped, in the background — a bad config never
 * takes the server down, and a reload never waits for the previous config's long requests), stopped.
 *
 * What outlives an app lives here, keyed by what identifies it: cache zones by name and settings, upstreams by
 * name and settings (a changed one takes over its servers' state by address), values handlers keep (a rate
 * limit's buckets) by site, route and options, the listeners by bound address.
 */
import type { IncomingMessage } from 'node:http';
import type { ClientRequest, ClientResponse } from '../http/context.js';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { createErrorLog } from '../log/error-log.js';
import type { CacheZone } from '../cache/zone.js';
import type { Upstream } from '../upstream/upstream.js';
import { CacheZones } from '../cache/zones.js';
import { PorticoError } from '../errors.js';
import type { AcmeManager, AcmeOptions, AcmeSites, CertificateSink } from '../tls/acme.js';
import { Http01Challenges } from '../tls/challenges.js';
import { StateDir } from '../tls/state-dir.js';
import type { CertificateStore } from '../tls/certificates.js';
import { App, type AppState } from './app.js';
import { KeptValues } from './kept.js';
import { UpstreamRegistry } from '../upstream/registry.js';
import { Listeners, type BoundAddress } from '../connections/listeners.js';

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
   * Whether a reload sets the logger's level to the config's `log.level`: true when Portico made the logger
   * itself (no `logger` given), else false unless set (a logger handed in is the caller's).
   */
  followLogLevel?: boolean;
  /** How long a previous config may go on answering what it took before a reload (default 5 minutes). */
  reloadGraceMs?: number;
}

/** A Portico server: listeners plus the current app. */
export class Portico {
  #app: App;
  readonly #listeners: Listeners;
  readonly #logger: Logger;
  readonly #zones: CacheZones;
  readonly #upstreams: UpstreamRegistry;
  readonly #kept = new KeptValues();
  readonly #followLogLevel: boolean;
  readonly #reloadGraceMs: number;
  #reloading: Promise<void> = Promise.resolve();
  /** The state directory (locked while this server lives), when the config names one or ACME needs one. */
  #state: StateDir | undefined;
  #acme: AcmeSites | undefined;
  #stopped = false;
  /** Previous configs still answering what they took before a reload (see `#reload`). */
  readonly #draining = new Set<Promise<void>>();
  readonly #appState: AppState = {};
  readonly #acmeOptions: NonNullable<PorticoOptions['acme']>;

  /** Opens (and locks) the state directory when the config has one: throws PORTICO_STATE_DIR when it cannot be used. */
  constructor(config: Config, logger?: Logger, options: PorticoOptions = {}) {
    this.#followLogLevel = options.followLogLevel ?? logger === undefined;
    logger ??= createErrorLog(config.log.level);
    this.#logger = logger;
    this.#acmeOptions = options.acme ?? {};
    this.#reloadGraceMs = options.reloadGraceMs ?? RELOAD_DRAIN_MS;
    this.#zones = new CacheZones(logger);
    this.#upstreams = new UpstreamRegistry(logger);
    this.#openState(config.state_dir);
    const plan = this.#zones.resolve(config.caches);
    plan.commit();
    const upstreams = this.#upstreams.resolve(config, this.#appState.stickyKey);
    upstreams.commit();
    const kept = this.#kept.plan();
    try {
      this.#app = new App(config, logger, { zones: plan.zones, upstreams: upstreams.upstreams, keep: kept.keep }, this.#appState);
    } catch (err) {
      void kept.discard();
      this.#state?.release();
      throw err;
    }
    kept.commit();
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
    this.#upstreams.start();
    await this.#app.start();
    try {
      await this.#listeners.start();
    } catch (err) {
      await this.#app.stop();
      await this.#upstreams.stop(0);
      await this.#zones.stop();
      this.#state?.release();
      throw err;
    }
    // Orders start once the plain listeners can answer http-01.
    await this.#updateAcme(this.#app.config);
  }

  /**
   * Builds and starts an app from a new config and binds its new listen addresses; only when all of that worked
   * is it swapped in. If anything fails (a port in use: PORTICO_LISTEN_FAILED), what was started for the new
   * config is stopped and the error thrown: the old config keeps serving, unchanged. Resolves at the swap: the
   * previous config drains in the background (see `#retire`), and a next reload does not wait for it.
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
    const upstreams = this.#upstreams.resolve(config, this.#appState.stickyKey);
    const kept = this.#kept.plan();
    let next: App | undefined;
    let listeners;
    try {
      next = new App(config, this.#logger, { zones: caches.zones, upstreams: upstreams.upstreams, keep: kept.keep }, this.#appState);
      for (const zone of caches.fresh) await zone.start();
      await next.start();
      listeners = await this.#listeners.prepare(config.listen);
    } catch (err) {
      await next?.stop();
      await Promise.all(caches.fresh.map((zone) => zone.stop()));
      await upstreams.discard();
      await kept.discard();
      throw err;
    }
    // The swap: from here on nothing fails, and nothing waits for the previous config.
    caches.commit();
    upstreams.commit();
    const dropped = kept.commit();
    this.#upstreams.start();
    const previous = this.#app;
    next.certificates.adopt(previous.certificates);
    this.#app = next;
    if (this.#followLogLevel) this.#logger.level = config.log.level;
    // The addresses no longer listed drain in the background (cut after the grace period; `stop()` waits for
    // them): a long-lived tunnel on one must not hold the reload up.
    void listeners.commit();
    this.#retire(previous, upstreams.retired, caches.retired, dropped);
    await this.#updateAcme(config);
  }

  /**
   * The previous config drains in the background: what it took (an upload still arriving, a download, a wait in
   * a queue, a WebSocket) ends with its handlers and access log, or is cut at the grace period; then its log is
   * closed and the upstreams, zones and kept values the new config dropped are stopped. `stop()` waits for it.
   */
  #retire(previous: App, upstreams: readonly Upstream[], zones: readonly CacheZone[], dropped: () => Promise<void>): void {
    const started = Date.now();
    // A config still draining from an earlier reload may use what this one retires (an upstream two configs kept).
    const earlier = [...this.#draining];
    const drained = previous
      .drain(this.#reloadGraceMs)
      .then(async ({ open, cut }) => {
        if (open > 0) {
          const line = { open, cut, ms: Date.now() - started };
          if (cut > 0) this.#logger.warn(line, `previous config drained: ${cut} of ${open} requests and tunnels cut at the grace period`);
          else this.#logger.info(line, 'previous config drained');
        }
        await previous.stop();
        await Promise.all(earlier);
        // Every client of the previous configs is gone: an upstream request still running is for nobody.
        await this.#upstreams.stopRetired(upstreams, 1000);
        await dropped();
        await Promise.all(zones.map((zone) => zone.stop()));
      })
      .catch((err: unknown) => this.#logger.error({ err }, 'stopping the previous config after a reload failed'));
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
    await this.#app.stop();
    await this.#upstreams.stop(Math.min(graceMs, 1000));
    await this.#kept.stop();
    await this.#zones.stop();
    this.#state?.release();
  }
}
