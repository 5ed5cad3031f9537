/**
 * The admin API (docs/operations.md, "Admin API"): JSON over HTTP, the same routes on the admin listener (TCP,
 * optionally TLS) and on the control socket. On TCP every request passes the Host check (DNS rebinding), every
 * POST needs the Bearer token or the dashboard's session cookie plus the CSRF rules, reads need either (or, for
 * /status and /metrics, `open_reads` and a loopback peer); the control socket's folder mode is its guard. Every POST is audited: one
 * error-log line with the peer, what, the result and by what it was allowed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { AdminParts } from './admin-types.js';
import {
  bearerToken,
  clearedCookie,
  cookieValue,
  crossSite,
  csrfProblem,
  hostAllowed,
  isLoopbackPeer,
  SESSION_COOKIE,
  sessionCookie,
  Sessions,
  tokenMatches,
} from './admin-auth.js';
import { DASHBOARD_DIR, dashboardFile, serveDashboardFile } from './admin-assets.js';
import { Jobs, type Job } from './admin-jobs.js';
import { routeAdmin, type AdminRoute } from './admin-routes.js';
import { EventStream, SSE_MAX_BUFFERED } from './admin-sse.js';
import { RefusalThrottle } from './admin-throttle.js';
import { errorAnswer, onlyFields, purgeTarget, readJson, sendError, sendJson, serverAction } from './admin-http.js';
import { failed, type OperationRequest } from './protocol.js';
import { PorticoError } from '../errors.js';

/** What the admin config says, as the API applies it (the token read from its variable at start and reload). */
export interface AdminSettings {
  /** The token (undefined: its variable is unset, empty or too weak: every POST on TCP is refused). */
  token: string | undefined;
  /** Why the variable's value is no token (too short, whitespace), named in refusals; undefined when unset or fine. */
  tokenProblem?: string | undefined;
  /** The variable it comes from, named in refusals. */
  tokenEnv: string;
  openReads: boolean;
  hosts: readonly string[];
}

/** Where a request arrived: the control socket, or the admin listener (TLS or not). */
export type AdminChannel = { kind: 'socket' } | { kind: 'tcp'; secure: boolean };

/** What the API may be built with besides its parts. */
export interface AdminApiOptions {
  /** How often `/events` sends a status (default 1 s). */
  eventsIntervalMs?: number;
  /** The dashboard's folder (default: the repository's `dashboard/`). */
  dashboardDir?: string;
  /** Bytes an event stream may hold unsent before its client is cut (default 1 MiB). */
  eventsMaxBuffered?: number;
}

/** Dashboards streaming `/events` at once. */
const MAX_EVENT_CLIENTS = 32;

/** The address a request came from (its port left out: a new connection is no new peer). */
function peerAddress(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? 'control socket';
}

/** Who a request was allowed as. */
type By = 'token' | 'cookie' | 'socket' | 'none';

/** Progress events an `event: job` carries (the latest; `GET /jobs/{id}` has them all). */
const JOB_EVENT_TAIL = 20;

/** A job with its latest progress events only: what `/events` sends on each change (a long deploy stays small). */
function recentEvents(job: Job): Job {
  const cut = Math.max(0, job.events.length - JOB_EVENT_TAIL);
  if (cut === 0) return job;
  return { ...job, events: job.events.slice(cut), dropped: (job.dropped ?? 0) + cut };
}

/** The admin API: one per serving Portico (a single process, or the workers' primary). */
export class AdminApi {
  readonly #parts: AdminParts;
  readonly #logger: Logger;
  readonly #sessions = new Sessions();
  readonly #jobs: Jobs;
  readonly #dashboards = new Set<EventStream>();
  readonly #jobStreams = new Set<EventStream>();
  readonly #intervalMs: number;
  readonly #dashboardDir: string;
  readonly #maxBuffered: number;
  #settings: AdminSettings = { token: undefined, tokenEnv: 'PORTICO_ADMIN_TOKEN', openReads: false, hosts: [] };
  #ticker: NodeJS.Timeout | undefined;
  #ticking = false;
  #stopping = false;
  readonly #throttle: RefusalThrottle;

