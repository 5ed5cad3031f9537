/**
 * Rolling deploys by the Supervisor, with real app-server processes: surge first (the new instance ready before
 * the slot moves and the old one stops), every instance a new pid, progress per instance and a report; a new
 * version that never passes its check stops the deploy, rolls back what was replaced, and rejects with
 * PORTICO_DEPLOY_FAILED while the old instances keep serving; deploys of one upstream run one after the other; a
 * release switched by a `current` symlink is followed by a deploy, and a rollback returns to the release it left.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PorticoError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { Supervisor, type DeployEvent } from '../../src/supervise/supervisor.js';
import { alive, APP, CapturedLog, eventually, getJson, portRange, RecordingSink, spawnConfig } from '../helpers/supervise.js';

let dir: string;
const running: Supervisor[] = [];

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'portico-deploy-'));
  chmodSync(dir, 0o755);
});

after(async () => {
  await Promise.all(running.map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

/** A SlotSink that records, at each move, whether the instance the slot had until then was still running. */
class SurgeSink extends RecordingSink {
  readonly pidOf = new Map<string, number>();
  readonly oldAliveAtMove: boolean[] = [];
  override moved(upstream: string, slot: string, port: number | undefined, drainMs: number): Promise<void> {
    const previous = this.pidOf.get(slot);
    if (previous !== undefined) this.oldAliveAtMove.push(alive(previous));
    return super.moved(upstream, slot, port, drainMs);
  }
}

function started(upstreams: Record<string, unknown>): { sup: Supervisor; sink: SurgeSink; log: CapturedLog } {
  const sink = new SurgeSink();
  const log = new CapturedLog();
  const sup = new Supervisor(spawnConfig(dir, upstreams), log.logger, sink);
  running.push(sup);
  return { sup, sink, log };
}

/** Each slot's answers: its pid and version, asked of the instance itself. */
async function answers(sup: Supervisor): Promise<Array<[string, unknown, unknown]>> {
  return Promise.all(sup.slots().map(async (s) => {
    const { body } = await getJson(s.port!);
    assert.equal(body.pid, s.pid, `${s.slot}: the instance on its port is the one slots() names`);
    return [s.slot, body.pid, body.version] as [string, unknown, unknown];
  }));
}

