/**
 * Shared by the admin API's tests: a Portico with an admin listener started in-process from YAML written to a
 * temporary folder (so that a reload re-reads the file), a raw HTTP client that sets any header (Host, Origin,
 * Sec-Fetch-Site), and a Server-Sent Events reader whose events can be awaited.
 */
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { makeTree } from '../helpers/portico.js';

/** A running Portico with its admin listener. */
export interface AdminPortico {
  server: Portico;
  dir: string;
  file: string;
  /** The admin listener's port, and the first public listener's. */
  adminPort: number;
  publicPort: number;
  stop(): Promise<void>;
}

/**
 * A config with an admin listener at `listen` (token from `tokenEnv`, or `tokenFile`), an upstream `app` with a
 * server named `blue`, a cache zone `pages`, and a route answering `body`.
 */
export function adminConfig(options: { listen?: string; tokenEnv: string; tokenFile?: string; body?: string }): string {
  const { listen = '127.0.0.1:0', tokenEnv, tokenFile, body = 'one' } = options;
  return `listen: ["127.0.0.1:0"]
log: { access: off }
admin:
  listen: "${listen}"
  token_env: ${tokenEnv}${tokenFile === undefined ? '' : `\n  token_file: ${tokenFile}`}
caches:
  pages: { memory: 1MB }
upstreams:
  app:
    servers:
      - { url: "http://127.0.0.1:9", name: blue }
sites:
  - routes:
      - path: /
        respond: { body: "${body}" }
`;
}

/**
 * Starts Portico from `yaml` (written to `portico.yaml` in a fresh folder) with the admin API's events every
 * 50 ms. `control`: serve the control socket too (in the folder's `var/`). `files` are written beside it; those named
 * `*.token` with mode 0600 (a token file others can read is a config error).
 */
export async function startAdmin(yaml: string, options: { logger?: Logger; control?: boolean; files?: Record<string, string | Buffer> } = {}): Promise<AdminPortico> {
  const dir = makeTree(options.files ?? {});
  for (const name of Object.keys(options.files ?? {})) if (name.endsWith('.token')) chmodSync(path.join(dir, name), 0o600);
  const file = path.join(dir, 'portico.yaml');
  writeFileSync(file, yaml);
  const config = parseConfig(yaml, file, dir);
  const server = new Portico(config, options.logger ?? pino({ level: 'silent' }), { control: options.control ?? false, version: 'test', admin: { eventsIntervalMs: 50 } });
  await server.start();
  const url = server.adminUrl;
  if (url === null) throw new Error('no admin listener');
  return {
    server,
    dir,
    file,
    adminPort: Number(new URL(url).port),
    publicPort: server.addresses[0]!.port,
    async stop() {
      await server.stop(100);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An answer, its body as text and (when JSON) parsed. */
export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  json: any;
}

/** Where a call goes: a TCP port on 127.0.0.1 (optionally TLS, trusting `ca`), or a unix socket. */
export type Target = number | { port: number; ca: string } | { socketPath: string };

/** One request with exactly the headers given (Host defaults to 127.0.0.1:PORT), from `localAddress` if given; bounded to 10 s. */
export function call(target: Target, method: string, pathname: string, options: { headers?: Record<string, string>; body?: string | object; localAddress?: string } = {}): Promise<Answer> {
  const body = options.body === undefined ? undefined : typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  return new Promise((resolve, reject) => {
    const done = (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    };
    const common = { method, path: pathname, headers, timeout: 10_000, ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }) };
    const req =
      typeof target === 'number'
        ? httpRequest({ ...common, host: '127.0.0.1', port: target, headers: { host: `127.0.0.1:${target}`, ...headers } }, done)
        : 'socketPath' in target
          ? httpRequest({ ...common, socketPath: target.socketPath, headers: { host: 'localhost', ...headers } }, done)
          : httpsRequest({ ...common, host: '127.0.0.1', port: target.port, ca: target.ca, servername: 'localhost', headers: { host: `127.0.0.1:${target.port}`, ...headers } }, done);
    req.on('timeout', () => req.destroy(new Error(`${method} ${pathname}: no answer within 10 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** One Server-Sent Event. */
export interface SseEvent {
  event: string;
  data: any;
}

/** A Server-Sent Events stream being read. */
export interface SseReader {
  status: number;
  headers: IncomingHttpHeaders;
  events: SseEvent[];
  /** Resolves once the stream has ended (the server closed it). */
  ended: Promise<void>;
  /** Waits (bounded) for an event matching `test` at or after index `from`; returns it. */
  waitFor(test: (event: SseEvent) => boolean, from?: number, timeoutMs?: number): Promise<SseEvent>;
  close(): void;
}

/** Opens an event stream at `pathname` on the admin port with `headers`. */
export function openSse(port: number, pathname: string, headers: Record<string, string>): Promise<SseReader> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: pathname, headers: { host: `127.0.0.1:${port}`, accept: 'text/event-stream', ...headers } }, (res) => {
      const events: SseEvent[] = [];
      const wakers = new Set<() => void>();
      let buffer = '';
      let closed = false;
      const ended = new Promise<void>((done) =>
        res.once('close', () => {
          closed = true;
          for (const wake of wakers) wake();
          done();
        }),
      );
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event !== undefined && data !== undefined) events.push({ event, data: JSON.parse(data) });
        }
        for (const wake of wakers) wake();
      });
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        events,
        ended,
        async waitFor(test, from = 0, timeoutMs = 5_000) {
          const limit = Date.now() + timeoutMs;
          for (;;) {
            const found = events.slice(from).find(test);
            if (found !== undefined) return found;
            if (closed) throw new Error(`the event stream ended; events: ${JSON.stringify(events.map((e) => e.event))}`);
            const left = limit - Date.now();
            if (left <= 0) throw new Error(`no matching event within ${timeoutMs} ms; events: ${JSON.stringify(events.map((e) => e.event))}`);
            await new Promise<void>((wake) => {
              const timer = setTimeout(wake, left);
              const waker = () => {
                clearTimeout(timer);
                wakers.delete(waker);
                wake();
              };
              wakers.add(waker);
            });
          }
        },
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** Logs in with `token`; returns the `Cookie` header value of the session. */
export async function login(port: number, token: string): Promise<string> {
  const answer = await call(port, 'POST', '/login', { headers: { 'content-type': 'application/json' }, body: { token } });
  if (answer.status !== 204) throw new Error(`login: ${answer.status} ${answer.text}`);
  const cookie = String(answer.headers['set-cookie']?.[0] ?? '');
  return cookie.split(';')[0]!;
}

/** The headers the dashboard sends on a POST with its cookie. */
export function dashboardHeaders(port: number, cookie: string): Record<string, string> {
  return { cookie, 'x-portico-admin': '1', 'content-type': 'application/json', origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'same-origin' };
}

/** Waits (bounded) until `GET /jobs/{id}` says the job has finished; returns it. */
export async function finishedJob(target: Target, id: string, headers: Record<string, string>, timeoutMs = 15_000): Promise<any> {
  const limit = Date.now() + timeoutMs;
  for (let i = 0; ; i++) {
    const answer = await call(target, 'GET', `/jobs/${id}`, { headers });
    const job = answer.json?.job;
    if (job?.state === 'done' || job?.state === 'failed') return job;
    if (Date.now() > limit) throw new Error(`job ${id} not finished within ${timeoutMs} ms: ${answer.text}`);
    await new Promise((resolve) => setTimeout(resolve, Math.min(20 * (i + 1), 200)));
  }
}
