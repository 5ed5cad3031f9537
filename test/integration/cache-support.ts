/**
 * Shared by the cache integration tests: an origin whose behaviour each test sets per path, requests with the
 * fields a test needs, and the parts of an RFC 9211 Cache-Status.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { httpRequest, type FullResponse } from './proxy-support.js';

/** What an origin path does with a request. */
export type OriginHandler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

/** A test origin: a handler per path (query ignored), and the requests it saw per path. */
export interface Origin {
  upstream: TestUpstream;
  url: string;
  /** Sets what `path` answers; `n` is the 1-based count of requests to it so far. */
  on(path: string, handler: OriginHandler): void;
  /** Requests the origin saw for `path` (query included in the match when `path` has one). */
  seen(path: string): TestUpstream['requests'];
  stop(): Promise<void>;
}

/** Starts an origin; a path with no handler answers 404 with `Cache-Control: no-store`. */
export async function startOrigin(): Promise<Origin> {
  const handlers = new Map<string, OriginHandler>();
  const counts = new Map<string, number>();
  const upstream = await startUpstream((req, res) => {
    const path = req.url!.includes('?') && !handlers.has(req.url!) ? req.url!.slice(0, req.url!.indexOf('?')) : req.url!;
    const n = (counts.get(path) ?? 0) + 1;
    counts.set(path, n);
    const handler = handlers.get(path);
    if (handler === undefined) {
      res.writeHead(404, { 'cache-control': 'no-store', 'content-length': 9 });
      res.end('not found');
      return;
    }
    handler(req, res, n);
  });
  return {
    upstream,
    url: upstream.url,
    on: (path, handler) => void handlers.set(path, handler),
    seen: (path) => upstream.requests.filter((r) => r.url === path || (!path.includes('?') && r.url.startsWith(`${path}?`))),
    stop: () => upstream.stop(),
  };
}

/** A handler that answers 200 with `body` and the given header fields. */
export function answer(headers: Record<string, string | number | string[]>, body: string | ((req: IncomingMessage, n: number) => string)): OriginHandler {
  return (req, res, n) => {
    const text = typeof body === 'string' ? body : body(req, n);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(req.method === 'HEAD' ? undefined : text);
  };
}

/** A GET (or other method) to Portico on a fresh connection. */
export function get(port: number, path: string, headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<FullResponse> {
  // Node sends a DELETE body without Content-Length unless told: give one, so the body is framed.
  const framed = body === undefined ? headers : { 'content-length': String(Buffer.byteLength(body)), ...headers };
  return httpRequest(port, path, { method, headers: framed, body });
}

/** The response's Cache-Status value (one field expected). */
export function cacheStatus(res: FullResponse): string {
  const value = res.headers['cache-status'];
  if (value === undefined) throw new Error(`no Cache-Status on a ${res.status} response`);
  return String(value);
}

/**
 * The `ttl` of a hit's Cache-Status, checked to lie in [min, max]. Date has whole seconds, so a response is up
 * to a second old on arrival (apparent age): tests allow for that and for their own run time.
 */
export function assertTtl(res: FullResponse, min: number, max: number): void {
  const status = cacheStatus(res);
  const match = /^Portico; hit; ttl=(-?\d+)(;|$)/.exec(status);
  if (match === null) throw new Error(`not a hit with a ttl: ${status}`);
  const ttl = Number(match[1]);
  if (ttl < min || ttl > max) throw new Error(`ttl ${ttl} not in [${min}, ${max}]: ${status}`);
}

/** Whether a response was served from the cache. */
export function isHit(res: FullResponse): boolean {
  return /^Portico; hit\b/.test(cacheStatus(res));
}

/** An HTTP-date `offsetSeconds` from now. */
export function httpDate(offsetSeconds = 0): string {
  return new Date(Date.now() + offsetSeconds * 1000).toUTCString();
}

/**
 * The config of a Portico in front of `originUrl` with one 16 MB memory zone `main`: `routes` (YAML route items,
 * indented as list entries under `routes:`) come before the cached catch-all `/`.
 */
export function cacheConfig(originUrl: string, routes = ''): string {
  return `caches:
  main: { memory: 16MB, max_object: 1MB }
upstreams:
  origin: { servers: [{ url: "${originUrl}" }], retries: 0 }
sites:
  - routes:
${routes}      - path: /
        proxy: { upstream: origin, cache: { zone: main } }
`;
}