describe('rolling deploy', { timeout: 60_000 }, () => {
  test('a deploy replaces every instance with a new pid, one at a time and surge first (the new one ready, then the move, then the old one stopped), with progress per instance and a report; a changed env is live afterwards', async () => {
    const range = portRange(5);
    const app = (version: string): Record<string, unknown> => ({
      app: { spawn: { command: ['node', APP], instances: 3, ports: range.text, env: { VERSION: version }, stop_timeout: '2s' }, health: { path: '/healthz', interval: '100ms', rise: 1 } },
    });
    const { sup, sink } = started(app('1'));
    await sup.start();
    const before = sup.slots();
    for (const s of before) sink.pidOf.set(s.slot, s.pid!);
    assert.deepEqual(sup.update(spawnConfig(dir, app('2'))), ['app']);

    const events: DeployEvent[] = [];
    const report = await sup.deploy('app', (e) => events.push(e));
    assert.equal(report.upstream, 'app');
    assert.deepEqual(report.slots.map((s) => s.slot), ['app#1', 'app#2', 'app#3']);
    for (const [i, s] of report.slots.entries()) {
      assert.equal(s.oldPid, before[i]!.pid);
      assert.equal(s.oldPort, before[i]!.port);
      assert.notEqual(s.newPid, s.oldPid);
      assert.notEqual(s.newPort, s.oldPort, 'a fresh port');
      assert.equal(alive(s.oldPid!), false, `${s.slot}: old pid ${s.oldPid} stopped`);
    }
    // One at a time: each slot starting, ready, draining, stopped, before the next slot starts.
    assert.deepEqual(
      events.map((e) => `${e.slot} ${e.phase}`),
      ['app#1', 'app#2', 'app#3'].flatMap((slot) => [`${slot} starting`, `${slot} ready`, `${slot} draining`, `${slot} stopped`]),
    );
    assert.match(events[0]!.message, /^app#1: new instance pid \d+ on port \d+$/);
    assert.equal(events[3]!.pid, before[0]!.pid);
    // Surge first: at each move the old instance was still serving.
    assert.deepEqual(sink.oldAliveAtMove, [true, true, true]);
    assert.deepEqual(sink.moves.slice(3).map((m) => [m.slot, m.port, m.drainMs]), report.slots.map((s) => [s.slot, s.newPort, 2000]));
    assert.deepEqual(await answers(sup), report.slots.map((s) => [s.slot, s.newPid, '2']));
  });

  test('a deploy whose new version never passes its health check stops at that slot, rolls back the slot already replaced, and rejects with PORTICO_DEPLOY_FAILED naming the slot and why; the old version serves everywhere', async () => {
    const range = portRange(3);
    const broken = path.join(dir, 'v2-starts');
    const app = (env: Record<string, unknown>, timeout: string): Record<string, unknown> => ({
      app: { spawn: { command: ['node', APP], instances: 2, ports: range.text, env, health_timeout: timeout }, health: { path: '/healthz', interval: '100ms', rise: 1 } },
    });
    const { sup, sink } = started(app({ VERSION: '1' }, '20s'));
    await sup.start();
    const before = sup.slots();
    // Version 2's first instance is healthy, the second is not.
    assert.deepEqual(sup.update(spawnConfig(dir, app({ VERSION: '2', BREAK_FILE: broken, BREAK_AFTER: 1 }, '3s'))), ['app']);
    const events: DeployEvent[] = [];
    const failure = await sup.deploy('app', (e) => events.push(e)).then(
      () => assert.fail('the deploy should fail'),
      (err: unknown) => err,
    );
    assert.ok(failure instanceof PorticoError);
    assert.equal(failure.code, 'PORTICO_DEPLOY_FAILED');
    assert.match(failure.message, /^deploy of app stopped at app#2: the new instance pid \d+ on port \d+ was not ready within 3000 ms: not ready in time \(last check: GET \/healthz answered 500\); app#1 rolled back; the old instances keep serving$/);
    assert.deepEqual(events.map((e) => `${e.slot} ${e.phase}`), [
      'app#1 starting', 'app#1 ready', 'app#1 draining', 'app#1 stopped',
      'app#2 starting', 'app#2 failed',
      'app#1 rolling_back', 'app#1 starting', 'app#1 ready', 'app#1 rolled_back',
    ]);
    const v2 = events[1]!.pid; // app#1's version-2 instance
    const failed = events[4]!.pid!;
    assert.equal(alive(failed), false, 'the instance that failed its check is stopped');
    const after = sup.slots();
    assert.equal(after[1]!.pid, before[1]!.pid, 'app#2 kept its old instance');
    assert.notEqual(after[0]!.pid, before[0]!.pid);
    assert.notEqual(after[0]!.pid, v2, 'app#1 runs the previous version again, in a new instance');
    assert.deepEqual(await answers(sup), [['app#1', after[0]!.pid, '1'], ['app#2', before[1]!.pid, '1']]);
    assert.equal(sink.moves.at(-1)!.port, after[0]!.port, 'the data plane was moved back');
    assert.deepEqual(sup.update(spawnConfig(dir, app({ VERSION: '2', BREAK_FILE: broken, BREAK_AFTER: 1 }, '3s'))), ['app'], 'the next reload finds the deploy due again');
  });

  test('a deploy of the same version whose new instance fails its check (the code on disk broke) stops at the first slot with nothing to roll back; every old instance keeps serving', async () => {
    const starts = path.join(dir, 'same-starts');
    const { sup } = started({
      // Two starts are healthy (the running ones); the third (the deploy's first) exits at once.
      app: { spawn: { command: ['node', APP], instances: 2, ports: portRange(3).text, env: { VERSION: '1', BREAK_FILE: starts, BREAK_AFTER: 2, BREAK_EXIT: 1 } }, health: { path: '/healthz', interval: '100ms' } },
    });
    await sup.start();
    const before = await answers(sup);
    await assert.rejects(sup.deploy('app', () => {}), (err: PorticoError) => {
      assert.equal(err.code, 'PORTICO_DEPLOY_FAILED');
      assert.match(err.message, /^deploy of app stopped at app#1: the new instance pid \d+ on port \d+ exited with code 1 before it was ready \(its last stderr line: SyntaxError: Unexpected token \(the code on disk is broken\)\); no slot had been replaced; the old instances keep serving$/);
      return true;
    });
    assert.deepEqual(await answers(sup), before);
  });

  test('max_surge: 2 starts two new instances at once and moves both slots only once both are ready', async () => {
    const { sup } = started({ app: { spawn: { command: ['node', APP], instances: 2, max_surge: 2, ports: portRange(4).text }, health: { path: '/healthz', interval: '100ms' } } });
    await sup.start();
    const events: DeployEvent[] = [];
    const report = await sup.deploy('app', (e) => events.push(e));
    const phases = events.map((e) => e.phase);
    assert.deepEqual(phases.slice(0, 2), ['starting', 'starting']);
    assert.ok(phases.lastIndexOf('ready') < phases.indexOf('draining'), phases.join(' '));
    assert.equal(new Set(report.slots.map((s) => s.newPort)).size, 2);
    for (const s of report.slots) assert.equal(alive(s.oldPid!), false);
  });

  test('stop() during a deploy ends it: the deploy rejects with PORTICO_DEPLOY_FAILED, and no instance, old or new, is left running', async () => {
    const range = portRange(3);
    const app = (env: Record<string, unknown>): Record<string, unknown> => ({ app: { spawn: { command: ['node', APP], instances: 2, ports: range.text, env }, health: { path: '/healthz', interval: '100ms' } } });
    const { sup } = started(app({}));
    await sup.start();
    const before = sup.slots().map((s) => s.pid!);
    sup.update(spawnConfig(dir, app({ HEALTH_FAIL: '1' })));
    const surge: number[] = [];
    const deploy = sup.deploy('app', (e) => {
      if (e.phase === 'starting') surge.push(e.pid!);
    });
    await eventually(() => surge.length === 1, 'the surge instance');
    await sup.stop();
    await assert.rejects(deploy, (err: PorticoError) => {
      assert.equal(err.code, 'PORTICO_DEPLOY_FAILED');
      assert.match(err.message, /^deploy of app stopped at app#1: the new instance pid \d+ on port \d+ was stopped before it was ready: Portico is stopping; no slot had been replaced/);
      return true;
    });
    for (const pid of [...before, ...surge]) assert.equal(alive(pid), false, `pid ${pid} gone`);
  });

  test('deploys of one upstream run one after the other; a deploy of an unknown upstream is refused', async () => {
    const { sup } = started({ app: { spawn: { command: ['node', APP], ports: portRange(2).text }, health: { path: '/healthz', interval: '100ms' } } });
    await sup.start();
    const events: string[] = [];
    const [a, b] = await Promise.all([sup.deploy('app', (e) => events.push(`A ${e.phase}`)), sup.deploy('app', (e) => events.push(`B ${e.phase}`))]);
    assert.deepEqual(events, ['A starting', 'A ready', 'A draining', 'A stopped', 'B starting', 'B ready', 'B draining', 'B stopped']);
    assert.equal(b.slots[0]!.oldPid, a.slots[0]!.newPid);
    await assert.rejects(sup.deploy('nope', () => {}), { code: 'PORTICO_DEPLOY_FAILED', message: 'no upstream "nope" with spawn to deploy (upstreams with spawn: app)' });
  });
});

/** The zero-downtime tests' app (test/fixtures/zd-app.mjs): its version is the VERSION file of its folder. */
const ZD_APP = path.join(path.dirname(APP), 'zd-app.mjs');

/** GET / of an instance: the version and working directory it answers with. */
function whoAnswers(port: number): Promise<{ pid: number; version: string; cwd: string }> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 5000 }, (response) => {
      response.resume();
      response.once('end', () =>
        resolve({ pid: Number(response.headers['x-pid']), version: String(response.headers['x-version']), cwd: String(response.headers['x-cwd']) }),
      );
    });
    request.once('timeout', () => request.destroy(new Error('timeout')));
    request.once('error', reject);
  });
}

