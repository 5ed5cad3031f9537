/**
 * The control server: HTTP/1.1 on a unix socket in the state directory, which only its owner (and root) can open
 * — never a TCP port. It is bound under umask 077 and made 0600, in a folder that must be the owner's and not
 * group- or world-writable (the state directory's own rule). A socket file left by a process that crashed is
 * found (nothing answers on it) and replaced; one that answers means another Portico runs there, which is an error.
 */
import { chmodSync, linkSync, lstatSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import path from 'node:path';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { socketPathProblem } from '../config/control.js';
import { stateDirProblem } from '../config/validate.js';
import { PorticoError } from '../errors.js';
import { readJsonBody } from './json-body.js';
import { HEARTBEAT_MS, OPERATIONS, failed, type AnswerLine, type OperationName, type OperationRequest, type OperationResult, type Progress } from './protocol.js';

/** What runs the operations the control server receives (src/server's `Operations`). */
export interface ControlHandler {
  /** Runs one operation, reporting its progress; resolves with its result (never rejects with an operation's error). */
  run(request: OperationRequest, progress: Progress, hooks?: OperationHooks): Promise<OperationResult>;
}

/** The admin API as the control socket serves it (`AdminApi`): every route but `/v1/*`. */
export interface SocketAdmin {
  handle(req: IncomingMessage, res: ServerResponse, channel: { kind: 'socket' }): void;
}

/** What the caller of an operation may hear besides its progress (the admin API's jobs). */
export interface OperationHooks {
  /** The operation left the queue and runs now. */
  started?(): void;
}

/** How long a request may take to arrive (headers and body). */
const REQUEST_TIMEOUT_MS = 10_000;
/** How long the check of an existing socket file waits for it to answer. */
const PROBE_TIMEOUT_MS = 2_000;

/** What an existing socket file is: gone, stale (nothing answers), or live. */
function probe(socket: string): Promise<'absent' | 'stale' | 'live'> {
  return new Promise((resolve, reject) => {
    const client = connect(socket);
    const timer = setTimeout(() => {
      client.destroy();
      reject(new PorticoError('PORTICO_CONTROL', `the control socket ${socket} exists and did not answer within ${PROBE_TIMEOUT_MS} ms: is another Portico running (hung)?`));
    }, PROBE_TIMEOUT_MS);
    client.once('connect', () => {
      clearTimeout(timer);
      client.destroy();
      resolve('live');
    });
    client.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ECONNREFUSED') resolve('stale');
      else if (err.code === 'ENOENT') resolve('absent');
      else reject(new PorticoError('PORTICO_CONTROL', `cannot check the control socket ${socket}: ${err.message}`, { cause: err }));
    });
  });
}

/** The operation a request names, or an error result with its status. */
function route(req: IncomingMessage): { operation: OperationName } | { status: number; result: OperationResult } {
  const match = /^\/v1\/([a-z]+)\/?$/.exec((req.url ?? '').split('?')[0] ?? '');
  const operation = OPERATIONS.find((name) => name === match?.[1]);
  if (operation === undefined) {
    return { status: 404, result: failed(new PorticoError('PORTICO_NOT_FOUND', `no such operation: ${req.method ?? ''} ${req.url ?? ''} (POST /v1/${OPERATIONS.join('|')})`)) };
  }
  if (req.method !== 'POST' && !(operation === 'status' && req.method === 'GET')) {
    return { status: 405, result: failed(new PorticoError('PORTICO_METHOD_NOT_ALLOWED', `${operation} is POST /v1/${operation}`)) };
  }
  return { operation };
}

/** The operation request from a route and a body: `config` and `upstream` must be strings when given. */
function operationRequest(operation: OperationName, body: Record<string, unknown>): OperationRequest {
  const request: OperationRequest = { operation };
  for (const key of ['config', 'upstream'] as const) {
    const value = body[key];
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new PorticoError('PORTICO_BAD_REQUEST', `"${key}" must be a string`);
    request[key] = value;
  }
  return request;
}

