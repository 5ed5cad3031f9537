/**
 * nginx's smooth weighted round robin, shared by `round_robin` and `least_conn` (which uses it to break ties).
 *
 * Each round, every considered server's `current` grows by its effective weight; the server with the largest
 * `current` is picked and the round's total weight is subtracted from it. Over any window of `total` picks each
 * server is chosen `weight` times, and picks of a heavy server are interleaved with the others
 * (5:1:1 gives a a b a c a a) instead of arriving in a burst (a a a a a b c).
 */
import type { PolicyServer } from './types.js';

/**
 * Runs one round over `candidates` and returns the pick. When `peer` is given, only candidates exactly as
 * loaded as `peer` (same active/effectiveWeight) take part: the others' `current` is left alone.
 * Ties on `current` go to the lower id, so the result does not depend on the order of `candidates`.
 */
export function smoothWeightedPick(
  current: Float64Array,
  candidates: readonly PolicyServer[],
  peer: PolicyServer | null,
): PolicyServer {
  let best: PolicyServer | undefined;
  let total = 0;
  for (let i = 0; i < candidates.length; i++) {
    const server = candidates[i]!;
    if (peer !== null && server.active * peer.effectiveWeight !== peer.active * server.effectiveWeight) continue;
    const weight = server.effectiveWeight;
    current[server.id]! += weight;
    total += weight;
    if (
      best === undefined ||
      current[server.id]! > current[best.id]! ||
      (current[server.id] === current[best.id] && server.id < best.id)
    ) {
      best = server;
    }
  }
  // `peer` itself always takes part, so `best` is set whenever `candidates` is non-empty.
  const picked = best ?? candidates[0]!;
  current[picked.id]! -= total;
  return picked;
}

/**
 * Copies the smooth-weighted `current` values of the servers a reload kept (`ids`: previous id → id now) from
 * a previous policy's state, so that the sequence goes on where it was rather than start over at the first server.
 */
export function carryCurrent(from: Float64Array, to: Float64Array, ids: ReadonlyMap<number, number>): void {
  for (const [before, now] of ids) {
    if (before < from.length && now < to.length) to[now] = from[before]!;
  }
}
