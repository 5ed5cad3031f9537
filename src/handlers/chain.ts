/**
 * The per-route middleware chain. A route's links always run in one fixed order, whatever the order of the keys
 * in the config — access → auth → rate limit → body size → cache → compress — then the route's handler. The
 * chain is compiled once, when the config is loaded: each link is a function that holds the next one, so a
 * request makes no closure, and a route with no middleware runs its handler directly (an empty chain costs
 * nothing).
 *
 * Middleware kinds register in `handlers/index.ts` like handler kinds (a name, a schema, a factory) and take
 * one stage each; a route names them by key beside its handler (`access: [ … ]`), and a site's setting applies
 * to each of its routes that has none of that kind. Built in: `access`, `basic_auth`, `rate_limit`,
 * `max_body_size` (middleware/*.ts). A handler's own options may carry a middleware setting for its route
 * (`proxy.max_body_size`: see `ImpliedMiddleware`). The proxy's `cache:` stays inside the proxy handler, which
 * needs to drive its forwarding (revalidation, collapsing); the `cache` stage is for a route-level cache.
 */
import type { z } from 'zod';
import type { Handler, Middleware } from '../http/context.js';
import type { PartKind } from './types.js';

/** The stages of a chain, outermost first. */
export const STAGES = ['access', 'auth', 'rate_limit', 'body_size', 'cache', 'compress'] as const;

/** One stage of the chain. */
export type Stage = (typeof STAGES)[number];

/** A middleware kind: a part that makes one link of a chain, at its stage. */
export interface MiddlewareKind<Schema extends z.ZodType = z.ZodType> extends PartKind<Schema, Middleware> {
  readonly stage: Stage;
}

/** Declares a middleware kind (the option type follows from the schema). */
export function defineMiddleware<Schema extends z.ZodType>(kind: MiddlewareKind<Schema>): MiddlewareKind<Schema> {
  return kind;
}

/** A compiled link: the middleware and the stage it runs at. */
export interface Link {
  readonly stage: Stage;
  readonly middleware: Middleware;
}

const RANK = new Map<Stage, number>(STAGES.map((stage, i) => [stage, i]));

/**
 * Composes a route's links around its handler, in stage order; an empty list is the handler itself. Two links
 * of one stage are a programming error (the config names each middleware kind once, and each kind has a stage).
 */
export function compileChain(links: readonly Link[], handler: Handler): Handler {
  if (links.length === 0) return handler;
  const ordered = [...links].sort((a, b) => RANK.get(a.stage)! - RANK.get(b.stage)!);
  for (let i = 1; i < ordered.length; i++) {
    if (ordered[i]!.stage === ordered[i - 1]!.stage) throw new Error(`two middlewares at stage ${ordered[i]!.stage}`);
  }
  let next = handler;
  for (let i = ordered.length - 1; i >= 0; i--) {
    const middleware = ordered[i]!.middleware;
    const inner = next;
    next = function chainLink(ctx) {
      return middleware(ctx, inner);
    };
  }
  return next;
}
