/**
 * The registry of handler kinds, by the config key that names them. A kind registers once; a duplicate name is
 * an error at start-up (as in Caddy), so two modules can never silently claim the same key.
 */
import { proxyKind } from './proxy.js';
import { redirectKind } from './redirect.js';
import { respondKind } from './respond.js';
import { staticKind } from './static.js';
import type { HandlerKind } from './types.js';

const registry = new Map<string, HandlerKind<never>>();

/** Adds a handler kind; throws if its name is taken. */
export function registerHandlerKind(kind: HandlerKind<never>): void {
  if (registry.has(kind.kind)) throw new Error(`handler kind "${kind.kind}" is registered twice`);
  registry.set(kind.kind, kind);
}

/** The handler kind registered under a name, or `undefined`. */
export function handlerKind(name: string): HandlerKind<unknown> | undefined {
  return registry.get(name) as HandlerKind<unknown> | undefined;
}

registerHandlerKind(staticKind as HandlerKind<never>);
registerHandlerKind(redirectKind as HandlerKind<never>);
registerHandlerKind(respondKind as HandlerKind<never>);
registerHandlerKind(proxyKind as HandlerKind<never>);
