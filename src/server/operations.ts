/**
 * The one serialised path for what changes a running Portico: reload, deploy, upgrade. They run one at a time, in
 * the order asked (each plans against what the one before it left), whoever asks — SIGHUP, the control socket,
 * the admin API later — and each answers in one shape: `{ ok: true, ... }` or `{ ok: false, error: { code, message,
 * issues? } }`, with progress events as it goes. `status` answers in the same shape but does not queue: it reads,
 * and an operator asks for it precisely while a long deploy runs.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { ControlHandler, OperationHooks } from '../control/server.js';
import { failed, progressOf, type OperationRequest, type OperationResult, type Progress } from '../control/protocol.js';
import { PorticoError } from '../errors.js';

/** A rolling deploy of one spawned upstream (the Supervisor's `deploy`): its events and its report are reported. */
export type DeployFunction = (upstream: string, progress: (event: unknown) => void) => Promise<unknown>;

/** An upgrade of Portico itself in place: its events and its report are reported. */
export type UpgradeFunction = (progress: (event: unknown) => void) => Promise<unknown>;

/** What the operations act on: the server (src/server's `Portico`) hands these in. */
export interface OperationParts {
  /** The config now serving. */
  config(): Config;
  /** Reads the config file again and reloads it; throws ConfigError (every issue) or PorticoError. */
  reloadFile(progress: Progress): Promise<Record<string, unknown>>;
  /** What `status` shows besides the queue: version, pid, uptime, config file, listeners... */
  status(): Record<string, unknown>;
  /** The Supervisor's rolling deploy, when this process has one. */
  deploy?: DeployFunction | undefined;
  /** Portico's own upgrade, when this process can do one. */
  upgrade?: UpgradeFunction | undefined;
  /** Why this process cannot upgrade itself, when `upgrade` is unset (the refusal's message). */
  cannotUpgrade?: string | undefined;
  /** Reopens the log files (after a rotation); resolves with what it reopened. */
  reopen?: (() => Promise<Record<string, unknown>>) | undefined;
}

/** What the queue is doing now. */
interface Running {
  id: number;
  label: string;
  since: number;
}

/** A file's canonical path (symlinks resolved) when it exists, else its absolute path. */
function canonical(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    return path.resolve(file);
  }
}

/** Why an upstream cannot be deployed (undefined when it can): unknown, or Portico does not start its servers. */
export function deployProblem(config: Config, upstream: string): PorticoError | undefined {
  const found = Object.hasOwn(config.upstreams, upstream) ? config.upstreams[upstream] : undefined;
  if (found === undefined) {
    const names = Object.keys(config.upstreams);
    return new PorticoError('PORTICO_UNKNOWN_UPSTREAM', `unknown upstream "${upstream}" (the config has ${names.length === 0 ? 'none' : names.map((n) => `"${n}"`).join(', ')})`);
  }
  if (found.spawn === undefined) {
    return new PorticoError('PORTICO_NOT_APPLICABLE', `upstream "${upstream}" has no spawn section: Portico does not start its servers, so it cannot deploy them`);
  }
  return undefined;
}

/** The serialised operations of one server. */
export class Operations implements ControlHandler {
  readonly #parts: OperationParts;
  readonly #logger: Logger;
  #queue: Promise<void> = Promise.resolve();
  #running: Running | undefined;
  #waiting = 0;
  #nextId = 1;
  #stopped = false;
  /** Whether an upgrade is queued or running. */
  #upgrading = false;

  /** Operations on `parts`, logged to `logger`. */
  constructor(parts: OperationParts, logger: Logger) {
    this.#parts = parts;
    this.#logger = logger;
  }

