/**
 * The app: everything compiled from one config that answers requests — sites matched by host, routes matched
 * by canonical path, each route's handler chain. It is a value: built from a config, started, swapped in by a
 * reload, stopped. Listeners hold the sockets and hand each request to whichever app is current.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { HANDLER_KINDS } from '../config/schema.js';
import { handlerKind } from '../handlers/index.js';
import type { HandlerInstance } from '../handlers/types.js';
import { PorticoError } from '../errors.js';
import { openAccessLog, type AccessLog } from '../log/access.js';
import { compileChain, RequestContext, type Handler } from './context.js';
import { HostMatcher, parseHostHeader } from './hosts.js';
import { parseRequestTarget } from './request-path.js';
import { Router } from './router.js';
import { sendError } from './send.js';

interface CompiledRoute {
  handle: Handler;
}

interface Site {
  router: Router<CompiledRoute>;
  errorPages: ReadonlyMap<number, Buffer> | undefined;
}

const kContext = Symbol('portico.context');
type TrackedResponse = ServerResponse & { [kContext]?: RequestContext };

/** One compiled config, ready to answer requests. */
export class App {
  readonly config: Config;
  readonly #logger: Logger;
  readonly #sites = new HostMatcher<Site>();
  readonly #instances: HandlerInstance[] = [];
  readonly #accessLog: AccessLog | null;
  readonly #onClose: (this: TrackedResponse) => void;

  constructor(config: Config, logger: Logger) {
    this.config = config;
    this.#logger = logger;
    const env = { logger, serverHeader: config.server_header };
    for (const siteConfig of config.sites) {
      const routes = siteConfig.routes.map((route) => {
        const kind = HANDLER_KINDS.find((name) => route[name] !== undefined)!;
        const instance = handlerKind(kind)!.create(route[kind], env);
        this.#instances.push(instance);
        return { path: route.path, route: { handle: compileChain([], instance.handle) } };
      });
      const pages = Object.entries(siteConfig.error_pages);
      this.#sites.add(siteConfig.hosts, {
        router: new Router(routes),
        errorPages: pages.length === 0 ? undefined : new Map(pages.map(([status, file]) => [Number(status), readFileSync(file)])),
      });
    }
    this.#accessLog = openAccessLog(config.log.access, config.log.format);
    const accessLog = this.#accessLog;
    this.#onClose = function logRequest(this: TrackedResponse) {
      const ctx = this[kContext];
      if (ctx !== undefined && accessLog !== null) {
        if (!this.writableFinished && ctx.status === 0) ctx.status = 499;
        accessLog.write(ctx);
      }
    };
  }

  /** Starts what the handlers run in the background. */
  async start(): Promise<void> {
    for (const instance of this.#instances) await instance.start?.();
  }

  /** Stops every handler's background work and flushes the access log. */
  async stop(): Promise<void> {
    for (const instance of this.#instances) await instance.stop?.();
    await this.#accessLog?.close();
  }

  /** Answers one request. Never throws: every failure becomes an error response (or a cut connection). */
  handle(req: IncomingMessage, res: ServerResponse, scheme: 'http' | 'https'): void {
    const ctx = new RequestContext(req, res, scheme, performance.now());
    ctx.serverHeader = this.config.server_header;
    if (this.#accessLog !== null) {
      (res as TrackedResponse)[kContext] = ctx;
      res.once('close', this.#onClose);
    }
    const target = parseRequestTarget(req.url ?? '');
    if (target === null || target.path === '*') {
      if (target !== null && req.method === 'OPTIONS') {
        ctx.status = 204;
        res.writeHead(204, ['Allow', 'GET, HEAD, OPTIONS']);
        return void res.end();
      }
      return sendError(ctx, 400, undefined, true);
    }
    ctx.path = target.path;
    ctx.query = target.query;
    const hostValue = target.authority ?? req.headers.host;
    if (hostValue !== undefined && hostValue !== '') {
      const host = parseHostHeader(hostValue);
      // A comma means several Host fields were joined: RFC 9112 §3.2 requires a 400.
      if (host === null) return sendError(ctx, 400, undefined, true);
      ctx.host = host;
    }
    const site = this.#sites.match(ctx.host);
    if (site === undefined) return sendError(ctx, 421);
    ctx.errorPages = site.errorPages;
    const match = site.router.match(ctx.path);
    if (match === undefined) return sendError(ctx, 404);
    if (match.redirectTo !== undefined) {
      return sendError(ctx, 301, { Location: ctx.query === '' ? match.redirectTo : `${match.redirectTo}?${ctx.query}` });
    }
    try {
      const pending = match.route.handle(ctx);
      if (pending !== undefined) pending.catch((err: unknown) => this.#fail(ctx, err));
    } catch (err) {
      this.#fail(ctx, err);
    }
  }

  #fail(ctx: RequestContext, err: unknown): void {
    if (err instanceof PorticoError) {
      if (err.status >= 500) this.#logger.warn({ code: err.code, url: ctx.req.url }, err.message);
      return sendError(ctx, err.status);
    }
    this.#logger.error({ err, url: ctx.req.url }, 'request failed');
    sendError(ctx, 500);
  }
}
