/**
 * `first`: failover order. Every request goes to the candidate with the lowest id (the first server in the
 * config that is usable right now); the next one only takes traffic when those before it are down, ejected,
 * full or already tried. Useful for an active/standby pair, or to fill servers one at a time with max_conns.
 */
import { definePolicy, NO_OPTIONS, type Policy, type PolicyServer } from './types.js';

class FirstPolicy implements Policy {
  pick(candidates: readonly PolicyServer[]): PolicyServer {
    let best = candidates[0]!;
    for (let i = 1; i < candidates.length; i++) {
      if (candidates[i]!.id < best.id) best = candidates[i]!;
    }
    return best;
  }
}

/** The `first` policy kind. */
export const firstPolicy = definePolicy({
  name: 'first',
  options: NO_OPTIONS,
  create: function createFirst() {
    return new FirstPolicy();
  },
});