  /**
   * Runs `task` once every operation queued before it has finished, alone. Rejects with what the task throws, or
   * PORTICO_STOPPING when the server stops first. The building block of every changing operation (and of
   * `Portico.reload(config)`, which throws rather than answering a result).
   */
  serialise<T>(label: string, task: (id: number) => Promise<T>, progress?: Progress): Promise<T> {
    const id = this.#nextId++;
    if (this.#stopped) return Promise.reject(new PorticoError('PORTICO_STOPPING', `Portico is stopping: ${label} was not started`));
    if (this.#running !== undefined || this.#waiting > 0) {
      const ahead = this.#running === undefined ? '' : ` (${this.#running.label} #${this.#running.id} running)`;
      progress?.({ message: `queued: ${label} #${id} waits for the ${this.#waiting + (this.#running === undefined ? 0 : 1)} operation(s) ahead${ahead}`, id });
    }
    this.#waiting++;
    const run = this.#queue.then(async () => {
      this.#waiting--;
      if (this.#stopped) throw new PorticoError('PORTICO_STOPPING', `Portico is stopping: ${label} was not started`);
      this.#running = { id, label, since: Date.now() };
      try {
        return await task(id);
      } finally {
        this.#running = undefined;
      }
    });
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Runs a changing operation in the queue and answers with its result, logged. */
  async #operate(label: string, progress: Progress, task: (progress: Progress) => Promise<Record<string, unknown>>, hooks?: OperationHooks): Promise<OperationResult> {
    const operation = label.split(' ')[0];
    let started: Date | undefined;
    let id: number | undefined;
    let result: OperationResult;
    try {
      const value = await this.serialise(
        label,
        (taskId) => {
          id = taskId;
          started = new Date();
          hooks?.started?.();
          return task(progress);
        },
        progress,
      );
      result = { ok: true, operation, ...value };
    } catch (err) {
      result = { ...failed(err), operation } as OperationResult;
    }
    const finished = new Date();
    Object.assign(result, { id, started: started?.toISOString(), finished: finished.toISOString() });
    if (result.ok) this.#logger.info({ operation: label, id }, `${label}: done`);
    else this.#logger.warn({ operation: label, id, error: result.error }, `${label}: failed: ${result.error.message}`);
    return result;
  }

  /** Reloads the config file (the running process reads and checks it): every issue at file:line:col on failure. */
  reload(progress: Progress = () => {}, hooks?: OperationHooks): Promise<OperationResult> {
    return this.#operate('reload', progress, (p) => this.#parts.reloadFile(p), hooks);
  }

