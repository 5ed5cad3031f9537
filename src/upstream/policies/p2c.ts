/**
 * Weighted draws for the power-of-two-choices policies (`random_two`, `ewma`) and for `hash` without a key.
 * Drawing in proportion to effectiveWeight is what makes weights and slow start matter to P2C: a server of
 * weight 3 is offered as a choice three times as often as one of weight 1.
 */
import type { PolicyServer } from './types.js';

/** Sum of the candidates' effective weights. */
export function totalEffectiveWeight(candidates: readonly PolicyServer[]): number {
  let total = 0;
  for (let i = 0; i < candidates.length; i++) total += candidates[i]!.effectiveWeight;
  return total;
}

/**
 * Index of a candidate drawn with probability effectiveWeight / `total`, skipping index `skip` (−1 for none;
 * `total` must then exclude its weight). Falls back to the last eligible index if rounding leaves the draw
 * past the end.
 */
export function drawWeighted(
  candidates: readonly PolicyServer[],
  random: () => number,
  total: number,
  skip: number,
): number {
  let remaining = random() * total;
  let last = -1;
  for (let i = 0; i < candidates.length; i++) {
    if (i === skip) continue;
    remaining -= candidates[i]!.effectiveWeight;
    if (remaining < 0) return i;
    last = i;
  }
  return last;
}

/**
 * Power of two choices: draws two distinct candidates by weight and returns `second` when `prefer(second, first)`
 * says it is better, else `first`. `prefer` is a module-level function, so a pick allocates nothing.
 */
export function pickOfTwo(
  candidates: readonly PolicyServer[],
  random: () => number,
  prefer: (challenger: PolicyServer, incumbent: PolicyServer) => boolean,
): PolicyServer {
  if (candidates.length === 1) return candidates[0]!;
  const total = totalEffectiveWeight(candidates);
  const i = drawWeighted(candidates, random, total, -1);
  const first = candidates[i]!;
  const second = candidates[drawWeighted(candidates, random, total - first.effectiveWeight, i)]!;
  return prefer(second, first) ? second : first;
}
