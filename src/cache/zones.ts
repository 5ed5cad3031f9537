/**
 * Cache zones outlive an app: a reload that keeps a zone's name and settings keeps the zone itself (its memory
 * tier, and its disk tier, which must never be opened twice on one folder), as nginx keeps its cache zones.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { CacheZone } from './zone.js';
import type { ClusterLink } from '../cluster/link.js';

interface Held {
  settings: string;
  zone: CacheZone;
  started: boolean;
}

/** What a config's caches resolve to; see `CacheZones.resolve`. */
export interface ZonePlan {
  zones: Map<string, CacheZone>;
  fresh: CacheZone[];
  retired: CacheZone[];
  commit(): void;
}

/** The process's cache zones, shared by successive apps. */
export class CacheZones {
  readonly #held = new Map<string, Held>();
  readonly #logger: Logger;
  readonly #link: ClusterLink | undefined;

  /** `link`: the process's cluster link, for zones with a shared tier. */
  constructor(logger: Logger, link?: ClusterLink) {
    this.#logger = logger;
    this.#link = link;
  }

  /**
   * The zones a config asks for: reused when name and settings are unchanged, new (`fresh`, not started) otherwise.
   * Zones that are replaced or no longer named are returned in `retired`, to be stopped once the new app is
   * serving. Nothing changes here until `commit()`: a reload that fails leaves the held zones as they were.
   */
  resolve(caches: Config['caches']): ZonePlan {
    const zones = new Map<string, CacheZone>();
    const fresh: CacheZone[] = [];
    const next = new Map<string, Held>();
    /** Held zones by disk folder: a new zone on one of them shares its open store (one owner per folder). */
    const byFolder = new Map<string, CacheZone>();
    for (const [, held] of this.#held) {
      const folder = (JSON.parse(held.settings) as Config['caches'][string]).disk?.path;
      if (folder !== undefined) byFolder.set(folder, held.zone);
    }
    const handOvers: Array<[CacheZone, CacheZone]> = [];
    for (const [name, config] of Object.entries(caches)) {
      const settings = JSON.stringify(config);
      const held = this.#held.get(name);
      if (held !== undefined && held.settings === settings) {
        zones.set(name, held.zone);
        next.set(name, held);
        continue;
      }
      const owner = config.disk === undefined ? undefined : byFolder.get(config.disk.path);
      const zone = new CacheZone(name, config, this.#logger, owner?.disk, this.#link);
      if (owner !== undefined) handOvers.push([owner, zone]);
      next.set(name, { settings, zone, started: false });
      fresh.push(zone);
      zones.set(name, zone);
    }
    const retired = [...this.#held.values()].filter((held) => next.get(held.zone.name)?.zone !== held.zone).map((held) => held.zone);
    return {
      zones,
      fresh,
      retired,
      commit: () => {
        for (const [from, to] of handOvers) from.handOverDisk(to);
        this.#held.clear();
        for (const [name, held] of next) this.#held.set(name, held);
      },
    };
  }

  /**
   * Starts zones not started yet (opens disk tiers). `shared`: an upgrade's new process, while the old one still
   * writes the disk folders (see `CacheZone.start`).
   */
  async start(shared = false): Promise<void> {
    for (const held of this.#held.values()) {
      if (held.started) continue;
      held.started = true;
      await held.zone.start(shared);
    }
  }

  /** An upgrade's old process hands the disk folders over: see `CacheZone.holdDisk`. */
  async holdDisks(): Promise<void> {
    await Promise.all([...this.#held.values()].map((held) => held.zone.holdDisk()));
  }

  /** This process is the disk folders' one writer again: see `CacheZone.releaseDisk`. */
  async releaseDisks(): Promise<void> {
    await Promise.all([...this.#held.values()].map((held) => held.zone.releaseDisk()));
  }

  /** Stops every zone. */
  async stop(): Promise<void> {
    await Promise.all([...this.#held.values()].map((held) => held.zone.stop()));
    this.#held.clear();
  }
}
