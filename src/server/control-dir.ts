/**
 * The control socket's folder when the config names no state directory: `./var/NAME` beside the config (see
 * config/control.ts). Shared by the single process (`Portico`) and the primary of `workers: N`, whichever owns the
 * control socket.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { socketPathProblem } from '../config/control.js';
import { StateDir } from '../tls/state-dir.js';

/**
 * Opens (and locks) the folder of `config.control.socket`. A default folder that cannot be made (a config folder
 * Portico may not write), or whose socket path would pass the 107-byte limit, gives undefined, with a warning: such
 * a config served before the control socket existed, and still does. Another Portico holding it throws
 * PORTICO_STATE_DIR. `predecessor`: an upgrade's new process accepts its predecessor's lock.
 */
export function openControlDir(config: Config, logger: Logger, predecessor?: number): StateDir | undefined {
  const socket = config.control.socket;
  // (A state_dir the config names is checked with it: a socket path too long there is a config error.)
  const tooLong = socketPathProblem(socket);
  if (tooLong !== undefined) {
    logger.warn(`no control socket (portico reload, deploy, status cannot reach this process): ${tooLong}`);
    return undefined;
  }
  try {
    return StateDir.open(path.dirname(socket), logger, predecessor);
  } catch (err) {
    const cause = (err as { cause?: NodeJS.ErrnoException }).cause?.code;
    if (cause !== 'EACCES' && cause !== 'EPERM' && cause !== 'EROFS') throw err;
    logger.warn({ err }, 'no control socket (portico reload, deploy, status cannot reach this process): set state_dir to a folder Portico may create');
    return undefined;
  }
}
