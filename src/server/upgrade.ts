/**
 * Upgrading Portico in place (SIGUSR2, `portico upgrade`), as nginx's binary upgrade: the running process starts
 * a new one from the installed code (the same node binary, script, arguments and config file; stdio inherited;
 * not detached, so it stays in the terminal's process group), with an IPC channel. On that channel:
 *
 * 1. new → old `hello`; old → new one `socket` message per listening socket, each carrying the socket's handle
 *    (see `listeningHandle`), then `sockets` (their count). The new process listens on the sockets its config
 *    names (matched by address text, or host and bound port), with its own TLS, HTTP/2 and limits, and binds
 *    the addresses it has no socket for. From then on both processes accept on the shared sockets: a connection
 *    is never refused.
 * 2. new → old `ready` once `Portico.start()` resolved (its app, and its app instances once supervised, ready),
 *    or `failed` (an invalid config, a port it cannot bind: the lines that say why) before it exits.
 * 3. old: gives up what only one Portico may hold (the control socket's listener; the cache zones' disk folders:
 *    it stores nothing more, its writes in flight land; the state directory lock, rewritten with the new pid),
 *    then → new `commit`. The new process then takes them (the lock; the control
 *    socket is bound only after this, so the old one's close never unlinks the new one's), and says it serves.
 * 4. old: stops accepting and drains as a graceful stop does (idle keep-alive connections are told
 *    `Connection: close` on their next answer instead of being closed under a client about to send), then exits.
 *    What is still open at `shutdown_timeout` — a WebSocket — is cut.
 *
 * A new process that fails, exits or is not ready in time is stopped (SIGTERM, then SIGKILL) and the old one
 * goes on serving; the result says why. One upgrade at a time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import type { InheritedSocket } from '../connections/listeners.js';
import type { Portico } from './portico.js';
import { childExecArgv } from '../log/reopen-signal.js';

/** The environment variable that tells a new Portico process it succeeds the process of that pid. */
export const UPGRADE_FROM_ENV = 'PORTICO_UPGRADE_FROM';

/** How an upgrade went, in the operations' one result shape. */
export type UpgradeResult =
  | { ok: true; pid: number; previous: number; ms: number }
  | { ok: false; error: { code: 'PORTICO_UPGRADE_RUNNING' | 'PORTICO_UPGRADE_FAILED'; message: string; issues?: string[] } };

/** What the two processes say to each other (a `portico` field marks Portico's messages). */
type UpgradeMessage =
  | { portico: 'upgrade:hello' }
  | { portico: 'upgrade:socket'; text: string; host: string; port: number }
  | { portico: 'upgrade:sockets'; count: number }
  | { portico: 'upgrade:ready'; pid: number; stateDir: string | undefined }
  | { portico: 'upgrade:failed'; message: string; issues: string[] }
  | { portico: 'upgrade:commit' };

/** Whether an IPC message is one of the upgrade's. */
function isUpgradeMessage(message: unknown): message is UpgradeMessage {
  return typeof message === 'object' && message !== null && typeof (message as { portico?: unknown }).portico === 'string';
}

/** How long a new process may take to be ready beyond its app instances' own health timeout. */
const READY_MS = 60_000;
/** How long a failed new process has between SIGTERM and SIGKILL. */
const KILL_AFTER_MS = 5000;
/** How long the new process waits for the sockets, and then for `commit` after `ready`. */
const SOCKETS_MS = 10_000;
const COMMIT_MS = 30_000;

/** How long a new process of this config may take to be ready: its slowest spawned upstream's health timeout, plus a minute. */
export function readyTimeout(config: Config): number {
  let slowest = 0;
  for (const upstream of Object.values(config.upstreams)) slowest = Math.max(slowest, upstream.spawn?.health_timeout ?? 0);
  return READY_MS + slowest;
}

