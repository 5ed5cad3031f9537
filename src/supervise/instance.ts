/**
 * One running app-server instance: a process group of its own, started through a small shell shim so that no
 * process of the group outlives Portico, its output logged line by line, stopped as a whole group.
 *
 * Why a shim: a process group lets Portico signal everything an instance started (`sh -c` children, what
 * `npm start` runs), but a group dies with nobody when Portico itself is killed with SIGKILL. The kernel's
 * parent-death signal (`setpriv --pdeathsig`) reaches only Portico's direct child, not its children. So the
 * group's leader is started through `setpriv --pdeathsig SIGKILL` and, beside it, a watcher shell in the same
 * group holds one end of a socket pair whose other end only Portico has: when Portico dies, for whatever reason,
 * the kernel closes that end, the watcher reads end-of-file and kills its whole group. The watcher ignores the
 * stop signals (a graceful stop signals the whole group); it dies with the group's SIGKILL after the leader exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { LineSplitter, LineTail } from './lines.js';

/** util-linux's setpriv: the parent-death signal, and the user/group switch when Portico runs as root. */
export const SETPRIV = '/usr/bin/setpriv';

/** Whether setpriv is installed (Linux with util-linux); without it the watcher alone guards against orphans. */
export const HAS_SETPRIV = existsSync(SETPRIV);

/**
 * The shim, run by `/bin/sh -c` with the instance's argv as "$@" and the lifeline socket as fd 3. It starts the
 * watcher in the background (stdio away from the instance's pipes, so that their end-of-file means the
 * instance's output ended), closes fd 3 for the instance itself, and becomes the instance (`exec`: same pid,
 * which stays the group's leader and keeps the parent-death signal).
 */
const SHIM = [
  `( trap '' HUP INT QUIT TERM USR1 USR2 WINCH PIPE; read -r _ <&3; kill -KILL 0 ) </dev/null >/dev/null 2>&1 &`,
  'exec 3<&-',
  'exec "$@"',
].join('\n');

/** Longest line of an instance's output that is logged; the rest of a longer line is dropped. */
const MAX_LINE = 8192;

/** How many of its last stderr lines an instance keeps (a crash is logged with them). */
const TAIL_LINES = 20;

/** After the leader's exit, how long its output pipes may take to reach their end. */
const OUTPUT_WAIT_MS = 1000;

/** After SIGKILL, how long a stop waits for the exit (the kernel delivers it at once; this only bounds the wait). */
const KILL_WAIT_MS = 5000;

/** How an instance is run: the process side of `upstreams.<name>.spawn`, resolved. */
export interface LaunchSpec {
  /** An argv list run as is, or a string run by `/bin/sh -c`; `{port}`, `{slot}` and `{route}` not yet replaced. */
  readonly command: string | readonly string[];
  /** Absolute working directory. */
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  /** setpriv options that switch user and group (empty when Portico runs the instance as itself). */
  readonly credentials: readonly string[];
  readonly stopSignal: NodeJS.Signals;
  readonly stopTimeout: number;
}

/** Where and as what one instance runs. */
export interface InstanceSlot {
  readonly upstream: string;
  /** `app#1`. */
  readonly slot: string;
  /** `app1`. */
  readonly route: string;
  readonly port: number;
}

/** How an instance ended. */
export interface InstanceExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The process could not be started at all (its working directory is missing, setpriv failed to exec). */
  readonly error?: Error;
}

/** `{port}`, `{slot}` and `{route}` replaced in one argument or command string. */
function fillIn(text: string, where: InstanceSlot): string {
  return text.replaceAll('{port}', String(where.port)).replaceAll('{slot}', where.slot).replaceAll('{route}', where.route);
}

/** The argv an instance runs: its command (a string through `/bin/sh -c`), placeholders filled in. */
export function commandArgv(command: string | readonly string[], where: InstanceSlot): string[] {
  return typeof command === 'string' ? ['/bin/sh', '-c', fillIn(command, where)] : command.map((arg) => fillIn(arg, where));
}

/** How an exit reads in a log line: `exited with code 3`, `was killed by SIGKILL`, `could not start: ...`. */
export function describeExit(exit: InstanceExit): string {
  if (exit.error !== undefined) return `could not start: ${exit.error.message}`;
  if (exit.signal !== null) return `was killed by ${exit.signal}`;
  return `exited with code ${exit.code ?? '?'}`;
}

