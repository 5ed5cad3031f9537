/**
 * Small tools shared by the proxy integration tests: waiting for a condition, counting a backend's TCP
 * connections, a raw-socket exchange driven step by step, WebSocket frames, and a backend that can fail on cue.
 */
import { createHash } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import http from 'node:http';
import net from 'node:net';
import { after } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every `stepMs` until it is true; throws after `timeoutMs` with `what` in the message. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 3000, stepMs = 20): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/** Resolves once the tasks queued so far (promise continuations, next ticks) have run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Portico's side of a client connection, seen through Node's `net.server.socket` diagnostics channel (Portico
 * runs in the test process): `closed(localPort, port)` resolves once the server socket of the connection from
 * that client port to that server port has closed and the close has been handled.
 */
export function trackServerSockets(): { closed(clientPort: number, serverPort: number, timeoutMs?: number): Promise<void>; stop(): void } {
  const sockets = new Map<string, net.Socket>();
  const closedKeys = new Set<string>();
  const key = (clientPort: number, serverPort: number) => `${clientPort}>${serverPort}`;
  const onSocket = (message: unknown) => {
    const socket = (message as { socket: net.Socket }).socket;
    const k = key(socket.remotePort ?? 0, socket.localPort ?? 0);
    sockets.set(k, socket);
    socket.once('close', () => closedKeys.add(k));
  };
  diagnostics.subscribe('net.server.socket', onSocket);
  return {
    async closed(clientPort, serverPort, timeoutMs = 5000) {
      const k = key(clientPort, serverPort);
      await waitFor(`the server side of ${k} to close`, () => closedKeys.has(k), timeoutMs, 5);
      await settle();
    },
    stop: () => diagnostics.unsubscribe('net.server.socket', onSocket),
  };
}

/** Outcomes of the requests Portico sent to one app server (`http://127.0.0.1:PORT`). */
export interface RequestOutcomes {
  /** Requests answered in full (any status). */
  completed: number;
  /** Requests that failed to connect or were cut off. */
  errored: number;
}

/**
 * Counts, per origin, the requests (to `path` only, when given: `/health` for health checks) that Portico's
 * undici client has finished, through undici's diagnostics channels (Portico runs in the test process). Portico
 * acts on an outcome a few ticks after undici finishes the request; `settle()` after a count has moved covers that.
 */
export function watchUpstreamRequests(path?: string): { of(origin: string): RequestOutcomes; stop(): void } {
  const outcomes = new Map<string, RequestOutcomes>();
  const of = (origin: string) => {
    let found = outcomes.get(origin);
    if (found === undefined) outcomes.set(origin, (found = { completed: 0, errored: 0 }));
    return found;
  };
  const isCheck = (request: { origin?: unknown; path?: unknown }) =>
    path === undefined || (typeof request.path === 'string' && request.path.split('?')[0] === path);
  const onDone = (message: unknown) => {
    const { request } = message as { request: { origin?: unknown; path?: unknown } };
    if (isCheck(request)) of(String(request.origin)).completed++;
  };
  const onError = (message: unknown) => {
    const { request } = message as { request: { origin?: unknown; path?: unknown } };
    if (isCheck(request)) of(String(request.origin)).errored++;
  };
  diagnostics.subscribe('undici:request:trailers', onDone);
  diagnostics.subscribe('undici:request:error', onError);
  return {
    of,
    stop() {
      diagnostics.unsubscribe('undici:request:trailers', onDone);
      diagnostics.unsubscribe('undici:request:error', onError);
    },
  };
}

/**
 * Waits until `progress()` (bytes an app server got out, say) has moved and then stopped moving — the writer is
 * held back by backpressure — or until `done()` holds (the writer finished: nothing held it back). Returns
 * which. A stall is a progress count unchanged over `quietMs` while the writer waits for 'drain'; throws after
 * `timeoutMs` when neither comes.
 */
