/**
 * `hash`: consistent hashing on the evaluated key (`PickContext.hashKey`, from the upstream's `hash_key`, e.g. a URI or a cookie), ketama style.
 *
 * At create() every server, whether usable now or not, gets `virtualNodes × weight` points on a 32-bit ring
 * (md5 of "identity-n", four points per digest, as libketama does; md5 runs only here, never per pick). A key
 * is hashed (FNV-1a + Murmur finaliser) to a point, and the pick walks clockwise from it to the first point
 * owned by a candidate. So:
 * - the same key goes to the same server while that server is a candidate;
 * - a server that is not a candidate only hands *its own* keys to the next servers on the ring; nobody else's
 *   keys move, and they come back when it does;
 * - adding a server to N takes only about 1/(N+1) of the keys.
 * The weight in force (`weight`: the operator's, else the config's; a change rebuilds the ring) is used, not
 * effectiveWeight, so slow start does not reshuffle keys.
 * An empty key (the key's source was missing from the request) is spread by weighted random instead of piling
 * every keyless request onto the one server that owns hash(''), as HAProxy does.
 */
import { createHash } from 'node:crypto';
import { hashString } from './hashing.js';
import { drawWeighted, totalEffectiveWeight } from './p2c.js';
import { serverIdentity, stateSize } from './server-state.js';
import { z } from 'zod';
import { definePolicy, type PickContext, type Policy, type PolicyServer } from './types.js';

/** Ring points per unit of weight, as in libketama. */
export const DEFAULT_VIRTUAL_NODES = 160;

/** Ids are packed below the point in one float for sorting; 2^32 × 2^21 stays within 2^53. */
const MAX_SERVERS = 1 << 21;

/** The ring of `servers`: each gets `virtualNodes × weight` points; returns the points (ascending) and their owners. */
function buildRing(servers: readonly PolicyServer[], virtualNodes: number): [Uint32Array, Uint32Array] {
  let count = 0;
  const perServer = servers.map((server) => Math.max(1, Math.round(virtualNodes * server.weight)));
  for (const n of perServer) count += n;
  const packed = new Float64Array(count);
  let at = 0;
  servers.forEach((server, s) => {
    const identity = serverIdentity(server);
    for (let n = 0, digestNo = 0; n < perServer[s]!; digestNo++) {
      const digest = createHash('md5').update(`${identity}-${digestNo}`).digest();
      for (let part = 0; part < 4 && n < perServer[s]!; part++, n++) {
        packed[at++] = digest.readUInt32LE(part * 4) * MAX_SERVERS + server.id;
      }
    }
  });
  packed.sort(); // numeric for typed arrays: by point, then by id on a collision
  const points = new Uint32Array(count);
  const owners = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const point = Math.floor(packed[i]! / MAX_SERVERS);
    points[i] = point;
    owners[i] = packed[i]! - point * MAX_SERVERS;
  }
  return [points, owners];
}

class HashPolicy implements Policy {
  /** Ring points, ascending. */
  #points: Uint32Array;
  /** Server id owning each point. */
  #owners: Uint32Array;
  readonly #servers: readonly PolicyServer[];
  readonly #virtualNodes: number;
  /** Per server id: the pick stamp when it was last seen among the candidates. */
  readonly #seen: Uint32Array;
  /** Per server id: its index in the current candidates (valid when `#seen` matches `#stamp`). */
  readonly #slot: Uint32Array;
  #stamp = 0;

  constructor(servers: readonly PolicyServer[], virtualNodes: number) {
    const size = stateSize(servers);
    if (size > MAX_SERVERS) throw new Error(`hash policy supports at most ${MAX_SERVERS} servers`);
    this.#seen = new Uint32Array(size);
    this.#slot = new Uint32Array(size);
    this.#servers = servers;
    this.#virtualNodes = virtualNodes;
    [this.#points, this.#owners] = buildRing(servers, virtualNodes);
  }

  /** An operator changed a weight: the ring is built again (each server's share of the keys follows its weight). */
  reweigh(): void {
    [this.#points, this.#owners] = buildRing(this.#servers, this.#virtualNodes);
  }

  pick(candidates: readonly PolicyServer[], ctx: PickContext): PolicyServer {
    if (ctx.hashKey === '') {
      return candidates[drawWeighted(candidates, ctx.random, totalEffectiveWeight(candidates), -1)]!;
    }
    if (candidates.length === 1) return candidates[0]!;

    const stamp = this.#nextStamp();
    for (let i = 0; i < candidates.length; i++) {
      const id = candidates[i]!.id;
      if (id < this.#seen.length) {
        this.#seen[id] = stamp;
        this.#slot[id] = i;
      }
    }

    const points = this.#points;
    const point = hashString(ctx.hashKey);
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < point) lo = mid + 1;
      else hi = mid;
    }
    for (let step = 0, at = lo; step < points.length; step++, at++) {
      if (at === points.length) at = 0;
      const owner = this.#owners[at]!;
      if (this.#seen[owner] === stamp) return candidates[this.#slot[owner]!]!;
    }
    return candidates[0]!; // only when no candidate was among the servers given to create()
  }

  /** A fresh stamp for marking this pick's candidates; clears the marks when the counter wraps. */
  #nextStamp(): number {
    this.#stamp = (this.#stamp + 1) >>> 0;
    if (this.#stamp === 0) {
      this.#seen.fill(0);
      this.#stamp = 1;
    }
    return this.#stamp;
  }
}

/** The `hash` policy kind. */
export const hashPolicy = definePolicy({
  name: 'hash',
  options: z.strictObject({
    /** Points on the ring per unit of weight. */
    virtualNodes: z.number().int().min(1).default(DEFAULT_VIRTUAL_NODES),
  }),
  create: function createHashRing(servers, options) {
    return new HashPolicy(servers, options.virtualNodes);
  },
});
