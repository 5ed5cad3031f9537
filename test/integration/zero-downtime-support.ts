/**
 * Shared parts of the zero-downtime tests (zero-downtime-*.test.ts): a real `portico run` process whose upstream
 * `app` is spawned from test/fixtures/zd-app.mjs, the `portico` CLI run as a child process, `status --json`, and
 * plain GETs that tell which instance answered.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PorticoProcess, runCli } from '../helpers/process.js';
import { alive, eventually, portRange } from '../helpers/supervise.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The app the tests spawn (see its header for its routes and headers). */
export const ZD_APP = path.join(repo, 'test/fixtures/zd-app.mjs');

/** Options of the `app` upstream's spawn section. */
export interface AppOptions {
  instances?: number;
  /** `spawn.cwd`, relative to the test's folder. */
  cwd?: string;
  env?: Record<string, string>;
  healthTimeout?: string;
  stopTimeout?: string;
  /** `workers: N` (the proxied routes then tell the app the answering worker's pid in X-Worker, echoed back). */
  workers?: number;
}

/** The config text: `/cached` through a cache zone, everything else proxied to the spawned `app`. */
export function configText(ports: string, app: AppOptions = {}): string {
  const env = Object.entries(app.env ?? {}).map(([k, v]) => `${k}: "${v}"`).join(', ');
  const worker = app.workers === undefined ? '' : ', set_headers: { X-Worker: "$pid" }';
  return [
    'listen: ["127.0.0.1:0"]',
    ...(app.workers === undefined ? [] : [`workers: ${app.workers}`]),
    'log: { access: off, level: info }',
    'caches: { main: { memory: 16MB } }',
    'upstreams:',
    '  app:',
    '    spawn:',
    `      command: ["node", ${JSON.stringify(ZD_APP)}]`,
    ...(app.cwd === undefined ? [] : [`      cwd: ${JSON.stringify(app.cwd)}`]),
    `      instances: ${app.instances ?? 3}`,
    `      ports: ${ports}`,
    `      env: { ${env} }`,
    `      stop_timeout: ${app.stopTimeout ?? '5s'}`,
    `      health_timeout: ${app.healthTimeout ?? '10s'}`,
    '    health: { path: /healthz, interval: 200ms, rise: 1, fall: 2 }',
    '    retries: 2',
    'sites:',
    '  - routes:',
    '      - path: /cached',
    '        proxy: { upstream: app, cache: { zone: main }' + worker + ' }',
    '      - path: /',
    '        proxy: { upstream: app' + worker + ' }',
    '',
  ].join('\n');
}

/** A running Portico with spawned instances, in a folder of its own. */
export interface Running {
  dir: string;
  file: string;
  ports: string;
  portico: PorticoProcess;
  base: string;
  /** Stops Portico (SIGTERM) if still running, checks no app process is left, removes the folder. */
  close(): Promise<void>;
}

/** A folder for one test (removed by `close`, or by the caller). */
export function testDir(name: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `portico-zd-${name}-`));
}

/** Starts `portico run` on `configText(...)` in `dir` (a new folder when absent) and waits for its instances. */
export async function startRunning(name: string, app: AppOptions = {}, dir = testDir(name)): Promise<Running> {
  const range = portRange(2 * (app.instances ?? 3) + 2);
  const file = path.join(dir, 'portico.yaml');
  writeFileSync(file, configText(range.text, app));
  const portico = await PorticoProcess.start(file, dir);
  const base = `http://127.0.0.1:${portico.port}`;
  const seenPids = new Set<number>();
  const running: Running = {
    dir,
    file,
    ports: range.text,
    portico,
    base,
    async close() {
      try {
        for (const i of (await status(file).catch(() => ({ instances: [] }))).instances) if (i.pid !== undefined) seenPids.add(i.pid);
        await portico.stop();
        // The app processes end with Portico (a graceful stop waits for them); bounded.
        await eventually(() => [...seenPids].every((pid) => !alive(pid)), 'no app process left', 10_000).catch(() => {});
        for (const pid of seenPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  await eventually(async () => (await status(file)).instances.every((i) => i.state === 'ready' && i.pid !== undefined), 'every instance ready', 15_000);
  return running;
}

export type { CliResult } from '../helpers/process.js';
/** Runs `portico ...args` as a child process, bounded: see `runCli`. */
export const cli = runCli;

/** One spawned instance as `portico status --json` shows it. */
export interface InstanceStatus {
  slot: string;
  state: string;
  pid?: number;
  port?: number;
  restarts: number;
}

/** `portico status --json -c file`: its result (throws when the command fails). */
export async function status(file: string): Promise<{ instances: InstanceStatus[]; running: unknown; pid: number }> {
  const { code, stdout, stderr } = await cli(['status', '--json', '-c', file], path.dirname(file), 10_000);
  if (code !== 0) throw new Error(`portico status exited ${code}: ${stderr}${stdout}`);
  const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as { instances: InstanceStatus[]; running: unknown; pid: number };
  return result;
}

/** One answer: status, the instance headers, the body's length and whether it came whole. */
export interface Answer {
  status: number;
  pid: number;
  slot: string;
  version: string;
  bytes: number;
  body: string;
  /** The response ended normally (not cut) and its byte count matches Content-Length when there is one. */
  complete: boolean;
}

/** GET `base``pathname` on a fresh connection (bounded). */
export function get(base: string, pathname: string, timeoutMs = 15_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = http.get(`${base}${pathname}`, { agent: false, timeout: timeoutMs }, (response) => {
      let body = '';
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (body.length < 4096) body += chunk.toString();
      });
      const answer = (complete: boolean): Answer => ({
        status: response.statusCode ?? 0,
        pid: Number(response.headers['x-pid']),
        slot: String(response.headers['x-slot'] ?? ''),
        version: String(response.headers['x-version'] ?? ''),
        bytes,
        body,
        complete,
      });
      response.once('end', () => {
        const length = response.headers['content-length'];
        resolve(answer(response.complete && (length === undefined || Number(length) === bytes)));
      });
      response.once('error', () => resolve(answer(false)));
    });
    request.once('timeout', () => request.destroy(new Error('timeout')));
    request.once('error', reject);
  });
}

/** Runs `load` phases' bookkeeping: the pids among `seen` header values. */
export function pidsOf(seen: ReadonlyMap<string, number>): Set<number> {
  return new Set([...seen.keys()].filter((k) => /^\d+$/.test(k)).map(Number));
}