export async function stallOrDone(
  what: string,
  progress: () => number,
  done: () => boolean,
  { quietMs = 250, timeoutMs = 10_000 } = {},
): Promise<'stalled' | 'done'> {
  const until = Date.now() + timeoutMs;
  let last = -1;
  let since = Date.now();
  for (;;) {
    if (done()) return 'done';
    const now = Date.now();
    const value = progress();
    if (value !== last) {
      last = value;
      since = now;
    } else if (value > 0 && now - since >= quietMs) return 'stalled';
    if (now > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} to stall or finish (at ${value})`);
    await sleep(10);
  }
}

/** Hex SHA-256 of some bytes. */
export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Counts the TCP connections a backend accepts from now on. */
export function countConnections(upstream: TestUpstream): { readonly count: number } {
  const counter = { count: 0 };
  upstream.server.on('connection', () => counter.count++);
  return counter;
}

/** How many requests a backend saw, leaving out the health checker's. */
export function appRequests(upstream: TestUpstream): number {
  return upstream.requests.filter((r) => r.headers['user-agent'] !== 'Portico-health-check').length;
}

/** A raw connection to 127.0.0.1:port whose received bytes can be awaited piece by piece. */
export class RawConnection {
  readonly socket: net.Socket;
  #received = Buffer.alloc(0);
  #closed = false;
  #waiters: Array<() => void> = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#received = Buffer.concat([this.#received, chunk]);
      this.#notify();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#notify();
    });
    socket.on('error', () => {});
  }

  /** Connects to Portico (or any server) on the loopback. */
  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  #notify(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Everything received so far. */
  get received(): Buffer {
    return this.#received;
  }

  /** Whether the peer closed the connection. */
  get closed(): boolean {
    return this.#closed;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Waits until `done(received)` holds or the connection closes; throws after `timeoutMs`. */
  async until(done: (received: Buffer) => boolean, timeoutMs = 3000): Promise<Buffer> {
    const limit = Date.now() + timeoutMs;
    while (!done(this.#received) && !this.#closed) {
      const left = limit - Date.now();
      if (left <= 0) throw new Error(`raw connection: timed out; received ${JSON.stringify(this.#received.toString('latin1').slice(0, 300))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.#received;
  }

  /** Waits for the peer to close (or `timeoutMs`); returns whether it did. */
  async waitClosed(timeoutMs = 2000): Promise<boolean> {
    await this.until(() => false, timeoutMs).catch(() => undefined);
    return this.#closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Whether `received` holds a complete response head. */
export function hasHead(received: Buffer): boolean {
  return received.includes('\r\n\r\n');
}

/** Status of the last complete response head in `text`, or 0. */
export function statusOf(text: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The Sec-WebSocket-Accept value for a key (RFC 6455 §4.2.2). */
export function websocketAccept(key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64');
}

/** Encodes one final frame (opcode 1 = text) with a payload under 126 bytes, masked when a client sends it. */
export function encodeFrame(payload: string, masked: boolean, opcode = 1): Buffer {
  const data = Buffer.from(payload);
  if (data.length >= 126) throw new Error('encodeFrame: payload too long for this test encoder');
  const head = Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | data.length]);
  if (!masked) return Buffer.concat([head, data]);
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const body = Buffer.from(data.map((byte, i) => byte ^ mask[i % 4]!));
  return Buffer.concat([head, mask, body]);
}

/** Decodes the first frame in `buf` (payload under 126 bytes), or `undefined` when it is not all there yet. */
export function decodeFrame(buf: Buffer): { opcode: number; payload: string; size: number } | undefined {
  if (buf.length < 2) return undefined;
  const masked = (buf[1]! & 0x80) !== 0;
  const length = buf[1]! & 0x7f;
  const start = 2 + (masked ? 4 : 0);
  if (buf.length < start + length) return undefined;
  let payload = buf.subarray(start, start + length);
  if (masked) {
    const mask = buf.subarray(2, 6);
    payload = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!));
  }
  return { opcode: buf[0]! & 0x0f, payload: payload.toString(), size: start + length };
}

/** A response read in full by `httpRequest`. */
export interface FullResponse {
  status: number;
  headers: import('node:http').IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

/**
 * One request with node:http on a fresh connection (no agent), so that any header — Host, Via, Forwarded —
 * goes out exactly as given. Rejects when the response is cut short.
 */
export function httpRequest(
  port: number,
  path: string,
  options: { method?: string; headers?: Record<string, string | string[]>; body?: Buffer | string } = {},
): Promise<FullResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
        res.on('error', reject);
        res.on('aborted', () => reject(new Error('response aborted')));
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Starters for a test file whose servers are all stopped after its tests, last started first. */
export function scopedServers(): {
  portico(yaml: string, files?: Record<string, string | Buffer>): Promise<RunningPortico>;
  upstream(handler?: Parameters<typeof startUpstream>[0]): Promise<TestUpstream>;
  /** Runs `fn` with the others after the tests. */
  defer(fn: () => Promise<void> | void): void;
} {
  const cleanups: Array<() => Promise<void> | void> = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });
  return {
    async portico(yaml, files = {}) {
      const running = await startPortico(yaml, files);
      cleanups.push(() => running.stop());
      return running;
    },
    async upstream(handler) {
      const started = await startUpstream(handler);
      cleanups.push(() => started.stop());
      return started;
    },
    defer(fn) {
      cleanups.push(fn);
    },
  };
}
