/**
 * The pid file (`pid_file`, default `portico.pid` in the state directory): the id of the process that serves, for
 * `kill -USR1 $(cat …)` (logrotate), `kill -HUP`, monitoring. Written at start (atomically: a temporary file renamed
 * over it, so a reader never sees it half written), removed at stop, and taken over by an upgrade's new process
 * (which writes its own pid once it serves): a stopping process removes the file only while it still names itself.
 */
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';

/** The pid file's name in the state directory when `pid_file` is unset. */
export const PID_FILE = 'portico.pid';

/** The pid file a config asks for (undefined: none): `pid_file`, `off`, else `portico.pid` in `stateDir` when there is one. */
export function pidFilePath(config: Config, stateDir: string | undefined): string | undefined {
  if (config.pid_file === 'off') return undefined;
  if (config.pid_file !== undefined) return config.pid_file;
  return stateDir === undefined ? undefined : path.join(stateDir, PID_FILE);
}

/** One process's pid file. */
export class PidFile {
  /** The file's path. */
  readonly path: string;
  readonly #logger: Logger;
  #written = false;

  /** A pid file at `file`; nothing is written until `write()`. */
  constructor(file: string, logger: Logger) {
    this.path = file;
    this.#logger = logger;
  }

  /** Writes this process's pid (replacing what is there: a predecessor's, or one left by a crash). Never throws. */
  write(): void {
    const temp = `${this.path}.${process.pid}.tmp`;
    try {
      writeFileSync(temp, `${process.pid}\n`, { mode: 0o644 });
      renameSync(temp, this.path);
      this.#written = true;
    } catch (err) {
      try {
        unlinkSync(temp);
      } catch {
        // Never made.
      }
      this.#logger.error({ err, pid_file: this.path }, `cannot write the pid file ${this.path}`);
    }
  }

  /** An upgrade's new process writes the file from now: this one leaves it alone at its stop (`takeBack` writes it again). */
  leave(): void {
    this.#written = false;
  }

  /** Removes the file when it still names this process (an upgrade's new process has replaced it otherwise). */
  remove(): void {
    if (!this.#written) return;
    this.#written = false;
    try {
      if (readFileSync(this.path, 'utf8').trim() !== String(process.pid)) return;
      unlinkSync(this.path);
    } catch {
      // Gone already.
    }
  }
}
