/**
 * `ip_hash`: the same client address goes to the same server for as long as that server is a candidate.
 *
 * Design, and where it differs from nginx:
 * - The whole address is hashed, not nginx's first three IPv4 octets. Grouping by /24 sends an entire office,
 *   carrier NAT range or private test network (all of 10.0.0.x) to one server; affinity only needs one client
 *   to stick, which the full address gives. IPv4-mapped IPv6 (`::ffff:1.2.3.4`, as a dual-stack socket
 *   reports it) is hashed as the plain IPv4 address, so a client sticks whichever listener it came in on.
 * - The choice is weighted rendezvous (highest random weight) hashing: every server gets a pseudo-random score
 *   from hash(client, server) scaled by its configured weight, and the best-scoring candidate wins. When a
 *   client's server is not a candidate the next best is used, a deterministic rehash over the remaining
 *   candidates that every Portico instance agrees on, and the client returns when its server does. Adding a
 *   server to N moves only about 1/(N+1) of clients; nginx's modulo mapping would move most of them.
 * - The weight in force (`weight`: the operator's, else the config's) is used, not effectiveWeight: slow start would otherwise move clients back and forth
 *   while a server ramps up (nginx also refuses slow_start with ip_hash).
 * Cost is one hash mix and one logarithm per candidate, fine for upstreams of tens of servers.
 */
import { fmix32, hashString } from './hashing.js';
import { serverIdentity, stateSize } from './server-state.js';
import { definePolicy, NO_OPTIONS, type PickContext, type Policy, type PolicyServer } from './types.js';

const TWO_TO_32 = 4294967296;
const IPV4_MAPPED_PREFIX = '::ffff:';

/** Index in `ip` where the hashed part starts: past `::ffff:` for an IPv4-mapped IPv6 address. */
function addressStart(ip: string): number {
  return ip.startsWith(IPV4_MAPPED_PREFIX) && ip.indexOf('.', IPV4_MAPPED_PREFIX.length) !== -1
    ? IPV4_MAPPED_PREFIX.length
    : 0;
}

class IpHashPolicy implements Policy {
  /** Per server id: a hash of the server's identity, mixed with the client's hash on each pick. */
  readonly #seeds: Uint32Array;

  constructor(servers: readonly PolicyServer[]) {
    this.#seeds = new Uint32Array(stateSize(servers));
    for (const server of servers) this.#seeds[server.id] = hashString(serverIdentity(server));
  }

  pick(candidates: readonly PolicyServer[], ctx: PickContext): PolicyServer {
    if (candidates.length === 1) return candidates[0]!;
    const client = hashString(ctx.clientIp, addressStart(ctx.clientIp));
    let best = candidates[0]!;
    let bestScore = -1;
    for (let i = 0; i < candidates.length; i++) {
      const server = candidates[i]!;
      // Two rounds of mixing so that the scores of different servers for one client are independent.
      const mixed = fmix32(fmix32(client ^ (this.#seeds[server.id] ?? server.id)) + server.id);
      const uniform = (mixed + 0.5) / TWO_TO_32; // in (0, 1)
      const score = server.weight / -Math.log(uniform);
      if (score > bestScore || (score === bestScore && server.id < best.id)) {
        best = server;
        bestScore = score;
      }
    }
    return best;
  }
}

/** The `ip_hash` policy kind. */
export const ipHashPolicy = definePolicy({
  name: 'ip_hash',
  options: NO_OPTIONS,
  create: function createIpHash(servers) {
    return new IpHashPolicy(servers);
  },
});
