/**
 * The app: everything compiled from one config that answers requests — sites matched by host, routes matched
 * by canonical path, each route's handler chain. It is a value: built from a config, started, swapped in by a
 * reload, stopped. Listeners hold the sockets and hand each request to whichever app is current.
 */
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ClusterLink } from '../cluster/link.js';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Config } from '../config/load.js';
import { upstreamSchema } from '../config/schema.js';
import { handlerKind, middlewareKind } from '../handlers/index.js';
import type { HandlerInstance } from '../handlers/types.js';
import type { StickyKey } from '../upstream/sticky-values.js';
import { Upstream } from '../upstream/upstream.js';
import type { CacheZone } from '../cache/zone.js';
import { TrustedProxies } from '../http/client-address.js';
import { TempSpace } from '../http/temp-file.js';
import { errorPage, PorticoError } from '../errors.js';
import type { RefusedLine } from '../connections/http1.js';
import { openAccessLog, type AccessLog } from '../log/access.js';
import { beginTrace, openSpanExport, type SpanExport } from '../log/tracing.js';
import { isH2Response, RequestContext, responseComplete, type ClientRequest, type ClientResponse, type Handler } from '../http/context.js';
import { isGrpcCall } from '../http/grpc.js';
import { loggedGrpcStatus } from '../http/log-template.js';
import { adoptAuthority } from '../http/h2.js';
import { kRequestId, PorticoResponse } from '../http/echo.js';
import { isSafeRequestId, newRequestId } from '../http/request-identity.js';
import { compileChain, type Link } from '../handlers/chain.js';
import { HostMatcher, parseHostHeader } from '../http/hosts.js';
import { normalizePath, parseRequestTarget } from '../http/request-path.js';
import { Router } from './router.js';
import { sendError } from '../http/send.js';
import { CertificateStore, isMisdirected } from '../tls/certificates.js';
import { CHALLENGE_PREFIX, type Http01Challenges } from '../tls/challenges.js';
import type { Metrics, RouteTraffic } from '../metrics/metrics.js';

/** What the server builds an app with besides its config: the parts a reload keeps when unchanged. */
export interface AppParts {
  /** The config's cache zones (see cache/zones.ts). */
  zones: ReadonlyMap<string, CacheZone>;
  /** The config's named upstreams (see upstream/registry.ts): the app uses them, the server starts and stops them. */
  upstreams: ReadonlyMap<string, Upstream>;
  /** Values kept across reloads (see kept.ts), for `HandlerEnv.keep`. */
  keep<T>(key: string, make: () => T, dispose?: (value: T) => Promise<void> | void): T;
  /** The process's metrics when counting is on (the config has `admin`): every request is then counted. */
  metrics?: Metrics | undefined;
  /** The process's link to the cluster's Redis (the config has `cluster`). */
  cluster?: ClusterLink | undefined;
}

/** How a previous config's drain ended (see `App.drain`). */
export interface DrainResult {
  /** Requests and tunnels still open at the swap. */
  open: number;
  /** Those cut at the grace period. */
  cut: number;
}

/** What the server hands an app besides its config: state that outlives one app. */
export interface AppState {
  /** The sticky cookie's HMAC key when the config names none (kept in the state directory; a cluster's rotating keys). */
  stickyKey?: StickyKey | undefined;
  /** Pending ACME http-01 challenges, answered on plain listeners before anything else. */
  challenges?: Http01Challenges | undefined;
}

interface CompiledRoute {
  handle: Handler;
  /** The route's traffic figures (counting on), set on each request's context it takes. */
  traffic: RouteTraffic | undefined;
  upgrade: HandlerInstance['upgrade'];
  /** The middlewares of the chain, for an upgrade's own chain (its end is the tunnel). */
  links: readonly Link[];
}

interface Site {
  router: Router<CompiledRoute>;
  errorPages: ReadonlyMap<number, Buffer> | undefined;
  /** The Strict-Transport-Security value for answers over TLS, if the site sets one. */
  hsts: string | undefined;
}

