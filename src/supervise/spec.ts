/**
 * The `spawn` sections of a config, resolved into what the Supervisor runs: `cwd` against the config's folder,
 * the upstream's `health` as the readiness check, and `user`/`group` as setpriv options (checked here: they need
 * root, setpriv, and a user and group that exist).
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import type { Config } from '../config/load.js';
import { PorticoError } from '../errors.js';
import { HAS_SETPRIV } from './instance.js';
import type { UpstreamSpec } from './slot.js';

/** A short command (`id`, `getent`) whose output is needed; undefined when it fails (no such user or group). */
function lookUp(file: string, args: string[]): string | undefined {
  try {
    return execFileSync(file, args, { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

/** The setpriv options that run an upstream's instances as `user`/`group`; throws when that cannot be done. */
function credentials(upstream: string, user: string | undefined, group: string | undefined): string[] {
  if (user === undefined && group === undefined) return [];
  const where = `upstreams.${upstream}.spawn`;
  const who = [user === undefined ? '' : `user "${user}"`, group === undefined ? '' : `group "${group}"`].filter(Boolean).join(' and ');
  const uid = process.getuid?.();
  if (uid !== 0) {
    throw new PorticoError('PORTICO_SPAWN_FAILED', `${where}: running the instances as ${who} needs Portico to run as root (it runs as uid ${uid ?? '?'}); remove user/group, or start Portico as root`);
  }
  if (!HAS_SETPRIV) throw new PorticoError('PORTICO_SPAWN_FAILED', `${where}: running the instances as ${who} needs setpriv (util-linux), not found at /usr/bin/setpriv`);
  if (group !== undefined && lookUp('getent', ['group', group]) === undefined) {
    throw new PorticoError('PORTICO_SPAWN_FAILED', `${where}.group: no group "${group}" on this system`);
  }
  if (user === undefined) return ['--regid', group!, '--clear-groups'];
  const primary = lookUp('id', ['-g', '--', user]);
  if (primary === undefined) throw new PorticoError('PORTICO_SPAWN_FAILED', `${where}.user: no user "${user}" on this system`);
  return ['--reuid', user, '--regid', group ?? primary, '--init-groups'];
}

/** Every upstream's `spawn` of `config`, resolved; throws PorticoError when one cannot run (user/group). */
export function upstreamSpecs(config: Config): Map<string, UpstreamSpec> {
  const specs = new Map<string, UpstreamSpec>();
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    const spawn = upstream.spawn;
    if (spawn === undefined) continue;
    const health = upstream.health;
    specs.set(name, {
      command: spawn.command,
      cwd: path.resolve(config.dir, spawn.cwd ?? '.'),
      env: spawn.env,
      credentials: credentials(name, spawn.user, spawn.group),
      stopSignal: spawn.stop_signal,
      stopTimeout: spawn.stop_timeout,
      ports: spawn.ports,
      instances: spawn.instances,
      maxSurge: spawn.max_surge,
      healthTimeout: spawn.health_timeout,
      user: spawn.user,
      group: spawn.group,
      readiness: health === undefined ? undefined : { path: health.path, interval: health.interval, timeout: health.timeout, rise: health.rise, expect: health.expect, host: health.host },
    });
  }
  return specs;
}