/** How the old process starts its successor and what it does after. */
export interface UpgraderOptions {
  /** The new process's arguments after the node binary (default: this process's node options, script and arguments). */
  args?: readonly string[];
  /** How long the new process may take to be ready (default: `readyTimeout` of the config serving). */
  readyTimeoutMs?: number;
  /**
   * Closes what only one Portico may hold and is not the state directory (the control socket's listener: its
   * connections stay, so a reply can still be written), before the new process takes it. Bounded by the caller.
   */
  release?: () => Promise<void>;
  /** Undoes `release` when the new process fails after it (it died in the moment before it took over). */
  restore?: () => Promise<void>;
  /** The new process serves: this one stops accepting, drains and exits (called once, after the result resolved). */
  retire(successor: number): void;
}

/** The old process's side of an upgrade: `upgrade()` is the one entry point (SIGUSR2, `portico upgrade`). */
export class Upgrader {
  readonly #portico: Portico;
  readonly #logger: Logger;
  readonly #options: UpgraderOptions;
  #running = false;
  /** The new process of the upgrade running, until it took over or failed. */
  #child: ChildProcess | undefined;
  /** The pid this process handed over to: it is draining, and upgrades no more. */
  #handedTo: number | undefined;

  constructor(portico: Portico, logger: Logger, options: UpgraderOptions) {
    this.#portico = portico;
    this.#logger = logger;
    this.#options = options;
  }

