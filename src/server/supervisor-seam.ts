/**
 * The seam between the Supervisor (control plane: spawned app instances, `src/supervise/`) and the data plane
 * (Portico's apps and their upstreams), as the server sees it. The types are structural: the real Supervisor is
 * handed in as a factory (`PorticoOptions.supervisor`), so this room needs nothing of its code.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';

/** Where the data plane learns which port serves a slot (Portico implements it; see `Supervisor`). */
export interface SlotSink {
  /**
   * Slot `slot` of upstream `upstream` is now served by 127.0.0.1:`port` (an instance that passed its readiness
   * checks), or by nothing (`undefined`: crashed, stopped). New requests go to the new port at once. Resolves once
   * nothing is in flight on the previous port any more (requests and WebSocket tunnels), or after `drainMs` (what
   * is left is cut), so that the Supervisor may then stop the old instance.
   */
  moved(upstream: string, slot: string, port: number | undefined, drainMs: number): Promise<void>;
}

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
