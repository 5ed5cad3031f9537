/**
 * The rolling deploy of one upstream's slots, surge first: for `max_surge` slots at a time, a new instance of the
 * config's version starts on a fresh port and must pass its readiness checks within `health_timeout`; then the
 * data plane moves the slot to it (the old instance drains: no new requests, those in flight finish or are cut at
 * `stop_timeout`), and the old instance is stopped. A new instance that never becomes ready stops the deploy: it
 * is stopped, the slots already replaced are rolled back to the version they ran, one at a time the same way, and
 * the deploy rejects with PORTICO_DEPLOY_FAILED saying which slot failed and why. Slots not yet reached were never
 * touched: their old instances kept serving throughout.
 */
import { PorticoError } from '../errors.js';
import type { Instance } from './instance.js';
import type { Slot, UpstreamSpec } from './slot.js';

/** One step of a deploy, for progress output (`message` is a ready-made line). */
export interface DeployEvent {
  readonly upstream: string;
  readonly slot: string;
  /**
   * `starting` a new instance (pid, port); it is `ready` (ms since its start); the old one is `draining` (its pid,
   * port) and then `stopped` (ms the drain and stop took); a new one `failed` its checks; a replaced slot is
   * `rolling_back`, then `rolled_back` (the pid of the instance of the previous version).
   */
  readonly phase: 'starting' | 'ready' | 'draining' | 'stopped' | 'failed' | 'rolling_back' | 'rolled_back';
  readonly pid: number | undefined;
  readonly port: number | undefined;
  readonly ms: number | undefined;
  readonly message: string;
}

/** What a deploy did to one slot. */
export interface DeploySlotReport {
  readonly slot: string;
  /** The replaced instance (undefined when the slot had none: it was down). */
  readonly oldPid: number | undefined;
  readonly oldPort: number | undefined;
  readonly newPid: number | undefined;
  readonly newPort: number;
  /** From the new instance's start to its readiness. */
  readonly readyMs: number;
  /** From the move to the new port until the old instance had exited. */
  readonly drainMs: number;
}

/** A finished deploy. */
export interface DeployReport {
  readonly upstream: string;
  readonly slots: readonly DeploySlotReport[];
  /** The whole deploy's duration. */
  readonly ms: number;
}

/** What the deploy needs of the Supervisor. */
export interface DeployHost {
  /** Starts an instance of `spec` in `slot` and resolves once it is ready; rejects with the reason it is not. */
  launch(slot: Slot, spec: UpstreamSpec, started: (instance: Instance) => void): Promise<Instance>;
  /**
   * Makes the ready `instance` (of `spec`) the slot's: the data plane is moved to it, and once the previous
   * instance has drained, resolves to that previous one (still running, for the caller to stop).
   */
  swap(slot: Slot, instance: Instance, spec: UpstreamSpec): Promise<Instance | undefined>;
  /** Starts a slot left without an instance (it crashed during the deploy) the usual way. */
  revive(slot: Slot): void;
}

/** A slot replaced by this deploy, with the version to roll it back to. */
interface Replaced {
  readonly slot: Slot;
  readonly previous: UpstreamSpec;
  /** Where the replaced instance ran, symlinks resolved (undefined when the slot had none). */
  readonly cwd: string | undefined;
}

function hold(slot: Slot): void {
  slot.held = true;
  // A restart that was pending is the deploy's to do now.
  clearTimeout(slot.timer);
  slot.timer = undefined;
}

