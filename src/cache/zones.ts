/**
 * Cache zones outlive an app: a reload that keeps a zone's name and settings keeps the zone itself (its memory
 * tier, and its disk tier, which must never be opened twice on one folder), as nginx keeps its cache zones.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { CacheZone } from './zone.js';

interface Held {
  settings: string;
  zone: CacheZone;
  started: boolean;
}

/** The process's cache zones, shared by successive apps. */
export class CacheZones {
  readonly #held = new Map<string, Held>();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /**
   * The zones a config asks for: reused when name and settings are unchanged, new otherwise. Zones that are
   * replaced or no longer named are returned in `retired`, to be stopped once the new app is serving.
   */
  resolve(caches: Config['caches']): { zones: Map<string, CacheZone>; retired: CacheZone[] } {
    const zones = new Map<string, CacheZone>();
    const retired: CacheZone[] = [];
    for (const [name, config] of Object.entries(caches)) {
      const settings = JSON.stringify(config);
      const held = this.#held.get(name);
      if (held !== undefined && held.settings === settings) {
        zones.set(name, held.zone);
        continue;
      }
      if (held !== undefined) retired.push(held.zone);
      const zone = new CacheZone(name, config, this.#logger);
      this.#held.set(name, { settings, zone, started: false });
      zones.set(name, zone);
    }
    for (const [name, held] of this.#held) {
      if (!(name in caches)) {
        retired.push(held.zone);
        this.#held.delete(name);
      }
    }
    return { zones, retired };
  }

  /** Starts zones not started yet (opens disk tiers). */
  async start(): Promise<void> {
    for (const held of this.#held.values()) {
      if (held.started) continue;
      held.started = true;
      await held.zone.start();
    }
  }

  /** Stops every zone. */
  async stop(): Promise<void> {
    await Promise.all([...this.#held.values()].map((held) => held.zone.stop()));
    this.#held.clear();
  }
}