  /** Rolls the spawned instances of `upstream` to a fresh start, one at a time (see the Supervisor). */
  deploy(upstream: string, progress: Progress = () => {}, hooks?: OperationHooks): Promise<OperationResult> {
    return this.#operate(`deploy ${upstream}`, progress, async (p) => {
      const problem = deployProblem(this.#parts.config(), upstream);
      if (problem !== undefined) throw problem;
      const deploy = this.#parts.deploy;
      if (deploy === undefined) throw new PorticoError('PORTICO_UNSUPPORTED', `this Portico process cannot deploy: it runs no supervisor of app servers`);
      p({ message: `deploying upstream "${upstream}"` });
      const report = await deploy(upstream, (event) => p(progressOf(event)));
      return { upstream, report };
    }, hooks);
  }

  /**
   * Deploys each upstream whose `spawn` a reload changed, queued now (behind the reload that found them) and run
   * in order; each outcome is logged. Resolves when all are done (never rejects).
   */
  deployChanged(upstreams: readonly string[], progress?: Progress): Promise<void> {
    if (upstreams.length > 0) {
      progress?.({
        message: `spawn changed: a rolling deploy of ${upstreams.join(', ')} is queued behind this reload (portico status shows it running; its outcome goes to the log)`,
      });
    }
    const done = upstreams.map((upstream) =>
      this.deploy(upstream, (event) => this.#logger.info({ upstream, event }, 'deploy')).then((result) => {
        if (result.ok) this.#logger.info({ upstream }, 'deploy after reload done');
        else this.#logger.error({ upstream, error: result.error }, 'deploy after reload failed: the previous instances keep serving');
      }),
    );
    return Promise.all(done).then(() => undefined);
  }

  /**
   * Why an upgrade asked now would be refused at once (undefined: it would be queued): this process cannot upgrade
   * itself (PORTICO_UNSUPPORTED, 501: `workers: N`, or no upgrade built in), or one is already queued or running
   * (PORTICO_UPGRADE_RUNNING, 409). The admin API asks it before answering 202.
   */
  upgradeProblem(): PorticoError | undefined {
    if (this.#parts.upgrade === undefined) return new PorticoError('PORTICO_UNSUPPORTED', this.#parts.cannotUpgrade ?? 'this Portico process cannot upgrade itself');
    if (this.#upgrading) return new PorticoError('PORTICO_UPGRADE_RUNNING', 'an upgrade is already running; try again once it is done');
    return undefined;
  }

  /** Upgrades Portico itself in place (a new process takes the listening sockets over). */
  upgrade(progress: Progress = () => {}, hooks?: OperationHooks): Promise<OperationResult> {
    // A second upgrade asked while one is queued or running is refused at once, not run after it (by then this
    // process has handed over and drains).
    const problem = this.upgradeProblem();
    if (problem !== undefined) return Promise.resolve({ ...failed(problem), operation: 'upgrade' } as OperationResult);
    this.#upgrading = true;
    return this.#operate('upgrade', progress, async (p) => {
      const upgrade = this.#parts.upgrade;
      if (upgrade === undefined) throw this.upgradeProblem() ?? new PorticoError('PORTICO_UNSUPPORTED', 'this Portico process cannot upgrade itself');
      const report = await upgrade((event) => p(progressOf(event)));
      return { report };
    }, hooks).finally(() => {
      this.#upgrading = false;
    });
  }

  /**
   * Reopens the log files (`portico reopen`, as SIGUSR1). Not queued: it changes no config, takes milliseconds, and
   * logrotate's postrotate must not wait behind a deploy of several minutes.
   */
  async reopen(): Promise<OperationResult> {
    const reopen = this.#parts.reopen;
    if (reopen === undefined) return { ...failed(new PorticoError('PORTICO_UNSUPPORTED', 'this Portico process cannot reopen its logs')), operation: 'reopen' } as OperationResult;
    try {
      return { ok: true, operation: 'reopen', ...(await reopen()) };
    } catch (err) {
      return { ...failed(err), operation: 'reopen' } as OperationResult;
    }
  }

  /** What runs, from which config, where; and what the queue is doing. Answers at once (not queued). */
  status(): OperationResult {
    const running = this.#running;
    return {
      ok: true,
      operation: 'status',
      ...this.#parts.status(),
      running: running === undefined ? null : { id: running.id, operation: running.label, for_ms: Date.now() - running.since },
      queued: this.#waiting,
    };
  }

  /**
   * The control socket's entry: refuses a request meant for the Portico of another config file, then runs the
   * operation asked.
   */
  async run(request: OperationRequest, progress: Progress, hooks?: OperationHooks): Promise<OperationResult> {
    const serving = this.#parts.config().file;
    if (request.config !== undefined && canonical(request.config) !== canonical(serving)) {
      return failed(new PorticoError('PORTICO_NOT_APPLICABLE', `the Portico on this control socket serves ${serving}, not ${request.config}`));
    }
    switch (request.operation) {
      case 'reload':
        return this.reload(progress, hooks);
      case 'deploy':
        if (request.upstream === undefined || request.upstream === '') return failed(new PorticoError('PORTICO_BAD_REQUEST', 'deploy needs the name of an upstream'));
        return this.deploy(request.upstream, progress, hooks);
      case 'upgrade':
        return this.upgrade(progress, hooks);
      case 'status':
        return this.status();
      case 'reopen':
        return this.reopen();
    }
  }

  /**
   * Refuses new operations; those queued and not started yet fail with PORTICO_STOPPING. The one running is not
   * waited for here: it is bounded by its own limits, and the server's stop cuts what it holds.
   */
  stop(): void {
    this.#stopped = true;
  }
}