  /** The API acting with `parts`, auditing to `logger`. */
  constructor(parts: AdminParts, logger: Logger, options: AdminApiOptions = {}) {
    this.#parts = parts;
    this.#logger = logger;
    this.#intervalMs = options.eventsIntervalMs ?? 1000;
    this.#dashboardDir = options.dashboardDir ?? DASHBOARD_DIR;
    this.#maxBuffered = options.eventsMaxBuffered ?? SSE_MAX_BUFFERED;
    this.#throttle = new RefusalThrottle((peer, skipped) => this.#logger.info({ audit_refused: { peer, count: skipped } }, `admin: ${skipped} more refused requests from ${peer} in the last second`));
    this.#jobs = new Jobs((job) => {
      if (this.#dashboards.size === 0) return;
      const recent = recentEvents(job);
      for (const stream of this.#dashboards) stream.send('job', recent);
    });
  }

  /** Applies the admin config (at start and each reload); a changed token ends every dashboard session. */
  configure(settings: AdminSettings): void {
    if (settings.token !== this.#settings.token) this.#sessions.clear();
    this.#settings = settings;
  }

  /** The settings in force. */
  get settings(): AdminSettings {
    return this.#settings;
  }

  /** Portico is stopping: `/healthz` answers 503 from now on (the L4 balancer takes it out). */
  stopping(): void {
    this.#stopping = true;
  }

  /** Ends every event stream and the status ticker. */
  stop(): void {
    this.#stopping = true;
    for (const stream of [...this.#dashboards, ...this.#jobStreams]) stream.end();
    this.#dashboards.clear();
    this.#jobStreams.clear();
    this.#stopTicker();
    this.#throttle.stop();
  }

  /** Answers one request that arrived on `channel`. */
  handle(req: IncomingMessage, res: ServerResponse, channel: AdminChannel): void {
    void this.#answer(req, res, channel).catch((err: unknown) => {
      // A client that left (reset, aborted its body) is not Portico's error: nothing to answer, no stack to log.
      if (req.destroyed && !(err instanceof PorticoError)) {
        this.#logger.debug({ peer: req.socket.remoteAddress, code: (err as { code?: unknown }).code }, 'admin API: the client left before its request was read');
        return;
      }
      const { status, code, message } = errorAnswer(err, this.#logger);
      sendError(res, status, code, message);
    });
  }

  async #answer(req: IncomingMessage, res: ServerResponse, channel: AdminChannel): Promise<void> {
    const method = req.method ?? 'GET';
    const pathname = (req.url ?? '/').split('?')[0]!;
    if (method === 'POST') this.#audit(req, res, pathname);
    // Two Host headers: Node keeps the first, a proxy in front may have checked the second. Neither is trusted.
    if ((req.headersDistinct.host?.length ?? 0) > 1) return sendError(res, 400, 'PORTICO_BAD_HOST', 'the request has more than one Host header');
    if (!pathname.startsWith('/')) return sendError(res, 400, 'PORTICO_BAD_REQUEST', 'the request target must be a path');
    // The L4 balancer's check needs no name: it reveals nothing and changes nothing.
    const tcp = channel.kind === 'tcp' ? channel : undefined;
    if (tcp !== undefined && pathname !== '/healthz' && !hostAllowed(req.headers.host, { address: req.socket.localAddress, port: req.socket.localPort }, this.#settings.hosts)) {
      return sendError(res, 421, 'PORTICO_MISDIRECTED', `Host ${JSON.stringify(req.headers.host ?? '')} is not this admin listener's address nor one of admin.hosts`);
    }
    const routed = routeAdmin(method, pathname);
    if ('status' in routed) {
      const code = routed.status === 400 ? 'PORTICO_BAD_PATH' : routed.status === 404 ? 'PORTICO_NOT_FOUND' : 'PORTICO_METHOD_NOT_ALLOWED';
      return sendError(res, routed.status, code, routed.message, routed.allow === undefined ? {} : { allow: routed.allow });
    }
    const route = routed.route;
    if (route.kind === 'healthz') {
      return this.#stopping ? sendError(res, 503, 'PORTICO_STOPPING', 'Portico is stopping') : sendJson(res, 200, { ok: true });
    }
    if (route.kind === 'dashboard') return this.#dashboard(pathname, res);
    const retry = tcp === undefined ? undefined : this.#throttle.retryAfter(peerAddress(req));
    if (retry !== undefined) {
      return sendError(res, 429, 'PORTICO_TOO_MANY_REQUESTS', `too many wrong tokens from this address: try again in ${retry} s`, { 'retry-after': String(retry) });
    }
    if (route.kind === 'login') return this.#login(req, res, tcp);
    if (route.kind === 'logout') return this.#logout(req, res, tcp);
    const by = this.#authorise(req, res, routed.method, tcp, route.kind === 'status' || route.kind === 'metrics');
    if (by === undefined) return;
    (res as { adminBy?: By }).adminBy = by;
    await this.#dispatch(route, req, res);
  }

  /**
   * Who the request is allowed as, or undefined when it was refused (the answer written): 401 without valid
   * credentials, 403 for a cookie POST that breaks the CSRF rules or when no token is set.
   */
  #authorise(req: IncomingMessage, res: ServerResponse, method: 'GET' | 'POST', tcp: { secure: boolean } | undefined, openable: boolean): By | undefined {
    if (tcp === undefined) return 'socket';
    const { token, openReads } = this.#settings;
    const bearer = bearerToken(req.headers);
    const session = cookieValue(req.headers, SESSION_COOKIE);
    if (openable && method === 'GET' && openReads && isLoopbackPeer(req.socket.remoteAddress) && bearer === undefined) return 'none';
    if (token === undefined) {
      sendError(res, 403, 'PORTICO_FORBIDDEN', this.#noToken());
      return undefined;
    }
    if (bearer !== undefined || req.headers.authorization !== undefined) {
      if (tokenMatches(token, bearer)) return 'token';
      this.#throttle.failed(peerAddress(req));
      this.#unauthorised(res, 'the Bearer token is wrong');
      return undefined;
    }
    if (this.#sessions.valid(session)) {
      if (method === 'POST') {
        const problem = csrfProblem(req.headers, this.#origin(req, tcp.secure));
        if (problem !== undefined) {
          sendError(res, 403, 'PORTICO_FORBIDDEN', problem);
          return undefined;
        }
      }
      return 'cookie';
    }
    this.#unauthorised(res, session === undefined ? 'send "Authorization: Bearer <token>" (or log in to the dashboard)' : 'the session has ended: log in again');
    return undefined;
  }

  /** Why every POST is refused: the variable's value is no token, or no token is set. */
  #noToken(): string {
    const { tokenEnv, tokenProblem } = this.#settings;
    if (tokenProblem !== undefined) return `the admin token is refused: ${tokenProblem}`;
    return `no admin token is set: set the environment variable ${tokenEnv} and restart Portico (a running process's environment cannot change), or use admin.token_file, read again at every reload`;
  }

  #unauthorised(res: ServerResponse, message: string): void {
    sendError(res, 401, 'PORTICO_UNAUTHORIZED', message, { 'www-authenticate': 'Bearer realm="portico-admin"' });
  }

  /** This listener's own origin, from the request's (already checked) Host. */
  #origin(req: IncomingMessage, secure: boolean): string {
    return `${secure ? 'https' : 'http'}://${req.headers.host ?? ''}`;
  }

