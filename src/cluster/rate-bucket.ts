/**
 * A cluster-wide rate bucket (docs/cluster.md, "Rate limits"): one GCRA bucket per key in Redis, taken by a Lua
 * script that reads and writes the key in one atomic step, on Redis's clock (`TIME`: the boxes' clocks never
 * meet, so their skew does not matter). GCRA (the generic cell rate algorithm, as redis-cell's `CL.THROTTLE`)
 * keeps one number per key, the theoretical arrival time (TAT) of the next request: a request is allowed when
 * TAT − now ≤ burst × interval, and moves TAT one interval on. That is exactly a token bucket of `burst` tokens
 * refilled every `interval` (what the local `rate_limit` keeps), in one key whose expiry (PX) is the moment the
 * bucket would be full again: an idle key leaves Redis by itself.
 *
 * Every call goes through `ClusterLink.attempt` (feature `rate_limit`, the link's short deadline): when Redis is
 * away, slow or failing, `take` answers from the fallback the caller gives (the box's local share).
 */
import type { Redis } from 'ioredis';
import type { ClusterLink } from './link.js';

/**
 * KEYS[1]: the bucket. ARGV[1]: the interval between tokens (µs, may have a fraction); ARGV[2]: the burst.
 * Returns 0 when a token was taken, else the µs until one will be there (≥ 1). TAT is kept in whole µs written with
 * `%.0f` (Lua's default number format keeps 14 digits, and µs since 1970 have 16).
 */
export const GCRA_SCRIPT = `
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2]) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local after = tat + interval
if after - now > tolerance then
  return math.floor(after - tolerance - now) + 1
end
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000))
return 0
`;

/** The script's command name on the link's client (defined once per client). */
const COMMAND = 'porticoRateTake';

type ScriptedRedis = Redis & { [COMMAND](key: string, intervalUs: string, burst: string): Promise<number> };

const defined = new WeakSet<Redis>();

/** The link's client with the script defined (ioredis sends it by SHA, and loads it again after a Redis restart). */
function scripted(redis: Redis): ScriptedRedis {
  if (!defined.has(redis)) {
    redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: GCRA_SCRIPT });
    defined.add(redis);
  }
  return redis as ScriptedRedis;
}

/** The whole seconds of a `Retry-After` for a wait of `us` microseconds (at least 1). */
export function retryAfterSeconds(us: number): number {
  return Math.max(1, Math.ceil(us / 1_000_000));
}

/** One rule's buckets in Redis: `take(key)` as `TokenBuckets.take`, shared by every box of the cluster. */
export class SharedBuckets {
  readonly #link: ClusterLink;
  readonly #prefix: string;
  readonly #intervalUs: string;
  readonly #burst: string;
  readonly #fallback: (key: string) => number;

  /**
   * `rule` names the rule in Redis (the same on every box for the same site, route and options); `perMs` tokens
   * per millisecond, `burst` the bucket's size; `fallback(key)` answers while Redis is away.
   */
  constructor(link: ClusterLink, rule: string, perMs: number, burst: number, fallback: (key: string) => number) {
    this.#link = link;
    this.#prefix = link.key('rate', rule, '');
    this.#intervalUs = String(1000 / perMs);
    this.#burst = String(burst);
    this.#fallback = fallback;
  }

  /** Takes a token from `key`'s bucket: resolves to 0 when there was one, else the whole seconds until there is. */
  take(key: string): Promise<number> {
    const bucket = this.#prefix + key;
    return this.#link.attempt(
      'rate_limit',
      (redis) => scripted(redis)[COMMAND](bucket, this.#intervalUs, this.#burst).then((wait) => (wait === 0 ? 0 : retryAfterSeconds(wait))),
      () => this.#fallback(key),
    );
  }
}
