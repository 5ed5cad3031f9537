/**
 * `rate_limit`: a token bucket per key (by default the client address, IPv6 grouped by its /64 so that one
 * host cannot rotate through its addresses), as nginx's `limit_req` with `burst … nodelay`. A request with no
 * token left gets 429 with `Retry-After`. The buckets live in a bounded LRU map (scope: this process; a reload
 * keeps them for a rule whose site, route and options are unchanged, and starts a changed rule afresh).
 *
 * With a `cluster`, a rule is cluster-wide unless it says `scope: box`: its buckets are in Redis (cluster/
 * rate-bucket.ts, one atomic script call per request), and while Redis is away each box limits on its own at its
 * share, rate and burst / the cluster's boxes, and / the box's workers in each worker (docs/cluster.md, "Rate
 * limits").
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import type { RequestContext } from '../../http/context.js';
import { sendError } from '../../http/send.js';
import { compileTemplate } from '../../http/template.js';
import type { ClusterLink } from '../../cluster/link.js';
import { SharedBuckets } from '../../cluster/rate-bucket.js';
import { defineMiddleware } from '../chain.js';

const UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000 };

/**
 * `100/s`, `30/m`, `1000/h` as tokens per millisecond. A bare number is refused, as nginx's `rate=` needs its
 * `r/s` or `r/m`: per second and per minute differ sixtyfold, and neither is the obvious reading.
 */
