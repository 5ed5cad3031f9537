/**
 * `workers: 2` in a real `portico run`: a primary and two worker processes. Which worker answered is seen through
 * `$pid`, forwarded to a backend as `X-Worker` and echoed back in its body (what an operator would use too).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { requestText } from '../helpers/http-text.js';
import { makeTree } from '../helpers/portico.js';
import { PorticoProcess } from '../helpers/process.js';
import { alive } from '../helpers/supervise.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const dir = makeTree({});
after(() => rmSync(dir, { recursive: true, force: true }));

/** The parent pid of a process (Linux /proc), or undefined when it is gone. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/** The workers' pids as the primary's lines name them (the last line per slot wins). */
function workerPids(stderr: string): Map<number, number> {
  const pids = new Map<number, number>();
  for (const match of stderr.matchAll(/^portico: worker (\d+) serving \(pid (\d+)\)$/gm)) pids.set(Number(match[1]), Number(match[2]));
  return pids;
}

let backend: TestUpstream;
let version = 'v1';
let healthHits: number[] = [];
let healthStatus = 200;

before(async () => {
  backend = await startUpstream((req, res) => {
    if (req.url === '/healthz') {
      healthHits.push(Date.now());
      res.writeHead(healthStatus);
      return res.end();
    }
    const headers: Record<string, string> = { 'content-type': 'text/plain' };
    if (req.url?.startsWith('/cached')) headers['cache-control'] = 'max-age=60';
    res.writeHead(200, headers);
    res.end(`${version}:${String(req.headers['x-worker'])}`);
  });
});
after(() => backend.stop());

function configText(body = 'one'): string {
  return `listen: ["127.0.0.1:0"]
workers: 2
log: { access: off, level: warn }
caches: { main: { memory: 8MB }, ondisk: { memory: 1MB, disk: { path: ./disk-cache, size: 8MB } } }
upstreams:
  app:
    servers: ["${backend.url}"]
    health: { path: /healthz, interval: 300ms, timeout: 1s, rise: 1, fall: 1 }
sites:
  - routes:
      - { path: /version, respond: { body: ${body} } }
      - path: /limited
        rate_limit: { rate: 10/s }
        respond: { body: limited }
      - path: /cached
        proxy: { upstream: app, set_headers: { X-Worker: "$pid" }, cache: { zone: main } }
      - path: /
        proxy: { upstream: app, set_headers: { X-Worker: "$pid" } }
`;
}