  /**
   * Starts a new Portico process, hands it the listening sockets and, once it is ready, everything else; this
   * process then retires. Resolves (never rejects) with how it went: a new process that failed is gone and this
   * one still serves. A second upgrade while one runs is refused.
   */
  upgrade(): Promise<UpgradeResult> {
    if (this.#handedTo !== undefined) {
      return Promise.resolve(refused(`this process (${process.pid}) has already handed over to process ${this.#handedTo} and is draining`));
    }
    if (this.#running) return Promise.resolve(refused('an upgrade is already running; try again once it is done'));
    this.#running = true;
    return this.#run().finally(() => {
      this.#running = false;
    });
  }

  async #run(): Promise<UpgradeResult> {
    const started = Date.now();
    // The successor is started with --disable-sigusr1 where Node has it (see `childExecArgv`).
    const args = this.#options.args ?? [...childExecArgv(), ...process.argv.slice(1)];
    const timeoutMs = this.#options.readyTimeoutMs ?? readyTimeout(this.#portico.config);
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, args, {
        stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
        env: { ...process.env, [UPGRADE_FROM_ENV]: String(process.pid) },
      });
    } catch (err) {
      return failed(`cannot start a new process: ${(err as Error).message}`);
    }
    this.#logger.info({ successor: child.pid }, 'upgrade: new Portico process started');
    this.#child = child;
    const outcome = await this.#handshake(child, timeoutMs);
    this.#child = undefined;
    if (outcome.ok) {
      const pid = child.pid!;
      this.#handedTo = pid;
      const result: UpgradeResult = { ok: true, pid, previous: process.pid, ms: Date.now() - started };
      // After the result is handed to whoever asked (a control client's reply is written first).
      setImmediate(() => this.#options.retire(pid));
      return result;
    }
    await stopChild(child);
    return failed(outcome.message, outcome.issues);
  }

  /**
   * This process stops (SIGTERM) while an upgrade runs: the new process is stopped too, before it takes over, and
   * the upgrade fails. Resolves once it has exited.
   */
  async cancel(): Promise<void> {
    const child = this.#child;
    if (child !== undefined) await stopChild(child);
  }

  /** Runs the exchange with the new process up to `commit`; resolves with whether it took over, or why not. */
  #handshake(child: ChildProcess, timeoutMs: number): Promise<{ ok: true } | { ok: false; message: string; issues?: string[] }> {
    return new Promise((resolve) => {
      let reported: { message: string; issues: string[] } | undefined;
      let settled = false;
      /** `ready` came: the hand-over runs, and decides (a new process that dies meanwhile fails its `commit`). */
      let committing = false;
      const finish = (outcome: { ok: true } | { ok: false; message: string; issues?: string[] }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        child.off('error', onError);
        // A late 'error' of the child object (its channel) must not throw in this process, which goes on serving.
        child.on('error', (err) => this.#logger.debug({ err }, 'upgrade: the new process channel'));
        resolve(outcome);
      };
      const timer = setTimeout(
        () => finish({ ok: false, message: `the new process (pid ${child.pid}) was not ready within ${timeoutMs < 10_000 ? `${timeoutMs} ms` : `${Math.round(timeoutMs / 1000)} s`}` }),
        timeoutMs,
      );
      const onError = (err: Error) => finish({ ok: false, message: `cannot start a new process: ${err.message}` });
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
        if (committing) return;
        const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
        if (reported !== undefined) return finish({ ok: false, message: `${reported.message} (the new process ${how})`, issues: reported.issues });
        finish({ ok: false, message: `the new process (pid ${child.pid}) ${how} before it was ready` });
      };
      const onMessage = (message: unknown) => {
        if (!isUpgradeMessage(message)) return;
        switch (message.portico) {
          case 'upgrade:hello':
            return this.#sendSockets(child);
          case 'upgrade:failed':
            reported = { message: message.message, issues: message.issues };
            return;
          case 'upgrade:ready':
            if (committing) return;
            committing = true;
            clearTimeout(timer);
            return void this.#commit(child, message.stateDir).then(
              () => finish({ ok: true }),
              (err: unknown) => finish({ ok: false, message: `handing over to the new process failed: ${(err as Error).message}` }),
            );
        }
      };
      child.on('message', onMessage);
      child.once('exit', onExit);
      child.once('error', onError);
    });
  }

  /** Sends every listening socket, then their count. */
  #sendSockets(child: ChildProcess): void {
    const sockets = this.#portico.listeningSockets();
    for (const { text, host, port, handle } of sockets) {
      const message: UpgradeMessage = { portico: 'upgrade:socket', text, host, port };
      // A raw TCP handle (Node's "net.Native"): the receiver listens on it when it is ready (see node-internals.ts).
      child.send(message, handle as Parameters<ChildProcess['send']>[1], undefined, (err) => {
        if (err) this.#logger.warn({ err }, 'upgrade: a listening socket could not be sent; the new process binds it itself');
      });
    }
    // With a callback, a channel that closed meanwhile is reported here instead of as an 'error' event (the exit
    // that follows tells the upgrade what happened).
    child.send({ portico: 'upgrade:sockets', count: sockets.length } satisfies UpgradeMessage, undefined, undefined, () => undefined);
  }

  /** The new process is ready: gives up the control socket and the state directory lock, then says `commit`. */
  async #commit(child: ChildProcess, stateDir: string | undefined): Promise<void> {
    if (this.#options.release !== undefined) await this.#options.release();
    await this.#portico.handOver(child.pid!, stateDir);
    try {
      await new Promise<void>((resolve, reject) =>
        child.send({ portico: 'upgrade:commit' } satisfies UpgradeMessage, (err) => (err ? reject(err) : resolve())),
      );
    } catch (err) {
      await this.#portico.takeBack();
      await this.#options.restore?.();
      throw err;
    }
    // The new process lives on its own now: this one's exit must not wait for it, nor for the channel.
    child.unref();
    child.channel?.unref?.();
  }
}

/** The refusal of an upgrade while another runs (or after this process handed over). */
function refused(message: string): UpgradeResult {
  return { ok: false, error: { code: 'PORTICO_UPGRADE_RUNNING', message } };
}

/** An upgrade that failed: the old process still serves. */
function failed(message: string, issues?: string[]): UpgradeResult {
  return { ok: false, error: { code: 'PORTICO_UPGRADE_FAILED', message, ...(issues === undefined || issues.length === 0 ? {} : { issues }) } };
}

/** Stops a new process that failed: SIGTERM, SIGKILL after a bound; resolves once it has exited. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
  await exited;
  clearTimeout(timer);
}

/** The new process's side of an upgrade: made from the environment when this process was started by one. */
export class Successor {
  /** The pid of the Portico this process replaces. */
  readonly predecessor: number;

