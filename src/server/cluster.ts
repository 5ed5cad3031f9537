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
import { EpochKeys } from '../cluster/keys.js';
import { secretId } from '../cluster/sealed.js';

/**
 * The process's link for `config` (undefined: no `cluster` section, one box alone). `processes`: a worker's, the
 * box's worker count (see `ClusterSettings.processes`).
 */
export function clusterLink(config: Config, logger: Logger, processes = 1): ClusterLink | undefined {
  const cluster = config.cluster;
  if (cluster === undefined) return undefined;
  return new ClusterLink({ redis: cluster.redis, sentinels: cluster.sentinels, prefix: cluster.prefix, name: cluster.name, timeoutMs: cluster.timeout, expectedBoxes: cluster.boxes, processes }, logger);
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
  // The secret is the process's (read from its environment at start): its fingerprint is worked out once.
  let secret: { key: string; id: string } | undefined;
  const secretOf = (config: Config): string | undefined => {
    const key = config.cluster?.key;
    if (key === undefined || key === '') return undefined;
    if (secret?.key !== key) secret = { key, id: secretId(key) };
    return secret.id;
  };
  return new Heartbeat(
    link,
    () => {
      const box = now();
      return {
        version: process.version,
        digest: digestOf(box.config),
        address: box.listeners.map((l) => reachable(l.url)),
        admin: box.admin === null ? null : reachable(box.admin),
        started,
        secret_id: secretOf(box.config),
      };
    },
    logger,
    process.predecessor === undefined ? {} : { predecessor: process.predecessor },
  );
}

/** A listener's URL as another machine would use it: a wildcard address (`0.0.0.0`, `[::]`) becomes the host name. */
function reachable(url: string): string {
  return url.replace(/^(https?:\/\/)(0\.0\.0\.0|\[::\])(?=:)/, `$1${hostname()}`);
}

/**
 * How long one sticky key signs: a day. A cookie verifies under its key's epoch and the next (a client that comes
 * back is signed again under the key of the day), so a pin is lost only by a client idle for more than a whole
 * period, when app sessions are long gone too.
 */
export const STICKY_PERIOD_MS = 24 * 3600_000;
/**
 * How long one session-ticket key encrypts: 12 hours (Caddy's rotation of its ticket keys). Node's TLS server holds
 * one ticket key: a ticket issued before a rotation no longer decrypts after it, and its client makes a full
 * handshake. Tickets live `sessionTimeout` (300 s), so at most 300 s / 12 h (0.7 %) of resumptions meet a rotation.
 */
export const TICKET_PERIOD_MS = 12 * 3600_000;

/**
 * The keys a cluster's boxes share (docs/cluster.md, "Sticky sessions and TLS resumption"): the sticky cookie's
 * key and the 48 bytes of session-ticket keys, each rotating per period and derived from the cluster's secret.
 */
export class ClusterKeys {
  readonly sticky: EpochKeys;
  readonly tickets: EpochKeys;

  constructor(secret: string, now?: () => number) {
    this.sticky = new EpochKeys(secret, 'sticky', { periodMs: STICKY_PERIOD_MS, now });
    this.tickets = new EpochKeys(secret, 'tickets', { periodMs: TICKET_PERIOD_MS, bytes: 48, now });
  }

  /** Starts the rotations; `setTicketKeys` is called with the tickets' new keys at each (to put on every TLS server). */
  start(setTicketKeys: (keys: Buffer) => void): void {
    this.tickets.onRotate((ring) => setTicketKeys(ring.current));
    this.sticky.start();
    this.tickets.start();
  }

  /** Stops the rotations' timers. */
  stop(): void {
    this.sticky.stop();
    this.tickets.stop();
  }
}

/** The shared keys of `config`'s cluster (undefined: no `cluster` section). */
export function clusterKeys(config: Config): ClusterKeys | undefined {
  return config.cluster === undefined ? undefined : new ClusterKeys(config.cluster.key);
}