describe('workers: 2', () => {
  let portico: PorticoProcess;
  const file = path.join(dir, 'workers.yaml');

  before(async () => {
    writeFileSync(file, configText());
    portico = await PorticoProcess.start(file, dir);
  });
  after(() => portico.stop());

  test('requests are answered by two worker processes, children of the one portico run started', async (t) => {
    const pids = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const answer = await requestText(portico.port, '/who');
      assert.equal(answer.status, 200);
      pids.add(answer.body.split(':')[1]!);
    }
    t.diagnostic(`20 requests, worker pids: ${[...pids].join(', ')}`);
    assert.equal(pids.size, 2);
    for (const pid of pids) assert.equal(parentOf(Number(pid)), portico.child.pid);
    assert.deepEqual(new Set([...workerPids(portico.stderr).values()].map(String)), pids);
  });

  test("each worker opens its own folder of a cache's disk tier (<path>/w1, <path>/w2), never a shared one", () => {
    const folders = readdirSync(path.join(dir, 'disk-cache')).sort();
    assert.deepEqual(folders, ['w1', 'w2']);
  });

  test('active health checks run once, in the primary: one /healthz per interval, not one per worker', async (t) => {
    const from = Date.now();
    const start = healthHits.length;
    // 2.4 s: 8 intervals of 300 ms; checks in each worker too would make about 16.
    await new Promise<void>((resolve) => setTimeout(resolve, 2400));
    const hits = healthHits.slice(start).length;
    const elapsed = Date.now() - from;
    t.diagnostic(`${hits} health checks in ${elapsed} ms (interval 300 ms)`);
    assert.ok(hits <= Math.ceil(elapsed / 300) + 2, `${hits} checks in ${elapsed} ms`);
    assert.ok(hits >= Math.floor(elapsed / 300) - 3, `${hits} checks in ${elapsed} ms`);
  });

  test("the primary's verdict reaches every worker: a server its checks mark down is used by none", async (t) => {
    const mark = portico.stderr.length;
    healthStatus = 503;
    try {
      await portico.waitForLine(/server is down/, mark, 5000);
      // The verdict travels by IPC while the primary's log line travels here: wait (bounded) for its first effect.
      for (let i = 0; i < 100 && (await requestText(portico.port, '/who')).status === 200; i++);
      const before = backend.requests.filter((r) => r.url === '/who').length;
      const statuses = [];
      for (let i = 0; i < 10; i++) statuses.push((await requestText(portico.port, '/who')).status);
      t.diagnostic(`answers while down: ${statuses.join(' ')}`);
      assert.ok(statuses.every((s) => s === 502 || s === 503), statuses.join(' '));
      assert.equal(backend.requests.filter((r) => r.url === '/who').length, before);
    } finally {
      const up = portico.stderr.length;
      healthStatus = 200;
      await portico.waitForLine(/server is up/, up, 5000);
    }
    // The verdict travels by IPC while the primary's log line travels to this test: a first answer may still be
    // the old verdict's; within a second both workers use the server again.
    const pids = new Set<string>();
    const limit = Date.now() + 1000;
    let last = 0;
    while (Date.now() < limit && pids.size < 2) {
      const answer = await requestText(portico.port, '/who');
      last = answer.status;
      if (answer.status === 200) pids.add(answer.body.split(':')[1]!);
    }
    assert.equal(pids.size, 2, `both workers use the server again once it is up (last answer ${last})`);
  });

  test('an invalidation in one worker reaches the other: a stale answer only before its message arrives (under 250 ms), fresh after', async (t) => {
    version = 'v1';
    const filled = new Set<string>();
    for (let i = 0; i < 20 && filled.size < 2; i++) {
      const answer = await requestText(portico.port, '/cached');
      assert.match(answer.body, /^v1:/);
      filled.add(answer.body.split(':')[1]!);
    }
    assert.equal(filled.size, 2, 'both workers hold the entry');
    // Both answer it from their caches now.
    const hitsBefore = backend.requests.filter((r) => r.url === '/cached' && r.method === 'GET').length;
    for (let i = 0; i < 6; i++) assert.match((await requestText(portico.port, '/cached')).body, /^v1:/);
    assert.equal(backend.requests.filter((r) => r.url === '/cached' && r.method === 'GET').length, hitsBefore);
    version = 'v2';
    const post = await requestText(portico.port, '/cached', { method: 'POST' });
    assert.equal(post.status, 200);
    const posted = Date.now();
    const staleAt: number[] = [];
    const fresh = new Set<string>();
    for (let i = 0; i < 40 && fresh.size < 2; i++) {
      const answer = await requestText(portico.port, '/cached');
      if (answer.body.startsWith('v1:')) staleAt.push(Date.now() - posted);
      else fresh.add(answer.body.split(':')[1]!);
    }
    const after = [];
    for (let i = 0; i < 10; i++) after.push((await requestText(portico.port, '/cached')).body);
    t.diagnostic(`stale answers right after the POST: ${staleAt.length} (at ${staleAt.join(', ')} ms); fresh from ${fresh.size} workers`);
    assert.equal(fresh.size, 2);
    // The purge travels worker → primary → worker in well under a millisecond; a request may only overtake it
    // when it arrives in the same instant (the POST's answer can go out before its invalidation is done).
    assert.ok(staleAt.every((ms) => ms < 250), staleAt.join(' '));
    assert.ok(after.every((body) => body.startsWith('v2:')), after.join(' '));
  });

  test('a rate limit of 10/s holds across both workers (rate/2 each), not 20/s', async (t) => {
    const started = Date.now();
    const statuses: number[] = [];
    // 40 requests, 4 at a time, each on its own connection: spread over both workers.
    for (let i = 0; i < 10; i++) {
      const batch = await Promise.all([0, 1, 2, 3].map(() => requestText(portico.port, '/limited')));
      statuses.push(...batch.map((a) => a.status));
    }
    const elapsed = (Date.now() - started) / 1000;
    const ok = statuses.filter((s) => s === 200).length;
    const limited = statuses.filter((s) => s === 429).length;
    const allowed = 10 + 10 * elapsed;
    t.diagnostic(`${ok} answered, ${limited} limited in ${elapsed.toFixed(2)} s (10/s with a burst of 10 allows ${allowed.toFixed(1)}; 2×: ${(2 * allowed).toFixed(1)})`);
    assert.equal(ok + limited, 40);
    assert.ok(ok <= Math.ceil(allowed) + 1, `${ok} answered`);
    // At least one worker's burst (the split over the workers is the kernel's).
    assert.ok(ok >= 5, `${ok} answered`);
  });

  test('SIGHUP to the primary reloads every worker; an invalid config changes nothing', async () => {
    const pids = [...workerPids(portico.stderr).values()];
    const { line } = await portico.reload(configText('two'));
    assert.match(line, /config reloaded/);
    for (let i = 0; i < 10; i++) assert.equal((await requestText(portico.port, '/version')).body, 'two');
    const refused = await portico.reload('workers: [\n');
    assert.match(refused.line, /reload refused/);
    for (let i = 0; i < 10; i++) assert.equal((await requestText(portico.port, '/version')).body, 'two');
    // The same workers serve: a reload replaces no process.
    assert.deepEqual([...workerPids(portico.stderr).values()], pids);
    assert.ok(pids.every(alive));
    // Edited without a reload: nothing serves this until SIGHUP (see the SIGKILL test's replacement).
    writeFileSync(file, configText());
  });

  test('a worker killed with SIGKILL is replaced; under load the other worker fails no request', async (t) => {
    const victim = workerPids(portico.stderr).get(1)!;
    const mark = portico.stderr.length;
    const results: Array<{ at: number; ok: boolean; pid?: string }> = [];
    let inFlight = 0;
    let inFlightAtKill = -1;
    let killedAt = 0;
    const pending = new Set<Promise<void>>();
    const fire = () => {
      const at = Date.now();
      inFlight++;
      const p = requestText(portico.port, '/who', { timeoutMs: 3000 }).then(
        (answer) => void results.push({ at, ok: answer.status === 200, pid: answer.body.split(':')[1] }),
        () => void results.push({ at, ok: false }),
      );
      const tracked = p.finally(() => {
        inFlight--;
        pending.delete(tracked);
      });
      pending.add(tracked);
    };
    // About 150 requests a second for 3 s; the kill 1 s in.
    const started = Date.now();
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const elapsed = Date.now() - started;
        if (elapsed >= 3000) {
          clearInterval(timer);
          return resolve();
        }
        fire();
        fire();
        fire();
        if (killedAt === 0 && elapsed >= 1000) {
          inFlightAtKill = inFlight;
          killedAt = Date.now();
          process.kill(victim, 'SIGKILL');
        }
      }, 20);
    });
    await Promise.all(pending);
    const line = await portico.waitForLine(/^portico: worker 1 serving \(pid \d+\)$/, mark, 5000);
    const replacement = Number(/pid (\d+)/.exec(line)![1]);
    const failed = results.filter((r) => !r.ok);
    // Requests that may have gone to the killed worker: those in flight at the kill, and those whose connection
    // the kernel or the primary handed it in the instant before its exit was seen.
    const nearKill = results.filter((r) => r.at >= killedAt && r.at < killedAt + 50).length;
    t.diagnostic(`${results.length} requests, ${failed.length} failed (in flight at the kill: ${inFlightAtKill}, started within 50 ms after it: ${nearKill}); replacement pid ${replacement}`);
    assert.notEqual(replacement, victim);
    assert.ok(!alive(victim) || parentOf(victim) !== portico.child.pid);
    assert.ok(failed.every((r) => r.at < killedAt + 50), 'no request failed once the kill was past');
    assert.ok(failed.length <= inFlightAtKill + nearKill, `${failed.length} failed`);
    assert.ok(results.length >= 300, `${results.length} requests`);
    // The replacement serves.
    const pids = new Set<string>();
    for (let i = 0; i < 10; i++) pids.add((await requestText(portico.port, '/who')).body.split(':')[1]!);
    assert.ok(pids.has(String(replacement)), [...pids].join(' '));
    // The replacement serves the config the others serve (reloaded to "two"), not the file as edited since ("one").
    for (let i = 0; i < 10; i++) assert.equal((await requestText(portico.port, '/version')).body, 'two');
  });

  test('SIGTERM to the primary stops every worker and the primary exits 0', async () => {
    const pids = [...workerPids(portico.stderr).values()];
    assert.equal(await portico.stop(), 0);
    for (let i = 0; i < 50 && pids.some(alive); i++) await new Promise<void>((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(pids.filter(alive), []);
  });
});