  private constructor(predecessor: number) {
    this.predecessor = predecessor;
  }

  /**
   * The successor side when this process was started by an upgrade (the environment names the old pid and there
   * is an IPC channel), else undefined. The variable is removed from the environment: the app instances this
   * process starts, and its own upgrades later, must not see it.
   */
  static fromEnvironment(): Successor | undefined {
    const from = process.env[UPGRADE_FROM_ENV];
    delete process.env[UPGRADE_FROM_ENV];
    const pid = Number(from);
    if (from === undefined || !Number.isInteger(pid) || pid <= 0 || process.send === undefined) return undefined;
    return new Successor(pid);
  }

  /** Asks the old process for its listening sockets; resolves with them (bounded: rejects after 10 s). */
  sockets(): Promise<InheritedSocket[]> {
    return new Promise((resolve, reject) => {
      const sockets: InheritedSocket[] = [];
      const done = (err?: Error) => {
        clearTimeout(timer);
        process.off('message', onMessage);
        process.off('disconnect', onDisconnect);
        if (err !== undefined) reject(err);
        else resolve(sockets);
      };
      const timer = setTimeout(() => done(new Error(`no listening sockets from process ${this.predecessor} within ${SOCKETS_MS / 1000} s`)), SOCKETS_MS);
      const onDisconnect = () => done(new Error(`process ${this.predecessor} went away before it handed over its sockets`));
      const onMessage = (message: unknown, handle: unknown) => {
        if (!isUpgradeMessage(message)) return;
        if (message.portico === 'upgrade:socket' && handle !== undefined && handle !== null) {
          sockets.push({ text: message.text, host: message.host, port: message.port, handle: handle as object });
        } else if (message.portico === 'upgrade:sockets') {
          // Every handle sent came before this message (Node queues every message behind one carrying a handle
          // until it is acknowledged). One that could not be sent is missing: its address is bound here instead,
          // which fails while the old process holds it, and the upgrade with it.
          done();
        }
      };
      if (!process.connected) return onDisconnect();
      process.on('message', onMessage);
      process.once('disconnect', onDisconnect);
      process.send!({ portico: 'upgrade:hello' } satisfies UpgradeMessage, undefined, undefined, (err) => {
        if (err) onDisconnect();
      });
    });
  }

  /** Tells the old process this one could not start (it then stops this one); resolves once sent (bounded). */
  failed(message: string, issues: readonly string[] = []): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 2000);
      const sent = process.send?.({ portico: 'upgrade:failed', message, issues: [...issues] } satisfies UpgradeMessage, undefined, undefined, () => {
        clearTimeout(timer);
        resolve();
      });
      if (sent === undefined) {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  /**
   * Tells the old process this one is ready (after `Portico.start()`), and resolves once it has handed over
   * (`commit`) or is gone (the channel closed: nobody else serves, this one goes on). Rejects when neither comes
   * within 30 s.
   */
  ready(stateDir: string | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        process.off('message', onMessage);
        process.off('disconnect', onDisconnect);
        if (err !== undefined) return reject(err);
        resolve();
      };
      const timer = setTimeout(() => done(new Error(`process ${this.predecessor} did not hand over within ${COMMIT_MS / 1000} s`)), COMMIT_MS);
      const onDisconnect = () => done();
      const onMessage = (message: unknown) => {
        if (isUpgradeMessage(message) && message.portico === 'upgrade:commit') done();
      };
      if (!process.connected) return done();
      process.on('message', onMessage);
      process.once('disconnect', onDisconnect);
      process.send!({ portico: 'upgrade:ready', pid: process.pid, stateDir } satisfies UpgradeMessage, undefined, undefined, (err) => {
        if (err) done();
      });
    });
  }

  /** Closes the channel to the old process (after `ready`, or after `failed`): this process is on its own. */
  detach(): void {
    if (process.connected) process.disconnect();
  }
}