  /** `POST /login {"token"}`: a session cookie for the dashboard (same-origin JSON only). */
  async #login(req: IncomingMessage, res: ServerResponse, tcp: { secure: boolean } | undefined): Promise<void> {
    if (tcp === undefined) return sendError(res, 404, 'PORTICO_NOT_FOUND', 'the control socket needs no login');
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const problem = type === 'application/json' ? crossSite(req.headers, this.#origin(req, tcp.secure)) : 'a login needs "Content-Type: application/json"';
    if (problem !== undefined) return sendError(res, 403, 'PORTICO_FORBIDDEN', problem);
    const body = await readJson(req);
    onlyFields(body, ['token'], 'a login takes "token"');
    const { token } = this.#settings;
    if (token === undefined) return sendError(res, 403, 'PORTICO_FORBIDDEN', this.#noToken());
    if (typeof body.token !== 'string' || !tokenMatches(token, body.token)) {
      this.#throttle.failed(peerAddress(req));
      return this.#unauthorised(res, 'wrong token');
    }
    (res as { adminBy?: By }).adminBy = 'token';
    sendJson(res, 204, undefined, { 'set-cookie': sessionCookie(this.#sessions.open(), tcp.secure) });
  }

  /** `POST /logout`: ends the session the cookie names (CSRF rules as for any cookie POST). */
  #logout(req: IncomingMessage, res: ServerResponse, tcp: { secure: boolean } | undefined): void {
    if (tcp === undefined) return sendError(res, 404, 'PORTICO_NOT_FOUND', 'the control socket needs no login');
    const session = cookieValue(req.headers, SESSION_COOKIE);
    const problem = session === undefined ? undefined : csrfProblem(req.headers, this.#origin(req, tcp.secure));
    if (problem !== undefined) return sendError(res, 403, 'PORTICO_FORBIDDEN', problem);
    this.#sessions.close(session);
    (res as { adminBy?: By }).adminBy = session === undefined ? 'none' : 'cookie';
    sendJson(res, 204, undefined, { 'set-cookie': clearedCookie(tcp.secure) });
  }

  async #dashboard(pathname: string, res: ServerResponse): Promise<void> {
    const file = dashboardFile(this.#dashboardDir, pathname);
    if (file !== undefined && (await serveDashboardFile(this.#dashboardDir, file, res))) return;
    sendError(res, 404, 'PORTICO_NOT_FOUND', pathname === '/' || pathname === '/index.html' ? 'the dashboard is not installed (no dashboard/index.html)' : `no such dashboard file: ${pathname}`);
  }

  async #dispatch(route: AdminRoute, req: IncomingMessage, res: ServerResponse): Promise<void> {
    switch (route.kind) {
      case 'status':
        return sendJson(res, 200, await this.#parts.status());
      case 'metrics': {
        const { contentType, body } = await this.#parts.metrics();
        res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
        res.end(body);
        return;
      }
      case 'jobs':
        return sendJson(res, 200, { jobs: this.#jobs.list() });
      case 'job': {
        const job = this.#jobs.get(route.id);
        return job === undefined ? sendError(res, 404, 'PORTICO_NOT_FOUND', `no job ${route.id} (the last 50 are kept)`) : sendJson(res, 200, { job });
      }
      case 'job-events':
        return this.#jobEvents(route.id, res);
      case 'events':
        return this.#events(res);
      case 'server': {
        const action = serverAction(route.action, await readJson(req));
        (res as { adminDetail?: unknown }).adminDetail = { upstream: route.upstream, server: route.server, ...action };
        return sendJson(res, 200, await this.#parts.serverAction(route.upstream, route.server, action));
      }
      case 'purge': {
        const target = purgeTarget(await readJson(req));
        (res as { adminDetail?: unknown }).adminDetail = target;
        return sendJson(res, 200, await this.#parts.purge(route.zone, target));
      }
      case 'reopen':
        onlyFields(await readJson(req), [], 'a reopen takes no fields');
        await this.#parts.reopen();
        return sendJson(res, 200, { ok: true });
      case 'operation':
        onlyFields(await readJson(req), [], `${route.operation === 'reload' ? 'a reload' : 'an upgrade'} takes no fields`);
        return this.#startJob({ operation: route.operation }, res);
      case 'deploy':
        onlyFields(await readJson(req), [], 'a deploy takes no fields');
        return this.#startJob({ operation: 'deploy', upstream: route.upstream }, res);
      default:
        return sendError(res, 404, 'PORTICO_NOT_FOUND', 'no such admin route');
    }
  }

  /** Starts a reload, upgrade or deploy on the serialised path as a job; answers 202 with it at once. */
  #startJob(request: OperationRequest, res: ServerResponse): void {
    this.#parts.preflight?.(request);
    const label = request.operation === 'deploy' ? `deploy ${request.upstream ?? ''}` : request.operation;
    const { job, reporter } = this.#jobs.create(label);
    void this.#parts.operations
      .run(request, (event) => reporter.progress(event), { started: () => reporter.started() })
      .catch((err: unknown) => failed(err))
      .then((result) => reporter.finished(result));
    sendJson(res, 202, { job }, { location: `/jobs/${job.id}` });
  }

  /** `GET /jobs/{id}/events`: `event: progress` per event (those before replayed), then `event: result`, and the end. */
  #jobEvents(id: string, res: ServerResponse): void {
    const job = this.#jobs.get(id);
    if (job === undefined) return sendError(res, 404, 'PORTICO_NOT_FOUND', `no job ${id} (the last 50 are kept)`);
    const stream = new EventStream(res, this.#maxBuffered);
    for (const event of job.events) stream.send('progress', event);
    if (job.result !== undefined) {
      stream.send('result', job.result);
      return stream.end();
    }
    this.#jobStreams.add(stream);
    const unwatch = this.#jobs.watch(id, (change) => {
      if ('progress' in change) return stream.send('progress', change.progress);
      stream.send('result', change.result);
      stream.end();
    });
    stream.onClose(() => {
      unwatch();
      this.#jobStreams.delete(stream);
    });
  }

  /** `GET /events`: the dashboard's stream: `event: status` now and every interval, `event: job` on each change. */
  #events(res: ServerResponse): void {
    if (this.#dashboards.size >= MAX_EVENT_CLIENTS) return sendError(res, 503, 'PORTICO_UNAVAILABLE', `at most ${MAX_EVENT_CLIENTS} event streams at once`);
    const stream = new EventStream(res, this.#maxBuffered);
    this.#dashboards.add(stream);
    stream.onClose(() => {
      this.#dashboards.delete(stream);
      if (this.#dashboards.size === 0) this.#stopTicker();
    });
    for (const job of this.#jobs.list().filter((j) => j.result === undefined)) stream.send('job', recentEvents(job));
    void this.#sendStatus([stream]);
    this.#ticker ??= setInterval(() => void this.#sendStatus([...this.#dashboards]), this.#intervalMs);
  }

  /** One status report for every stream given (a tick is skipped while the previous one is still being built). */
  async #sendStatus(streams: EventStream[]): Promise<void> {
    if (this.#ticking) return;
    this.#ticking = true;
    try {
      const report = await this.#parts.status();
      for (const stream of streams) stream.send('status', report);
    } catch (err) {
      const { code, message } = errorAnswer(err, this.#logger);
      for (const stream of streams) stream.send('status_error', { error: { code, message } });
    } finally {
      this.#ticking = false;
    }
  }

  #stopTicker(): void {
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    this.#ticker = undefined;
  }

  /**
   * One error-log line per POST once answered: who (peer), what, the result, and by what it was allowed. A POST
   * refused before it was allowed (a 4xx with `by: none`: no or a wrong token, a bad Host, a forgery) writes its
   * line only for the first few of its peer in a second; the rest are counted in one summary line a second.
   */
  #audit(req: IncomingMessage, res: ServerResponse, pathname: string): void {
    const address = req.socket.remoteAddress;
    const peer = address === undefined ? 'control socket' : `${address}:${req.socket.remotePort ?? 0}`;
    res.once('close', () => {
      const status = res.headersSent ? res.statusCode : 0;
      const by = (res as { adminBy?: By }).adminBy ?? (address === undefined ? 'socket' : 'none');
      if (address !== undefined && by === 'none' && status >= 400 && !this.#throttle.auditRefused(address)) return;
      const detail = (res as { adminDetail?: unknown }).adminDetail;
      const audit = { peer, method: 'POST', path: pathname, status, by, ...(detail === undefined ? {} : { detail }) };
      this.#logger.info({ audit }, `admin: POST ${pathname} → ${status === 0 ? 'no answer' : status}`);
    });
  }
}
