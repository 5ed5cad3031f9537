/**
 * Regression tests for defects found by trying spawn, deploy and reload as a user would (issue 17's probe):
 * real Portico in this process, real app processes (test/fixtures/spawn-app.mjs), real sockets on loopback.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import type { PorticoError } from '../../src/errors.js';
import { callControl } from '../../src/control/client.js';
import { ControlServer } from '../../src/control/server.js';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { Supervisor } from '../../src/supervise/supervisor.js';
import { configErrors } from '../helpers/config.js';
import { makeTree } from '../helpers/portico.js';
import { runCli } from '../helpers/process.js';
import { APP, CONFIG_MODULE, eventually, portRange, RecordingSink, spawnConfig } from '../helpers/supervise.js';
import { httpRequest } from './proxy-support.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');
const PORTICO_MODULE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/server/portico.js');

/** Runs `portico ARGS` to completion (bounded) and collects its output. */
const cli = (args: readonly string[], cwd: string) => runCli(args, cwd);

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) {
    try {
      await cleanup();
    } catch {
      // Already stopped by its test.
    }
  }
});

/** A config with a fixed route answering `word` and an upstream `app` of one spawned instance. */
function configText(word: string, ports: string, spawnExtra = ''): string {
  return [
    'listen: ["127.0.0.1:0"]',
    'log: { access: off }',
    'upstreams:',
    '  app:',
    `    spawn: { command: ["node", ${JSON.stringify(APP)}], instances: 1, ports: ${ports}, health_timeout: 20s${spawnExtra} }`,
    'sites:',
    '  - routes:',
    `      - { path: /word, respond: { body: "${word}" } }`,
    '      - { path: /, proxy: { upstream: app } }',
    '',
  ].join('\n');
}