/** The control server on one socket path. */
export class ControlServer {
  /** The socket's path. */
  readonly socket: string;
  readonly #handler: ControlHandler;
  readonly #logger: Logger;
  readonly #server: Server;
  readonly #connections = new Set<Socket>();
  /** Answers of operations still running, with the operation each is for (a stop ends them with a result line). */
  readonly #answering = new Map<ServerResponse, OperationName>();
  /** The bound socket file's identity, so that `unbind` removes only its own (never a successor's). */
  #bound: { dev: number; ino: number } | undefined;
  #closed: Promise<void> | undefined;

  readonly #heartbeatMs: number;

  /**
   * A server for `socket` handing operations to `handler`; nothing is bound until `start`. `heartbeatMs` (tests):
   * how often a heartbeat line is written while an operation runs (default HEARTBEAT_MS).
   */
  constructor(socket: string, handler: ControlHandler, logger: Logger, options: { heartbeatMs?: number; admin?: SocketAdmin | undefined } = {}) {
    this.socket = socket;
    this.#handler = handler;
    this.#logger = logger;
    this.#heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
    const admin = options.admin;
    // The admin API's routes are served here too (with no token: the folder's mode is the guard); `/v1/*` stays the CLI's.
    this.#server = createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
      if (admin !== undefined && !(req.url ?? '').startsWith('/v1/')) admin.handle(req, res, { kind: 'socket' });
      else void this.#answer(req, res);
    });
    this.#server.on('connection', (socket: Socket) => {
      this.#connections.add(socket);
      socket.once('close', () => this.#connections.delete(socket));
    });
  }

  /**
   * Checks the path and its folder, replaces a stale socket file, and binds (umask 077, then 0600). Throws
   * PORTICO_CONTROL when the path is too long, the folder unsafe, or another process answers on the socket.
   */
  async start(): Promise<void> {
    const tooLong = socketPathProblem(this.socket);
    if (tooLong !== undefined) throw new PorticoError('PORTICO_CONTROL', tooLong);
    const dir = path.dirname(this.socket);
    let reason: string | undefined;
    try {
      reason = stateDirProblem(statSync(dir));
    } catch (err) {
      reason = `cannot be used: ${(err as Error).message}`;
    }
    if (reason !== undefined) throw new PorticoError('PORTICO_CONTROL', `the control socket's folder ${dir} ${reason}`);
    await this.#clearStale();
    const previous = process.umask(0o077);
    try {
      // A unix socket is bound synchronously inside listen(): the umask covers the file's creation, and only it.
      this.#server.listen(this.socket);
    } finally {
      process.umask(previous);
    }
    await new Promise<void>((resolve, reject) => {
      const failed = (err: Error) => reject(new PorticoError('PORTICO_CONTROL', `cannot bind the control socket ${this.socket}: ${err.message}`, { cause: err }));
      this.#server.once('error', failed);
      this.#server.once('listening', () => {
        this.#server.off('error', failed);
        resolve();
      });
    });
    chmodSync(this.socket, 0o600);
    const stats = lstatSync(this.socket);
    this.#bound = { dev: stats.dev, ino: stats.ino };
    this.#server.on('error', (err) => this.#logger.error({ err }, 'control socket error'));
  }

  /** Removes a socket file nothing answers on (left by a crash); refuses a live one or a file that is no socket. */
  async #clearStale(): Promise<void> {
    let stats;
    try {
      stats = lstatSync(this.socket);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new PorticoError('PORTICO_CONTROL', `cannot check the control socket ${this.socket}: ${(err as Error).message}`, { cause: err });
    }
    if (!stats.isSocket()) throw new PorticoError('PORTICO_CONTROL', `${this.socket} exists and is not a socket: remove it`);
    const state = await probe(this.socket);
    if (state === 'live') {
      throw new PorticoError('PORTICO_CONTROL', `another Portico is running: its control socket ${this.socket} answers (stop it first, or give this config another state_dir)`);
    }
    if (state === 'stale') {
      this.#logger.warn({ socket: this.socket }, 'removing a stale control socket left by a process that is gone');
      try {
        unlinkSync(this.socket);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new PorticoError('PORTICO_CONTROL', `cannot remove the stale control socket ${this.socket}: ${(err as Error).message}`, { cause: err });
      }
    }
  }

  async #answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const routed = route(req);
    let request: OperationRequest;
    try {
      if ('status' in routed) return this.#refuse(res, routed.status, routed.result);
      request = operationRequest(routed.operation, await readJsonBody(req, 'a control request'));
    } catch (err) {
      return this.#refuse(res, err instanceof PorticoError ? err.status : 400, failed(err));
    }
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    const send = (line: AnswerLine) => {
      // A client that left does not stop the operation (a reload is not undone halfway): its lines go nowhere.
      if (!res.destroyed && !res.writableEnded) res.write(`${JSON.stringify(line)}\n`);
    };
    const heartbeat = setInterval(() => send({ heartbeat: true }), this.#heartbeatMs);
    this.#answering.set(res, request.operation);
    let result: OperationResult;
    try {
      result = await this.#handler.run(request, (progress) => send({ progress }));
    } catch (err) {
      result = failed(err);
    } finally {
      clearInterval(heartbeat);
      this.#answering.delete(res);
    }
    send({ result });
    if (!res.destroyed && !res.writableEnded) res.end();
  }

  /**
   * Ends the answers of operations still running with a result line that says why, before their connections are
   * cut: the client then reports that Portico stopped, not a bare "aborted".
   */
  #endAnswers(): void {
    for (const [res, operation] of this.#answering) {
      const error = new PorticoError('PORTICO_STOPPING', `Portico is stopping: the ${operation} under way did not finish before the control socket closed (its outcome is in Portico's log)`);
      if (!res.destroyed && !res.writableEnded) res.end(`${JSON.stringify({ result: failed(error) })}\n`);
    }
    this.#answering.clear();
  }

  #refuse(res: ServerResponse, status: number, result: OperationResult): void {
    res.writeHead(status, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', connection: 'close' });
    res.end(`${JSON.stringify({ result })}\n`);
  }

  /**
   * Stops accepting: the socket file goes (when it is still the one bound here), the answers under way go on.
   * What a process that hands over to a successor (an upgrade) calls before the successor binds its own socket.
   * Idempotent; resolves once the last connection has ended.
   */
  unbind(): Promise<void> {
    if (this.#closed !== undefined) return this.#closed;
    this.#closed = new Promise<void>((resolve) => {
      if (!this.#server.listening) return resolve();
      // libuv unlinks the bound path when the listening handle closes, whatever file is there now: a successor's
      // socket bound at the same path meanwhile is kept under a second name across the close, then put back.
      let kept: string | undefined;
      try {
        const stats = lstatSync(this.socket);
        if (this.#bound !== undefined && (stats.dev !== this.#bound.dev || stats.ino !== this.#bound.ino)) {
          kept = `${this.socket}.${process.pid}.keep`;
          linkSync(this.socket, kept);
        }
      } catch {
        // No file there any more: nothing to keep.
      }
      this.#server.close(() => resolve());
      if (kept !== undefined) renameSync(kept, this.socket);
    });
    return this.#closed;
  }

  /** Stops accepting (see `unbind`); answers under way get `graceMs` to finish, then their connections are cut. */
  async stop(graceMs = 1000): Promise<void> {
    const closed = this.unbind();
    this.#server.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.#endAnswers();
        for (const socket of this.#connections) socket.destroy();
        resolve();
      }, graceMs);
    });
    await Promise.race([closed, cut]);
    clearTimeout(timer);
    this.#endAnswers();
    for (const socket of this.#connections) socket.destroy();
    await closed;
  }
}
