/**
 * The registry of load-balancing policies, by the name the config uses (`policy: least_conn`). A policy kind
 * registers once; a duplicate name is an error at start-up (as in Caddy), so two modules can never silently
 * claim the same name.
 */
import { ewmaPolicy } from './ewma.js';
import { firstPolicy } from './first.js';
import { hashPolicy } from './hash.js';
import { ipHashPolicy } from './ip-hash.js';
import { leastConnPolicy } from './least-conn.js';
import { randomTwoPolicy } from './random-two.js';
import { roundRobinPolicy } from './round-robin.js';
import type { PolicyKind } from './types.js';
import { PorticoError } from '../../errors.js';

/** Names of the built-in policies, for the config schema; the first is the default. */
export const POLICY_NAMES = [
  roundRobinPolicy.name,
  leastConnPolicy.name,
  randomTwoPolicy.name,
  ewmaPolicy.name,
  ipHashPolicy.name,
  hashPolicy.name,
  firstPolicy.name,
] as const;

/** The name of a built-in policy. */
export type PolicyName = (typeof POLICY_NAMES)[number];

const registry = new Map<string, PolicyKind>();

/** Adds a policy kind; throws if its name is taken. */
export function registerPolicy(kind: PolicyKind): void {
  if (registry.has(kind.name)) throw new PorticoError('PORTICO_DUPLICATE_NAME', `load-balancing policy "${kind.name}" is registered twice`);
  registry.set(kind.name, kind);
}

/** The policy kind registered under a name, or `undefined`. */
export function policyKind(name: string): PolicyKind | undefined {
  return registry.get(name);
}

for (const kind of [
  roundRobinPolicy,
  leastConnPolicy,
  randomTwoPolicy,
  ewmaPolicy,
  ipHashPolicy,
  hashPolicy,
  firstPolicy,
]) {
  registerPolicy(kind);
}
