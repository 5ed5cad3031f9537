/**
 * The load-balancing policy contract. A policy is created once per upstream with the full list of its
 * servers (so hash rings and weight state are built once), then asked on every attempt to pick one of the
 * *candidates*: the servers that are available right now and were not already tried for this request. The
 * pool does all filtering (health, ejection, backup, max_conns); a policy only chooses.
 */
import { z } from 'zod';

/** What a policy may read of a server. The pool keeps these fields current. */
export interface PolicyServer {
  /** Stable index of the server in its upstream's list (0-based). */
  readonly id: number;
  /** Weight in force (≥ 1): the operator's when set (admin API), else the config's. */
  readonly weight: number;
  /** Weight now, after slow start (0 < effectiveWeight ≤ weight). Policies weigh by this. */
  readonly effectiveWeight: number;
  /** Requests in flight to this server right now. */
  readonly active: number;
  /** Peak-EWMA of response-header latency in ms (0 when nothing measured yet). */
  readonly ewmaMs: number;
  /**
   * The server's configured address (`host:port`), if known. `hash` and `ip_hash` place servers by it, so
   * inserting or reordering servers in the config does not move the keys of the others; without it they use `id`.
   */
  readonly address?: string;
}

/** Per-request inputs to a choice. */
export interface PickContext {
  /** The client's address (for ip_hash). */
  clientIp: string;
  /** The evaluated hash key (for hash); `''` when the policy has no key. */
  hashKey: string;
  /** Uniform random number in [0, 1); injected so tests are deterministic. */
  random: () => number;
}

/** A load-balancing policy instance for one upstream. */
export interface Policy {
  /** Picks one of `candidates` (never empty), or `undefined` to decline (e.g. `first` with none usable). */
  pick(candidates: readonly PolicyServer[], ctx: PickContext): PolicyServer | undefined;
  /**
   * At a reload, takes over the position of the policy it replaces (same kind or not: a policy only adopts from
   * its own kind). `ids` maps each server id of `previous` to the id of the same server (same address) here;
   * servers absent from it start afresh. Policies without state between picks leave this out.
   */
  adopt?(previous: Policy, ids: ReadonlyMap<number, number>): void;
  /**
   * A server's weight changed (the operator's `weight`): a policy that built something from the weights at
   * create() (a hash ring) builds it again. Policies that read `weight` on each pick leave this out.
   */
  reweigh?(): void;
}

/** A policy that takes no options. */
export const NO_OPTIONS = z.strictObject({});

/**
 * A policy kind, registered by name: the schema of its own options (their type follows from it) and its
 * factory. The options are parsed once, when an upstream is built; `{}` gives every default.
 */
export interface PolicyKind<Schema extends z.ZodType = z.ZodType> {
  readonly name: string;
  readonly options: Schema;
  create(servers: readonly PolicyServer[], options: z.output<Schema>): Policy;
}

/** Declares a policy kind (only names the type: the option type follows from the schema). */
export function definePolicy<Schema extends z.ZodType>(kind: PolicyKind<Schema>): PolicyKind<Schema> {
  return kind;
}

/** Builds a policy of `kind` for `servers` with `options` (parsed by the kind's own schema). */
export function createPolicy(kind: PolicyKind, servers: readonly PolicyServer[], options: unknown = {}): Policy {
  return kind.create(servers, kind.options.parse(options));
}
