/**
 * `proxy`: forwards a request to an upstream (or one URL) and streams the answer back, optionally through the
 * route's cache. This file owns the options and wires the parts, each in its own file under `proxy/`:
 * preparing the request (`prepare.ts`), the attempt loop with its retries (`forward.ts`, `attempt.ts`), the
 * WebSocket tunnel (`tunnel.ts`), and serving from the cache (`cache.ts`).
 */
import { z } from 'zod';
import { duration, headerMap, size, upstreamUrl, type CheckEnv, type ImpliedMiddleware, type Problem } from '../../config/schema.js';
import { shown } from '../../config/messages.js';
import { compileTemplate, templateVariables } from '../../http/template.js';
import type { Upstream } from '../../upstream/upstream.js';
import { ProxyCache } from './cache.js';
import { Forwarder } from './forward.js';
import { interceptedStatuses, interceptOption } from './intercept.js';
import { RequestPreparer } from './prepare.js';
import { tunnelWebSocket, type TunnelOptions } from './tunnel.js';
import { defineHandler, type HandlerEnv } from '../types.js';

/** A proxy (or php) route's use of a cache zone. */
export const cacheOptions = z.strictObject({
  zone: z.string(),
  key: z.string().default('$scheme$host$request_uri'),
  /** Freshness when the origin gives none and no heuristic applies; 0 = store nothing without freshness. */
  default_ttl: duration.default(0),
  /** RFC 9111 §4.2.2 heuristic freshness (10 % of the time since Last-Modified, at most a day). */
  heuristic: z.boolean().default(false),
  /**
   * Let default_ttl and heuristic freshness apply to answers to requests with Cookie or Authorization too; off, such
   * an answer is stored only with the app's own lifetime (max-age, s-maxage, Expires), as it may be that user's own.
   */
  default_ttl_with_credentials: z.boolean().default(false),
  /** Serve stale when every upstream fails, never where must-revalidate / proxy-revalidate / s-maxage forbid. */
  stale_if_error: duration.default(0),
  /** Serve a response stale at most this long when no upstream can be reached (refused, reset, timed out, all down); 0 = off. */
  stale_if_unreachable: duration.default(60_000),
  /** Store responses with Set-Cookie, with the cookie stripped from the stored copy. */
  ignore_set_cookie: z.boolean().default(false),
  /** After an uncacheable response, requests for the key skip collapsing for this long (Varnish's hit-for-miss). */
  hit_for_miss: duration.default(10_000),
  /** Collapse concurrent misses for one key into one upstream request. */
  collapse: z.boolean().default(true),
  /**
   * Targeted cache-control fields obeyed (RFC 9213), first present and valid wins; it then replaces Cache-Control
   * and Expires. `CDN-Cache-Control` counts only when listed (an app may send it for an outer CDN).
   */
  targeted: z
    .array(
      z
        .string()
        .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'a header field name')
        .refine((name) => name.toLowerCase() !== 'cache-control', 'Cache-Control is not a targeted field'),
    )
    .default(['Portico-Cache-Control']),
}, {
  // `cache: main` or `cache: true`: the zone is named inside the map.
  error: (issue) => {
    if (issue.code !== 'invalid_type' || issue.input === undefined || issue.input === null) return undefined;
    const zone = typeof issue.input === 'string' ? JSON.stringify(issue.input) : 'NAME';
    return `expected a map of keys: write cache: { zone: ${zone} }, naming a zone of "caches" (got ${shown(issue.input)})`;
  },
});

/** A route's `cache:` as the schema gives it. */
export type RouteCacheOptions = z.output<typeof cacheOptions>;

/** The cache in front of a route's forwarder (a proxy's or a php route's), from the route's `cache:`. */
export function routeCache(cache: RouteCacheOptions, intercept: ReadonlySet<number> | undefined, env: HandlerEnv, forwarder: Forwarder): ProxyCache {
  return new ProxyCache(
    {
      zone: env.caches.get(cache.zone)!,
      key: compileTemplate(cache.key),
      keyHoldsHost: templateVariables(cache.key).includes('$host'),
      rules: {
        heuristic: cache.heuristic,
        defaultTtl: cache.default_ttl,
        defaultTtlWithCredentials: cache.default_ttl_with_credentials,
        ignoreSetCookie: cache.ignore_set_cookie,
        staleIfError: cache.stale_if_error,
        targeted: cache.targeted.map((name) => name.toLowerCase()),
      },
      staleIfUnreachable: cache.stale_if_unreachable,
      hitForMiss: cache.hit_for_miss,
      collapse: cache.collapse,
      intercept,
      tally: env.metrics?.cache(cache.zone),
    },
    forwarder,
  );
}

