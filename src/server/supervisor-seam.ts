/**
 * The seam between the Supervisor (control plane: spawned app instances, `src/supervise/`) and the data plane
 * (Portico's apps and their upstreams), as the server sees it. `SupervisorLike` is structural: the real Supervisor
 * is handed in as a factory (`PorticoOptions.supervisor`), and a test may hand in a stand-in.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { SlotSink } from '../supervise/supervisor.js';

/** Where the data plane learns which port serves a slot: the Supervisor's own interface (Portico implements it). */
export type { SlotSink } from '../supervise/supervisor.js';

/** What Portico uses of the Supervisor (`src/supervise/supervisor.ts`), which must be assignable to it. */
export interface SupervisorLike {
  /** Starts every instance; resolves when each is ready (and the sink was told) or has failed (bounded). */
  start(): Promise<void>;
  /** The port serving a slot now. */
  port(upstream: string, slot: string): number | undefined;
  /** Every slot's state, for status and logs. */
  slots(): readonly unknown[];
  /**
   * Before a reload's swap: starts the upstreams the new config adds (ready or failed, bounded); throws when a
   * user/group cannot be used. Optional (a test's stand-in may have none).
   */
  prepare?(config: Config): Promise<void>;
  /** A reload's new config: returns the upstreams whose spawn changed (Portico then deploys them). */
  update(config: Config): string[];
  /** A rolling deploy of one upstream's instances; rejects with PORTICO_DEPLOY_FAILED and the reason. */
  deploy(upstream: string, progress: (event: unknown) => void): Promise<unknown>;
  /** Stops every instance and its process group. */
  stop(): Promise<void>;
}

/** Builds the Supervisor of a config with `spawn` upstreams; it tells `sink` where each slot is served. */
export type SupervisorFactory = (config: Config, logger: Logger, sink: SlotSink) => SupervisorLike;

/** Whether some upstream of `config` has app servers Portico runs (only then is a Supervisor made). */
export function hasSpawn(config: Config): boolean {
  return Object.values(config.upstreams).some((upstream) => upstream.spawn !== undefined);
}
