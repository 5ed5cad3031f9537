/**
 * `random_two`: the power of two choices. Draw two distinct candidates at random, weighted by effective
 * weight, and send the request to the less loaded (active / effectiveWeight) of the two. Nearly as good as
 * least_conn at evening out load, but with no herd: many Portico workers or instances that see the same
 * counts do not all pile onto the single least-loaded server. On a tie the first draw wins, so an idle pool
 * is served in exact proportion to the weights.
 */
import { pickOfTwo } from './p2c.js';
import { definePolicy, NO_OPTIONS, type PickContext, type Policy, type PolicyServer } from './types.js';

/** Fewer requests in flight per unit of weight wins. */
function lessLoaded(challenger: PolicyServer, incumbent: PolicyServer): boolean {
  return challenger.active * incumbent.effectiveWeight < incumbent.active * challenger.effectiveWeight;
}

class RandomTwoPolicy implements Policy {
  pick(candidates: readonly PolicyServer[], ctx: PickContext): PolicyServer {
    return pickOfTwo(candidates, ctx.random, lessLoaded);
  }
}

/** The `random_two` policy kind. */
export const randomTwoPolicy = definePolicy({
  name: 'random_two',
  options: NO_OPTIONS,
  create: function createRandomTwo() {
    return new RandomTwoPolicy();
  },
});