/** Per-request memory thresholds are bounded: the rest of what is held goes to disk. */
const MAX_BUFFER_MEMORY = 64 * 1024 * 1024;
const memorySize = size.refine((bytes) => bytes <= MAX_BUFFER_MEMORY, 'at most 64MB (what is held beyond it goes to a temporary file)');
/**
 * Default of `buffer_response`: 32MB per answer covers pages, API answers and generated reports whole, while
 * bounding what one answer can take on disk (nginx allows 1GB); past it, the client's pace applies again.
 */
const DEFAULT_BUFFER_RESPONSE = 32 * 1024 * 1024;

const options = z.strictObject({
  upstream: z
    .string({ error: (issue) => (Array.isArray(issue.input) ? 'expected the name of one upstream, got a list (list the servers in that upstream\'s "servers")' : undefined) })
    .optional(),
  /** A single server instead of a named upstream; its path is prepended to the forwarded path. */
  url: upstreamUrl.optional(),
  strip_prefix: z.boolean().default(false),
  /**
   * `pass` sends the client's host in the canonical form the cache keys on (lower case, no trailing dot, a port only
   * when not the scheme's default), as X-Forwarded-Host and Forwarded always do; any other value is sent as Host.
   */
  host: z.string().default('pass'),
  set_headers: headerMap.default({}),
  hide_headers: z.array(z.string()).default([]),
  /**
   * Largest request body accepted (413 beyond it, before any 100 Continue): the route's `max_body_size`, written
   * here; 10MB when neither the route nor its site sets one.
   */
  max_body_size: size.optional(),
  /**
   * Read the whole request body before choosing a server (in memory up to request_buffer_memory, then in a
   * temporary file), so a slow upload never holds an app server; false streams it at the client's pace.
   */
  request_buffering: z.boolean().default(true),
  /** With request_buffering, the part of a body kept in memory; the rest goes to a temporary file. */
  request_buffer_memory: memorySize.default(64 * 1024),
  /**
   * How much of an answer a slow client may leave for Portico to hold (memory, then a temporary file), so the app
   * server is read at its own pace; past it the app waits for the client. 0 = the client's pace throughout.
   */
  buffer_response: size.default(DEFAULT_BUFFER_RESPONSE),
  /** Of buffer_response, the part held in memory; the rest goes to a temporary file. */
  response_buffer_memory: memorySize.default(256 * 1024),
  websocket: z.boolean().default(true),
  /** Forward TRACE (it echoes the request, cookies included, for a page script to read): 405 unless allowed. */
  allow_trace: z.boolean().default(false),
  /** Replace the app's answers with these statuses (true: every 4xx and 5xx) by the site's error page. */
  intercept_errors: interceptOption,
  cache: cacheOptions.optional(),
});

/** Options of a `proxy` route, as the schema gives them. */
export type ProxyOptions = z.output<typeof options>;

/** A proxy (or php) route's body limit when neither it nor its site sets one. */
const DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024;

/**
 * The body limit a route that forwards bodies implies: its own `max_body_size`, else 10 MB as a fallback its site's
 * limit wins over (for `implies` of the proxy and php kinds).
 */
export function impliedBodySize(maxBodySize: number | undefined): ImpliedMiddleware[] {
  return [{ kind: 'max_body_size', options: maxBodySize ?? DEFAULT_MAX_BODY_SIZE, fallback: maxBodySize === undefined, keys: ['max_body_size'] }];
}

/** A config problem's text for a name that is not defined (`unknown cache "x" (defined: a, b)`). */
export function unknownName(kind: string, name: string, known: readonly string[]): string {
  return `unknown ${kind} "${name}"${known.length > 0 ? ` (defined: ${known.join(', ')})` : ` (no ${kind}s are defined)`}`;
}

