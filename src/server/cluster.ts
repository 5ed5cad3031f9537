/**
 * A box's place in the cluster (docs/cluster.md): the process's Redis link, made from the config's `cluster`
 * section. The link is made once, with the first config that has one, and a reload keeps it (a changed section
 * takes effect on restart, as `restart-only.ts` says).
 */
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { ClusterLink } from '../cluster/link.js';

/** The process's link for `config` (undefined: no `cluster` section, one box alone). */
export function clusterLink(config: Config, logger: Logger): ClusterLink | undefined {
  const cluster = config.cluster;
  if (cluster === undefined) return undefined;
  return new ClusterLink({ redis: cluster.redis, prefix: cluster.prefix, name: cluster.name, timeoutMs: cluster.timeout, expectedBoxes: cluster.boxes }, logger);
}
