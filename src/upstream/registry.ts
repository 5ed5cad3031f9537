/**
 * Upstreams outlive an app: a reload that leaves an upstream's config as it was keeps the `Upstream` itself —
 * its connection pools, its queue of waiting requests, its health checks and every server's state — as nginx
 * keeps its shared upstream zones. An upstream whose config changed is built anew and takes over, at the swap,
 * what was known of each server it still has (by address: see `Upstream.adoptState`). This is the cache zones'
 * pattern (cache/zones.ts): resolve a config into a plan, commit it at the swap, stop what it retired.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { stickyKeyRing, type StickyKey } from './sticky-values.js';
import { Upstream, type UpstreamOptions } from './upstream.js';

interface Held {
  /** The upstream's config (and what else it was built from) as JSON: equal text, equal upstream. */
  settings: string;
  upstream: Upstream;
  started: boolean;
}

/** What a config's upstreams resolve to; see `UpstreamRegistry.resolve`. */
export interface UpstreamPlan {
  /** The config's upstreams by name: kept ones and fresh ones. */
  readonly upstreams: ReadonlyMap<string, Upstream>;
  /** Built for this config (not started until `UpstreamRegistry.start`). */
  readonly fresh: readonly Upstream[];
  /** Held ones this config replaces or no longer names: stop them once the previous config has drained. */
  readonly retired: readonly Upstream[];
  /**
   * Makes the plan the held upstreams, at the swap: each fresh upstream takes over its predecessor's state, and
   * the retired ones stop their health checks (their requests in flight go on).
   */
  commit(): void;
  /** The reload failed: the fresh upstreams are let go (nothing held changes). */
  discard(): Promise<void>;
}

/** The process's upstreams, shared by successive apps. */
export class UpstreamRegistry {
  readonly #held = new Map<string, Held>();
  /** Upstreams a reload replaced, not stopped yet: the previous config may still be using them. */
  readonly #retired = new Set<Upstream>();
  readonly #logger: Logger;
  readonly #options: UpstreamOptions;

  /**
   * `options` for every upstream built: `slotPort`, where the Supervisor has each spawned slot now (a new
   * upstream's slots start there); with `workers`, a worker's take their active checks' outcomes from the primary.
   */
  constructor(logger: Logger, options: UpstreamOptions = {}) {
    this.#logger = logger;
    this.#options = options;
  }

  /**
   * The upstreams of `config`: the held one when its settings are unchanged, else a new one. Nothing changes
   * until `commit()`, so a reload that fails leaves the held upstreams as they were.
   */
  resolve(config: Config, stickyKey: StickyKey | undefined): UpstreamPlan {
    // The ring's id names its keys without them (a rotating ring keeps its id: its upstreams are kept).
    const keyId = stickyKey === undefined ? null : stickyKeyRing(stickyKey).id;
    const upstreams = new Map<string, Upstream>();
    const fresh: Upstream[] = [];
    const next = new Map<string, Held>();
    const carried: Array<[Upstream, Upstream]> = [];
    for (const [name, upstreamConfig] of Object.entries(config.upstreams)) {
      // Relative file names (a CA file) resolve against the config's folder, and sticky values hash with the key.
      const settings = JSON.stringify([config.dir, keyId, upstreamConfig]);
      const held = this.#held.get(name);
      if (held !== undefined && held.settings === settings) {
        upstreams.set(name, held.upstream);
        next.set(name, held);
        continue;
      }
      const upstream = new Upstream(name, upstreamConfig as Upstream['config'], config.dir, this.#logger, stickyKey, this.#options);
      if (held !== undefined) carried.push([upstream, held.upstream]);
      next.set(name, { settings, upstream, started: false });
      fresh.push(upstream);
      upstreams.set(name, upstream);
    }
    const retired = [...this.#held.values()].filter((held) => next.get(held.upstream.name)?.upstream !== held.upstream).map((held) => held.upstream);
    return {
      upstreams,
      fresh,
      retired,
      commit: () => {
        for (const [upstream, previous] of carried) upstream.adoptState(previous);
        for (const upstream of retired) {
          upstream.drain();
          this.#retired.add(upstream);
        }
        this.#held.clear();
        for (const [name, held] of next) this.#held.set(name, held);
      },
      discard: () => Promise.all(fresh.map((upstream) => upstream.stop(0))).then(() => undefined),
    };
  }

  /** Starts the held upstreams not started yet (their active checks begin). */
  start(): void {
    for (const held of this.#held.values()) {
      if (held.started) continue;
      held.started = true;
      held.upstream.start();
    }
  }

  /**
   * Resolves when the held upstreams that find servers through DNS have had their first answer (or failure), at
   * most `timeoutMs` later: a start waits for it so that its first requests find the servers.
   */
  async firstResolutions(timeoutMs: number): Promise<void> {
    await Promise.all([...this.#held.values()].map((held) => held.upstream.firstResolution(timeoutMs)));
  }

  /**
   * Every running upstream of a name: the held one, then those a reload replaced that a previous config still
   * drains with (what must learn of a change to a server, such as a spawned slot's new port, is in each).
   */
  live(name: string): Upstream[] {
    const held = this.#held.get(name)?.upstream;
    return [...(held === undefined ? [] : [held]), ...[...this.#retired].filter((upstream) => upstream.name === name)];
  }

  /** Stops upstreams a reload retired, once the configs that used them have drained; see `Upstream.stop`. */
  async stopRetired(upstreams: readonly Upstream[], cutAfterMs?: number): Promise<void> {
    await Promise.all(
      upstreams.map(async (upstream) => {
        await upstream.stop(cutAfterMs);
        this.#retired.delete(upstream);
      }),
    );
  }

  /** Stops every held upstream and every retired one still running; see `Upstream.stop` for `cutAfterMs`. */
  async stop(cutAfterMs?: number): Promise<void> {
    const all = [...[...this.#held.values()].map((held) => held.upstream), ...this.#retired];
    this.#held.clear();
    this.#retired.clear();
    await Promise.all(all.map((upstream) => upstream.stop(cutAfterMs)));
  }
}
