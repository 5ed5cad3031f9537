/**
 * The Supervisor with real app-server processes (test/fixtures/spawn-app.mjs): starting on the range's ports with
 * their env and args, readiness, logs by slot, crash restarts with backoff, the crash-loop stop, the EADDRINUSE
 * retry, stopping whole process groups, user/group, and following a reload's config. The data plane's side is a
 * recording SlotSink.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Supervisor } from '../../src/supervise/supervisor.js';
import { alive, APP, CapturedLog, CONFIG_MODULE, eventually, getJson, groupMembers, portRange, RecordingSink, spawnConfig, SUPERVISOR_MODULE } from '../helpers/supervise.js';

let dir: string;
const running: Supervisor[] = [];

/** A Supervisor of `upstreams`, stopped after the file's tests. */
function supervisor(upstreams: Record<string, unknown>): { supervisor: Supervisor; sink: RecordingSink; log: CapturedLog } {
  const sink = new RecordingSink();
  const log = new CapturedLog();
  const made = new Supervisor(spawnConfig(dir, upstreams), log.logger, sink);
  running.push(made);
  return { supervisor: made, sink, log };
}

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'portico-supervise-'));
  chmodSync(dir, 0o755);
  mkdirSync(path.join(dir, 'app'));
});

after(async () => {
  await Promise.all(running.map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

describe('supervised app servers', { timeout: 60_000 }, () => {
  test('instances start on free ports of the range with PORT, PORTICO_SLOT, PORTICO_ROUTE and spawn.env, {port}/{slot}/{route} in their args, cwd relative to the config; the sink is told each port once it is ready; stdout and stderr lines are logged with the slot name', async () => {
    const range = portRange(4);
    const shellRange = portRange(2);
    const { supervisor: sup, sink, log } = supervisor({
      app: {
        spawn: { command: ['node', APP, '--port={port}', '--slot={slot}', '--route={route}'], cwd: 'app', instances: 2, ports: range.text, env: { GREETING: 'hi', STDERR_LINE: 'hello from stderr' } },
        health: { path: '/healthz', interval: '100ms', rise: 2 },
      },
      // A string runs through /bin/sh -c; without a health check readiness is a TCP connect.
      shell: { spawn: { command: `exec node ${APP} "{slot}" {port}`, ports: shellRange.text } },
    });
    await sup.start();
    const status = sup.slots();
    assert.deepEqual(status.map((s) => [s.upstream, s.slot, s.route, s.state]), [
      ['app', 'app#1', 'app1', 'ready'],
      ['app', 'app#2', 'app2', 'ready'],
      ['shell', 'shell#1', 'shell1', 'ready'],
    ]);
    const [one, two, shell] = status as [(typeof status)[0], (typeof status)[0], (typeof status)[0]];
    for (const s of [one, two]) assert.ok(s.port! >= range.from && s.port! <= range.to, `${s.slot} on ${s.port}, in ${range.text}`);
    assert.notEqual(one.port, two.port);
    assert.ok(shell.port! >= shellRange.from && shell.port! <= shellRange.to);
    assert.equal(sup.port('app', 'app#2'), two.port);

    const answer = (await getJson(one.port!)).body;
    assert.equal(answer.pid, one.pid);
    assert.equal(answer.slot, 'app#1');
    assert.equal(answer.route, 'app1');
    assert.equal(answer.greeting, 'hi');
    assert.deepEqual(answer.argv, [`--port=${one.port}`, '--slot=app#1', '--route=app1']);
    assert.equal(answer.cwd, path.join(dir, 'app'));
    assert.deepEqual((await getJson(shell.port!)).body.argv, ['shell#1', String(shell.port)]);

    assert.deepEqual(
      sink.moves.map((m) => [m.upstream, m.slot, m.port]).sort(),
      [['app', 'app#1', one.port], ['app', 'app#2', two.port], ['shell', 'shell#1', shell.port]].sort(),
    );
    const stdout = await log.waitFor((l) => l.slot === 'app#1' && l.msg === `app app#1 listening on ${one.port}`, 'app#1 stdout');
    assert.equal(stdout.level, 30);
    assert.equal(stdout.pid, one.pid);
    const stderr = await log.waitFor((l) => l.slot === 'app#2' && l.msg === 'hello from stderr', 'app#2 stderr');
    assert.equal(stderr.level, 40);
    assert.equal(stderr.pid, two.pid);

    await sup.stop();
    for (const s of status) assert.equal(alive(s.pid!), false, `${s.slot} pid ${s.pid} gone after stop()`);
  });

  test('a crashed instance is restarted after a backoff: the sink hears the slot is down, then its new port; the log gives the exit code and the last lines of its stderr', async () => {
    const { supervisor: sup, sink, log } = supervisor({
      app: { spawn: { command: ['node', APP], ports: portRange(3).text, env: { CRASH_ONCE_FILE: path.join(dir, 'crashed-once') } }, health: { path: '/healthz', interval: '100ms', rise: 1 } },
    });
    await sup.start();
    const first = sup.slots()[0]!;
    const crash = await log.waitFor((l) => l.level === 50 && /restarting in/.test(l.msg), 'the crash line');
    assert.equal(crash.slot, 'app#1');
    assert.equal(crash.code, 3);
    assert.equal(crash.delay, 100);
    assert.match(crash.msg, new RegExp(`app#1: pid ${first.pid} on port ${first.port} exited with code 3; last stderr lines:\\n  boom: app#1 crashing on purpose; restarting in 100 ms`));
    const again = await eventually(() => sup.slots().find((s) => s.state === 'ready' && s.pid !== first.pid), 'the restarted instance');
    assert.equal(again.restarts, 1);
    assert.equal(alive(first.pid!), false);
    assert.deepEqual(sink.moves.map((m) => m.port), [first.port, undefined, again.port]);
    assert.equal((await getJson(again.port!)).body.pid, again.pid);
  });

  test('a crash loop (5 crashes within a minute) stops restarting, after backoffs doubling from 100 ms, and is logged as an error; a reload starts the slot again', async () => {
    const range = portRange(3);
    const crashing = { app: { spawn: { command: ['node', APP], ports: range.text, env: { CRASH_AFTER_MS: 150 } } } };
    const { supervisor: sup, log } = supervisor(crashing);
    await sup.start();
    const loop = await log.waitFor((l) => /crash loop/.test(l.msg), 'the crash-loop line', 20_000);
    assert.equal(loop.level, 50);
    assert.match(loop.msg, /crash loop: 5 crashes within 60 s, not restarted again/);
    const delays = log.lines.filter((l) => l.delay !== undefined).map((l) => l.delay);
    assert.deepEqual(delays, [100, 200, 400, 800]);
    const [slot] = sup.slots();
    assert.equal(slot!.state, 'failed');
    assert.equal(slot!.restarts, 4);
    assert.equal(slot!.pid, undefined);

    // The reload's config no longer crashes: the failed slot starts again, at once as the new version (so no
    // instance runs an old one and no deploy is due).
    const changed = sup.update(spawnConfig(dir, { app: { spawn: { command: ['node', APP], ports: range.text } } }));
    assert.deepEqual(changed, []);
    const ready = await eventually(() => sup.slots().find((s) => s.state === 'ready'), 'the slot started again');
    assert.equal((await getJson(ready.port!)).body.pid, ready.pid);
  });

  test('an instance that dies with EADDRINUSE starts again on another port of the range and is no crash; a port another program listens on is skipped', async () => {
    const range = portRange(3);
    // 127.0.0.1:from is found by the probe; 127.0.0.2:from+1 is not (the probe binds 127.0.0.1), but the app,
    // listening on every address, fails on it with EADDRINUSE.
    const seen = net.createServer().listen(range.from, '127.0.0.1');
    const hidden = net.createServer().listen(range.from + 1, '127.0.0.2');
    await Promise.all([new Promise((r) => seen.once('listening', r)), new Promise((r) => hidden.once('listening', r))]);
    try {
      const { supervisor: sup, log } = supervisor({ app: { spawn: { command: ['node', APP], ports: range.text, max_surge: 1, instances: 1 } } });
      // The schema wants instances + max_surge ports: 3 ports hold 1 + 1.
      await sup.start();
      const [slot] = sup.slots();
      assert.equal(slot!.state, 'ready');
      assert.equal(slot!.port, range.from + 2);
      assert.equal(slot!.restarts, 0);
      assert.equal(slot!.recentCrashes, 0);
      const retry = await log.waitFor((l) => /EADDRINUSE/.test(l.msg) && l.level === 40 && l.port !== undefined, 'the retry line');
      assert.equal(retry.port, range.from + 1);
      assert.match(retry.msg, new RegExp(`app#1: port ${range.from + 1} is in use by another program \\(EADDRINUSE\\): starting again on another port of ${range.text}`));
      assert.equal(log.lines.some((l) => l.level === 50), false, 'no error logged');
    } finally {
      seen.close();
      hidden.close();
    }
  });

  test('stop() signals the whole process group of a sh -c command and of npm start (children and grandchildren too), and SIGKILLs a group that ignores the stop signal after stop_timeout', async () => {
    const pids = path.join(dir, 'pids-stop');
    mkdirSync(pids);
    mkdirSync(path.join(dir, 'npm-app'));
    writeFileSync(path.join(dir, 'npm-app/package.json'), JSON.stringify({ name: 'npm-app', private: true, scripts: { start: `node ${APP}` } }));
    const { supervisor: sup } = supervisor({
      // sh stays the leader (the command is a list), node is its child, `sleep` node's child.
      tree: { spawn: { command: `node ${APP} & wait`, ports: portRange(2).text, env: { CHILD: '1', PIDS_DIR: pids } } },
      stubborn: { spawn: { command: ['node', APP], ports: portRange(2).text, env: { IGNORE_TERM: '1' }, stop_timeout: '400ms' } },
      // npm start: npm, the sh it runs, node, sleep.
      npm: { spawn: { command: 'npm start', cwd: 'npm-app', ports: portRange(2).text, env: { CHILD: '1', npm_config_update_notifier: 'false' }, stop_timeout: '5s' } },
    });
    await sup.start();
    const groups = new Set(sup.slots().map((s) => s.pid!));
    const before = groupMembers(groups);
    // tree: sh, node, sleep and the shim's watcher; stubborn: node and the watcher; npm: npm, sh, node, sleep, watcher.
    assert.ok(before.length >= 10, `the groups hold ${before.length} processes`);
    const t0 = Date.now();
    await sup.stop();
    const took = Date.now() - t0;
    assert.ok(took >= 400 && took < 5000, `the stubborn instance was waited for, npm was not (stop took ${took} ms)`);
    const left = await eventually(() => (groupMembers(groups).length === 0 ? [] : false), 'the groups to be empty', 3000);
    assert.deepEqual(left, []);
  });

  test('an instance never ready within health_timeout is stopped and counts as a crash: start() resolves with the slot waiting to restart, and the log says what the last check saw', async () => {
    const { supervisor: sup, log } = supervisor({
      app: { spawn: { command: ['node', APP], ports: portRange(2).text, env: { HEALTH_FAIL: '1' }, health_timeout: '2s' }, health: { path: '/healthz', interval: '100ms' } },
    });
    await sup.start();
    const [slot] = sup.slots();
    assert.equal(slot!.state, 'backoff');
    assert.equal(slot!.pid, undefined);
    // 500 normally; on a loaded machine the app may not even listen within the timeout.
    const line = await log.waitFor((l) => l.level === 50, 'the failed start');
    assert.match(line.msg, /^app#1: pid (\d+) on port \d+ was not ready within 2000 ms: not ready in time \(last check: GET \/healthz( answered 500|: ECONNREFUSED)\); restarting in 100 ms$/);
    const pid = Number(/pid (\d+)/.exec(line.msg)![1]);
    assert.equal(alive(pid), false, 'the instance that was not ready is stopped');
  });

  test('stop_signal SIGINT reaches the app itself (the shim leaves no signal ignored): stop() ends well before stop_timeout', async () => {
    const { supervisor: sup } = supervisor({ app: { spawn: { command: ['node', APP], ports: portRange(2).text, stop_signal: 'SIGINT', stop_timeout: '20s' } } });
    await sup.start();
    const [slot] = sup.slots();
    const t0 = Date.now();
    await sup.stop();
    assert.ok(Date.now() - t0 < 10_000, `stopped in ${Date.now() - t0} ms`);
    assert.equal(alive(slot!.pid!), false);
  });

  test('user/group: refused with a clear error when Portico does not run as root; as root the instances run as that user', async () => {
    const range = portRange(2);
    const upstreams = { app: { spawn: { command: ['node', APP], ports: range.text, user: 'nobody' } } };
    // The refusal, seen from a process that is not root (a child run as nobody when this one is root).
    const script = [
      `const { Supervisor } = await import(${JSON.stringify(SUPERVISOR_MODULE)});`,
      `const { parseConfig } = await import(${JSON.stringify(CONFIG_MODULE)});`,
      `const config = parseConfig(process.argv[1], ${JSON.stringify(path.join(dir, 'portico.yaml'))}, ${JSON.stringify(dir)});`,
      `const sup = new Supervisor(config, { info() {}, warn() {}, error() {}, child() { return this; } }, { moved: async () => {} });`,
      `try { await sup.start(); console.log('started'); await sup.stop(); } catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })); }`,
    ].join('\n');
    const text = JSON.stringify({ upstreams, sites: [{ routes: [{ path: '/', proxy: { upstream: 'app' } }] }] });
    const asRoot = process.getuid!() === 0;
    const argv = asRoot
      ? ['/usr/bin/setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', process.execPath, '--input-type=module', '-e', script, text]
      : [process.execPath, '--input-type=module', '-e', script, text];
    const output = await new Promise<string>((resolve, reject) =>
      execFile(argv[0]!, argv.slice(1), { timeout: 15_000, cwd: dir }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
    );
    const refusal = JSON.parse(output.trim()) as { code: string; message: string };
    assert.equal(refusal.code, 'PORTICO_SPAWN_FAILED');
    assert.match(refusal.message, /^upstreams\.app\.spawn: running the instances as user "nobody" needs Portico to run as root \(it runs as uid \d+\); remove user\/group, or start Portico as root$/);
    if (!asRoot) return;

    const { supervisor: sup } = supervisor(upstreams);
    await sup.start();
    const [slot] = sup.slots();
    assert.equal(slot!.state, 'ready');
    assert.equal((await getJson(slot!.port!)).body.uid, 65534);
    await sup.stop();
  });

  test('update(): unchanged instances keep running, more instances start new slots, fewer stop the last ones, a changed env is returned for a deploy, a removed spawn stops its instances', async () => {
    const range = portRange(6);
    const spawn = (extra: Record<string, unknown>): Record<string, unknown> => ({ app: { spawn: { command: ['node', APP], ports: range.text, ...extra } } });
    const { supervisor: sup, sink } = supervisor(spawn({ instances: 2 }));
    await sup.start();
    const pidsOf = (): Array<number | undefined> => sup.slots().map((s) => s.pid);
    const [p1, p2] = pidsOf();

    assert.deepEqual(sup.update(spawnConfig(dir, spawn({ instances: 2 }))), []);
    assert.deepEqual(pidsOf(), [p1, p2]);

    assert.deepEqual(sup.update(spawnConfig(dir, spawn({ instances: 3 }))), []);
    const third = await eventually(() => sup.slots().find((s) => s.slot === 'app#3' && s.state === 'ready'), 'app#3 ready');
    assert.deepEqual(pidsOf(), [p1, p2, third.pid]);

    assert.deepEqual(sup.update(spawnConfig(dir, spawn({ instances: 1 }))), []);
    assert.deepEqual(pidsOf(), [p1]);
    await eventually(() => !alive(p2!) && !alive(third.pid!), 'app#2 and app#3 stopped');
    assert.deepEqual(sink.moves.filter((m) => m.port === undefined).map((m) => m.slot).sort(), ['app#2', 'app#3']);

    assert.deepEqual(sup.update(spawnConfig(dir, spawn({ instances: 1, env: { VERSION: '2' } }))), ['app']);
    assert.deepEqual(pidsOf(), [p1], 'a new version waits for the deploy');
    assert.deepEqual(sup.update(spawnConfig(dir, spawn({ instances: 1, env: { VERSION: '2' } }))), ['app'], 'still due: app#1 runs the old version');

    assert.deepEqual(sup.update(spawnConfig(dir, { app: { servers: ['http://127.0.0.1:9'] } })), []);
    assert.deepEqual(sup.slots(), []);
    await eventually(() => !alive(p1!), 'app#1 stopped');
  });
});