/** Runs a rolling deploy of `slots` to `spec` (see the file's comment); `progress` sees every step. */
export async function rollingDeploy(
  upstream: string,
  slots: readonly Slot[],
  spec: UpstreamSpec,
  host: DeployHost,
  progress: (event: DeployEvent) => void,
): Promise<DeployReport> {
  const began = Date.now();
  const emit = (slot: Slot, phase: DeployEvent['phase'], message: string, pid?: number, port?: number, ms?: number): void => {
    try {
      progress({ upstream, slot: slot.name, phase, pid, port, ms, message: `${slot.name}: ${message}` });
    } catch {
      // A broken progress printer does not break the deploy.
    }
  };
  const release = (slot: Slot): void => {
    slot.held = false;
    if (slot.instance === undefined && !slot.removed) host.revive(slot);
  };
  const replaced: Replaced[] = [];
  const reports: DeploySlotReport[] = [];

  const start = async (slot: Slot, version: UpstreamSpec): Promise<{ instance: Instance; readyMs: number }> => {
    const t0 = Date.now();
    const instance = await host.launch(slot, version, (started) =>
      emit(slot, 'starting', `new instance pid ${started.pid} on port ${started.where.port}`, started.pid, started.where.port),
    );
    const readyMs = Date.now() - t0;
    emit(slot, 'ready', `pid ${instance.pid} ready in ${readyMs} ms`, instance.pid, instance.where.port, readyMs);
    return { instance, readyMs };
  };

  const rollBack = async (): Promise<string[]> => {
    const done: string[] = [];
    for (const { slot, previous, cwd } of replaced.reverse()) {
      if (slot.removed) continue;
      hold(slot);
      try {
        emit(slot, 'rolling_back', 'rolling back to the previous version');
        // In the folder the replaced instance ran in: not where a `current` symlink points now (the new release).
        const { instance } = await start(slot, cwd === undefined ? previous : { ...previous, cwd });
        const t0 = Date.now();
        const retired = await host.swap(slot, instance, previous);
        await retired?.stop();
        emit(slot, 'rolled_back', `rolled back: pid ${instance.pid} on port ${instance.where.port}`, instance.pid, instance.where.port, Date.now() - t0);
        done.push(slot.name);
      } catch (err) {
        emit(slot, 'failed', `could not roll back (${(err as Error).message}): it keeps the new version`);
      } finally {
        release(slot);
      }
    }
    return done;
  };

  for (let i = 0; i < slots.length; i += spec.maxSurge) {
    const batch = slots.slice(i, i + spec.maxSurge).filter((slot) => !slot.removed);
    batch.forEach(hold);
    try {
      const launched = await Promise.allSettled(batch.map((slot) => start(slot, spec)));
      const failedAt = launched.findIndex((result) => result.status === 'rejected');
      if (failedAt !== -1) {
        await Promise.all(launched.map((result) => (result.status === 'fulfilled' ? result.value.instance.stop() : undefined)));
        const slot = batch[failedAt]!;
        const error = (launched[failedAt] as PromiseRejectedResult).reason as Error & { stderr?: readonly string[] };
        const said = error.stderr?.at(-1);
        const reason = said === undefined ? error.message : `${error.message} (its last stderr line: ${said})`;
        emit(slot, 'failed', `the new instance ${reason}`);
        const touched = replaced.map((r) => r.slot);
        const rolled = await rollBack();
        // A slot whose roll back failed (Portico stopping, the old version no longer starting) runs the new version.
        const kept = touched.filter((s) => !s.removed && !rolled.includes(s.name)).map((s) => s.name);
        const back = [
          ...(touched.length === 0 ? ['no slot had been replaced'] : []),
          ...(rolled.length === 0 ? [] : [`${rolled.join(', ')} rolled back`]),
          ...(kept.length === 0 ? [] : [`${kept.join(', ')} could not be rolled back and run${kept.length === 1 ? 's' : ''} the new version`]),
        ].join('; ');
        const serving = kept.length === 0 ? 'the old instances keep serving' : 'the slots not reached keep their old instances';
        throw new PorticoError('PORTICO_DEPLOY_FAILED', `deploy of ${upstream} stopped at ${slot.name}: the new instance ${reason}; ${back}; ${serving}`);
      }
      await Promise.all(
        batch.map(async (slot, k) => {
          const { instance, readyMs } = (launched[k] as PromiseFulfilledResult<{ instance: Instance; readyMs: number }>).value;
          const previous = slot.spec;
          const old = slot.instance;
          const cwd = old?.spec.cwd;
          emit(slot, 'draining', old === undefined ? 'no old instance (the slot was down)' : `draining pid ${old.pid} on port ${old.where.port}`, old?.pid, old?.where.port);
          const t0 = Date.now();
          const retired = await host.swap(slot, instance, spec);
          await retired?.stop();
          const drainMs = Date.now() - t0;
          emit(slot, 'stopped', retired === undefined ? 'moved to the new instance' : `pid ${retired.pid} stopped after ${drainMs} ms`, retired?.pid, retired?.where.port, drainMs);
          replaced.push({ slot, previous, cwd });
          reports.push({ slot: slot.name, oldPid: retired?.pid, oldPort: retired?.where.port, newPid: instance.pid, newPort: instance.where.port, readyMs, drainMs });
        }),
      );
    } finally {
      batch.forEach(release);
    }
  }
  return { upstream, slots: reports, ms: Date.now() - began };
}
