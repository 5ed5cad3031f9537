/**
 * A slot: one stable place of an upstream's spawned instances (`app#1`), which outlives the instances that serve
 * it (their ports and pids change with restarts and deploys; the slot's name and route do not).
 */
import { slotName, slotRoute } from '../config/schema.js';
import { CrashHistory } from './crashes.js';
import type { Instance, LaunchSpec } from './instance.js';
import type { PortRange } from './ports.js';
import type { ReadinessCheck } from './readiness.js';

/** One upstream's `spawn` section, resolved: how to run an instance, and the rest of the keys. */
export interface UpstreamSpec extends LaunchSpec {
  readonly ports: PortRange;
  readonly instances: number;
  readonly maxSurge: number;
  readonly healthTimeout: number;
  readonly user: string | undefined;
  readonly group: string | undefined;
  /** The upstream's `health` check, or undefined for a TCP connect. */
  readonly readiness: ReadinessCheck | undefined;
}

/** What a slot is doing: starting an instance, served by one, waiting to restart, given up (crash loop), stopped. */
export type SlotState = 'starting' | 'ready' | 'backoff' | 'failed' | 'stopped';

/** One slot's state, owned by the Supervisor. */
export class Slot {
  readonly upstream: string;
  readonly index: number;
  /** `app#1`. */
  readonly name: string;
  /** `app1`. */
  readonly route: string;
  /** The version this slot runs (and restarts as): a deploy moves it to the config's. */
  spec: UpstreamSpec;
  /**
   * The working directory, symlinks resolved, of the instance that last served the slot: a restart runs there
   * again, and a deploy's rollback returns there (the release it ran, even after `cwd`'s symlink has moved on).
   */
  cwd: string | undefined;
  /** The ready instance serving the slot (the data plane was told its port). */
  instance: Instance | undefined;
  state: SlotState = 'stopped';
  /** Restarts after crashes, since the Supervisor started. */
  restarts = 0;
  readonly crashes = new CrashHistory();
  /** A pending restart. */
  timer: NodeJS.Timeout | undefined;
  /** A deploy holds the slot: a crash leaves it down, and the deploy puts an instance in. */
  held = false;
  /** The slot is gone (fewer instances, upstream removed): nothing starts in it again. */
  removed = false;

  constructor(upstream: string, index: number, spec: UpstreamSpec) {
    this.upstream = upstream;
    this.index = index;
    this.name = slotName(upstream, index);
    this.route = slotRoute(upstream, index);
    this.spec = spec;
  }
}

/** Whether two specs run processes differently (then the running instances must be replaced by a deploy). */
export function processChanged(a: UpstreamSpec, b: UpstreamSpec): boolean {
  const key = (s: UpstreamSpec): string =>
    JSON.stringify([s.command, s.cwd, Object.entries(s.env).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)), s.user, s.group, s.stopSignal, s.stopTimeout]);
  return key(a) !== key(b);
}
