/**
 * Where a config's state directory and control socket are. The state directory is `state_dir`, else
 * `./var/NAME` beside the config file, NAME being the file's name without its extension (`./var/portico` for
 * `portico.yaml`, the folder ACME always used by default): one per config file, so that several configs in one
 * folder each have their own Portico. `portico run` always binds its control socket there, and
 * `portico reload | deploy | upgrade | status` find it from the same config file.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';

/** The state directory of a config file without `state_dir`, relative to the config's folder: `var/NAME`. */
export function defaultStateDir(file: string): string {
  const name = path.parse(file).name;
  return path.join('var', name === '' || name.startsWith('.') ? 'portico' : name);
}

/** The control socket's name inside the state directory. */
export const CONTROL_SOCKET = 'control.sock';

/**
 * The longest path a unix socket may have on Linux: `sun_path` holds 108 bytes, the last one the terminating NUL.
 * A longer path would be cut silently by some systems and refused by others: Portico refuses it, naming it.
 */
export const SOCKET_PATH_MAX = 107;

/** The control socket of a state directory. */
export function controlSocketPath(stateDir: string): string {
  return path.join(stateDir, CONTROL_SOCKET);
}

/** Why a unix socket cannot have this path (undefined when it can): it is longer than SOCKET_PATH_MAX bytes. */
export function socketPathProblem(socket: string): string | undefined {
  const bytes = Buffer.byteLength(socket);
  if (bytes <= SOCKET_PATH_MAX) return undefined;
  return `the control socket path ${socket} is ${bytes} bytes, over the ${SOCKET_PATH_MAX}-byte limit of a unix socket path: choose a shorter state_dir`;
}

/** The state directory a config names (`state_dir` resolved against its folder), else the default beside it. */
export function stateDirFor(file: string, configDir: string, stateDir: string | undefined): string {
  return path.resolve(configDir, stateDir ?? defaultStateDir(file));
}

/**
 * The control sockets where the Portico of a config file may answer, read leniently: only its `state_dir` (when it
 * is a string) counts, so that `portico reload` still finds the running Portico when the file on disk is broken
 * (the running process reads the file and reports every error). When the file names a `state_dir`, the default
 * place comes second: a Portico started before `state_dir` was added to the file listens there. The file must be
 * readable.
 */
export function controlSocketsOfFile(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  let stateDir: string | undefined;
  try {
    const raw: unknown = parseDocument(text, { prettyErrors: false }).toJS();
    const value = (raw as { state_dir?: unknown } | null)?.state_dir;
    if (typeof value === 'string' && value !== '') stateDir = value;
  } catch {
    // A file YAML cannot read: the default place; the running Portico reports the error.
  }
  const dir = path.dirname(path.resolve(file));
  const named = controlSocketPath(stateDirFor(file, dir, stateDir));
  const fallback = controlSocketPath(stateDirFor(file, dir, undefined));
  return named === fallback ? [named] : [named, fallback];
}
