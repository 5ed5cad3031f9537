/**
 * `ewma`: power of two choices on peak-EWMA latency, as Finagle and Linkerd balance. Two candidates are drawn
 * (weighted by effective weight, so slow start applies) and the one with the lower cost
 * `ewmaMs × (active + 1)` wins: a server that is fast but busy and one that is idle but slow both look
 * expensive. Peak-EWMA (kept by the pool) jumps up at once on a slow response and decays slowly, so a server
 * that starts to struggle is shed quickly.
 *
 * A server with no measurement yet (ewmaMs 0) costs 0 while it is idle, so it is tried and gets measured.
 * While that first request is in flight it costs a penalty instead (as Finagle does): otherwise every request
 * would go to a new, possibly very slow, server until its first response came back.
 */
import { pickOfTwo } from './p2c.js';
import { definePolicy, NO_OPTIONS, type PickContext, type Policy, type PolicyServer } from './types.js';

/** Cost of an unmeasured server that already has requests in flight: worse than any real latency. */
const UNMEASURED_PENALTY_MS = 1e9;

/** The cost P2C compares: lower is better. */
function cost(server: PolicyServer): number {
  if (server.ewmaMs > 0) return server.ewmaMs * (server.active + 1);
  return server.active === 0 ? 0 : UNMEASURED_PENALTY_MS + server.active;
}

/** Lower expected cost wins. */
function cheaper(challenger: PolicyServer, incumbent: PolicyServer): boolean {
  return cost(challenger) < cost(incumbent);
}

class EwmaPolicy implements Policy {
  pick(candidates: readonly PolicyServer[], ctx: PickContext): PolicyServer {
    return pickOfTwo(candidates, ctx.random, cheaper);
  }
}

/** The `ewma` policy kind. */
export const ewmaPolicy = definePolicy({
  name: 'ewma',
  options: NO_OPTIONS,
  create: function createEwma() {
    return new EwmaPolicy();
  },
});