/** The Strict-Transport-Security value of a site's `hsts` (RFC 6797 §6.1). */
function hstsValue(hsts: Config['sites'][number]['hsts']): string | undefined {
  if (hsts === undefined) return undefined;
  return `max-age=${Math.floor(hsts.max_age / 1000)}${hsts.include_subdomains ? '; includeSubDomains' : ''}${hsts.preload ? '; preload' : ''}`;
}

const kContext = Symbol('portico.context');
/**
 * Set on a response whose request `handle` took: its index in the app's open responses until it closes (then -1).
 */
const kOpenAt = Symbol('portico.openAt');

/** Sends an error page and yields `undefined`, for the matching steps that end a request early. */
function reject(...args: Parameters<typeof sendError>): undefined {
  sendError(...args);
  return undefined;
}
type TrackedResponse = ClientResponse & { [kContext]?: RequestContext; [kOpenAt]?: number };

/** The response of a request that has none (Node's parser refused it; the listener answered on the socket). */
const NO_RESPONSE = Object.freeze({}) as ClientResponse;

/** One compiled config, ready to answer requests. */
export class App {
  readonly config: Config;
  readonly #logger: Logger;
  readonly #sites = new HostMatcher<Site>();
  /** The hosts sites name (the default site aside): the ones redirect_https may send to https. */
  readonly #named = new HostMatcher<true>();
  /** Certificates by host for TLS handshakes, built from this config's sites (see `tls/certificates.ts`). */
  readonly certificates: CertificateStore;
  readonly #instances: HandlerInstance[] = [];
  readonly #upstreams: ReadonlyMap<string, Upstream>;
  readonly #caches = new Map<string, CacheZone>();
  /** The last Host value seen and its parse: most connections repeat one Host, so one entry saves the parse. */
  #lastHostValue: string | undefined;
  #lastHost: string | null = null;
  readonly #accessLog: AccessLog | null;
  /** `tracing.sample` when the config has `tracing` (a decision per request), else -1 (traceparent passed or started lazily). */
  readonly #sample: number;
  /** The span export (`tracing.otlp`), made by `start()`. */
  #spans: SpanExport | null = null;
  /**
   * Responses to requests taken (`handle`) not closed yet: what a reload's drain waits for, and cuts at its end.
   * An array, each response holding its index (`kOpenAt`; the last one moves into a closed one's place), not a
   * Set: with a Set taking and dropping an entry per request, once it was in the old generation every request's
   * objects outlived the scavenges and were promoted (a mark-compact every second, 7% fewer proxied requests:
   * issue 17, bench/RESULTS.md). An array's popped slot is cleared; a Set's hash tables evidently are not.
   */
  readonly #open: TrackedResponse[] = [];
  /** Upgraded connections (WebSocket tunnels) this app took, open still: a drain waits for them too. */
  readonly #tunnels = new Set<Duplex>();
  /** Called when the last request or tunnel closes, while draining. */
  #idle: (() => void) | undefined = undefined;
  /** One listener for every response (no closure per request). */
  readonly #requestClosed = (res: TrackedResponse): void => {
    const at = res[kOpenAt];
    if (at === undefined || at < 0) return;
    res[kOpenAt] = -1;
    const open = this.#open;
    const last = open.pop()!;
    if (last !== res) {
      open[at] = last;
      last[kOpenAt] = at;
    }
    if (this.#idle !== undefined && open.length === 0 && this.#tunnels.size === 0) this.#idle();
  };
  /** The close listener of a response when there is no access log. */
  readonly #countOut: (this: ClientResponse) => void;
  readonly #onClose: (this: TrackedResponse) => void;
  readonly #trusted: TrustedProxies;
  readonly #serverHeader: string;
  readonly #challenges: Http01Challenges | null;
  /** The routes' traffic figures, in config order (for the status report). */
  readonly routeTraffic: RouteTraffic[] = [];
  /** Whether each response gets the close listener that reads its context (an access log, counting, or spans). */
  readonly #watchClose: boolean;

