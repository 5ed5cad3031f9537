/** The contract every handler kind implements, and what the app gives it when the config is loaded. */
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { CacheZone } from '../cache/zone.js';
import type { RoutePath } from '../config/schema.js';
import type { TrustedProxies } from '../server/client-address.js';
import type { Handler, RequestContext } from '../server/context.js';
import type { Upstream } from '../upstream/upstream.js';

/** What a handler factory may use besides its own options. */
export interface HandlerEnv {
  logger: Logger;
  /** Value of the `Server` header, or `''` for none. */
  serverHeader: string;
  /** The path of the route being built. */
  routePath: RoutePath;
  /** The config's cache zones. */
  caches: ReadonlyMap<string, CacheZone>;
  /** The config's named upstreams. */
  upstreams: ReadonlyMap<string, Upstream>;
  /** Peers whose forwarding headers are believed. */
  trusted: TrustedProxies;
  /** Builds a private upstream from a partial upstream config (defaults applied); the caller owns it. */
  createUpstream(name: string, config: unknown): Upstream;
}

/** A compiled handler plus whatever it runs in the background (caches, timers), with their lifetimes. */
export interface HandlerInstance {
  handle: Handler;
  /** Answers an HTTP Upgrade (WebSocket) on the raw socket; absent when the route does not tunnel. */
  upgrade?: ((ctx: RequestContext, socket: Duplex, head: Buffer) => Promise<void>) | undefined;
  start?: (() => Promise<void> | void) | undefined;
  /** Leaves no timer, socket or file handle behind. */
  stop?: (() => Promise<void> | void) | undefined;
}

/** A handler kind: its config key and the factory that resolves its options once. */
export interface HandlerKind<Options> {
  readonly kind: string;
  create(options: Options, env: HandlerEnv): HandlerInstance;
}
