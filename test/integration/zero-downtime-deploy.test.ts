/**
 * Zero downtime through real processes (issue 17, "What must be shown"): `portico run` with three spawned app
 * instances under a steady loopback load (~200 req/s, proxied and cached routes; an answer served stale from the
 * cache is a failure), while `portico deploy app` (the CLI, a child process) rolls them; a release switched by a
 * `current` symlink to a version that fails its health check; and a reload that changes the spawn section.
 */
import assert from 'node:assert/strict';
import { mkdirSync, realpathSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { describeLoad, failures, startLoad, type LoadReport } from '../helpers/load.js';
import { eventually } from '../helpers/supervise.js';
import { cli, configText, pidsOf, startRunning, status, testDir, type Running } from './zero-downtime-support.js';

const opened: Running[] = [];
after(async () => {
  await Promise.all(opened.map((r) => r.close()));
});

/** Waits (bounded) until the load has had `n` more successful answers than it had when called. */
async function answered(report: LoadReport, n: number): Promise<void> {
  const target = report.ok + n;
  await eventually(() => report.ok >= target, `${n} more answers under load (${describeLoad(report)})`, 15_000);
}

/** A short load after a change: every answer's pid and version (the `seen` map holds both as "pid version"). */
async function sampleAfter(base: string, count = 150): Promise<{ report: LoadReport; pids: Set<number>; versions: Set<string> }> {
  const load = startLoad({ base, paths: ['/', '/cached'], header: 'x-pid', maxMs: 20_000 });
  await answered(load.report, count);
  const report = await load.stop();
  const versions = startLoad({ base, paths: ['/', '/cached'], header: 'x-version', maxMs: 20_000 });
  await answered(versions.report, 40);
  const byVersion = await versions.stop();
  assert.equal(failures(byVersion), 0, describeLoad(byVersion));
  return { report, pids: pidsOf(report.seen), versions: new Set(byVersion.seen.keys()) };
}

describe('zero downtime: rolling deploys and reloads of spawned app servers, under load', { timeout: 120_000 }, () => {
  test('portico deploy app under ~200 req/s rolls 3 instances with zero failed requests (no 5xx, reset, refused or stale answer): it exits 0 with per-instance progress and a summary, and every instance has a new pid afterwards', async (t) => {
    const running = await startRunning('deploy', { env: { VERSION: '1' } });
    opened.push(running);
    const before = (await status(running.file)).instances;
    assert.equal(before.length, 3);
    const load = startLoad({ base: running.base, paths: ['/', '/cached'], header: 'x-pid', maxMs: 40_000 });
    await answered(load.report, 100);
    const deploy = await cli(['deploy', 'app', '-c', running.file], running.dir);
    const during = await load.stop();
    t.diagnostic(`during the deploy: ${describeLoad(during)}`);
    t.diagnostic(`deploy output:\n${deploy.stdout}`);
    assert.equal(deploy.code, 0, `deploy failed: ${deploy.stderr}${deploy.stdout}`);
    for (const slot of ['app#1', 'app#2', 'app#3']) {
      assert.match(deploy.stdout, new RegExp(`${slot}: new instance pid \\d+ on port \\d+`));
      assert.match(deploy.stdout, new RegExp(`${slot}: pid \\d+ ready in \\d+ ms`));
      assert.match(deploy.stdout, new RegExp(`${slot}: pid \\d+ stopped after \\d+ ms`));
      assert.match(deploy.stdout, new RegExp(`  ${slot}: pid \\d+ → \\d+, port \\d+ → \\d+, ready in \\d+ ms, drained in \\d+ ms`));
    }
    assert.match(deploy.stdout, /\nsummary: 3 instances replaced\n(  app#\d: .*\n){3}portico: deploy app ok \(#\d+, \d+ ms\)\n$/);
    assert.equal(failures(during), 0, describeLoad(during));
    assert.ok(during.ok >= 100, describeLoad(during));

    const afterwards = (await status(running.file)).instances;
    const old = new Set([...before.map((i) => i.pid!), ...pidsOf(during.seen)].filter((pid) => !afterwards.some((i) => i.pid === pid)));
    const oldServing = before.map((i) => i.pid!);
    assert.deepEqual(afterwards.map((i) => i.state), ['ready', 'ready', 'ready']);
    for (const i of afterwards) assert.ok(!oldServing.includes(i.pid!), `${i.slot}: pid ${i.pid} is new (before: ${oldServing.join(', ')})`);
    const sample = await sampleAfter(running.base);
    t.diagnostic(`after the deploy: ${describeLoad(sample.report)}`);
    assert.equal(failures(sample.report), 0, describeLoad(sample.report));
    assert.deepEqual([...sample.pids].filter((pid) => old.has(pid) || oldServing.includes(pid)), [], 'no answer from an instance of before the deploy');
    assert.deepEqual([...sample.pids].sort(), afterwards.map((i) => i.pid!).sort(), 'the answers come from the three new instances');
  });

  test('a release switched by a `current` symlink whose new version fails its health check: portico deploy stops, exits 1 with the reason, rolls the replaced slot back to the previous release; zero failed requests, the old version serving afterwards', async (t) => {
    const dir = testDir('release');
    const release = (name: string, files: Record<string, string>): string => {
      const folder = path.join(dir, 'releases', name);
      mkdirSync(folder, { recursive: true });
      for (const [file, text] of Object.entries(files)) writeFileSync(path.join(folder, file), text);
      return realpathSync(folder);
    };
    release('v1', { VERSION: '1' });
    release('v2', { VERSION: '2', BREAK_AFTER: '1' }); // its first instance passes its check, the next ones fail
    const point = (name: string): void => {
      symlinkSync(path.join('releases', name), path.join(dir, 'current.next'));
      renameSync(path.join(dir, 'current.next'), path.join(dir, 'current'));
    };
    point('v1');
    const running = await startRunning('release', { cwd: './current', healthTimeout: '3s' }, dir);
    opened.push(running);
    const before = (await status(running.file)).instances;

    point('v2');
    const load = startLoad({ base: running.base, paths: ['/', '/cached'], header: 'x-version', maxMs: 40_000 });
    await answered(load.report, 100);
    const deploy = await cli(['deploy', 'app', '-c', running.file], running.dir);
    const during = await load.stop();
    t.diagnostic(`during the failed deploy: ${describeLoad(during)}`);
    t.diagnostic(`deploy output:\n${deploy.stdout}${deploy.stderr}`);
    assert.equal(deploy.code, 1);
    assert.match(
      deploy.stderr,
      /^portico: deploy app failed: deploy of app stopped at app#2: the new instance pid \d+ on port \d+ was not ready within 3000 ms: .*; app#1 rolled back; the old instances keep serving \(PORTICO_DEPLOY_FAILED\)$/m,
    );
    assert.match(deploy.stdout, /app#1: rolled back: pid \d+ on port \d+/);
    assert.equal(failures(during), 0, describeLoad(during));
    assert.ok((during.seen.get('2') ?? 0) > 0, 'the deploy followed the symlink: its first new instance ran release v2 and answered');

    const afterwards = (await status(running.file)).instances;
    assert.deepEqual(afterwards.map((i) => i.state), ['ready', 'ready', 'ready']);
    assert.notEqual(afterwards[0]!.pid, before[0]!.pid, 'app#1 was replaced, then rolled back in a new instance');
    assert.deepEqual(afterwards.slice(1).map((i) => i.pid), before.slice(1).map((i) => i.pid), 'app#2 and app#3 kept their instances');
    const sample = await sampleAfter(running.base);
    t.diagnostic(`after the failed deploy: ${describeLoad(sample.report)}; versions ${[...sample.versions].join(', ')}`);
    assert.equal(failures(sample.report), 0, describeLoad(sample.report));
    assert.deepEqual([...sample.versions], ['1'], 'release v1 answers everywhere (the rollback did not follow the symlink to v2)');
    assert.deepEqual([...sample.pids].sort(), afterwards.map((i) => i.pid!).sort());
  });

  test('portico reload of a config whose spawn env changed rolls the instances under ~200 req/s: zero failed requests, new pids, the new version answering', async (t) => {
    const running = await startRunning('reload', { env: { VERSION: '1' } });
    opened.push(running);
    const before = (await status(running.file)).instances.map((i) => i.pid!);
    const load = startLoad({ base: running.base, paths: ['/', '/cached'], header: 'x-version', maxMs: 40_000 });
    await answered(load.report, 100);
    writeFileSync(running.file, configText(running.ports, { env: { VERSION: '2' } }));
    const mark = running.portico.stderr.length;
    const reload = await cli(['reload', '-c', running.file], running.dir);
    assert.equal(reload.code, 0, `reload failed: ${reload.stderr}${reload.stdout}`);
    // It says so: the deploy it queued is not done when it returns.
    assert.match(`${reload.stdout}${reload.stderr}`, /spawn changed: a rolling deploy of app is queued behind this reload/);
    // The reload answers at the swap; the deploy it asks for runs next in the queue.
    await running.portico.waitForLine(/deployed app: 3 instance\(s\) replaced/, mark, 30_000);
    const during = await load.stop();
    t.diagnostic(`during the reload and its deploy: ${describeLoad(during)}`);
    t.diagnostic(`reload output:\n${reload.stdout}${reload.stderr}`);
    assert.equal(failures(during), 0, describeLoad(during));
    assert.ok((during.seen.get('2') ?? 0) > 0, 'version 2 answered during the roll');

    const afterwards = (await status(running.file)).instances;
    assert.deepEqual(afterwards.map((i) => i.state), ['ready', 'ready', 'ready']);
    for (const i of afterwards) assert.ok(!before.includes(i.pid!), `${i.slot}: pid ${i.pid} is new`);
    const sample = await sampleAfter(running.base);
    t.diagnostic(`after the reload: ${describeLoad(sample.report)}`);
    assert.equal(failures(sample.report), 0, describeLoad(sample.report));
    assert.deepEqual([...sample.versions], ['2']);
    assert.deepEqual([...sample.pids].sort(), afterwards.map((i) => i.pid!).sort());
  });
});
