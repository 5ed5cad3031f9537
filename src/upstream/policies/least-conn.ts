/**
 * `least_conn`: the candidate with the fewest requests in flight relative to its effective weight
 * (active / effectiveWeight, compared by cross-multiplication so no division or rounding decides a tie).
 *
 * It counts requests, not connections, despite the nginx name: with HTTP/1.1 keep-alive pools (and HTTP/2) an
 * open connection says nothing about load: idle pooled sockets would count as busy and one socket can carry
 * many requests over time. Requests in flight are what actually occupy an app server.
 *
 * Ties (most often: everyone idle at low traffic) are broken by smooth weighted round robin among the tied
 * servers, as nginx does. That is deterministic, honours weights exactly, and spreads an idle pool evenly
 * instead of always sending the first request to the same server.
 */
import { carryCurrent, smoothWeightedPick } from './smooth-weighted.js';
import { stateSize } from './server-state.js';
import { definePolicy, NO_OPTIONS, type Policy, type PolicyServer } from './types.js';

class LeastConnPolicy implements Policy {
  readonly #current: Float64Array;

  constructor(servers: readonly PolicyServer[]) {
    this.#current = new Float64Array(stateSize(servers));
  }

  adopt(previous: Policy, ids: ReadonlyMap<number, number>): void {
    if (previous instanceof LeastConnPolicy) carryCurrent(previous.#current, this.#current, ids);
  }

  pick(candidates: readonly PolicyServer[]): PolicyServer {
    let best = candidates[0]!;
    let ties = 1;
    for (let i = 1; i < candidates.length; i++) {
      const server = candidates[i]!;
      const load = server.active * best.effectiveWeight;
      const bestLoad = best.active * server.effectiveWeight;
      if (load < bestLoad) {
        best = server;
        ties = 1;
      } else if (load === bestLoad) {
        ties++;
      }
    }
    if (ties === 1) return best;
    return smoothWeightedPick(this.#current, candidates, best);
  }
}

/** The `least_conn` policy kind. */
export const leastConnPolicy = definePolicy({
  name: 'least_conn',
  options: NO_OPTIONS,
  create: function createLeastConn(servers) {
    return new LeastConnPolicy(servers);
  },
});
