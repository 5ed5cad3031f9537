/**
 * The operator's actions across processes: a drain kept in the state directory survives a restart of Portico as a
 * real `portico run` process; with `workers: 2` (a real primary, operator-driver.ts, and its two worker processes)
 * an action reaches every worker, a replaced worker, a reload and a restart, and a purge by URL or prefix is made by
 * every worker with the counts summed.
 */
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { makeTree } from '../helpers/portico.js';
import { PorticoProcess } from '../helpers/process.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import type { DriverRequest } from './operator-driver.js';

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

const DRIVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'operator-driver.js');

/** Backends a, b, c answering `name worker-pid` (the worker's pid from the X-Worker header Portico sets), cacheable. */
async function backends(): Promise<Map<string, TestUpstream>> {
  const out = new Map<string, TestUpstream>();
  for (const name of ['a', 'b', 'c']) {
    out.set(
      name,
      await startUpstream((req, res) => {
        res.writeHead(200, { 'Cache-Control': 'max-age=600', 'Content-Type': 'text/plain' });
        res.end(`${name} ${req.headers['x-worker'] ?? '-'}`);
      }),
    );
  }
  return out;
}

/** One GET on a fresh connection: the backend's name and the worker's pid from the body, and the Cache-Status. */
function get(port: number, pathname: string, host?: string): Promise<{ status: number; server: string; worker: number; cache: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, agent: false, timeout: 5000, headers: host === undefined ? {} : { Host: host } }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.once('end', () => {
        const [server = '', worker = '0'] = body.split(' ');
        resolve({ status: res.statusCode ?? 0, server, worker: Number(worker), cache: String(res.headers['cache-status'] ?? '') });
      });
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
  });
}

/** Requests on fresh connections until `done` says so (at most `max`): the backends' counts and the workers seen. */
async function sample(port: number, max: number, done: (seen: { servers: Record<string, number>; workers: Set<number>; count: number }) => boolean = () => false) {
  const seen = { servers: {} as Record<string, number>, workers: new Set<number>(), count: 0 };
  for (let i = 0; i < max && !done(seen); i++) {
    const res = await get(port, `/s${i}`);
    assert.equal(res.status, 200);
    seen.servers[res.server] = (seen.servers[res.server] ?? 0) + 1;
    seen.workers.add(res.worker);
    seen.count++;
  }
  return seen;
}

function configText(ups: Map<string, TestUpstream>, extra = ''): string {
  const list = [...ups].map(([name, up]) => `      - { url: "${up.url}", name: ${name} }`).join('\n');
  const proxy = (cache: string) => `        proxy: { upstream: app${cache}, set_headers: { X-Worker: "$pid" } }\n`;
  return (
    `listen: ["127.0.0.1:0"]\nlog: { access: off, level: warn }\n${extra}state_dir: state\ncaches: { z: { memory: 1MB } }\n` +
    `upstreams:\n  app:\n${extra.includes('workers') ? '    keepalive: 8\n' : ''}    servers:\n${list}\n` +
    `sites:\n  - hosts: [a.example]\n    routes:\n      - path: /\n${proxy(', cache: { zone: z }')}` +
    `  - hosts: [a.example.org]\n    routes:\n      - path: /\n${proxy(', cache: { zone: z }')}` +
    `  - routes:\n      - path: /\n${proxy('')}`
  );
}

/** The primary of `workers: N` in its own process (operator-driver.ts), asked over IPC. */
class Driver {
  readonly child: ChildProcess;
  port = 0;
  #id = 0;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  stderr = '';

