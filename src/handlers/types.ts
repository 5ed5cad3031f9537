/** The contract every handler kind implements, and what the app gives it when the config is loaded. */
import type { ClusterLink } from '../cluster/link.js';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { CacheZone } from '../cache/zone.js';
import type { CheckEnv, ImpliedMiddleware, Problem, RoutePath, upstreamSchema } from '../config/schema.js';
import type { Handler, RequestContext } from '../http/context.js';
import type { TrustedProxies } from '../http/client-address.js';
import type { TempSpace } from '../http/temp-file.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Upstream } from '../upstream/upstream.js';

/** What a handler factory may use besides its own options. */
export interface HandlerEnv {
  logger: Logger;
  /** Value of the `Server` header, or `''` for none. */
  serverHeader: string;
  /** The path of the route being built. */
  routePath: RoutePath;
  /** The route's identity (its site's hosts and its path): the same across reloads, and on every box of a cluster. */
  routeId: string;
  /** The config's cache zones. */
  caches: ReadonlyMap<string, CacheZone>;
  /** The config's named upstreams. */
  upstreams: ReadonlyMap<string, Upstream>;
  /** Peers whose forwarding headers are believed. */
  trusted: TrustedProxies;
  /** Temporary files (buffered bodies and answers): `tmp` in the state directory, else the OS's; bounded in all. */
  tempSpace: TempSpace;
  /** Forward request fields whose names contain `_` (config `underscores_in_headers`). */
  underscoresInHeaders: boolean;
  /** The route's handler reads request bodies itself, within `ctx.bodyLimit` (see `HandlerKind.readsBody`). */
  handlerReadsBody: boolean;
  /** The process's metrics when counting is on (the config has `admin`); undefined: nothing is counted. */
  metrics: Metrics | undefined;
  /** The process's link to the cluster's Redis (the config has `cluster`); undefined: one box alone. */
  cluster: ClusterLink | undefined;
  /**
   * A value that outlives this config: the next config's build of the same route (its site's hosts, its path)
   * asking for the same `key` gets the same value (a rate limit's buckets, whose key is its options); a key no
   * longer asked for is dropped at that reload's swap, and `dispose`d of once the previous config has drained.
   */
  keep<T>(key: string, make: () => T, dispose?: (value: T) => Promise<void> | void): T;
  /**
   * Builds a private upstream from a partial upstream config (defaults applied); the caller owns it (or hands it
   * to `keep`, with its `stop` to dispose of it).
   */
  createUpstream(name: string, config: z.input<typeof upstreamSchema>): Upstream;
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

/**
 * A part a route names by key (a handler kind, a middleware kind): its config key, the schema of its options
 * (which the config loader parses the key with), its semantic checks, and the factory that resolves its options
 * once into what it makes. The option type is inferred from the schema.
 */
export interface PartKind<Schema extends z.ZodType, Made> {
  readonly kind: string;
  readonly options: Schema;
  /** Checks that need the file system or the rest of the config; keys are relative to the options. */
  check?(options: z.output<Schema>, env: CheckEnv): Problem[];
  /** The folders whose files the part serves (after `check` resolved them): the config keeps secrets out of them. */
  servedFolders?(options: z.output<Schema>): string[];
  /** Middleware settings the part's own options carry for its route (`proxy.max_body_size`). */
  implies?(options: z.output<Schema>): ImpliedMiddleware[];
  /** The named upstream the part sends to and the protocol it speaks to it (checked against the upstream's). */
  upstreamUse?(options: z.output<Schema>): { readonly name: string; readonly protocol: 'http' | 'fastcgi' } | undefined;
  /** Builds the part from options the config loader parsed with `options`. */
  create(options: z.output<Schema>, env: HandlerEnv): Made;
}

/**
 * A handler kind: a part that makes a route's handler. Adding a kind is one file exporting one of these, plus its
 * line in `handlers/index.ts`.
 */
export interface HandlerKind<Schema extends z.ZodType = z.ZodType> extends PartKind<Schema, HandlerInstance> {
  /**
   * The handler reads a request body itself and stops at `ctx.bodyLimit` (the proxy). For any other kind, the
   * route's body-size link reads and drops a body of unknown length before the handler runs, so that a body past
   * the limit gets 413 rather than the handler's answer followed by a cut connection.
   */
  readonly readsBody?: boolean;
}

/** Declares a handler kind (only names the type: the option type follows from the schema). */
export function defineHandler<Schema extends z.ZodType>(kind: HandlerKind<Schema>): HandlerKind<Schema> {
  return kind;
}

/** A route's options typed by its kind (throws when the route is of another kind): for tools and tests. */
export function optionsOf<Schema extends z.ZodType>(kind: HandlerKind<Schema>, route: { readonly kind: string; readonly options: unknown }): z.output<Schema> {
  if (route.kind !== kind.kind) throw new Error(`the route is a ${route.kind} route, not ${kind.kind}`);
  return route.options as z.output<Schema>;
}
