/**
 * Cluster test helpers on top of `boxes.ts`: a box config that proxies to a test backend (with an admin listener
 * whose GET /status is open to loopback), each box's cluster status, and a bounded load across every box whose
 * counts come back per box and summed (a feature's test adds its own assertions to the same run).
 */
import { once } from 'node:events';
import tls from 'node:tls';
import type { ClusterStatus, StatusReport } from '../../src/control/admin-types.js';
import type { Box, Boxes } from './boxes.js';
import { describeLoad, failures, startLoad, type LoadOptions, type LoadReport } from './load.js';

/** What a proxy box's config may add. */
export interface ProxyBoxOptions {
  /** The backend's URL (`http://127.0.0.1:PORT`). */
  backend: string;
  /** More YAML at the top level (a cache zone, another upstream). */
  extra?: string;
  /** More route entries before the proxy route (indented as `      - path: ...`). */
  routes?: string;
}

/**
 * A box's config (after the `cluster` section): a listener on the box's address, an admin listener beside it
 * (GET /status and /metrics open to loopback), no access log, and every path proxied to the backend.
 */
export function proxyBox(options: ProxyBoxOptions): (box: { host: string }) => string {
  return (box) => `listen: ["${box.host}:0"]
log: { access: off }
admin:
  listen: "${box.host}:0"
  token_env: PORTICO_CLUSTER_TEST_ADMIN_TOKEN
  open_reads: true
${options.extra ?? ''}upstreams:
  app:
    servers: ["${options.backend}"]
sites:
  - routes:
${options.routes ?? ''}      - path: /
        proxy: { upstream: app }
`;
}

/** Box `box`'s GET /status (its admin listener). */
export async function boxStatus(box: Box): Promise<StatusReport> {
  if (box.admin === undefined) throw new Error(`${box.name} has no admin listener`);
  const res = await fetch(new URL('status', box.admin), { headers: { connection: 'close' }, signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`${box.name} GET /status: ${res.status} ${await res.text()}`);
  return (await res.json()) as StatusReport;
}

/** Box `box`'s cluster part of /status (fails when there is none). */
export async function clusterOf(box: Box): Promise<ClusterStatus> {
  const status = await boxStatus(box);
  if (status.cluster === undefined) throw new Error(`${box.name}'s /status has no cluster part`);
  return status.cluster;
}

/**
 * Waits until box `box`'s /status lists exactly the boxes `names` (in name order), each seen by a heartbeat at or
 * after `since` (ms since the epoch; default any); returns that cluster part.
 */
export async function waitForBoxes(box: Box, names: readonly string[], since = 0, timeoutMs = 10_000): Promise<ClusterStatus> {
  const limit = Date.now() + timeoutMs;
  let last: ClusterStatus | undefined;
  for (;;) {
    last = await clusterOf(box).catch(() => last);
    const listed = last?.boxes.map((b) => b.name).join() === names.join();
    if (listed && last!.boxes.every((b) => b.last_seen !== null && Date.parse(b.last_seen) >= since)) return last!;
    if (Date.now() > limit) throw new Error(`${box.name} did not list ${names.join(', ')} within ${timeoutMs} ms: ${JSON.stringify(last?.boxes.map((b) => [b.name, b.last_seen]))}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Box `box`'s /metrics text. */
export async function boxMetrics(box: Box): Promise<string> {
  if (box.admin === undefined) throw new Error(`${box.name} has no admin listener`);
  const res = await fetch(new URL('metrics', box.admin), { headers: { connection: 'close' }, signal: AbortSignal.timeout(5000) });
  return res.text();
}

/** The counts of one load run across boxes. */
export interface ClusterLoadReport {
  /** Each box's report, by box name. */
  boxes: Map<string, LoadReport>;
  sent: number;
  ok: number;
  /** Failures of every kind (5xx, refused, reset, timeouts, stale) over every box. */
  failed: number;
}

/** A load running on every box: `stop()` ends it and returns the counts. */
export interface ClusterLoad {
  stop(): Promise<ClusterLoadReport>;
  /** Requests answered so far over every box (ok or not). */
  answered(): number;
}

/**
 * Starts the same bounded load on every box of `boxes` (`rate` requests/s on each, `maxMs` at most); `options`
 * as `startLoad`'s, without its base.
 */
export function loadAcrossBoxes(boxes: Boxes, options: Omit<LoadOptions, 'base'>): ClusterLoad {
  const running = boxes.boxes.map((box) => ({ box, load: startLoad({ ...options, base: box.origin }) }));
  return {
    answered: () => running.reduce((n, { load }) => n + load.report.ok + failures(load.report), 0),
    async stop() {
      const reports = await Promise.all(running.map(async ({ box, load }) => [box.name, await load.stop()] as const));
      const byBox = new Map(reports);
      let sent = 0;
      let ok = 0;
      let failed = 0;
      for (const report of byBox.values()) {
        sent += report.sent;
        ok += report.ok;
        failed += failures(report);
      }
      return { boxes: byBox, sent, ok, failed };
    },
  };
}

/** A report as lines for `t.diagnostic`: one per box, then the totals. */
export function describeClusterLoad(report: ClusterLoadReport): string[] {
  return [...[...report.boxes].map(([name, box]) => `${name}: ${describeLoad(box)}`), `all boxes: sent ${report.sent}, ok ${report.ok}, failed ${report.failed}`];
}

/** A TLS connection to `host:port` (resuming `session` when given) that sends one GET (HTTP/1.0, with `cookie` if
 * given): whether the session was resumed, the body, the last ticket the server gave, the Set-Cookie value. */
export async function tlsVisit(host: string, port: number, session?: Buffer, cookie?: string): Promise<{ reused: boolean; body: string; session: Buffer | undefined; setCookie: string | undefined }> {
  // A client names the site (SNI), as every browser does: Node 24's client (OpenSSL 3.5) offers a session to another
  // address only under the server name it was made for, and the boxes are at different addresses here.
  const socket = tls.connect({ host, port, servername: 'shop.test', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], ...(session === undefined ? {} : { session }) });
  try {
    let ticket: Buffer | undefined;
    socket.on('session', (s: Buffer) => (ticket = s));
    socket.setTimeout(5000, () => socket.destroy(new Error(`no answer from ${host}:${port} within 5 s`)));
    await once(socket, 'secureConnect');
    const reused = socket.isSessionReused();
    socket.write(`GET / HTTP/1.0\r\nHost: ${host}\r\nConnection: close\r\n${cookie === undefined ? '' : `Cookie: ${cookie}\r\n`}\r\n`);
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    await once(socket, 'end');
    const head = text.slice(0, text.indexOf('\r\n\r\n'));
    const setCookie = /^set-cookie: ([^;\r\n]+)/im.exec(head)?.[1];
    return { reused, body: text.slice(text.indexOf('\r\n\r\n') + 4), session: ticket, setCookie };
  } finally {
    socket.destroy();
  }
}

/** A call to `box`'s admin API with the Bearer `token` (a JSON body for a POST); its status and JSON answer. */
export async function adminCall(box: Box, token: string, method: 'GET' | 'POST', path: string, body?: object): Promise<{ status: number; json: any }> {
  const res = await fetch(new URL(path, box.admin), {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, json: await res.json() };
}