describe('spawn and reload, as a user meets them', () => {
  test('a SIGHUP while portico run is still starting its app instances is ignored with a line, not the end of the process: it then serves', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const range = portRange(4);
    const file = path.join(dir, 'portico.yaml');
    // The instance becomes ready only after a while: `portico run` is in its start meanwhile.
    const slow = `sleep 1.5 && exec ${JSON.stringify(process.execPath)} ${JSON.stringify(APP)}`;
    writeFileSync(file, configText('starting', range.text).replace(/command: \[[^\]]*\]/, `command: ${JSON.stringify(slow)}`));
    const child = spawn(process.execPath, [CLI, 'run', '-c', file], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    cleanups.push(() => void child.kill('SIGKILL'));
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    // The instance was launched (its slot is named in the log): Portico is starting, not serving yet.
    await eventually(() => /app#1/.test(stderr) && !/serving/.test(stderr), 'the instance launched, before the serving line', 15_000);
    child.kill('SIGHUP');
    await eventually(() => /SIGHUP ignored: still starting/.test(stderr), 'the SIGHUP was ignored with a line', 15_000);
    await eventually(() => / serving .* on http:\/\/127\.0\.0\.1:\d+\//.test(stderr), `the serving line; stderr:\n${stderr}`, 30_000);
    assert.equal(child.exitCode, null, 'Portico is still running');
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
  });

  test('a reload whose spawn names a user Portico cannot switch to (it does not run as root) is refused before the swap: the previous config keeps serving, and a later reload works', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    chmodSync(dir, 0o777);
    const range = portRange(4);
    const file = path.join(dir, 'portico.yaml');
    // Portico in a child process as a user that is not root (when the test runs as root: nobody, by setpriv).
    const script = `
      import http from 'node:http';
      import pino from 'pino';
      const { parseConfig } = await import(${JSON.stringify(CONFIG_MODULE)});
      const { Portico } = await import(${JSON.stringify(PORTICO_MODULE)});
      const [file, dir, one, two, three] = process.argv.slice(1);
      const get = (port, path) => new Promise((resolve, reject) => http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = ''; res.setEncoding('utf8').on('data', (c) => (body += c)).on('end', () => resolve(res.statusCode + ' ' + body));
      }).on('error', reject));
      const server = new Portico(parseConfig(one, file, dir), pino({ level: 'silent' }));
      await server.start();
      const port = server.addresses[0].port;
      const out = {};
      try { await server.reload(parseConfig(two, file, dir)); out.refused = null; } catch (err) { out.refused = { code: err.code, message: err.message }; }
      out.user = server.config.upstreams.app.spawn.user ?? null;
      out.word = await get(port, '/word');
      out.app = (await get(port, '/')).split(' ')[0];
      await server.reload(parseConfig(three, file, dir));
      out.after = await get(port, '/word');
      await server.stop(100);
      process.stdout.write(JSON.stringify(out));
    `;
    const asRoot = process.getuid?.() === 0;
    const argv = [process.execPath, '--input-type=module', '-e', script, file, dir, configText('one', range.text), configText('two', range.text, ', user: root'), configText('three', range.text)];
    const command = asRoot ? ['/usr/bin/setpriv', '--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', '--', ...argv] : argv;
    const output = await new Promise<string>((resolve, reject) =>
      execFile(command[0]!, command.slice(1), { timeout: 30_000, cwd: path.dirname(PORTICO_MODULE) }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
    );
    const out = JSON.parse(output) as { refused: { code: string; message: string } | null; user: string | null; word: string; app: string; after: string };
    assert.equal(out.refused?.code, 'PORTICO_SPAWN_FAILED');
    assert.match(out.refused.message, /^upstreams\.app\.spawn: running the instances as user "root" needs Portico to run as root/);
    assert.equal(out.user, null, 'the previous config is still the one in service');
    assert.equal(out.word, '200 one', 'the previous routes answer');
    assert.equal(out.app, '200', 'the instance still serves');
    assert.equal(out.after, '200 three', 'a later reload works');
  });
});

describe('a reload that adds a spawned upstream', () => {
  test('its instances are ready before the swap: its route answers 200 as soon as the reload resolves (it answered 503 until they were up); a reload failing later stops them again', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'portico.yaml');
    const [one, two] = [portRange(3), portRange(3)];
    const text = configText('one', one.text);
    const server = new Portico(parseConfig(text, file, dir), pino({ level: 'silent' }), {});
    cleanups.push(() => server.stop(100));
    await server.start();
    const port = server.addresses[0]!.port;
    const withTwo = (listen: string): string =>
      text
        .replace('listen: ["127.0.0.1:0"]', `listen: ["127.0.0.1:0"${listen}]`)
        .replace('sites:', `  two:\n    spawn: { command: ["node", ${JSON.stringify(APP)}], ports: ${two.text} }\n    health: { path: /healthz, interval: 100ms, rise: 2 }\nsites:`)
        .replace('      - { path: /, proxy', '      - { path: /two/, proxy: { upstream: two, strip_prefix: true } }\n      - { path: /, proxy');
    type Slot = { upstream: string; pid?: number };
    const slotsOf = (upstream: string): Slot[] => (server.supervisor!.slots() as Slot[]).filter((s) => s.upstream === upstream);

    // A reload that fails at its listeners (a port another program holds) starts nothing that stays.
    const other = net.createServer();
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const taken = (other.address() as net.AddressInfo).port;
    try {
      await assert.rejects(server.reload(parseConfig(withTwo(`, "127.0.0.1:${taken}"`), file, dir)), { code: 'PORTICO_LISTEN_FAILED' });
    } finally {
      other.close();
    }
    assert.deepEqual(slotsOf('two'), [], 'the upstream the failed reload added is gone');

    await server.reload(parseConfig(withTwo(''), file, dir));
    const answer = await httpRequest(port, '/two/');
    assert.equal(answer.status, 200, 'the new upstream serves at once');
    assert.equal(JSON.parse(answer.body.toString()).slot, 'two#1');
  });
});