/** Names that must exist, and combinations that cannot work. */
function checkProxy(proxy: ProxyOptions, env: CheckEnv): Problem[] {
  const problems: Problem[] = [];
  if ((proxy.upstream === undefined) === (proxy.url === undefined)) {
    problems.push({ keys: [], message: 'a proxy names either an "upstream" or a "url", not both and not neither' });
  } else if (proxy.upstream !== undefined && !env.upstreams.includes(proxy.upstream)) {
    problems.push({ keys: ['upstream'], message: unknownName('upstream', proxy.upstream, env.upstreams) });
  }
  if (proxy.url?.kind === 'fcgi') {
    problems.push({ keys: ['url'], message: 'a FastCGI server is reached through a php route (php: { root, upstream }), not a proxy' });
  }
  if (proxy.strip_prefix && env.routePath.kind === 'regex') {
    problems.push({ keys: ['strip_prefix'], message: 'strip_prefix needs a prefix or exact route, not a regex' });
  }
  if (proxy.cache !== undefined && !env.caches.includes(proxy.cache.zone)) {
    problems.push({ keys: ['cache', 'zone'], message: unknownName('cache', proxy.cache.zone, env.caches) });
  }
  if (Object.keys(proxy.set_headers).some((name) => name.toLowerCase() === 'host')) {
    problems.push({ keys: ['set_headers'], message: 'set the Host header with proxy.host, not set_headers' });
  }
  return problems;
}

/** The `proxy` handler kind: a named upstream, or a private one-server upstream for `url:`; optionally cached. */
export const proxyKind = defineHandler({
  kind: 'proxy',
  options,
  readsBody: true,
  check: checkProxy,
  upstreamUse: (options) => (options.upstream === undefined ? undefined : { name: options.upstream, protocol: 'http' }),
  implies: (options) => impliedBodySize(options.max_body_size),
  create(options, env) {
    let upstream: Upstream;
    let owned = false;
    if (options.upstream !== undefined) {
      upstream = env.upstreams.get(options.upstream)!;
    } else {
      // Kept across reloads while the route names the same URL: its pool and its server's state go on.
      const name = `url:${options.url!.text}`;
      upstream = env.keep(name, () => env.createUpstream(name, { servers: [{ url: options.url!.text }] }), (made) => made.stop(1000));
      owned = true;
    }
    const config = upstream.config;
    const path = env.routePath;
    const prefix = options.strip_prefix && path.kind !== 'regex' ? path.path : '';
    const preparer = new RequestPreparer({
      host: options.host,
      setHeaders: options.set_headers,
      stripPrefix: prefix,
      retryBuffer: config.retry_buffer,
      underscores: env.underscoresInHeaders,
      allowTrace: options.allow_trace,
      requestBuffering: options.request_buffering,
      requestBufferMemory: options.request_buffer_memory,
      tempSpace: env.tempSpace,
      logger: env.logger,
    });
    const passiveOn = new Set<string>(config.passive.on);
    const intercept = interceptedStatuses(options.intercept_errors);
    const forwarder = new Forwarder({
      upstream,
      preparer,
      shared: {
        upstream,
        passiveOn,
        retryOn: new Set(config.retry_on),
        // Portico's own targeted field never reaches a client: a cached route's cache reads and then removes it;
        // a route without a cache drops it with the other hidden fields.
        hide: new Set([...options.hide_headers.map((name) => name.toLowerCase()), ...(options.cache === undefined ? ['portico-cache-control'] : [])]),
        serverHeader: env.serverHeader,
        serverOrigins: upstream.servers.filter((s) => s.slot === undefined && !s.label.startsWith('unix:')).map((s) => s.origin),
        strippedPrefix: prefix.replace(/\/$/, ''),
        intercept,
        logger: env.logger,
      },
      hashKey: config.policy === 'hash' ? compileTemplate(config.hash_key) : undefined,
      responseBuffering: { limit: options.buffer_response, memory: options.response_buffer_memory, space: env.tempSpace, logger: env.logger },
      logger: env.logger,
    });
    const cache = options.cache === undefined ? undefined : routeCache(options.cache, intercept, env, forwarder);
    const tunnel: TunnelOptions = { upstream, preparer, passiveOn, hashKey: (ctx) => forwarder.hashKey(ctx), serverHeader: env.serverHeader };
    return {
      handle:
        cache === undefined
          ? function proxy(ctx) {
              return forwarder.handle(ctx);
            }
          : function cachedProxy(ctx) {
              return cache.handle(ctx);
            },
      upgrade: options.websocket ? (ctx, socket, head) => tunnelWebSocket(tunnel, ctx, socket, head) : undefined,
      start: owned ? () => upstream.start() : undefined,
    };
  },
});
