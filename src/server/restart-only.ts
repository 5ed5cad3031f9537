/**
 * Settings a reload reads but does not apply: the error log's destination and shape, and the pid file, are set up
 * once by `portico run` (the logger exists before any config is served, and workers inherit it). A reload that
 * changes one says so, rather than seeming to have applied it.
 */
import type { Config } from '../config/load.js';

/** A warning per setting that `next` changes from `previous` and that takes effect only on restart. */
export function restartOnlyChanges(previous: Config, next: Config): string[] {
  const changed: string[] = [];
  if (previous.log.error !== next.log.error) changed.push(`log.error changed from ${previous.log.error} to ${next.log.error}`);
  if (previous.log.error_format !== next.log.error_format) changed.push(`log.error_format changed from ${previous.log.error_format} to ${next.log.error_format}`);
  // The link is made once, with these (its deadline and box count included): a reload keeps it.
  const cluster = (config: Config): string =>
    config.cluster === undefined ? 'none' : JSON.stringify([config.cluster.redis, config.cluster.sentinels, config.cluster.prefix, config.cluster.name, config.cluster.key_env, config.cluster.timeout, config.cluster.boxes]);
  if (cluster(previous) !== cluster(next)) changed.push('cluster (redis, sentinels, prefix, name, key_env, timeout or boxes) changed');
  else if (previous.cluster !== undefined && previous.cluster.acme_lease !== next.cluster?.acme_lease) changed.push('cluster.acme_lease changed');
  if (previous.pid_file !== next.pid_file) changed.push(`pid_file changed from ${previous.pid_file ?? '(default)'} to ${next.pid_file ?? '(default)'}`);
  return changed.map((what) => `warning: ${what}: takes effect on restart`);
}
