/**
 * `workers: 2` with spawned app servers, through real processes: the primary runs the one Supervisor (and the
 * control socket), the two workers serve and follow its moves. A rolling deploy under ~200 req/s fails no request
 * and leaves every instance a new pid; `portico reload | status | upgrade` reach the primary; the spawned slots are
 * checked once per interval (counted at the app), not once per worker; a replaced worker finds the instances up;
 * SIGTERM to the primary leaves no app process.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { describeLoad, failures, startLoad } from '../helpers/load.js';
import { PorticoProcess } from '../helpers/process.js';
import { alive, eventually, portRange } from '../helpers/supervise.js';
import { cli, configText, pidsOf, startRunning, status, testDir, type Running } from './zero-downtime-support.js';

/** One GET on a fresh connection (workers accept by connection): status, the app's pid, the worker's pid. */
function who(base: string, pathname = '/'): Promise<{ status: number; pid: number; worker: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${base}${pathname}`, { agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.once('end', () => resolve({ status: res.statusCode ?? 0, pid: Number(res.headers['x-pid']), worker: Number(res.headers['x-worker']) }));
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
  });
}

/** `count` GETs on fresh connections, a few at a time: the statuses, app pids and worker pids seen. */
async function sample(base: string, count: number): Promise<{ statuses: number[]; pids: Set<number>; workers: Set<number> }> {
  const statuses: number[] = [];
  const pids = new Set<number>();
  const workers = new Set<number>();
  for (let i = 0; i < count; i += 4) {
    for (const answer of await Promise.all([0, 1, 2, 3].map(() => who(base)))) {
      statuses.push(answer.status);
      pids.add(answer.pid);
      workers.add(answer.worker);
    }
  }
  return { statuses, pids, workers };
}

interface PrimaryStatus {
  pid: number;
  workers: Array<{ slot: number; pid?: number }>;
  instances: Array<{ slot: string; state: string; pid?: number; port?: number }>;
}

/** `portico status --json` of the primary. */
async function primaryStatus(file: string): Promise<PrimaryStatus> {
  return (await status(file)) as unknown as PrimaryStatus;
}

/** How many health checks an instance answered (zd-app counts them). */
async function healthHits(port: number): Promise<number> {
  const answer = await new Promise<string>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/health-hits', agent: false, timeout: 5000 }, (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString()));
        res.once('end', () => resolve(body));
      })
      .once('error', reject);
  });
  return Number(answer);
}

describe('workers: 2 with spawned app servers: one Supervisor and one control socket, in the primary', { timeout: 120_000 }, () => {
  let running: Running;
  let workerPids: number[] = [];

  before(async () => {
    running = await startRunning('wspawn', { workers: 2, env: { VERSION: '1' } });
    workerPids = (await primaryStatus(running.file)).workers.map((w) => w.pid!);
  });
  after(() => running.close());

  test('requests are served by both worker processes and by each of the 3 spawned instances, started once (by the primary)', async (t) => {
    const state = await primaryStatus(running.file);
    assert.equal(state.pid, running.portico.child.pid, 'status is answered by the primary');
    assert.equal(state.workers.length, 2);
    assert.deepEqual(state.instances.map((i) => i.state), ['ready', 'ready', 'ready']);
    const seen = await sample(running.base, 60);
    t.diagnostic(`60 requests: statuses ${[...new Set(seen.statuses)].join(',')}; app pids ${[...seen.pids].join(', ')}; worker pids ${[...seen.workers].join(', ')}`);
    assert.deepEqual([...new Set(seen.statuses)], [200]);
    assert.deepEqual([...seen.pids].sort(), state.instances.map((i) => i.pid!).sort(), 'the three instances answer (none double-spawned by a worker)');
    assert.deepEqual([...seen.workers].sort(), [...workerPids].sort(), 'both workers answer');
    assert.match(running.portico.stderr, /serving .* with 2 workers/);
  });

  test('the spawned slots are health-checked once per interval per instance (by the primary), not once per worker', async (t) => {
    const instances = (await primaryStatus(running.file)).instances;
    const start = await Promise.all(instances.map((i) => healthHits(i.port!)));
    const from = Date.now();
    // 2 s: 10 intervals of 200 ms; checks in each worker too would make about 30.
    await new Promise<void>((resolve) => setTimeout(resolve, 2000));
    const end = await Promise.all(instances.map((i) => healthHits(i.port!)));
    const elapsed = Date.now() - from;
    const hits = end.map((n, i) => n - start[i]!);
    t.diagnostic(`health checks in ${elapsed} ms (interval 200 ms): ${instances.map((i, n) => `${i.slot} ${hits[n]}`).join(', ')}`);
    for (const n of hits) {
      assert.ok(n <= Math.ceil(elapsed / 200) + 2, `${n} checks in ${elapsed} ms`);
      assert.ok(n >= Math.floor(elapsed / 200) - 4, `${n} checks in ${elapsed} ms`);
    }
  });

  test('portico deploy app under ~200 req/s with workers: 2: exit 0, zero failed requests, every instance a new pid, and both workers forward to the new ones only', async (t) => {
    const before = (await primaryStatus(running.file)).instances;
    const load = startLoad({ base: running.base, paths: ['/', '/cached'], header: 'x-pid', maxMs: 40_000 });
    await eventually(() => load.report.ok >= 100, `100 answers under load (${describeLoad(load.report)})`, 15_000);
    const deploy = await cli(['deploy', 'app', '-c', running.file], running.dir);
    const during = await load.stop();
    t.diagnostic(`during the deploy: ${describeLoad(during)}`);
    t.diagnostic(`deploy output:\n${deploy.stdout}`);
    assert.equal(deploy.code, 0, `deploy failed: ${deploy.stderr}${deploy.stdout}`);
    assert.match(deploy.stdout, /\nsummary: 3 instances replaced\n/);
    assert.equal(failures(during), 0, describeLoad(during));
    assert.ok(during.ok >= 100, describeLoad(during));
    assert.ok(pidsOf(during.seen).size >= 4, 'old and new instances answered during the deploy');

    const afterwards = (await primaryStatus(running.file)).instances;
    assert.deepEqual(afterwards.map((i) => i.state), ['ready', 'ready', 'ready']);
    const old = before.map((i) => i.pid!);
    for (const i of afterwards) assert.ok(!old.includes(i.pid!), `${i.slot}: pid ${i.pid} is new (before: ${old.join(', ')})`);
    for (const pid of old) assert.ok(!alive(pid), `old instance ${pid} stopped`);
    const seen = await sample(running.base, 60);
    t.diagnostic(`after the deploy, 60 requests: app pids ${[...seen.pids].join(', ')}; worker pids ${[...seen.workers].join(', ')}`);
    assert.deepEqual([...new Set(seen.statuses)], [200]);
    assert.deepEqual([...seen.pids].sort(), afterwards.map((i) => i.pid!).sort(), 'only the new instances answer');
    assert.deepEqual([...seen.workers].sort(), [...workerPids].sort(), 'through both workers');
  });

  test('portico reload and portico status reach the primary: a reload reaches every worker (no process replaced); a broken config is refused at file:line:col; upgrade is refused with workers', async () => {
    const text = readFileSync(running.file, 'utf8');
    const instances = (await primaryStatus(running.file)).instances.map((i) => i.pid);
    const ok = await cli(['reload', '-c', running.file], running.dir);
    assert.equal(ok.code, 0, `${ok.stderr}${ok.stdout}`);
    assert.match(ok.stdout, /reload ok/);
    const state = await primaryStatus(running.file);
    assert.deepEqual(state.workers.map((w) => w.pid), workerPids, 'the same workers serve');
    assert.deepEqual(state.instances.map((i) => i.pid), instances, 'an unchanged spawn section restarts no instance');

    writeFileSync(running.file, text.replace('instances: 3', 'instances: many'));
    const refused = await cli(['reload', '-c', running.file], running.dir);
    writeFileSync(running.file, text);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /portico\.yaml:\d+:\d+ .*instances/);
    assert.deepEqual([...new Set((await sample(running.base, 20)).statuses)], [200], 'the previous config serves on');

    const status = await cli(['status', '-c', running.file], running.dir);
    assert.equal(status.code, 0);
    assert.match(status.stdout, new RegExp(`pid ${running.portico.child.pid}\\b`));
    assert.match(status.stdout, new RegExp(`workers   1: pid ${workerPids[0]}, 2: pid ${workerPids[1]}`));
    assert.match(status.stdout, /instance  app#1 ready pid \d+ port \d+/);

    const upgrade = await cli(['upgrade', '-c', running.file], running.dir);
    assert.equal(upgrade.code, 1);
    assert.match(upgrade.stderr, /not supported with workers/);
  });

  test('portico reload of a changed spawn env with workers: 2 rolls the instances under ~200 req/s: zero failed requests, new pids, the new version answering through both workers', async (t) => {
    const before = (await primaryStatus(running.file)).instances.map((i) => i.pid!);
    const load = startLoad({ base: running.base, paths: ['/', '/cached'], header: 'x-version', maxMs: 40_000 });
    await eventually(() => load.report.ok >= 50, `50 answers under load (${describeLoad(load.report)})`, 15_000);
    writeFileSync(running.file, configText(running.ports, { workers: 2, env: { VERSION: '2' } }));
    const reload = await cli(['reload', '-c', running.file], running.dir);
    assert.equal(reload.code, 0, `${reload.stderr}${reload.stdout}`);
    // The reload resolves at the swap; the deploy it queued rolls the instances afterwards.
    const afterwards = await eventually(
      async () => {
        const instances = (await primaryStatus(running.file)).instances;
        return instances.every((i) => i.state === 'ready' && !before.includes(i.pid!)) && instances;
      },
      'every instance replaced after the reload',
      30_000,
    );
    await eventually(() => (load.report.seen.get('2') ?? 0) >= 50, `50 answers of version 2 (${describeLoad(load.report)})`, 15_000);
    const during = await load.stop();
    t.diagnostic(`during the reload and its deploy: ${describeLoad(during)}`);
    assert.equal(failures(during), 0, describeLoad(during));
    const seen = await sample(running.base, 40);
    assert.deepEqual([...new Set(seen.statuses)], [200]);
    assert.deepEqual([...seen.pids].sort(), afterwards.map((i) => i.pid!).sort(), 'only the new instances answer');
    assert.deepEqual([...seen.workers].sort(), [...workerPids].sort(), 'through both workers (the same ones: a reload replaces no worker)');
  });

  test('a worker killed with SIGKILL is replaced, and the replacement forwards to the spawned instances at once (it is told their ports before it serves)', async (t) => {
    const victim = workerPids[0]!;
    const mark = running.portico.stderr.length;
    process.kill(victim, 'SIGKILL');
    const line = await running.portico.waitForLine(/^portico: worker 1 serving \(pid \d+\)$/, mark, 20_000);
    const replacement = Number(/pid (\d+)/.exec(line)![1]);
    workerPids = [replacement, workerPids[1]!];
    const seen = await sample(running.base, 60);
    t.diagnostic(`after the replacement, 60 requests: statuses ${[...new Set(seen.statuses)].join(',')}; worker pids ${[...seen.workers].join(', ')}`);
    assert.deepEqual([...new Set(seen.statuses)], [200], 'no 503 from the new worker');
    assert.ok(seen.workers.has(replacement), 'the replacement answers');
  });

  test('SIGTERM to the primary stops the workers and every app instance: no process left', async () => {
    const state = await primaryStatus(running.file);
    const pids = [...state.workers.map((w) => w.pid!), ...state.instances.map((i) => i.pid!)];
    assert.equal(pids.length, 5);
    assert.equal(await running.portico.stop(), 0);
    await eventually(() => pids.every((pid) => !alive(pid)), `no worker or app process left (${pids.filter(alive).join(', ')})`, 10_000);
  });
});

describe('workers: 2 with spawned app servers: kill -9 of the primary', { timeout: 60_000 }, () => {
  test('kill -9 of the primary leaves no worker and no app process (the instances die with the primary that spawned them)', async () => {
    const running = await startRunning('wspawn-kill', { workers: 2, instances: 2 });
    try {
      const state = await primaryStatus(running.file);
      const pids = [...state.workers.map((w) => w.pid!), ...state.instances.map((i) => i.pid!)];
      assert.equal(pids.length, 4);
      running.portico.signal('SIGKILL');
      await running.portico.exited;
      await eventually(() => pids.every((pid) => !alive(pid)), `no worker or app process left (${pids.filter(alive).join(', ')})`, 10_000);
    } finally {
      await running.close();
    }
  });
});

describe('workers: 2: a reload that adds the first spawned upstream', { timeout: 60_000 }, () => {
  test('the primary starts its instances before the workers swap: every request right after portico reload is answered by them through both workers, none 503', async (t) => {
    const dir = testDir('wspawn-add');
    const file = path.join(dir, 'portico.yaml');
    writeFileSync(file, ['listen: ["127.0.0.1:0"]', 'workers: 2', 'log: { access: off }', 'sites:', '  - routes:', '      - { path: /, respond: { body: none } }', ''].join('\n'));
    const portico = await PorticoProcess.start(file, dir);
    let pids: number[] = [];
    try {
      const base = `http://127.0.0.1:${portico.port}`;
      assert.deepEqual((await primaryStatus(file)).instances, []);
      writeFileSync(file, configText(portRange(6).text, { workers: 2, instances: 2 }));
      const reload = await cli(['reload', '-c', file], dir);
      assert.equal(reload.code, 0, `${reload.stderr}${reload.stdout}`);
      const seen = await sample(base, 40);
      const state = await primaryStatus(file);
      pids = [...state.workers.map((w) => w.pid!), ...state.instances.map((i) => i.pid!)];
      t.diagnostic(`40 requests right after the reload: statuses ${[...new Set(seen.statuses)].join(',')}; app pids ${[...seen.pids].join(', ')}; workers ${[...seen.workers].join(', ')}`);
      assert.deepEqual([...new Set(seen.statuses)], [200]);
      assert.deepEqual([...seen.pids].sort(), state.instances.map((i) => i.pid!).sort());
      assert.equal(seen.workers.size, 2);
    } finally {
      await portico.stop();
      await eventually(() => pids.every((pid) => !alive(pid)), 'no process left', 10_000).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    }
    assert.deepEqual(pids.filter(alive), [], 'no worker or app process left after SIGTERM');
  });
});
