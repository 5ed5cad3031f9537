/**
 * The Supervisor (control plane): it starts the app-server instances of every upstream with `spawn`, keeps them
 * running (restart with backoff, crash-loop stop), tells the data plane where each slot is served (`SlotSink`),
 * rolls them over on a deploy, follows a reload's config, and stops them, each as a whole process group. See
 * docs/apps.md for what an operator sees; instance.ts for why no instance outlives Portico.
 */
import { existsSync, realpathSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { speaksFastCgi } from '../config/schema.js';
import { PorticoError } from '../errors.js';
import { CRASH_LOOP_COUNT, CRASH_WINDOW_MS } from './crashes.js';
import { rollingDeploy, type DeployEvent, type DeployReport } from './deploy.js';
import { describeExit, Instance, type InstanceExit } from './instance.js';
import { PortPool } from './ports.js';
import { waitReady, type Probe } from './readiness.js';
import { processChanged, Slot, type SlotState, type UpstreamSpec } from './slot.js';
import { upstreamSpecs } from './spec.js';

export type { DeployEvent, DeployReport, DeploySlotReport } from './deploy.js';
export type { SlotState } from './slot.js';

/**
 * Where the data plane learns which port serves a slot. Implemented by src/server (Portico), or by the primary
 * broadcasting to workers.
 */
export interface SlotSink {
  /**
   * Slot `slot` of upstream `upstream` is now served by 127.0.0.1:`port` (an instance that passed its readiness
   * checks), or by nothing (`undefined`: crashed, stopped). New requests go to the new port at once. Resolves once
   * nothing is in flight on the previous port any more (requests AND WebSocket tunnels), or after `drainMs` (what
   * is left is cut), so that the Supervisor may then stop the old instance.
   */
  moved(upstream: string, slot: string, port: number | undefined, drainMs: number): Promise<void>;
}

/**
 * A readiness probe of one instance of `upstream` on 127.0.0.1:`port` in what it speaks (FastCGI, HTTP/2 without
 * TLS): the data plane's health check, given to the Supervisor by the server that builds it.
 */
export type SlotProbe = (upstream: Config['upstreams'][string], port: number, timeoutMs: number) => Promise<string | undefined>;

/** One slot as `portico status` and the logs show it. */
export interface SlotStatus {
  readonly upstream: string;
  /** `app#1`. */
  readonly slot: string;
  /** `app1`. */
  readonly route: string;
  readonly state: SlotState;
  /** The serving instance's pid and port (undefined while the slot is down). */
  readonly pid: number | undefined;
  readonly port: number | undefined;
  /** Restarts after crashes since Portico started. */
  readonly restarts: number;
  /** Crashes within the last minute (5 is a crash loop). */
  readonly recentCrashes: number;
}

/** How long past `drainMs` the Supervisor waits for the sink before it stops an old instance anyway. */
const SINK_GRACE_MS = 5000;

/** An instance that could not be made ready: why, with its pid, exit and last stderr lines when it ran. */
class LaunchFailure extends Error {
  readonly exit: InstanceExit | undefined;
  readonly stderr: readonly string[];
  constructor(message: string, exit?: InstanceExit, stderr: readonly string[] = []) {
    super(message);
    this.exit = exit;
    this.stderr = stderr;
  }
}

/** One upstream's spawned slots. */
interface Group {
  readonly name: string;
  spec: UpstreamSpec;
  slots: Slot[];
  /** Deploys of one upstream run one after the other. */
  queue: Promise<unknown>;
}

/** A directory's canonical path (symlinks resolved), or the path as given when it cannot be resolved. */
function resolvedDir(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    return dir;
  }
}

/** A failure as one log line: the reason and, when it ran, its last stderr lines. */
function failureText(slot: string, failure: LaunchFailure): string {
  const tail = failure.stderr.slice(-10);
  return `${slot}: ${failure.message}${tail.length === 0 ? '' : `; last stderr lines:\n  ${tail.join('\n  ')}`}`;
}

/** Starts, watches, restarts, deploys and stops the app-server instances of a config's `spawn` upstreams. */
export class Supervisor {
  readonly #logger: Logger;
  readonly #sink: SlotSink;
  readonly #ports = new PortPool();
  readonly #groups = new Map<string, Group>();
  /** Every instance started and not yet exited: serving, starting, surging, draining. */
  readonly #live = new Set<Instance>();
  readonly #stopped = new AbortController();
  #config: Config;
  readonly #probe: SlotProbe | undefined;
  #started = false;