  constructor(config: Config, logger: Logger, parts: AppParts, state: AppState = {}) {
    this.config = config;
    this.#logger = logger;
    // Only a config with an ACME site answers the challenge path; otherwise it is routed as any other.
    this.#challenges = config.sites.some((site) => site.tls?.acme !== undefined) ? (state.challenges ?? null) : null;
    const stickyKey = state.stickyKey;
    this.#upstreams = parts.upstreams;
    for (const [name, zone] of parts.zones) this.#caches.set(name, zone);
    const trusted = new TrustedProxies(config.trusted_proxies);
    this.#trusted = trusted;
    this.#serverHeader = config.server_header;
    this.certificates = new CertificateStore(config);
    const metrics = parts.metrics;
    const createUpstream = (name: string, partial: z.input<typeof upstreamSchema>) =>
      new Upstream(name, upstreamSchema.parse(partial) as Upstream['config'], config.dir, logger, stickyKey, { metrics });
    const tempSpace = new TempSpace(config.state_dir === undefined ? tmpdir() : path.join(config.state_dir, 'tmp'), config.temp_files.max_size);
    for (const siteConfig of config.sites) {
      const siteKey = JSON.stringify(siteConfig.hosts ?? null);
      const routes = siteConfig.routes.map((route) => {
        const handler = handlerKind(route.kind)!;
        // What is kept across reloads is kept per route: the same key on another route is another value.
        const routeKey = `${siteKey}\0${JSON.stringify(route.path)}\0`;
        const env = {
          logger,
          serverHeader: config.server_header,
          routePath: route.path,
          routeId: routeKey,
          upstreams: this.#upstreams,
          caches: this.#caches,
          trusted,
          underscoresInHeaders: config.underscores_in_headers,
          tempSpace,
          createUpstream,
          handlerReadsBody: handler.readsBody === true,
          metrics,
          cluster: parts.cluster,
          keep: <T>(key: string, make: () => T, dispose?: (value: T) => Promise<void> | void): T => parts.keep(routeKey + key, make, dispose),
        };
        const instance = handler.create(route.options, env);
        this.#instances.push(instance);
        // The route's own middlewares (with those its handler's options carry), then for each kind it does not
        // name its site's, then its handler's defaults (`proxy.max_body_size`'s 10MB) for kinds neither names.
        const implied = handler.implies?.(route.options) ?? [];
        const own = [...route.middlewares, ...implied.filter((used) => !used.fallback)];
        const named = new Set(own.map((used) => used.kind));
        const inherited = siteConfig.middlewares.filter((used) => !named.has(used.kind));
        for (const used of inherited) named.add(used.kind);
        const fallbacks = implied.filter((used) => used.fallback && !named.has(used.kind));
        const links = [...inherited, ...own, ...fallbacks].map((used) => {
          const kind = middlewareKind(used.kind)!;
          return { stage: kind.stage, middleware: kind.create(used.options, env) };
        });
        // The route's id in metrics and status: its site's first host (`*` for none) and its path as written.
        const traffic = metrics?.route(`${siteConfig.hosts?.[0] ?? '*'}${route.path.text}`, route.kind);
        if (traffic !== undefined && !this.routeTraffic.includes(traffic)) this.routeTraffic.push(traffic);
        return { path: route.path, route: { handle: compileChain(links, instance.handle), upgrade: instance.upgrade, links, traffic } };
      });
      const pages = Object.entries(siteConfig.error_pages);
      this.#sites.add(siteConfig.hosts, {
        router: new Router(routes),
        errorPages: pages.length === 0 ? undefined : new Map(pages.map(([status, file]) => [Number(status), readFileSync(file)])),
        hsts: hstsValue(siteConfig.hsts),
      });
      if (siteConfig.hosts !== undefined) this.#named.add(siteConfig.hosts, true);
    }
    this.#accessLog = openAccessLog(config.log.access, { format: config.log.format, template: config.log.template, escape: config.log.template_escape }, (err) => logger.error({ err }, 'access log write failed'), config.workers > 1);
    const accessLog = this.#accessLog;
    this.#sample = config.tracing === undefined ? -1 : config.tracing.sample;
    this.#watchClose = accessLog !== null || metrics !== undefined || config.tracing?.otlp !== undefined;
    const unrouted = metrics?.unrouted;
    const requestClosed = this.#requestClosed;
    this.#countOut = function countOut(this: ClientResponse) {
      requestClosed(this);
    };
    const app = this;
    // One listener per response, for the log, the counts, the spans and the in-flight count alike.
    this.#onClose = function logRequest(this: TrackedResponse) {
      requestClosed(this);
      const ctx = this[kContext];
      if (ctx === undefined) return;
      const finished = responseComplete(this);
      if (!finished && ctx.status === 0) ctx.status = 499;
      if (unrouted !== undefined) {
        const traffic = ctx.traffic ?? unrouted;
        traffic.record(ctx.status === 0 ? this.statusCode : ctx.status, performance.now() - ctx.start);
        if (traffic.recordGrpc !== undefined && isGrpcCall(ctx.req.headers)) traffic.recordGrpc(loggedGrpcStatus(ctx));
      }
      accessLog?.write(ctx);
      if (ctx.traceSampled) app.#spans?.record(ctx);
      if (!finished) ctx.clientClosed();
    };
  }

  /** The config's `trusted_proxies`, compiled. */
  get trustedProxies(): TrustedProxies {
    return this.#trusted;
  }

  /** A cache zone by name, for purging (admin API, tests). */
  cacheZone(name: string): CacheZone | undefined {
    return this.#caches.get(name);
  }

  /** The named upstream of this config (health verdicts from the primary, status). */
  upstream(name: string): Upstream | undefined {
    return this.#upstreams.get(name);
  }

  /** Starts what the handlers run in the background (the named upstreams are the server's to start). */
  async start(): Promise<void> {
    const tracing = this.config.tracing;
    // The span export (a batch timer and an HTTP client) exists only for a config that exports spans.
    if (tracing?.otlp !== undefined) this.#spans = await openSpanExport({ ...tracing, otlp: tracing.otlp }, this.#logger);
    for (const instance of this.#instances) await instance.start?.();
  }

  /**
   * After a reload's swap: no new request comes here. Resolves once every request and tunnel it took has ended (a
   * body still arriving, a long download, a wait in a queue, a WebSocket: each goes on with this app's handlers
   * and access log), or at `graceMs`, when what is left is cut (its connection closed). `stop()` follows.
   */
  drain(graceMs: number): Promise<DrainResult> {
    const open = this.#open.length + this.#tunnels.size;
    if (open === 0) return Promise.resolve({ open, cut: 0 });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#idle = undefined;
        const cut = this.#open.length + this.#tunnels.size;
        for (const res of [...this.#open]) res.destroy();
        for (const socket of [...this.#tunnels]) socket.destroy();
        resolve({ open, cut });
      }, graceMs);
      this.#idle = () => {
        this.#idle = undefined;
        clearTimeout(timer);
        resolve({ open, cut: 0 });
      };
    });
  }

  /** Reopens the access log file at its path (after a rotation: its next lines go to a new file). */
  reopenLog(): void {
    this.#accessLog?.reopen();
  }

  /**
   * Stops every handler's background work (the private upstreams of `proxy: { url }` routes among it) and
   * flushes the access log. The named upstreams are the server's (see upstream/registry.ts): a reload may keep them.
   */
  async stop(): Promise<void> {
    for (const instance of this.#instances) await instance.stop?.();
    await this.#accessLog?.close();
    await this.#spans?.close();
  }

  /**
   * Answers an `Upgrade` request on its raw socket. Only WebSocket is tunnelled, and only on a proxy route that
   * allows it; any other upgrade (h2c included) is ignored, as RFC 9110 §7.8 allows: the request is answered
   * as a plain request and the connection closed afterwards.
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, scheme: 'http' | 'https', refuse = 0): void {
    const res = new PorticoResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.once('finish', () => {
      res.detachSocket(socket as Socket);
      socket.end();
    });
    const ctx = this.#context(req, res, scheme);
    if (refuse !== 0) return this.#refuse(ctx, refuse, true);
    const route = this.#route(ctx);
    if (route === undefined) return;
    if ((req.headers.upgrade ?? '').toLowerCase() === 'websocket' && req.method === 'GET' && route.upgrade !== undefined) {
      const upgrade = route.upgrade;
      // The route's middlewares see the upgrade too (an access rule refuses a tunnel as it refuses a request);
      // only the handler at the end differs: the tunnel, on the raw socket.
      const tunnel = (ctx: RequestContext): Promise<void> => {
        res.detachSocket(socket as Socket);
        // Counted while open: a reload's drain waits for it (it outlives the swap untouched) and cuts it at the end.
        const tunnels = this.#tunnels;
        if (!socket.destroyed) {
          tunnels.add(socket);
          socket.once('close', () => {
            tunnels.delete(socket);
            if (this.#idle !== undefined && this.#open.length === 0 && tunnels.size === 0) this.#idle();
          });
        }
        return upgrade(ctx, socket, head).catch((err: unknown) => {
          this.#logger.error({ err }, 'websocket tunnel failed');
          socket.destroy();
        });
      };
      this.#run(ctx, { handle: compileChain(route.links, tunnel), traffic: route.traffic });
      return;
    }
    if (head.length > 0) socket.unshift(head);
    this.#run(ctx, route);
  }

  /**
   * Matches site and route; answers errors itself and returns undefined when it did. On a redirect_https
   * listener (`redirectHttps`, a port) the matching stops at the host: the answer is the redirect.
   */
  #route(ctx: RequestContext, redirectHttps = 0): CompiledRoute | undefined {
    const { req, res } = ctx;
    const url = req.url ?? '';
    // Fast path for the usual origin-form target: no object for the parts, straight into the context.
    if (url.charCodeAt(0) === 47) {
      const q = url.indexOf('?');
      const hash = url.indexOf('#');
      const path = q === -1 && hash === -1 ? normalizePath(url) : null;
      if (path !== null) {
        ctx.path = path;
        return this.#site(ctx, req.headers.host, redirectHttps);
      }
    }
    const target = parseRequestTarget(url);
    if (target === null || target.path === '*') {
      if (target !== null && req.method === 'OPTIONS') {
        ctx.status = 204;
        res.writeHead(204, ['Allow', 'GET, HEAD, OPTIONS']);
        res.end();
        return undefined;
      }
      return reject(ctx, 400, undefined, true);
    }
    ctx.path = target.path;
    ctx.query = target.query;
    if (target.authority !== undefined) ctx.targetAuthority = target.authority;
    return this.#site(ctx, target.authority ?? req.headers.host, redirectHttps);
  }

  /** A Host value parsed (`null` when invalid); the last one is remembered, as most connections repeat one Host. */
  #parseHost(value: string): string | null {
    if (value !== this.#lastHostValue) {
      this.#lastHost = parseHostHeader(value);
      this.#lastHostValue = value;
    }
    return this.#lastHost;
  }

  /** Matches the host to a site and the path to a route; answers errors itself and returns undefined when it did. */
  #site(ctx: RequestContext, hostValue: string | undefined, redirectHttps: number): CompiledRoute | undefined {
    if (hostValue !== undefined && hostValue !== '') {
      const host = this.#parseHost(hostValue);
      // A comma means several Host fields were joined: RFC 9112 §3.2 requires a 400.
      if (host === null) return reject(ctx, 400, undefined, true);
      ctx.host = host;
    }
    if (redirectHttps !== 0) return this.#redirectHttps(ctx, redirectHttps);
    const site = this.#sites.match(ctx.host);
    if (site === undefined) return reject(ctx, 421);
    if (ctx.scheme === 'https') {
      // The connection's certificate is not this host's: the client should open one of its own (RFC 9110 §15.5.20).
      if (isMisdirected(ctx.req.socket, ctx.host)) return reject(ctx, 421);
      if (site.hsts !== undefined) ctx.res.setHeader('Strict-Transport-Security', site.hsts);
    }
    ctx.errorPages = site.errorPages;
    const match = site.router.match(ctx.path);
    if (match === undefined) return reject(ctx, 404);
    if (match.redirectTo !== undefined) {
      return reject(ctx, 301, { Location: ctx.query === '' ? match.redirectTo : `${match.redirectTo}?${ctx.query}` });
    }
    return match.route;
  }

  /**
   * 308 to https on `port` for a host a site names; anything else (the default site's, none, an IP) is not
   * echoed into a Location: 421, as for a host no site serves.
   */
  #redirectHttps(ctx: RequestContext, port: number): undefined {
    if (ctx.host === '' || this.#named.match(ctx.host) === undefined) return reject(ctx, 421);
    const authority = port === 443 ? ctx.host : `${ctx.host}:${port}`;
    return reject(ctx, 308, { Location: `https://${authority}${ctx.uri}` });
  }

  /**
   * Answers one request, HTTP/1 or HTTP/2 (whose `:authority` becomes its Host first, see `adoptAuthority`).
   * Never throws: every failure becomes an error response (or a cut connection, or a reset stream). On a
   * listener with redirect_https (`redirectHttps`, the port) the answer is a redirect to https. Hooks that must
   * answer before it, on plain listeners (ACME's HTTP-01 challenge), go first here.
   */
  handle(req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https', redirectHttps = 0): void {
    (res as TrackedResponse)[kOpenAt] = this.#open.length;
    this.#open.push(res);
    // With an access log, counting or spans, its close listener (set by #context) counts the request out as well.
    if (!this.#watchClose) res.on('close', this.#countOut);
    const ctx = this.#context(req, res, scheme);
    if (req.httpVersionMajor === 2) {
      const status = adoptAuthority(req);
      if (status !== 0) return this.#refuse(ctx, status, false);
    }
    // ACME's http-01 check comes first: before routing, redirects, access rules, auth and rate limits.
    if (this.#challenges !== null && scheme === 'http' && this.#answerChallenge(ctx)) return;
    const route = this.#route(ctx, redirectHttps);
    if (route !== undefined) this.#run(ctx, route);
  }

  /**
   * Answers a GET or HEAD under /.well-known/acme-challenge/ when ACME is on: the key authorization of a pending
   * token (RFC 8555 §8.3; in a cluster, one another box put in Redis), 404 for any other. Returns false for every
   * other request.
   */
  #answerChallenge(ctx: RequestContext): boolean {
    const { req, res } = ctx;
    const url = req.url ?? '';
    if (!url.startsWith(CHALLENGE_PREFIX) || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const answer = this.#challenges!.answer(path);
    // Not pending here: in a cluster, another box's order may have put it in Redis.
    const elsewhere = answer === undefined ? this.#challenges!.lookup(path) : undefined;
    if (elsewhere === undefined) this.#sendChallenge(ctx, answer);
    else void elsewhere.catch(() => undefined).then((found) => this.#sendChallenge(ctx, found));
    return true;
  }

  /** Sends a challenge's key authorization, or 404 when there is none. */
  #sendChallenge(ctx: RequestContext, answer: string | undefined): void {
    const { req, res } = ctx;
    if (res.destroyed) return;
    if (answer === undefined) {
      sendError(ctx, 404);
      return;
    }
    ctx.status = 200;
    const headers: string[] = ['Content-Type', 'text/plain', 'Content-Length', String(answer.length), 'Cache-Control', 'no-store'];
    if (this.#serverHeader !== '') headers.push('Server', this.#serverHeader);
    res.writeHead(200, headers);
    if (req.method === 'HEAD') res.end();
    else {
      ctx.bytesSent = answer.length;
      res.end(answer);
    }
  }

  /**
   * Answers a request the listener refused before routing (too many header lines, no Host, CONNECT, an unmet
   * expectation) as Portico answers any error: its page (the site's own when the Host names one), `Server` field
   * and access-log line.
   */
  refuse(req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https', status: number, close: boolean): void {
    // Over h2 the site (and its error pages) is `:authority`'s.
    if (req.httpVersionMajor === 2) adoptAuthority(req);
    this.#refuse(this.#context(req, res, scheme), status, close);
  }

  /**
   * The access-log line of a request Node's parser refused (the listener answered it, echoing `requestId`): what
   * could be read of its request line, the peer, the status and Portico's error page's size.
   */
  parserRefused(socket: Socket, status: number, line: RefusedLine | undefined, requestId: string): void {
    const accessLog = this.#accessLog;
    if (accessLog === null) return;
    const version = line?.version ?? '1.1';
    const req = {
      method: line?.method,
      url: line?.url,
      httpVersion: version,
      httpVersionMajor: Number(version[0]),
      httpVersionMinor: Number(version[2]),
      headers: {},
      rawHeaders: [],
      socket,
      complete: false,
    } as unknown as ClientRequest;
    const scheme = (socket as Socket & { encrypted?: boolean }).encrypted === true ? 'https' : 'http';
    const ctx = new RequestContext(req, NO_RESPONSE, scheme, performance.now(), this.#serverHeader, this.#trusted);
    ctx.requestId = requestId;
    ctx.status = status;
    ctx.bytesSent = errorPage(status).length;
    accessLog.arrived?.(ctx);
    accessLog.write(ctx);
  }

  #refuse(ctx: RequestContext, status: number, close: boolean): void {
    const value = ctx.req.headers.host;
    const host = value === undefined || value === '' ? null : this.#parseHost(value);
    if (host !== null) ctx.host = host;
    ctx.errorPages = this.#sites.match(ctx.host)?.errorPages;
    // 405 for CONNECT: a tunnel is no method of any resource here, so the list of allowed ones is empty.
    sendError(ctx, status, status === 405 ? { Allow: '' } : undefined, close);
  }

  #context(req: ClientRequest, res: ClientResponse, scheme: 'http' | 'https'): RequestContext {
    // Only the access log (request_time), counting and spans read the start time: no clock read per request without them.
    const ctx = new RequestContext(req, res, scheme, this.#watchClose ? performance.now() : 0, this.#serverHeader, this.#trusted);
    // X-Request-Id: the client's when safe (or from a trusted proxy), else a new one; every answer echoes it.
    const claimed = req.headers['x-request-id'];
    ctx.requestId =
      typeof claimed === 'string' && (isSafeRequestId(claimed) || (claimed !== '' && !this.#trusted.empty && this.#trusted.has(ctx.peerAddress()))) ? claimed : newRequestId();
    (res as ClientResponse & { [kRequestId]?: string })[kRequestId] = ctx.requestId;
    if (this.#sample >= 0) beginTrace(ctx, this.#sample, !this.#trusted.empty && this.#trusted.has(ctx.peerAddress()));
    if (this.#watchClose) {
      (res as TrackedResponse)[kContext] = ctx;
      ctx.closeWatched = true;
      // `on`, not `once`: 'close' comes once, and `once` would wrap the listener in a new closure per request.
      res.on('close', this.#onClose);
      // The log (written at close) reads the client address worked out now: an h2 request's socket is a view of
      // its stream's session, gone once the stream closes, and a socket destroyed (a cut answer) before its peer
      // address was ever read no longer has one. The same for the TLS version, when the line has it.
      if (this.#accessLog !== null || this.#sample >= 0) ctx.clientAddress();
      this.#accessLog?.arrived?.(ctx);
    }
    return ctx;
  }

  /** HTTP/2 requests being answered now by this app (its open responses over h2): the streams gauge. */
  openStreams(): number {
    let streams = 0;
    for (const res of this.#open) if (isH2Response(res)) streams++;
    return streams;
  }

  #run(ctx: RequestContext, route: Pick<CompiledRoute, 'handle' | 'traffic'>): void {
    ctx.traffic = route.traffic;
    try {
      const pending = route.handle(ctx);
      if (pending !== undefined) pending.catch((err: unknown) => this.#fail(ctx, err));
    } catch (err) {
      this.#fail(ctx, err);
    }
  }

  #fail(ctx: RequestContext, err: unknown): void {
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    // A file that exists but may not be read is forbidden, not a server fault (as nginx answers).
    if (code === 'EACCES' || code === 'EPERM') return sendError(ctx, 403);
    if (err instanceof PorticoError) {
      if (err.status >= 500) this.#logger.warn({ code: err.code, url: ctx.req.url }, err.message);
      return sendError(ctx, err.status);
    }
    this.#logger.error({ err, url: ctx.req.url }, 'request failed');
    sendError(ctx, 500);
  }
}
