/**
 * `round_robin`: nginx's smooth weighted round robin (see smooth-weighted.ts), the default policy.
 *
 * Candidates absent from a round (unhealthy, ejected, at max_conns, or already tried for this request) are
 * simply not considered: their `current` neither grows nor shrinks. Because each round adds and removes the
 * same total, the sum of all servers' `current` stays 0, so a server that comes back resumes with a bounded
 * credit or debt (less than one round's total) rather than a burst of catch-up picks. A retry therefore goes
 * to the server next in the smooth sequence among those not yet tried.
 */
import { carryCurrent, smoothWeightedPick } from './smooth-weighted.js';
import { stateSize } from './server-state.js';
import { definePolicy, NO_OPTIONS, type Policy, type PolicyServer } from './types.js';

class RoundRobinPolicy implements Policy {
  readonly #current: Float64Array;

  constructor(servers: readonly PolicyServer[]) {
    this.#current = new Float64Array(stateSize(servers));
  }

  adopt(previous: Policy, ids: ReadonlyMap<number, number>): void {
    if (previous instanceof RoundRobinPolicy) carryCurrent(previous.#current, this.#current, ids);
  }

  pick(candidates: readonly PolicyServer[]): PolicyServer {
    return smoothWeightedPick(this.#current, candidates, null);
  }
}

/** The `round_robin` policy kind. */
export const roundRobinPolicy = definePolicy({
  name: 'round_robin',
  options: NO_OPTIONS,
  create: function createRoundRobin(servers) {
    return new RoundRobinPolicy(servers);
  },
});
