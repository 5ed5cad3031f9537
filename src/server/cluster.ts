/**
 * A box's place in the cluster (docs/cluster.md): the process's Redis link, made from the config's `cluster`
 * section, and its heartbeat (the box's record, the boxes seen). The link is made once, with the first config that
 * has one, and a reload keeps it (a changed section takes effect on restart, as `restart-only.ts` says); the
 * heartbeat's record follows the config serving (a reload changes its digest).
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { ClusterLink } from '../cluster/link.js';
import { configDigest } from '../cluster/digest.js';
import { Heartbeat } from '../cluster/heartbeat.js';

/**
 * The process's link for `config` (undefined: no `cluster` section, one box alone). `processes`: a worker's, the
 * box's worker count (see `ClusterSettings.processes`).
 */
export function clusterLink(config: Config, logger: Logger, processes = 1): ClusterLink | undefined {
  const cluster = config.cluster;
  if (cluster === undefined) return undefined;
  return new ClusterLink({ redis: cluster.redis, prefix: cluster.prefix, name: cluster.name, timeoutMs: cluster.timeout, expectedBoxes: cluster.boxes, processes }, logger);
}

/** What the heartbeat reads of the running server at each beat. */
export interface BoxNow {
  config: Config;
  listeners: ReadonlyArray<{ url: string }>;
  admin: string | null;
}

/** The heartbeat of the box on `link` (undefined: no link); `now` is read at each beat. */
export function heartbeat(
  link: ClusterLink | undefined,
  now: () => BoxNow,
  logger: Logger,
  process: { version: string; startedAt: number; predecessor?: number | undefined },
): Heartbeat | undefined {
  if (link === undefined) return undefined;
  const started = new Date(process.startedAt).toISOString();
  // The digest is worked out once per config (a reload brings a new one).
  const digests = new WeakMap<Config, string>();
  const digestOf = (config: Config): string => {
    let digest = digests.get(config);
    if (digest === undefined) {
      digest = configDigest(config);
      digests.set(config, digest);
    }
    return digest;
  };
  return new Heartbeat(
    link,
    () => {
      const box = now();
      return { version: process.version, digest: digestOf(box.config), address: box.listeners.map((l) => reachable(l.url)), admin: box.admin === null ? null : reachable(box.admin), started };
    },
    logger,
    process.predecessor === undefined ? {} : { predecessor: process.predecessor },
  );
}

/** A listener's URL as another machine would use it: a wildcard address (`0.0.0.0`, `[::]`) becomes the host name. */
function reachable(url: string): string {
  return url.replace(/^(https?:\/\/)(0\.0\.0\.0|\[::\])(?=:)/, `$1${hostname()}`);
}
