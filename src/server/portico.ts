/**
 * The running server as a value: built from a config, started, reloaded (the new app is built and started
 * first, swapped in, and only then is the old one stopped — a bad config never takes the server down), stopped.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { createErrorLog } from '../log/error-log.js';
import type { CacheZone } from '../cache/zone.js';
import { CacheZones } from '../cache/zones.js';
import type { CertificateStore } from '../tls/certificates.js';
import { App } from './app.js';
import { Listeners, type BoundAddress } from './listeners.js';

/** A Portico server: listeners plus the current app. */
export class Portico {
  #app: App;
  readonly #listeners: Listeners;
  readonly #logger: Logger;
  readonly #zones: CacheZones;
  #reloading: Promise<void> = Promise.resolve();

  constructor(config: Config, logger: Logger = createErrorLog(config.log.level)) {
    this.#logger = logger;
    this.#zones = new CacheZones(logger);
    const plan = this.#zones.resolve(config.caches);
    plan.commit();
    this.#app = new App(config, logger, plan.zones);
    this.#listeners = new Listeners(
      config.listen,
      {
        request: (req: IncomingMessage, res: ServerResponse, scheme: 'http' | 'https', redirectHttps?: number) =>
          this.#app.handle(req, res, scheme, redirectHttps),
        upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer, scheme: 'http' | 'https', refuse?: number) =>
          this.#app.handleUpgrade(req, socket, head, scheme, refuse),
        refuse: (req: IncomingMessage, res: ServerResponse, scheme: 'http' | 'https', status: number, close: boolean) =>
          this.#app.refuse(req, res, scheme, status, close),
        serverHeader: () => this.#app.config.server_header,
        trustedProxies: () => this.#app.trustedProxies,
        certificates: () => this.#app.certificates,
      },
      logger,
    );
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
      throw err;
    }
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
    const caches = this.#zones.resolve(config.caches);
    const next = new App(config, this.#logger, caches.zones);
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
    await previous.stop();
    await Promise.all(caches.retired.map((zone) => zone.stop()));
  }

  /** Stops accepting, lets requests in flight finish (up to `graceMs`), then stops the app. */
  async stop(graceMs = 10_000): Promise<void> {
    await this.#listeners.stop(graceMs);
    await this.#app.stop();
    await this.#zones.stop();
  }
}