export const rate = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(?:\/\s*([smh]))?\s*$/.exec(String(value));
  const count = match === null ? NaN : Number(match[1]);
  if (match !== null && count > 0 && match[2] === undefined) {
    ctx.addIssue({ code: 'custom', message: `a rate needs its unit: write "${count}/s", "${count}/m" or "${count}/h" (got ${JSON.stringify(value)})` });
    return z.NEVER;
  }
  if (match === null || !(count > 0)) {
    ctx.addIssue({ code: 'custom', message: `expected a rate such as "100/s", "30/m" or "1000/h", got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return count / UNITS[match[2]!]!;
});

const options = z.strictObject({
  rate,
  /** Requests a key may make at once beyond the rate (the bucket's size); the rate per second when absent. */
  burst: z.number().int().min(1).optional(),
  /** What a bucket is per: any template (see docs/configuration.md, "Variables"). */
  key: z.string().default('$remote_addr'),
  /** With the default key, IPv6 clients share a bucket per prefix of this length. */
  ipv6_prefix: z.number().int().min(1).max(128).default(64),
  /** Buckets kept at most (least recently used dropped first). */
  max_keys: z.number().int().min(1).default(100_000),
  /**
   * With a `cluster`: `cluster` (the default) counts every box's requests in one bucket in Redis; `box` keeps the
   * buckets in this box alone (each box then allows the whole rate). Without a cluster the box is all there is.
   */
  scope: z.enum(['cluster', 'box']).default('cluster'),
});

/** The first `bits` of an IPv6 address, the rest zeroed, in full form (`2001:db8:0:1:0:0:0:0`). */
export function ipv6Prefix(address: string, bits: number): string {
  let text = address;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4 !== null) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return groups
    .map((group, i) => {
      const value = parseInt(group, 16) || 0;
      const keep = Math.max(0, Math.min(16, bits - i * 16));
      return (keep === 0 ? 0 : value & ((0xffff << (16 - keep)) & 0xffff)).toString(16);
    })
    .join(':');
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Token buckets by key, in a bounded LRU map (least recently used dropped first). */
export class TokenBuckets {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #buckets: LRUCache<string, Bucket>;

  constructor(perMs: number, burst: number, maxKeys: number) {
    this.#perMs = perMs;
    this.#burst = burst;
    this.#buckets = new LRUCache<string, Bucket>({ max: maxKeys });
  }

  /** Takes a token from `key`'s bucket: 0 when there was one, else the whole seconds until there is. */
  take(key: string): number {
    const now = performance.now();
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: this.#burst, at: now };
      this.#buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(this.#burst, bucket.tokens + (now - bucket.at) * this.#perMs);
      bucket.at = now;
    }
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / this.#perMs / 1000));
  }

  /**
   * Tokens taken from `key`'s bucket and not yet refilled, in whole tokens (one partly refilled still counts):
   * 0 for a key with a full bucket or none. Takes nothing.
   */
  spent(key: string): number {
    const bucket = this.#buckets.peek(key);
    if (bucket === undefined) return 0;
    const tokens = Math.min(this.#burst, bucket.tokens + (performance.now() - bucket.at) * this.#perMs);
    // A hair of slack: refills and give-backs add floats, and a full bucket must read 0.
    return Math.max(0, Math.ceil(this.#burst - tokens - 1e-9));
  }

  /** Gives back a token taken ahead of need (a reservation that turned out not to count). */
  giveBack(key: string): void {
    const bucket = this.#buckets.get(key);
    if (bucket !== undefined) bucket.tokens = Math.min(this.#burst, bucket.tokens + 1);
  }
}

/**
 * A cluster-wide rule's buckets while Redis is away: this box's share, rate and burst divided by the cluster's
 * boxes (those the heartbeat last counted, at least `cluster.boxes`), so that the boxes together still allow about
 * the rule's rate. Made afresh when the box count changes, and dropped when Redis is back (nothing to hand back:
 * Redis's buckets simply take over again).
 */
export class LocalShare {
  readonly #link: ClusterLink;
  readonly #perMs: number;
  readonly #burst: number;
  readonly #maxKeys: number;
  #buckets: TokenBuckets | undefined;
  #boxes = 0;

  constructor(link: ClusterLink, perMs: number, burst: number, maxKeys: number) {
    this.#link = link;
    this.#perMs = perMs;
    this.#burst = burst;
    this.#maxKeys = maxKeys;
  }

  /**
   * What the share is divided by: the boxes (the heartbeat's count, at least the configured `cluster.boxes`) times
   * the processes of this box that each keep a share (`workers: N`: N).
   */
  get boxes(): number {
    return Math.max(1, this.#link.boxes, this.#link.settings.expectedBoxes ?? 1) * Math.max(1, this.#link.settings.processes ?? 1);
  }

  /** As `TokenBuckets.take`, at this box's share. */
  take(key: string): number {
    const boxes = this.boxes;
    if (this.#buckets === undefined || boxes !== this.#boxes) {
      this.#boxes = boxes;
      this.#buckets = new TokenBuckets(this.#perMs / boxes, Math.max(1, Math.ceil(this.#burst / boxes)), this.#maxKeys);
    }
    return this.#buckets.take(key);
  }

  /** Forgets the local buckets (Redis is back: the next outage starts from full ones). */
  reset(): void {
    this.#buckets = undefined;
  }
}

/** The client's address as a bucket key: IPv6 clients grouped by their first `ipv6Bits`. */
export function clientKey(ctx: RequestContext, ipv6Bits: number): string {
  const address = ctx.clientAddress();
  return net.isIPv6(address) ? ipv6Prefix(address, ipv6Bits) : address;
}

/** The `rate_limit` middleware kind (stage `rate_limit`). */
export const rateLimitKind = defineMiddleware({
  kind: 'rate_limit',
  stage: 'rate_limit',
  options,
  create(o, env) {
    const burst = o.burst ?? Math.max(1, Math.ceil(o.rate * 1000));
    const template = compileTemplate(o.key);
    const byAddress = o.key === '$remote_addr';
    const link = env.cluster;
    if (link !== undefined && o.scope === 'cluster') {
      // The rule's name in Redis: the same on every box whose config has this site, route and rule.
      const rule = createHash('sha256').update(`${env.routeId}\0${JSON.stringify(o)}`).digest('base64url').slice(0, 16);
      const shared = env.keep(
        `rate_limit\0cluster\0${JSON.stringify(o)}`,
        () => {
          const local = new LocalShare(link, o.rate, burst, o.max_keys);
          const buckets = new SharedBuckets(link, rule, o.rate, burst, (key) => local.take(key));
          return { buckets, stopResetting: link.onUp(() => local.reset()) };
        },
        (kept) => void kept.stopResetting(),
      ).buckets;
      return async function clusterRateLimit(ctx, next) {
        const wait = await shared.take(byAddress ? clientKey(ctx, o.ipv6_prefix) : template(ctx));
        if (wait === 0) return next(ctx);
        return sendError(ctx, 429, { 'Retry-After': String(wait) });
      };
    }
    // Kept across reloads while the rule stays as it is: a reload must not refill every bucket.
    const buckets = env.keep(`rate_limit\0${JSON.stringify(o)}`, () => new TokenBuckets(o.rate, burst, o.max_keys));
    return function rateLimit(ctx, next) {
      const wait = buckets.take(byAddress ? clientKey(ctx, o.ipv6_prefix) : template(ctx));
      if (wait === 0) return next(ctx);
      return sendError(ctx, 429, { 'Retry-After': String(wait) });
    };
  },
});
