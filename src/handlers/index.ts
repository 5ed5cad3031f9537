/**
 * The registry of handler kinds, by the config key that names them. A kind registers once; a duplicate name is
 * an error at start-up (as in Caddy), so two modules can never silently claim the same key.
 */
import { phpKind } from './php/handler.js';
import { proxyKind } from './proxy/handler.js';
import { redirectKind } from './redirect.js';
import { respondKind } from './respond.js';
import { staticKind } from './static/handler.js';
import { STAGES, type MiddlewareKind } from './chain.js';
import { accessKind } from './middleware/access.js';
import { basicAuthKind } from './middleware/basic-auth.js';
import { maxBodySizeKind } from './middleware/body-size.js';
import { compressKind } from './middleware/compress.js';
import { rateLimitKind } from './middleware/rate-limit.js';
import type { HandlerKind } from './types.js';
import { PorticoError } from '../errors.js';

const registry = new Map<string, HandlerKind>();

/** Adds a handler kind; throws if its name is taken. */
export function registerHandlerKind(kind: HandlerKind): void {
  if (registry.has(kind.kind)) throw new PorticoError('PORTICO_DUPLICATE_NAME', `handler kind "${kind.kind}" is registered twice`);
  registry.set(kind.kind, kind);
}

/** The handler kind registered under a name, or `undefined`. */
export function handlerKind(name: string): HandlerKind | undefined {
  return registry.get(name);
}

/** Every registered kind, in registration order (the order a route's error message lists them). */
export function handlerKinds(): readonly HandlerKind[] {
  return [...registry.values()];
}

const middlewareRegistry = new Map<string, MiddlewareKind>();

/** Adds a middleware kind; throws if its name is taken (by a middleware or a handler) or its stage is unknown. */
export function registerMiddlewareKind(kind: MiddlewareKind): void {
  if (middlewareRegistry.has(kind.kind) || registry.has(kind.kind)) {
    throw new PorticoError('PORTICO_DUPLICATE_NAME', `middleware kind "${kind.kind}" is registered twice`);
  }
  if (!STAGES.includes(kind.stage)) throw new PorticoError('PORTICO_DUPLICATE_NAME', `middleware kind "${kind.kind}" has no stage "${kind.stage}"`);
  middlewareRegistry.set(kind.kind, kind);
}

/** The middleware kind registered under a name, or `undefined`. */
export function middlewareKind(name: string): MiddlewareKind | undefined {
  return middlewareRegistry.get(name);
}

/** Every registered middleware kind. */
export function middlewareKinds(): readonly MiddlewareKind[] {
  return [...middlewareRegistry.values()];
}

registerMiddlewareKind(accessKind);
registerMiddlewareKind(basicAuthKind);
registerMiddlewareKind(rateLimitKind);
registerMiddlewareKind(maxBodySizeKind);
registerMiddlewareKind(compressKind);
registerHandlerKind(staticKind);
registerHandlerKind(redirectKind);
registerHandlerKind(respondKind);
registerHandlerKind(proxyKind);
registerHandlerKind(phpKind);