describe('workers: 2 that cannot start', () => {
  test('a worker that cannot bind its address makes portico run exit 1 with the reason, and leaves no worker behind', async () => {
    const taken = net.createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const { port } = taken.address() as net.AddressInfo;
    const file = path.join(dir, 'taken.yaml');
    writeFileSync(file, `listen: ["127.0.0.1:${port}"]\nworkers: 2\nlog: { access: off }\nsites: [{ routes: [{ path: /, respond: { body: ok } }] }]\n`);
    const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');
    const child = spawn(process.execPath, [cli, 'run', '-c', file], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    // 'close', not 'exit': the output may still be in the pipes when the process has exited.
    const [code] = (await once(child, 'close')) as [number | null];
    clearTimeout(timer);
    taken.close();
    assert.equal(code, 1, stderr);
    assert.match(stderr, /portico: worker 1: cannot listen on 127\.0\.0\.1:\d+: address already in use/);
    // No process of this config is left (a worker's command line is the primary's).
    const left = readdirSync('/proc')
      .filter((name) => /^\d+$/.test(name))
      .filter((name) => {
        try {
          return readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(file);
        } catch {
          return false;
        }
      });
    assert.deepEqual(left, []);
  });
});

describe('workers: 2 when the primary is killed', () => {
  test('kill -9 of the primary: every worker sees its channel close and exits', async () => {
    const file = path.join(dir, 'orphans.yaml');
    writeFileSync(file, 'listen: ["127.0.0.1:0"]\nworkers: 2\nlog: { access: off }\nsites: [{ routes: [{ path: /, respond: { body: ok } }] }]\n');
    const portico = await PorticoProcess.start(file, dir);
    const pids = [...workerPids(portico.stderr).values()];
    assert.equal(pids.length, 2);
    assert.equal((await requestText(portico.port, '/')).body, 'ok');
    const exited = once(portico.child, 'exit');
    portico.child.kill('SIGKILL');
    await exited;
    for (let i = 0; i < 250 && pids.some(alive); i++) await new Promise<void>((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(pids.filter(alive), []);
  });
});