  /**
   * A Supervisor for `config`'s upstreams with `spawn` (nothing starts before `start()`). `probe` checks the
   * readiness of instances that speak FastCGI or HTTP/2 (the data plane's own check); without it they are only
   * connected to.
   */
  constructor(config: Config, logger: Logger, sink: SlotSink, probe?: SlotProbe) {
    this.#config = config;
    this.#logger = logger;
    this.#sink = sink;
    this.#probe = probe;
  }

  /** The readiness probe of `upstream`'s instances when they speak FastCGI or HTTP/2 (else waitReady's own GET). */
  #probeOf(upstream: string): Probe | undefined {
    const config = this.#config.upstreams[upstream];
    const probe = this.#probe;
    if (config === undefined || probe === undefined) return undefined;
    if (!speaksFastCgi(config) && config.spawn?.protocol !== 'h2c') return undefined;
    return (port, timeoutMs) => probe(config, port, timeoutMs);
  }

  /**
   * Starts every slot's instance; resolves when each is ready (and the sink was told) or has failed (bounded by
   * `health_timeout`; a failed one goes on restarting with backoff). Rejects, before starting anything, when an
   * upstream's `user`/`group` cannot be used (not root, no such user).
   */
  async start(): Promise<void> {
    if (this.#started) return;
    const specs = upstreamSpecs(this.#config);
    this.#started = true;
    const first: Array<Promise<void>> = [];
    for (const [name, spec] of specs) first.push(...this.#addGroup(name, spec));
    await Promise.all(first);
  }

  /** The port serving a slot now (undefined while it is down). */
  port(upstream: string, slot: string): number | undefined {
    return this.#groups.get(upstream)?.slots.find((s) => s.name === slot)?.instance?.where.port;
  }

  /** Every slot's state, upstream by upstream. */
  slots(): SlotStatus[] {
    return [...this.#groups.values()].flatMap((group) =>
      group.slots.map((slot) => ({
        upstream: slot.upstream,
        slot: slot.name,
        route: slot.route,
        state: slot.state,
        pid: slot.instance?.pid,
        port: slot.instance?.where.port,
        restarts: slot.restarts,
        recentCrashes: slot.crashes.recent,
      })),
    );
  }

  /**
   * Before a reload's swap: starts the upstreams `config` adds, and resolves once each instance is ready or has
   * failed (bounded by `health_timeout`), as `start()` does for the first config; `update(config)` then finds them
   * running. So a new upstream's routes do not answer 503 until its instances are up. Throws PorticoError (and
   * starts nothing) when a user/group cannot be used. A reload that fails later undoes it with `update(previous)`.
   */
  async prepare(config: Config): Promise<void> {
    const specs = upstreamSpecs(config);
    if (!this.#started || this.#stopped.signal.aborted) return;
    const first: Array<Promise<void>> = [];
    for (const [name, spec] of specs) if (!this.#groups.has(name)) first.push(...this.#addGroup(name, spec));
    await Promise.all(first);
  }

  /**
   * Follows a reload's config: running instances of an unchanged `spawn` keep running; more `instances` start new
   * slots, fewer stop the last ones, a removed upstream's stop; a crash-looped slot is started again. Returns the
   * upstreams some of whose instances run differently from the config (command, cwd, env, user, group, stop signal
   * or timeout; also after a deploy that was rolled back): the server deploys them. Throws PorticoError (and changes nothing) when a user/group cannot be used.
   */
  update(config: Config): string[] {
    const specs = upstreamSpecs(config);
    this.#config = config;
    if (!this.#started || this.#stopped.signal.aborted) return [];
    const changed: string[] = [];
    for (const [name, spec] of specs) {
      const group = this.#groups.get(name);
      if (group === undefined) {
        void Promise.all(this.#addGroup(name, spec));
        continue;
      }
      group.spec = spec;
      for (const slot of group.slots.slice(spec.instances)) void this.#remove(slot);
      group.slots = group.slots.slice(0, spec.instances);
      for (const slot of group.slots) {
        // Keys that do not change how a process runs (ports, health, timeouts) apply at once; a new version waits
        // for the deploy, and restarts run the version the slot had.
        if (!processChanged(slot.spec, spec)) slot.spec = spec;
        if (slot.state === 'failed' && !slot.held) {
          slot.spec = spec;
          slot.cwd = undefined;
          slot.crashes.clear();
          void this.#bringUp(slot);
        }
      }
      // Compared with what the slots run, not with the previous config: a deploy that failed (rolled back) is due
      // again at the next reload.
      if (group.slots.some((slot) => processChanged(slot.spec, spec))) changed.push(name);
      for (let i = group.slots.length; i < spec.instances; i++) {
        const slot = new Slot(name, i, spec);
        group.slots.push(slot);
        void this.#bringUp(slot);
      }
    }
    for (const [name, group] of this.#groups) {
      if (specs.has(name)) continue;
      this.#groups.delete(name);
      for (const slot of group.slots) void this.#remove(slot);
    }
    return changed;
  }

  /**
   * A rolling deploy of `upstream` to the config's version (see deploy.ts): surge first, readiness, move, drain,
   * stop; a new instance that is never ready stops it and rolls back the replaced slots. Deploys of one upstream
   * run one after the other. Rejects with PorticoError('PORTICO_DEPLOY_FAILED', reason).
   */
  deploy(upstream: string, progress: (event: DeployEvent) => void): Promise<DeployReport> {
    const group = this.#groups.get(upstream);
    if (group === undefined) {
      const known = [...this.#groups.keys()];
      const hint = known.length === 0 ? 'no upstream has spawn' : `upstreams with spawn: ${known.join(', ')}`;
      return Promise.reject(new PorticoError('PORTICO_DEPLOY_FAILED', `no upstream "${upstream}" with spawn to deploy (${hint})`));
    }
    const run = group.queue.then(() => {
      if (this.#stopped.signal.aborted) throw new PorticoError('PORTICO_DEPLOY_FAILED', `deploy of ${upstream}: Portico is stopping`);
      if (this.#groups.get(upstream) !== group) throw new PorticoError('PORTICO_DEPLOY_FAILED', `deploy of ${upstream}: the upstream was removed by a reload`);
      this.#logger.info({ upstream }, `deploying ${upstream}: ${group.slots.length} instance(s), ${group.spec.maxSurge} at a time`);
      const logged = (event: DeployEvent): void => {
        this.#logger.info({ upstream, slot: event.slot, phase: event.phase, pid: event.pid, port: event.port }, `deploy: ${event.message}`);
        progress(event);
      };
      return rollingDeploy(upstream, [...group.slots], group.spec, this.#deployHost(), logged);
    });
    group.queue = run.then(
      (report) => this.#logger.info({ upstream, ms: report.ms }, `deployed ${upstream}: ${report.slots.length} instance(s) replaced in ${report.ms} ms`),
      (err: Error) => this.#logger.error({ upstream }, err.message),
    );
    return run;
  }

  /**
   * Stops every instance, each whole process group: `stop_signal`, then SIGKILL after `stop_timeout`. Pending
   * restarts are dropped, starts and deploys in progress end. Resolves when every instance has exited.
   */
  async stop(): Promise<void> {
    this.#stopped.abort();
    for (const group of this.#groups.values()) {
      for (const slot of group.slots) {
        clearTimeout(slot.timer);
        slot.timer = undefined;
        slot.state = 'stopped';
      }
    }
    if (this.#live.size > 0) this.#logger.info(`stopping ${this.#live.size} app instance(s)`);
    await Promise.all([...this.#live].map((instance) => instance.stop()));
    for (const group of this.#groups.values()) for (const slot of group.slots) slot.instance = undefined;
  }

  #addGroup(name: string, spec: UpstreamSpec): Array<Promise<void>> {
    const group: Group = { name, spec, slots: [], queue: Promise.resolve() };
    for (let i = 0; i < spec.instances; i++) group.slots.push(new Slot(name, i, spec));
    this.#groups.set(name, group);
    return group.slots.map((slot) => this.#bringUp(slot));
  }

  #deployHost(): Parameters<typeof rollingDeploy>[3] {
    return {
      launch: (slot, spec, started) => this.#launch(slot, spec, started),
      swap: (slot, instance, spec) => this.#swap(slot, instance, spec),
      revive: (slot) => void this.#bringUp(slot),
    };
  }

  /** Whether a restart or first start may go on in `slot`. */
  #mayStart(slot: Slot): boolean {
    return !this.#stopped.signal.aborted && !slot.removed && !slot.held && slot.instance === undefined;
  }

  /** Starts the slot's instance (its own version); a failure counts as a crash. */
  async #bringUp(slot: Slot): Promise<void> {
    if (!this.#mayStart(slot)) return;
    slot.state = 'starting';
    let instance: Instance;
    try {
      instance = await this.#launch(slot, slot.cwd === undefined ? slot.spec : { ...slot.spec, cwd: slot.cwd });
    } catch (err) {
      if (this.#mayStart(slot)) this.#crashed(slot, err as LaunchFailure, 0);
      return;
    }
    if (!this.#mayStart(slot)) {
      await instance.stop();
      return;
    }
    this.#install(slot, instance, slot.spec);
    this.#logger.info({ slot: slot.name, pid: instance.pid, port: instance.where.port }, `${slot.name} ready: pid ${instance.pid} on port ${instance.where.port}`);
    await this.#tell(slot, instance.where.port, slot.spec.stopTimeout);
  }

  /**
   * Starts an instance of `spec` for `slot` on a free port and waits until it is ready (within `health_timeout`);
   * an instance that dies with EADDRINUSE is started again on another port of the range (not a crash).
   */
  async #launch(slot: Slot, spec: UpstreamSpec, started?: (instance: Instance) => void): Promise<Instance> {
    const deadline = Date.now() + spec.healthTimeout;
    const tried = new Set<number>();
    const range = `${spec.ports.from}-${spec.ports.to}`;
    // Bounded: every round takes a port not tried before, and the range is finite.
    for (;;) {
      if (this.#stopped.signal.aborted) throw new LaunchFailure('not started: Portico is stopping');
      if (!existsSync(spec.cwd)) throw new LaunchFailure(`cannot start: its working directory ${spec.cwd} does not exist`);
      // The release it runs, resolved now: `cwd: ./current` may be a symlink that the operator moves to the next
      // release before a deploy; this instance (its restarts, a rollback to it) stays with the one it started in.
      const cwd = resolvedDir(spec.cwd);
      const port = await this.#ports.take(spec.ports, tried);
      if (port === undefined) throw new LaunchFailure(`cannot start: no free port in ${range} (${tried.size === 0 ? 'all taken' : `tried ${[...tried].join(', ')}`})`);
      if (this.#stopped.signal.aborted) {
        this.#ports.release(port);
        throw new LaunchFailure('not started: Portico is stopping');
      }
      tried.add(port);
      let instance: Instance;
      try {
        instance = new Instance(cwd === spec.cwd ? spec : { ...spec, cwd }, { upstream: slot.upstream, slot: slot.name, route: slot.route, port }, this.#logger);
      } catch (err) {
        // spawn() throws at once only for arguments it cannot pass (a NUL byte in env or args).
        this.#ports.release(port);
        throw new LaunchFailure(`cannot start: ${(err as Error).message}`);
      }
      this.#live.add(instance);
      void instance.exited.then(() => {
        this.#live.delete(instance);
        this.#ports.release(port);
      });
      started?.(instance);
      const abort = new AbortController();
      const onStop = (): void => abort.abort();
      this.#stopped.signal.addEventListener('abort', onStop, { once: true });
      void instance.exited.then(onStop);
      let reason: string;
      try {
        await waitReady(port, spec.readiness, deadline, abort.signal, this.#probeOf(slot.upstream));
        if (instance.exit === undefined) return instance;
        reason = 'exited as it became ready';
      } catch (err) {
        reason = (err as Error).message;
      } finally {
        this.#stopped.signal.removeEventListener('abort', onStop);
      }
      if (this.#stopped.signal.aborted) {
        await instance.stop();
        throw new LaunchFailure(`pid ${instance.pid} on port ${port} was stopped before it was ready: Portico is stopping`);
      }
      if (instance.exit === undefined) {
        await instance.stop();
        throw new LaunchFailure(`pid ${instance.pid} on port ${port} was not ready within ${spec.healthTimeout} ms: ${reason}`, instance.exit, instance.stderrTail());
      }
      const exit = await instance.exited;
      const stderr = instance.stderrTail();
      if (!instance.stopping && stderr.some((line) => line.includes('EADDRINUSE'))) {
        this.#logger.warn({ slot: slot.name, port }, `${slot.name}: port ${port} is in use by another program (EADDRINUSE): starting again on another port of ${range}`);
        continue;
      }
      throw new LaunchFailure(`pid ${instance.pid} on port ${port} ${describeExit(exit)} before it was ready`, exit, stderr);
    }
  }

  /** `instance` (ready, of `spec`) serves `slot` from now on; its exit will count as a crash. */
  #install(slot: Slot, instance: Instance, spec: UpstreamSpec): void {
    slot.instance = instance;
    slot.spec = spec;
    slot.cwd = instance.spec.cwd;
    slot.state = 'ready';
    void instance.exited.then((exit) => this.#exited(slot, instance, exit));
  }

  /** A deploy's move of `slot` to `instance`: the sink moves the data plane, the old one drains; returns it. */
  async #swap(slot: Slot, instance: Instance, spec: UpstreamSpec): Promise<Instance | undefined> {
    if (slot.removed || this.#stopped.signal.aborted) {
      await instance.stop();
      const why = this.#stopped.signal.aborted ? 'Portico is stopping' : 'the slot was removed';
      throw new PorticoError('PORTICO_DEPLOY_FAILED', `deploy of ${slot.upstream} stopped at ${slot.name}: ${why}; its new instance pid ${instance.pid} was stopped before it served`);
    }
    const old = slot.instance;
    this.#install(slot, instance, spec);
    slot.crashes.clear();
    await this.#tell(slot, instance.where.port, old?.spec.stopTimeout ?? spec.stopTimeout);
    return old;
  }

  /** Tells the sink where `slot` is served; resolves once it has drained the previous port (bounded). */
  async #tell(slot: Slot, port: number | undefined, drainMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.#logger.warn({ slot: slot.name }, `${slot.name}: the data plane did not confirm the move within ${drainMs + SINK_GRACE_MS} ms; going on`);
        resolve();
      }, drainMs + SINK_GRACE_MS);
    });
    try {
      await Promise.race([this.#sink.moved(slot.upstream, slot.name, port, drainMs), late]);
    } catch (err) {
      this.#logger.error({ slot: slot.name, err }, `${slot.name}: telling the data plane about port ${port ?? '(none)'} failed: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The serving instance of `slot` has exited: unless it was stopped on purpose, that is a crash. */
  #exited(slot: Slot, instance: Instance, exit: InstanceExit): void {
    if (instance.stopping || slot.instance !== instance) return;
    slot.instance = undefined;
    void this.#tell(slot, undefined, 0);
    this.#crashed(slot, new LaunchFailure(`pid ${instance.pid} on port ${instance.where.port} ${describeExit(exit)}`, exit, instance.stderrTail()), Date.now() - instance.startedAt);
  }

  /** Counts a crash (or a failed start) of `slot` and restarts it after a backoff, unless this is a crash loop. */
  #crashed(slot: Slot, failure: LaunchFailure, ranMs: number): void {
    if (this.#stopped.signal.aborted || slot.removed) return;
    const delay = slot.crashes.record(Date.now(), ranMs);
    const fields = { slot: slot.name, code: failure.exit?.code, signal: failure.exit?.signal, stderr: failure.stderr.slice(-10) };
    if (slot.held) {
      slot.state = 'starting';
      this.#logger.error(fields, `${failureText(slot.name, failure)}; the deploy in progress replaces it`);
      return;
    }
    if (delay === undefined) {
      slot.state = 'failed';
      this.#logger.error(
        fields,
        `${failureText(slot.name, failure)}; crash loop: ${CRASH_LOOP_COUNT} crashes within ${CRASH_WINDOW_MS / 1000} s, not restarted again (a deploy or a reload starts it)`,
      );
      return;
    }
    slot.state = 'backoff';
    slot.restarts += 1;
    this.#logger.error({ ...fields, delay }, `${failureText(slot.name, failure)}; restarting in ${delay} ms`);
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      void this.#bringUp(slot);
    }, delay);
  }

  /** Stops a slot that is gone (fewer instances, upstream removed): the data plane first, then its instance. */
  async #remove(slot: Slot): Promise<void> {
    slot.removed = true;
    clearTimeout(slot.timer);
    slot.timer = undefined;
    slot.state = 'stopped';
    const instance = slot.instance;
    slot.instance = undefined;
    if (instance === undefined) return;
    await this.#tell(slot, undefined, instance.spec.stopTimeout);
    await instance.stop();
  }
}
