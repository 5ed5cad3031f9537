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
import { App } from './app.js';
import { Listeners, type BoundAddress } from './listeners.js';

/** A Portico server: listeners plus the current app. */
export class Portico {
  #app: App;
  readonly #listeners: Listeners;
  readonly #logger: Logger;
  readonly #zones: CacheZones;

  constructor(config: Config, logger: Logger = createErrorLog(config.log.level)) {
    this.#logger = logger;
    this.#zones = new CacheZones(logger);
    this.#app = new App(config, logger, this.#zones.resolve(config.caches).zones);
    this.#listeners = new Listeners(
      config.listen,
      {
        request: (req: IncomingMessage, res: ServerResponse, scheme: 'http' | 'https') => this.#app.handle(req, res, scheme),
        upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer, scheme: 'http' | 'https') =>
          this.#app.handleUpgrade(req, socket, head, scheme),
      },
      logger,
    );
  }

  /** The config of the app now serving. */
  get config(): Config {
    return this.#app.config;
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

  /** Builds and starts an app from a new config, swaps it in, then stops the old one. */
  async reload(config: Config): Promise<void> {
    const { zones, retired } = this.#zones.resolve(config.caches);
    const next = new App(config, this.#logger, zones);
    await this.#zones.start();
    await next.start();
    const previous = this.#app;
    this.#app = next;
    await previous.stop();
    await Promise.all(retired.map((zone) => zone.stop()));
  }

  /** Stops accepting, lets requests in flight finish (up to `graceMs`), then stops the app. */
  async stop(graceMs = 10_000): Promise<void> {
    await this.#listeners.stop(graceMs);
    await this.#app.stop();
    await this.#zones.stop();
  }
}