describe('deploying a release behind a symlink (cwd: ./current)', { timeout: 60_000 }, () => {
  test('a deploy resolves the symlink afresh (new instances run the release it points to now); a rollback and a crash restart run the release each instance was started in, not the broken one the symlink points to', async () => {
    const base = mkdtempSync(path.join(dir, 'release-'));
    const release = (name: string, files: Record<string, string>): string => {
      const folder = path.join(base, 'releases', name);
      mkdirSync(folder, { recursive: true });
      for (const [file, text] of Object.entries(files)) writeFileSync(path.join(folder, file), text);
      return realpathSync(folder);
    };
    const v1 = release('v1', { VERSION: '1' });
    const v2 = release('v2', { VERSION: '2', BREAK_AFTER: '1' }); // its first instance passes, the next fails
    const v3 = release('v3', { VERSION: '3' });
    // As an operator does it: a new symlink renamed over the old one (atomic).
    const point = (name: string): void => {
      symlinkSync(path.join('releases', name), path.join(base, 'current.next'));
      renameSync(path.join(base, 'current.next'), path.join(base, 'current'));
    };
    point('v1');
    const upstreams = {
      app: { spawn: { command: ['node', ZD_APP], cwd: './current', instances: 2, ports: portRange(4).text, health_timeout: '3s', stop_timeout: '2s' }, health: { path: '/healthz', interval: '100ms', rise: 1 } },
    };
    const config = parseConfig(JSON.stringify({ listen: ['127.0.0.1:0'], upstreams, sites: [{ routes: [{ path: '/', proxy: { upstream: 'app' } }] }] }), path.join(base, 'portico.yaml'), base);
    const sink = new RecordingSink();
    const sup = new Supervisor(config, new CapturedLog().logger, sink);
    running.push(sup);
    await sup.start();
    const serving = (): Promise<Array<{ pid: number; version: string; cwd: string }>> => Promise.all(sup.slots().map((s) => whoAnswers(s.port!)));
    assert.deepEqual((await serving()).map((a) => [a.version, a.cwd]), [['1', v1], ['1', v1]]);

    point('v2');
    const events: DeployEvent[] = [];
    await assert.rejects(sup.deploy('app', (e) => events.push(e)), (err: PorticoError) => {
      assert.equal(err.code, 'PORTICO_DEPLOY_FAILED');
      assert.match(err.message, /^deploy of app stopped at app#2: the new instance pid \d+ on port \d+ was not ready within 3000 ms: .*; app#1 rolled back; the old instances keep serving$/);
      return true;
    });
    assert.deepEqual(events.map((e) => `${e.slot} ${e.phase}`).slice(-2), ['app#1 ready', 'app#1 rolled_back'], events.map((e) => e.message).join('\n'));
    const afterRollback = await serving();
    assert.deepEqual(afterRollback.map((a) => [a.version, a.cwd]), [['1', v1], ['1', v1]], 'the rollback restarted release v1, where app#1 ran before');
    assert.deepEqual(sup.update(config), [], 'the config did not change: a reload does not deploy again');

    // A crash restart runs the release the slot ran (v1), though `current` points to v2 now.
    const crashed = afterRollback[0]!.pid;
    process.kill(crashed, 'SIGKILL');
    const restarted = await eventually(() => {
      const slot = sup.slots()[0]!;
      return slot.state === 'ready' && slot.pid !== crashed && slot;
    }, 'app#1 restarted after its crash');
    assert.deepEqual(await whoAnswers(restarted.port!).then((a) => [a.pid, a.version, a.cwd]), [restarted.pid, '1', v1]);
    assert.ok(!readdirSync(v2).includes('starts') || statSync(path.join(v2, 'starts')).size === 2, 'v2 was started twice, by the deploy only');

    point('v3');
    const report = await sup.deploy('app', () => {});
    assert.equal(report.slots.length, 2);
    assert.deepEqual((await serving()).map((a) => [a.version, a.cwd]), [['3', v3], ['3', v3]], 'the deploy followed the symlink to v3');
  });
});
