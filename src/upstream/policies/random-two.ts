/**
 * `random_two`: the power of two choices. Draw two distinct candidates at random, weighted by effective
 * weight, and send the request to the less loaded (active / effectiveWeight) of the two. Nearly as good as
 * least_conn at evening out load, but with no herd: many Portico workers or instances that see the same
 * counts do not all pile onto the single least-loaded server. On a tie the first draw wins, so an idle pool
 * is served in exact proportion to the weights.
 */
import { drawWeighted, totalEffectiveWeight } from './p2c.js';
import type { PickContext, Policy, PolicyKind, PolicyServer } from './types.js';

class RandomTwoPolicy implements Policy {
  pick(candidates: readonly PolicyServer[], ctx: PickContext): PolicyServer {
    if (candidates.length === 1) return candidates[0]!;
    const total = totalEffectiveWeight(candidates);
    const i = drawWeighted(candidates, ctx.random, total, -1);
    const first = candidates[i]!;
    const second = candidates[drawWeighted(candidates, ctx.random, total - first.effectiveWeight, i)]!;
    return second.active * first.effectiveWeight < first.active * second.effectiveWeight ? second : first;
  }
}

/** The `random_two` policy kind. */
export const randomTwoPolicy = {
  name: 'random_two',
  create: function createRandomTwo() {
    return new RandomTwoPolicy();
  },
} as const satisfies PolicyKind;