describe('a deploy cut short', () => {
  test('Portico stopping between a new instance\'s readiness and its swap ends the deploy with PORTICO_DEPLOY_FAILED saying so (it was an internal error "the slot went away during the deploy")', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const range = portRange(3);
    const sup = new Supervisor(spawnConfig(dir, { app: { spawn: { command: ['node', APP], instances: 1, ports: range.text }, health: { path: '/healthz', interval: '100ms' } } }), pino({ level: 'silent' }), new RecordingSink());
    cleanups.push(() => sup.stop());
    await sup.start();
    let stopping: Promise<void> | undefined;
    const deploy = sup.deploy('app', (event) => {
      if (event.phase === 'ready') stopping = sup.stop();
    });
    await assert.rejects(deploy, (err: PorticoError) => {
      assert.equal(err.code, 'PORTICO_DEPLOY_FAILED');
      assert.match(err.message, /^deploy of app stopped at app#1: Portico is stopping; its new instance pid \d+ was stopped before it served$/);
      return true;
    });
    await stopping;
  });

  test('a deploy stopped after it replaced a slot that then cannot be rolled back says so (not "no slot had been replaced")', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const range = portRange(3);
    const sup = new Supervisor(spawnConfig(dir, { app: { spawn: { command: ['node', APP], instances: 2, ports: range.text }, health: { path: '/healthz', interval: '100ms' } } }), pino({ level: 'silent' }), new RecordingSink());
    cleanups.push(() => sup.stop());
    await sup.start();
    let stopping: Promise<void> | undefined;
    const deploy = sup.deploy('app', (event) => {
      // Portico stops once app#1 was replaced: app#2 is not started, app#1's roll back cannot start either.
      if (event.slot === 'app#1' && event.phase === 'stopped') stopping = sup.stop();
    });
    await assert.rejects(deploy, (err: PorticoError) => {
      assert.equal(err.code, 'PORTICO_DEPLOY_FAILED');
      assert.doesNotMatch(err.message, /no slot had been replaced/);
      assert.match(err.message, /^deploy of app stopped at app#2: .*; app#1 could not be rolled back and runs the new version; the slots not reached keep their old instances$/);
      return true;
    });
    await stopping;
  });
});

describe('spawn config checks', () => {
  test('a spawn cwd that does not exist is a config error at file:line:col (it was accepted, then crash-looped at run time)', () => {
    const dir = makeTree({ 'app/server.js': '' });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const text = (cwd: string): string =>
      `upstreams:\n  app:\n    spawn: { command: ["node", "server.js"], cwd: ${cwd}, ports: 3001-3002 }\nsites:\n  - routes: [{ path: /, proxy: { upstream: app } }]\n`;
    assert.deepEqual(configErrors(text('./nope'), dir), ['portico.yaml:3:51 upstreams.app.spawn.cwd: directory ./nope does not exist']);
    assert.equal(parseConfig(text('./app'), path.join(dir, 'portico.yaml'), dir).upstreams.app!.spawn!.cwd, './app');
  });

  test('spawn.ports holding a port Portico listens on is a config error at file:line:col (the instance started first took it, and run failed with "address already in use")', () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const text = (listen: string): string =>
      `listen: ["127.0.0.1:8080", "${listen}"]\nupstreams:\n  app:\n    spawn: { command: ["node", "server.js"], ports: 3001-3010 }\nsites:\n  - routes: [{ path: /, proxy: { upstream: app } }]\n`;
    assert.deepEqual(configErrors(text(':3005'), dir), [
      'portico.yaml:4:53 upstreams.app.spawn.ports: 3001-3010 holds port 3005, which Portico listens on (listen[1]): an instance could take it first; choose a range apart from the listen ports',
    ]);
    assert.equal(parseConfig(text('127.0.0.1:3011'), path.join(dir, 'portico.yaml'), dir).listen.length, 2);
  });

  test('a spawn user or group that does not exist is a config error at file:line:col (check said valid; run refused without a position)', (t) => {
    if (!existsSync('/usr/bin/getent')) return t.skip('no getent here');
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const text = (who: string): string =>
      `upstreams:\n  app:\n    spawn: { command: ["node", "server.js"], ports: 3001-3002, ${who} }\nsites:\n  - routes: [{ path: /, proxy: { upstream: app } }]\n`;
    assert.deepEqual(configErrors(text('user: no-such-user-probe, group: no-such-group-probe'), dir), [
      'portico.yaml:3:70 upstreams.app.spawn.user: no user "no-such-user-probe" on this system',
      'portico.yaml:3:97 upstreams.app.spawn.group: no group "no-such-group-probe" on this system',
    ]);
    assert.equal(parseConfig(text('user: root, group: root'), path.join(dir, 'portico.yaml'), dir).upstreams.app!.spawn!.user, 'root');
  });

  test('a spawn health_timeout of 0 is a config error at file:line:col (every start would fail before its first check)', () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const text = (timeout: string): string =>
      `upstreams:\n  app:\n    spawn: { command: ["node", "server.js"], ports: 3001-3002, health_timeout: ${timeout} }\nsites:\n  - routes: [{ path: /, proxy: { upstream: app } }]\n`;
    assert.deepEqual(configErrors(text('0'), dir), ['portico.yaml:3:80 upstreams.app.spawn.health_timeout: must be more than 0: a new instance needs time to pass its readiness checks']);
    assert.equal(parseConfig(text('500ms'), path.join(dir, 'portico.yaml'), dir).upstreams.app!.spawn!.health_timeout, 500);
  });

  test('PORT (or PORTICO_SLOT, PORTICO_ROUTE) in spawn.env is a config error at file:line:col: Portico sets it per instance and would silently replace it', () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const text = (env: string): string =>
      `upstreams:\n  app:\n    spawn: { command: ["node", "server.js"], ports: 3001-3002, env: { ${env} } }\nsites:\n  - routes: [{ path: /, proxy: { upstream: app } }]\n`;
    assert.deepEqual(configErrors(text('PORT: "8000"'), dir), ['portico.yaml:3:77 upstreams.app.spawn.env.PORT: PORT is set by Portico for each instance (its own value); remove it here']);
    assert.equal(configErrors(text('PORTICO_SLOT: x, NODE_ENV: production'), dir).length, 1);
    assert.deepEqual(parseConfig(text('NODE_ENV: production'), path.join(dir, 'portico.yaml'), dir).upstreams.app!.spawn!.env, { NODE_ENV: 'production' });
  });
});