/** A started instance: its process group, its output in the log, its exit as a promise, its stop. */
export class Instance {
  readonly where: InstanceSlot;
  readonly spec: LaunchSpec;
  /** The group leader's pid (also the group id); undefined when the process could not be started. */
  readonly pid: number | undefined;
  /** When it was started (ms since the epoch). */
  readonly startedAt = Date.now();
  /** Resolves once the instance has exited (and the rest of its group has been killed). */
  readonly exited: Promise<InstanceExit>;
  readonly #child: ChildProcess;
  readonly #tail = new LineTail(TAIL_LINES);
  #exit: InstanceExit | undefined;
  #stopping: Promise<void> | undefined;

  /** Starts the instance's process group at once (see the file's comment for the shim). */
  constructor(spec: LaunchSpec, where: InstanceSlot, logger: Logger) {
    this.spec = spec;
    this.where = where;
    const argv = commandArgv(spec.command, where);
    const shim = ['/bin/sh', '-c', SHIM, 'portico-shim', ...argv];
    const [file, ...args] = HAS_SETPRIV ? [SETPRIV, '--pdeathsig', 'SIGKILL', ...spec.credentials, '--', ...shim] : shim;
    const env = { ...process.env, ...spec.env, PORT: String(where.port), PORTICO_SLOT: where.slot, PORTICO_ROUTE: where.route };
    this.#child = spawn(file!, args, { cwd: spec.cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    this.pid = this.#child.pid;
    const log = logger.child({ slot: where.slot, pid: this.pid });
    const out = new LineSplitter(MAX_LINE, (line) => log.info(line));
    const err = new LineSplitter(MAX_LINE, (line) => {
      this.#tail.add(line);
      log.warn(line);
    });
    this.#child.stdout!.on('data', (chunk: Buffer) => out.push(chunk)).once('end', () => out.end());
    this.#child.stderr!.on('data', (chunk: Buffer) => err.push(chunk)).once('end', () => err.end());
    // The lifeline: never written, never read here; the watcher's end-of-file when this process is gone.
    (this.#child.stdio[3] as Readable | null | undefined)?.on('error', () => {});
    this.exited = new Promise<InstanceExit>((resolve) => {
      const done = (exit: InstanceExit): void => {
        if (this.#exit !== undefined) return;
        this.#exit = exit;
        // The leader is the instance: what it left in its group is a stray (and would hold the port). The watcher
        // goes with it.
        this.#signalGroup('SIGKILL');
        resolve(exit);
      };
      this.#child.once('exit', (code, signal) => {
        // The output may still be in the pipes: the exit counts once they are read to their end (the stderr tail is
        // then complete), or after a bounded wait when a stray that left the group still holds them.
        this.#signalGroup('SIGKILL');
        const timer = setTimeout(() => done({ code, signal }), OUTPUT_WAIT_MS);
        this.#child.once('close', () => {
          clearTimeout(timer);
          done({ code, signal });
        });
      });
      this.#child.once('error', (error) => {
        if (this.#child.pid === undefined) done({ code: null, signal: null, error });
      });
    });
  }

  /** How it ended, once it has. */
  get exit(): InstanceExit | undefined {
    return this.#exit;
  }

  /** Whether `stop()` was called (its exit is then no crash). */
  get stopping(): boolean {
    return this.#stopping !== undefined;
  }

  /** Its last stderr lines, oldest first. */
  stderrTail(): string[] {
    return this.#tail.lines();
  }

  /**
   * Stops the whole group: `stop_signal` to every process of it, SIGKILL to the group when the leader has not
   * exited after `stop_timeout`. Resolves once it has exited (bounded). Calling it again returns the same wait.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (this.#exit !== undefined) return;
    this.#signalGroup(this.spec.stopSignal);
    if (await exitedWithin(this.exited, this.spec.stopTimeout)) return;
    this.#signalGroup('SIGKILL');
    await exitedWithin(this.exited, KILL_WAIT_MS);
  }

  #signalGroup(signal: NodeJS.Signals): void {
    if (this.pid === undefined) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      // ESRCH: the group is gone already.
    }
  }
}

/** Whether `exited` settles within `ms`. */
async function exitedWithin(exited: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(resolve, ms, false);
  });
  try {
    return await Promise.race([exited.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
