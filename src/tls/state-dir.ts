/**
 * The state directory: where Portico keeps what must survive a restart and stay private — ACME account keys,
 * certificates and their keys, the sticky-cookie key. It is created 0700; an existing one is refused when another
 * user owns it or it is group- or world-writable. Files are created 0600 from the start (never widened and then
 * narrowed), written to a temporary file, flushed and renamed over the old one, so a crash leaves either the old
 * or the new content. A lock file holding the pid keeps a second process out; one whose process is gone is taken
 * over. An upgrade of Portico hands the lock over: the new process opens the directory while the old one still
 * holds it (`predecessor`), and the old one rewrites the lock with the new pid once the new one serves
 * (`handOver`), so that the lock always names a live Portico.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { stateDirProblem } from '../config/validate.js';
import { PorticoError } from '../errors.js';

/** The lock file's name inside the state directory. */
export const LOCK_FILE = 'portico.lock';

/** Whether a process with this pid exists (one of another user counts: it exists). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A name inside the state directory: relative, with no `..` part (names come from code, never from requests). */
function checkName(name: string): void {
  if (path.isAbsolute(name) || name.split(/[\\/]/).some((part) => part === '..' || part === '')) {
    throw new Error(`not a state file name: ${JSON.stringify(name)}`);
  }
}

/** An open, locked state directory. */
export class StateDir {
  readonly path: string;
  readonly #lock: string;
  #held = true;
  /** The pid of the process this one succeeds (an upgrade) while it still holds the lock. */
  #predecessor: number | undefined;
  /** The pid this process handed the lock over to (an upgrade), until that one took over or failed. */
  #handedTo: number | undefined;

  private constructor(dir: string) {
    this.path = dir;
    this.#lock = path.join(dir, LOCK_FILE);
  }

  /**
   * Creates (0700) or checks the directory and takes its lock. Throws PORTICO_STATE_DIR when it is unsafe or
   * another live process holds the lock. A lock held by `predecessor` (the Portico an upgrade replaces) is left to
   * it: this one holds it once it is handed over (`claim`).
   */
  static open(dir: string, logger: Logger, predecessor?: number): StateDir {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new PorticoError('PORTICO_STATE_DIR', `cannot create the state directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const reason = stateDirProblem(statSync(dir));
    if (reason !== undefined) throw new PorticoError('PORTICO_STATE_DIR', `state directory ${dir} ${reason}`);
    const state = new StateDir(dir);
    state.#takeLock(logger, predecessor);
    return state;
  }

  #takeLock(logger: Logger, predecessor?: number): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      let fd: number;
      try {
        fd = openSync(this.#lock, 'wx', 0o600);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new PorticoError('PORTICO_STATE_DIR', `cannot create the lock ${this.#lock}: ${(err as Error).message}`, { cause: err });
        }
        let text = '';
        try {
          text = readFileSync(this.#lock, 'utf8').trim();
        } catch {
          // Removed meanwhile by its owner: try again.
        }
        const pid = Number(text);
        if (predecessor !== undefined && pid === predecessor && alive(pid)) {
          this.#held = false;
          this.#predecessor = pid;
          return;
        }
        if (text !== '' && Number.isInteger(pid) && pid > 0 && alive(pid)) {
          throw new PorticoError(
            'PORTICO_STATE_DIR',
            `state directory ${this.path} is in use by process ${pid} (lock file ${this.#lock}): is another Portico running with it?`,
          );
        }
        logger.warn({ lock: this.#lock, pid: text }, 'taking over the state directory lock of a process that is gone');
        try {
          unlinkSync(this.#lock);
        } catch {
          // Another process took it over first: the next attempt sees its lock.
        }
        continue;
      }
      writeSync(fd, `${process.pid}\n`);
      fsyncSync(fd);
      closeSync(fd);
      return;
    }
    throw new PorticoError('PORTICO_STATE_DIR', `cannot take the lock ${this.#lock}: another process keeps taking it`);
  }

  /** A file's content, or undefined when it does not exist. */
  read(name: string): Buffer | undefined {
    checkName(name);
    try {
      return readFileSync(path.join(this.path, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** A file's path (its folders made, 0700) and a fresh temporary name beside it. */
  #place(name: string): { file: string; temp: string } {
    checkName(name);
    const file = path.join(this.path, name);
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    return { file, temp: `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp` };
  }

  /** Replaces a file atomically: a 0600 temporary file, written, flushed, renamed over it (folders made 0700). */
  async write(name: string, data: string | Buffer): Promise<void> {
    const { file, temp } = this.#place(name);
    const handle = await open(temp, 'wx', 0o600);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } catch (err) {
      await handle.close();
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    await rename(temp, file);
  }

  /** The same as `write`, synchronously (for what a server needs before it can be built). */
  writeSync(name: string, data: string | Buffer): void {
    const { file, temp } = this.#place(name);
    const fd = openSync(temp, 'wx', 0o600);
    try {
      writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  }

  /** A random key kept under `name`: made (`bytes` long) on first use, the same one after every restart. */
  secret(name: string, bytes = 32): Buffer {
    const kept = this.read(name);
    if (kept !== undefined && kept.length >= bytes) return kept;
    const made = randomBytes(bytes);
    this.writeSync(name, made);
    return made;
  }

  /**
   * Takes the lock its predecessor held, once that one has handed it over (the lock names this process) or is
   * gone. Throws PORTICO_STATE_DIR when another live process holds it. Nothing to do when this one holds it.
   */
  claim(logger: Logger): void {
    if (this.#predecessor === undefined) return;
    this.#predecessor = undefined;
    let text = '';
    try {
      text = readFileSync(this.#lock, 'utf8').trim();
    } catch {
      // Released: taken below.
    }
    this.#held = true;
    if (text === String(process.pid)) return;
    this.#held = false;
    this.#takeLock(logger);
    this.#held = true;
  }

  /**
   * Gives the lock to the process that succeeds this one (an upgrade): it is rewritten with that pid, at once (a
   * temporary file renamed over it), and is no longer this process's to release.
   */
  handOver(pid: number): void {
    if (!this.#held) return;
    const temp = `${this.#lock}.${process.pid}.tmp`;
    const fd = openSync(temp, 'w', 0o600);
    try {
      writeSync(fd, `${pid}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, this.#lock);
    this.#held = false;
    this.#handedTo = pid;
  }

  /**
   * The process the lock was handed to failed before it took over: the lock is this process's again (rewritten
   * with its pid when it still names that one).
   */
  takeBack(): void {
    const pid = this.#handedTo;
    if (pid === undefined) return;
    this.#handedTo = undefined;
    let text = '';
    try {
      text = readFileSync(this.#lock, 'utf8').trim();
    } catch {
      // Gone: made again below.
    }
    if (text !== String(pid) && text !== '') return;
    const temp = `${this.#lock}.${process.pid}.tmp`;
    writeFileSync(temp, `${process.pid}\n`, { mode: 0o600 });
    renameSync(temp, this.#lock);
    this.#held = true;
  }

  /** Releases the lock (only when it is still this process's). Idempotent. */
  release(): void {
    if (!this.#held) return;
    this.#held = false;
    try {
      if (readFileSync(this.#lock, 'utf8').trim() === String(process.pid)) unlinkSync(this.#lock);
    } catch {
      // Already gone.
    }
  }
}