describe('portico deploy output', () => {
  test('portico deploy prints progress, then a summary with each slot\'s old and new pid and port and its ready and drain times (as docs/apps.md says)', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'portico.yaml');
    const range = portRange(4);
    const text = configText('one', range.text).replace('instances: 1', 'instances: 2');
    writeFileSync(file, text);
    const server = new Portico(parseConfig(text, file, dir), pino({ level: 'silent' }), { control: true });
    cleanups.push(() => server.stop(100));
    await server.start();
    const { code, stdout, stderr } = await cli(['deploy', 'app', '-c', file], dir);
    assert.equal(code, 0, stderr);
    const lines = stdout.trimEnd().split('\n');
    const summary = lines.findIndex((line) => /^summary: 2 instances replaced$/.test(line));
    assert.ok(summary > 0, `a summary after the progress lines:\n${stdout}`);
    assert.match(lines[summary + 1]!, /^ {2}app#1: pid \d+ → \d+, port \d+ → \d+, ready in \d+ ms, drained in \d+ ms$/);
    assert.match(lines[summary + 2]!, /^ {2}app#2: pid \d+ → \d+, port \d+ → \d+, ready in \d+ ms, drained in \d+ ms$/);
    assert.match(lines.at(-1)!, /^portico: deploy app ok \(#1, \d+ ms\)$/);
  });
});

describe('portico status', () => {
  test('portico status says a slot left down by a crash loop is in a crash loop, and what starts it again', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'portico.yaml');
    const range = portRange(3);
    const text = configText('one', range.text, ', env: { CRASH_AFTER_MS: "0" }');
    writeFileSync(file, text);
    const server = new Portico(parseConfig(text, file, dir), pino({ level: 'silent' }), { control: true });
    cleanups.push(() => server.stop(100));
    await server.start();
    await eventually(() => (server.supervisor!.slots() as Array<{ state: string }>)[0]!.state === 'failed', 'the crash loop', 20_000);
    const { code, stdout, stderr } = await cli(['status', '-c', file], dir);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^instance {2}app#1 failed: crash loop \(5 crashes within a minute\), not restarted until a deploy or a reload, 4 restarts$/m);
  });
});

describe('the control socket when Portico stops', () => {
  test('a command waiting on an operation when Portico stops gets a result saying Portico is stopping (it got a bare "aborted")', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const folder = path.join(dir, 'state');
    mkdirSync(folder, { mode: 0o700 });
    let entered!: () => void;
    const running = new Promise<void>((resolve) => (entered = resolve));
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    cleanups.push(() => release());
    const control = new ControlServer(path.join(folder, 'control.sock'), {
      run: async () => {
        entered();
        await held; // a deploy that the stop of the Supervisor ends only later
        return { ok: true };
      },
    }, pino({ level: 'silent' }));
    await control.start();
    const answer = callControl(control.socket, { operation: 'deploy', upstream: 'app' });
    await running;
    await control.stop(100);
    const result = await answer;
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.error.code, 'PORTICO_STOPPING');
    assert.equal(result.error.message, "Portico is stopping: the deploy under way did not finish before the control socket closed (its outcome is in Portico's log)");
  });
});
