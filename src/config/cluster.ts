/**
 * The checks of the `cluster` section beyond its schema: the cluster's secret is read from the environment
 * variable `key_env` names (it keys encryption at rest and the shared HMAC keys, so a weak one is refused), the
 * Redis URL is one the client reads (the master's name with `sentinels`), and the box's name defaults to the host
 * name.
 */
import { hostname } from 'node:os';
import type { ParsedConfig, Problem } from './schema.js';

/** The shortest cluster secret accepted (`openssl rand -hex 32` gives 64). */
export const MIN_CLUSTER_KEY_LENGTH = 32;

/** The shortest lease of an ACME order's lock (`acme_lease`). */
export const MIN_ACME_LEASE_MS = 1000;

/** The longest `cluster.timeout` accepted: it is what a request waits at most when Redis hangs. */
export const MAX_CLUSTER_TIMEOUT_MS = 5000;

/**
 * What is wrong with a `redis://` URL the schema let through (undefined: nothing), as the client would read it.
 * With sentinels, its host is the master's name in Sentinel, and it has no port.
 */
function redisUrlProblem(text: string, sentinels: boolean): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'not a URL the Redis client can read (redis://[user:password@]host:port/db; a password with "@", ":" or "/" is written percent-encoded)';
  }
  if (url.hostname === '') return sentinels ? "with sentinels, the URL's host is the master's name in Sentinel (redis://:password@mymaster/0)" : 'the URL names no host (redis://host:6379/0)';
  if (sentinels && url.protocol === 'rediss:') return 'a rediss:// (TLS) Redis found through Sentinel is not supported yet: Sentinel gives the master as an address, which its certificate does not name';
  if (sentinels && url.port !== '') return `with sentinels, the URL's host is the master's name in Sentinel, and Sentinel gives its address: no port (redis://${url.username === '' && url.password === '' ? '' : '…@'}${url.hostname}${url.pathname})`;
  if (!/^(\/\d*)?$/.test(url.pathname)) return `the URL's path is the database number (redis://host:6379/0), got "${url.pathname}"`;
  return undefined;
}

/** Problems of `config.cluster` (none without one); fills in `cluster.key` and `cluster.name`. */
export function checkCluster(config: ParsedConfig, env: NodeJS.ProcessEnv = process.env): Problem[] {
  const cluster = config.cluster;
  if (cluster === undefined) return [];
  if (cluster.name === '') cluster.name = hostname().replace(/[^A-Za-z0-9_.-]/g, '-');
  const problems: Problem[] = [];
  const url = redisUrlProblem(cluster.redis, cluster.sentinels !== undefined);
  if (url !== undefined) problems.push({ keys: ['cluster', 'redis'], message: url });
  if (!(cluster.timeout >= 1) || cluster.timeout > MAX_CLUSTER_TIMEOUT_MS) {
    problems.push({
      keys: ['cluster', 'timeout'],
      message: `the deadline of a Redis call on a request's path is between 1ms and 5s (a request waits that long when Redis hangs; a bare number is seconds: write "50ms")`,
    });
  }
  if (cluster.acme_lease < MIN_ACME_LEASE_MS) {
    problems.push({ keys: ['cluster', 'acme_lease'], message: `an ACME lock's lease is at least 1s (it is renewed every third of it while the order runs)` });
  }
  const key = env[cluster.key_env]?.trim() ?? '';
  if (key === '') {
    return [...problems, { keys: ['cluster', 'key_env'], message: `the environment variable ${cluster.key_env} is not set: every box of the cluster needs the same secret there (make one with "openssl rand -hex 32")` }];
  }
  if (key.length < MIN_CLUSTER_KEY_LENGTH || /\s/.test(key)) {
    return [...problems, { keys: ['cluster', 'key_env'], message: `the secret in ${cluster.key_env} is refused: it needs ${MIN_CLUSTER_KEY_LENGTH}+ characters and no whitespace (make one with "openssl rand -hex 32")` }];
  }
  cluster.key = key;
  return problems;
}