  private constructor(file: string, cwd: string) {
    this.child = fork(DRIVER, [file], { cwd, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.child.on('message', (message: { id?: number; result?: unknown; error?: { message: string; status?: number } }) => {
      const waiting = message.id === undefined ? undefined : this.#pending.get(message.id);
      if (waiting === undefined) return;
      this.#pending.delete(message.id!);
      if (message.error !== undefined) waiting.reject(Object.assign(new Error(message.error.message), { status: message.error.status }));
      else waiting.resolve(message.result);
    });
  }

  /** Starts it and waits (15 s at most) until its workers serve. */
  static async start(file: string, cwd: string): Promise<Driver> {
    const driver = new Driver(file, cwd);
    const ready = new Promise<{ port: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the driver did not start within 15 s: ${driver.stderr}`)), 15_000);
      driver.child.on('message', (message: { ready?: { port: number } }) => {
        if (message.ready === undefined) return;
        clearTimeout(timer);
        resolve(message.ready);
      });
      driver.child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the driver exited (${code}): ${driver.stderr}`));
      });
    });
    driver.port = (await ready).port;
    return driver;
  }

  /** One request to the primary (45 s at most: a reload waits for a worker still starting). */
  ask<T>(request: DistributiveOmit<DriverRequest, 'id'>): Promise<T> {
    const id = ++this.#id;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${request.op} within 45 s`)), 45_000);
      this.#pending.set(id, {
        resolve: (value) => (clearTimeout(timer), resolve(value as T)),
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
      this.child.send({ ...request, id });
    });
  }

  /** Stops the primary and its workers (killed after 15 s). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    const kill = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await this.ask({ op: 'stop' }).catch(() => this.child.kill('SIGTERM'));
    await exited;
    clearTimeout(kill);
  }
}

describe('a drain kept in the state directory survives a restart as a real portico run process', { timeout: 30_000 }, () => {
  test('drained in one Portico (servers.json), the `portico run` started next on the same state_dir sends b nothing', async () => {
    const ups = await backends();
    const dir = makeTree({ 'portico.yaml': configText(ups) });
    const file = path.join(dir, 'portico.yaml');
    try {
      const first = new Portico(parseConfig(readFileSync(file, 'utf8'), file, dir), pino({ level: 'silent' }));
      await first.start();
      await first.serverAction('app', 'b', { action: 'drain' });
      await first.stop(100);
      const running = await PorticoProcess.start(file, dir);
      try {
        const seen = await sample(running.port, 12);
        assert.deepEqual(seen.servers, { a: 6, c: 6 });
      } finally {
        await running.stop();
      }
    } finally {
      for (const up of ups.values()) await up.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('operator actions and purges with workers: 2 (a real primary and two worker processes)', { timeout: 90_000 }, () => {
  let ups: Map<string, TestUpstream>;
  let dir: string;
  let file: string;
  let driver: Driver;

  before(async () => {
    ups = await backends();
    dir = makeTree({ 'portico.yaml': configText(ups, 'workers: 2\n') });
    file = path.join(dir, 'portico.yaml');
    driver = await Driver.start(file, dir);
  });
  after(async () => {
    await driver?.stop();
    for (const up of ups.values()) await up.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a drain in the primary reaches both workers: no new request goes to b, and both worker processes answer', async (t) => {
    const status = await driver.ask<{ state: string; admin: string; id: string }>({ op: 'action', upstream: 'app', server: 'b', action: { action: 'drain' } });
    assert.deepEqual([status.id, status.state, status.admin], ['b', 'draining', 'draining']);
    const seen = await sample(driver.port, 80, (s) => s.workers.size === 2 && Object.values(s.servers).reduce((a, b) => a + b, 0) >= 20);
    t.diagnostic(`${JSON.stringify(seen.servers)} from workers ${[...seen.workers].join(', ')}`);
    assert.equal(seen.servers.b, undefined);
    assert.equal(seen.workers.size, 2, 'both workers answered');
  });

  test('unknown server: 404 naming the known ids; bad weight: 400 (checked by the primary)', async () => {
    await assert.rejects(driver.ask({ op: 'action', upstream: 'app', server: 'zz', action: { action: 'drain' } }), (err: Error & { status?: number }) => {
      assert.equal(err.status, 404);
      assert.match(err.message, /servers: a, b, c/);
      return true;
    });
    await assert.rejects(driver.ask({ op: 'action', upstream: 'app', server: 'a', action: { action: 'weight', weight: 0 } }), (err: Error & { status?: number }) => err.status === 400);
  });

  test('a worker killed and replaced starts with the drain (the primary\'s init): the new worker sends b nothing', async (t) => {
    const before = await driver.ask<Array<{ slot: number; pid: number }>>({ op: 'workers' });
    process.kill(before[0]!.pid, 'SIGKILL');
    let replaced: number | undefined;
    for (let i = 0; i < 150 && replaced === undefined; i++) {
      const now = await driver.ask<Array<{ slot: number; pid?: number }>>({ op: 'workers' });
      const pid = now.find((w) => w.slot === before[0]!.slot)?.pid;
      if (pid !== undefined && pid !== before[0]!.pid) replaced = pid;
      else await new Promise<void>((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(replaced !== undefined, 'the worker was replaced within 15 s');
    for (let i = 0; i < 150 && !driver.stderr.includes(`serving (pid ${replaced})`); i++) await new Promise<void>((resolve) => setTimeout(resolve, 100));
    assert.ok(driver.stderr.includes(`serving (pid ${replaced})`), `the new worker serves within 15 s:\n${driver.stderr}`);
    const seen = await sample(driver.port, 150, (s) => s.workers.has(replaced!) && s.count >= 20);
    t.diagnostic(`${JSON.stringify(seen.servers)} from workers ${[...seen.workers].join(', ')} (new: ${replaced})`);
    assert.ok(seen.workers.has(replaced), 'the new worker answered');
    assert.equal(seen.servers.b, undefined);
  });

  test('a weight reaches every worker, and a reload (the upstream rebuilt) keeps the drain and the weight', async (t) => {
    await driver.ask({ op: 'action', upstream: 'app', server: 'a', action: { action: 'weight', weight: 3 } });
    const weighted = await sample(driver.port, 40);
    t.diagnostic(`weight a=3: ${JSON.stringify(weighted.servers)}`);
    assert.equal(weighted.servers.b, undefined);
    // Each worker runs its own smooth weighted round robin: 3 of 4 to a in each, give or take one a worker.
    assert.ok((weighted.servers.a ?? 0) >= 27 && (weighted.servers.a ?? 0) <= 33, JSON.stringify(weighted.servers));
    writeFileSync(file, configText(ups, 'workers: 2\n').replace('keepalive: 8', 'keepalive: 9'));
    await driver.ask({ op: 'reload' });
    const reloaded = await sample(driver.port, 40);
    t.diagnostic(`after the reload: ${JSON.stringify(reloaded.servers)}`);
    assert.equal(reloaded.servers.b, undefined);
    assert.ok((reloaded.servers.a ?? 0) >= 27, JSON.stringify(reloaded.servers));
  });

  test('purge by url_prefix and by url: every worker purges its own copies, the counts are summed; a.example.org is untouched by http://a.example/img', async (t) => {
    const fetchedBy = (host: string, url: string): Set<string> =>
      new Set([...ups.values()].flatMap((up) => up.requests.filter((r) => r.headers.host === host && r.url === url).map((r) => String(r.headers['x-worker']))));
    // Each worker stores its own copy on its first miss: ask until both have one.
    for (let i = 0; i < 100 && fetchedBy('a.example', '/img/x').size < 2; i++) await get(driver.port, '/img/x', 'a.example');
    for (let i = 0; i < 100 && fetchedBy('a.example.org', '/img/x').size < 2; i++) await get(driver.port, '/img/x', 'a.example.org');
    await get(driver.port, '/images', 'a.example');
    assert.equal(fetchedBy('a.example', '/img/x').size, 2, 'both workers store /img/x');
    const images = fetchedBy('a.example', '/images').size;
    const byPrefix = await driver.ask<{ purged: number; unanswered?: number[] }>({ op: 'purge', zone: 'z', target: { url_prefix: 'http://a.example/img' } });
    t.diagnostic(`url_prefix: ${JSON.stringify(byPrefix)}; /images stored by ${images} worker(s)`);
    assert.deepEqual(byPrefix, { purged: 2 });
    const byUrl = await driver.ask<{ purged: number }>({ op: 'purge', zone: 'z', target: { url: 'http://a.example.org/img/x' } });
    assert.deepEqual(byUrl, { purged: 2 });
    assert.deepEqual(await driver.ask({ op: 'purge', zone: 'z', target: { url: 'http://a.example/images' } }), { purged: images });
    await assert.rejects(driver.ask({ op: 'purge', zone: 'nope', target: { url: 'http://a.example/' } }), (err: Error & { status?: number }) => err.status === 404);
  });

  test('a restart of Portico (a new primary on the same state directory) starts both workers with the drain and the weight', async (t) => {
    await driver.stop();
    driver = await Driver.start(file, dir);
    const seen = await sample(driver.port, 100, (s) => s.workers.size === 2 && s.count >= 40);
    t.diagnostic(`after the restart: ${JSON.stringify(seen.servers)} from workers ${[...seen.workers].join(', ')}`);
    assert.equal(seen.servers.b, undefined);
    assert.equal(seen.workers.size, 2);
    assert.ok((seen.servers.a ?? 0) >= seen.count * 0.6, JSON.stringify(seen.servers));
    await driver.ask({ op: 'action', upstream: 'app', server: 'b', action: { action: 'enable' } });
    assert.deepEqual(JSON.parse(readFileSync(path.join(dir, 'state', 'servers.json'), 'utf8')), { upstreams: { app: { a: { admin: 'enabled', weight: 3 } } } });
    const back = await sample(driver.port, 30);
    assert.ok((back.servers.b ?? 0) > 0, JSON.stringify(back.servers));
  });
});
