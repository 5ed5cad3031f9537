/**
 * The control channel with real processes: `portico run` binds its control socket (0600, in a 0700 state
 * directory, no TCP port), and `portico reload | deploy | status` reach it; a stale socket left by a crash is
 * replaced, a live one refused; reloads are serialised; errors come back with file:line:col.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { request as httpRequest } from 'node:http';
import pino from 'pino';
import { callControl } from '../../src/control/client.js';
import { ControlServer } from '../../src/control/server.js';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { makeTree } from '../helpers/portico.js';
import { PorticoProcess, runCli, type CliResult } from '../helpers/process.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

const dir = makeTree({});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A config answering `body` on every path (and a second route when `extra` is given). */
function respondConfig(body: string, extra = ''): string {
  return `listen: ["127.0.0.1:0"]\nlog: { access: off }\nsites:\n  - routes:\n${extra}      - path: /\n        respond: { body: "${body}" }\n`;
}

/** Writes `name` in its own folder under the test's folder (each config has its own default state directory). */
function configFile(name: string, text: string, folder = name.replace(/\.yaml$/, '')): string {
  const sub = path.join(dir, folder);
  mkdirSync(sub, { recursive: true });
  const file = path.join(sub, name);
  writeFileSync(file, text);
  return file;
}

/** Runs `portico ARGS` to completion (bounded) and collects its output. */
function cli(args: readonly string[], cwd = dir): Promise<CliResult> {
  return runCli(args, cwd, 20_000);
}

/** The body of GET / (or `pathname`) on a fresh connection. */
async function body(port: number, pathname = '/'): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}${pathname}`, { headers: { connection: 'close' } });
  return res.text();
}

/** The default control socket of a config file: ./var/NAME/control.sock beside it. */
function socketOf(file: string): string {
  return path.join(path.dirname(file), 'var', path.parse(file).name, 'control.sock');
}

/** The inodes of the sockets process `pid` has open. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode !== undefined) inodes.add(inode);
    } catch {
      // Closed meanwhile.
    }
  }
  return inodes;
}

/** The inodes of listening TCP sockets (IPv4 and IPv6) on this machine. */
function listeningTcpInodes(): Set<string> {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(table)) continue;
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] === '0A') inodes.add(fields[9]!);
    }
  }
  return inodes;
}

describe('the control socket of portico run', { concurrency: true }, () => {
  test('the socket is 0600 in a 0700 state directory (./var/NAME beside the config), another user is refused, and no TCP port is opened besides the listener', async (t) => {
    const file = configFile('perm.yaml', respondConfig('one'));
    const portico = await PorticoProcess.start(file, path.dirname(file));
    try {
      const socket = socketOf(file);
      assert.equal(statSync(socket).mode & 0o777, 0o600);
      assert.ok(statSync(socket).isSocket());
      assert.equal(statSync(path.dirname(socket)).mode & 0o777, 0o700);
      // One listening TCP socket in the process: the configured listener; the control channel has none.
      const mine = socketInodes(portico.child.pid!);
      const listening = [...listeningTcpInodes()].filter((inode) => mine.has(inode));
      assert.equal(listening.length, 1, `listening TCP sockets of the process: ${listening.length}`);
      // The unix socket is the process's: /proc/net/unix lists it with one of its inodes.
      const unix = readFileSync('/proc/net/unix', 'utf8').split('\n').filter((line) => line.endsWith(socket));
      assert.ok(unix.some((line) => mine.has(line.trim().split(/\s+/)[6]!)), 'the control socket belongs to the process');
      t.diagnostic(`socket ${socket}: mode 0600, folder 0700, ${listening.length} listening TCP socket`);
      if (process.getuid?.() !== 0) return t.skip('the other-user check needs root (setpriv to nobody)');
      // Let nobody through the folders (0711: traverse only): the socket's own 0600 still refuses it.
      const folders = [path.dirname(socket), path.dirname(path.dirname(socket)), path.dirname(file), dir];
      const modes = folders.map((folder) => statSync(folder).mode & 0o777);
      for (const folder of folders) chmodSync(folder, 0o711);
      try {
        const probe = `require('net').connect(${JSON.stringify(socket)}).on('connect', () => { console.log('CONNECTED'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); })`;
        const asNobody = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', probe], { encoding: 'utf8', timeout: 10_000 });
        assert.equal(asNobody.stdout.trim(), 'EACCES', asNobody.stderr);
        t.diagnostic('another user (nobody) connecting: EACCES');
      } finally {
        folders.forEach((folder, i) => chmodSync(folder, modes[i]!));
      }
    } finally {
      await portico.stop();
    }
    assert.equal(existsSync(socketOf(file)), false, 'the socket file is removed at stop');
  });

  test('portico reload applies a changed route: exit 0, progress printed, the change live on the same port', async () => {
    const file = configFile('apply.yaml', respondConfig('one'));
    const portico = await PorticoProcess.start(file, path.dirname(file));
    try {
      writeFileSync(file, respondConfig('one', '      - path: /new\n        respond: { body: "added" }\n'));
      const out = await cli(['reload', '-c', file]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /reading .*apply\.yaml/);
      assert.match(out.stdout, /portico: reload ok \(#\d+, \d+ ms\)/);
      assert.equal(await body(portico.port, '/new'), 'added');
    } finally {
      await portico.stop();
    }
  });

  test('portico reload with a broken config exits 1 printing every error at file:line:col; the old config keeps serving', async () => {
    const file = configFile('broken.yaml', respondConfig('one'));
    const portico = await PorticoProcess.start(file, path.dirname(file));
    try {
      writeFileSync(file, `${respondConfig('two')}colour: red\nupstreams: { app: { servers: ["127.0.0.1:1"] } }\n`);
      // Run from another folder: the lines name the file as seen from there.
      const out = await cli(['reload', '-c', file], repo);
      assert.equal(out.code, 1, out.stdout);
      assert.match(out.stderr, /portico: reload failed: 2 errors in .*broken\.yaml \(PORTICO_CONFIG_INVALID\)/);
      // (outside that folder: by its absolute path, as `portico check` names it)
      assert.match(out.stderr, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:7:1 colour: unknown key`, 'm'));
      assert.match(out.stderr, /broken\.yaml:8:\d+ upstreams\.app\.servers\[0\]: /);
      assert.match(out.stderr, /the previous config is still serving/);
      assert.equal(await body(portico.port), 'one');
    } finally {
      await portico.stop();
    }
  });

  test('concurrent portico reload calls are serialised: all three complete, one after the other, in order', async (t) => {
    const file = configFile('queue.yaml', respondConfig('one'));
    const portico = await PorticoProcess.start(file, path.dirname(file));
    try {
      writeFileSync(file, respondConfig('two'));
      const runs = await Promise.all([1, 2, 3].map(() => cli(['reload', '--json', '-c', file])));
      const results = runs.map((run) => {
        assert.equal(run.code, 0, run.stderr);
        const lines = run.stdout.trim().split('\n');
        return JSON.parse(lines[lines.length - 1]!) as { ok: boolean; id: number; started: string; finished: string };
      });
      results.sort((a, b) => a.id - b.id);
      assert.equal(new Set(results.map((r) => r.id)).size, 3);
      for (let i = 1; i < results.length; i++) {
        assert.ok(Date.parse(results[i]!.started) >= Date.parse(results[i - 1]!.finished), `reload #${results[i]!.id} started before #${results[i - 1]!.id} finished`);
      }
      t.diagnostic(`reloads ${results.map((r) => `#${r.id} ${r.started}..${r.finished}`).join(', ')}`);
      assert.equal(await body(portico.port), 'two');
    } finally {
      await portico.stop();
    }
  });

  test('portico deploy of an unknown upstream, or of one without spawn, exits 1 with the reason', async () => {
    const file = configFile('deploy.yaml', `${respondConfig('one')}upstreams: { app: { servers: ["http://127.0.0.1:1"] } }\n`);
    const portico = await PorticoProcess.start(file, path.dirname(file));
    try {
      const nosuch = await cli(['deploy', 'nosuch', '-c', file]);
      assert.equal(nosuch.code, 1);
      assert.match(nosuch.stderr, /portico: deploy nosuch failed: unknown upstream "nosuch" \(the config has "app"\) \(PORTICO_UNKNOWN_UPSTREAM\)/);
      const fixed = await cli(['deploy', 'app', '-c', file]);
      assert.equal(fixed.code, 1);
      assert.match(fixed.stderr, /upstream "app" has no spawn section/);
      const usage = await cli(['deploy', '-c', file]);
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /deploy needs exactly one upstream name/);
    } finally {
      await portico.stop();
    }
  });

  test('portico status --json reports version, pid, uptime, config file and listeners; plain status prints them as lines', async () => {
    const file = configFile('status.yaml', respondConfig('one'));
    const portico = await PorticoProcess.start(file, path.dirname(file));
    try {
      const out = await cli(['status', '--json', '-c', file]);
      assert.equal(out.code, 0, out.stderr);
      const status = JSON.parse(out.stdout) as Record<string, unknown>;
      const version = (JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as { version: string }).version;
      assert.equal(status.ok, true);
      assert.equal(status.version, version);
      assert.equal(status.pid, portico.child.pid);
      assert.equal(typeof status.uptime_s, 'number');
      assert.equal(status.config, file);
      assert.deepEqual(status.listeners, [{ address: `127.0.0.1:${portico.port}`, url: `http://127.0.0.1:${portico.port}/` }]);
      assert.equal(status.control_socket, socketOf(file));
      assert.equal(status.running, null);
      const plain = await cli(['status', '-c', file]);
      assert.equal(plain.code, 0);
      assert.match(plain.stdout, new RegExp(`^portico ${version.replace(/\./g, '\\.')}: pid ${portico.child.pid}, up \\d+s$`, 'm'));
      assert.match(plain.stdout, new RegExp(`^listen +http://127\\.0\\.0\\.1:${portico.port}/$`, 'm'));
      assert.doesNotMatch(plain.stdout, /\x1b\[/, 'no colour when stdout is not a terminal');
    } finally {
      await portico.stop();
    }
  });

  test('with no Portico running, the commands exit 1 saying so; after a kill -9 the stale socket is reported, then replaced by the next run', async () => {
    const file = configFile('stale.yaml', respondConfig('one'));
    const none = await cli(['status', '-c', file]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no Portico is running for this config: there is no control socket .*stale\/var\/stale\/control\.sock \(PORTICO_NOT_RUNNING\)/);
    const first = await PorticoProcess.start(file, path.dirname(file));
    first.child.kill('SIGKILL');
    await once(first.child, 'exit');
    assert.ok(existsSync(socketOf(file)), 'the socket file outlives a kill -9');
    const stale = await cli(['reload', '-c', file]);
    assert.equal(stale.code, 1);
    assert.match(stale.stderr, /no Portico is running for this config: nothing answers on .*control\.sock \(a socket left by a Portico that crashed\)/);
    const second = await PorticoProcess.start(file, path.dirname(file));
    try {
      assert.match(second.stderr, /removing a stale control socket left by a process that is gone/);
      const status = await cli(['status', '--json', '-c', file]);
      assert.equal(status.code, 0, status.stderr);
      assert.equal((JSON.parse(status.stdout) as { pid: number }).pid, second.child.pid);
    } finally {
      await second.stop();
    }
  });

  test('a second portico run of the same config fails clearly: the state directory lock, or else the live control socket', async () => {
    const file = configFile('twice.yaml', respondConfig('one'));
    const first = await PorticoProcess.start(file, path.dirname(file));
    try {
      const locked = await cli(['run', '-c', file]);
      assert.equal(locked.code, 1);
      assert.match(locked.stderr, new RegExp(`state directory .*twice is in use by process ${first.child.pid} .*another Portico`));
      assert.doesNotMatch(locked.stderr, /serving/);
      // Without the lock file (removed by hand), the control socket that answers still keeps a second one out.
      unlinkSync(path.join(path.dirname(socketOf(file)), 'portico.lock'));
      const live = await cli(['run', '-c', file]);
      assert.equal(live.code, 1);
      assert.match(live.stderr, /another Portico is running: its control socket .*control\.sock answers/);
      const status = await cli(['status', '--json', '-c', file]);
      assert.equal((JSON.parse(status.stdout) as { pid: number }).pid, first.child.pid, 'the first one still answers');
    } finally {
      await first.stop();
    }
  });

  test('a control command for another config file on the same state directory is refused', async () => {
    const text = `state_dir: ./shared\n${respondConfig('one')}`;
    const a = configFile('a.yaml', text, 'pair');
    const b = configFile('b.yaml', text, 'pair');
    const portico = await PorticoProcess.start(a, path.dirname(a));
    try {
      const out = await cli(['reload', '-c', b]);
      assert.equal(out.code, 1);
      assert.match(out.stderr, /the Portico on this control socket serves .*a\.yaml, not .*b\.yaml \(PORTICO_NOT_APPLICABLE\)/);
    } finally {
      await portico.stop();
    }
  });

  test('a reload may name the default state directory (its keys then go there) but not move to another one', async () => {
    const file = configFile('adopt.yaml', respondConfig('one'));
    const portico = await PorticoProcess.start(file, path.dirname(file));
    try {
      const state = path.dirname(socketOf(file));
      assert.equal(existsSync(path.join(state, 'sticky.key')), false, 'the default folder holds no key until the config names it');
      writeFileSync(file, `state_dir: ./elsewhere\n${respondConfig('two')}`);
      const moved = await cli(['reload', '-c', file]);
      assert.equal(moved.code, 1);
      assert.match(moved.stderr, /state_dir .*elsewhere is not the state directory in use, .*var\/adopt \(the default, which holds the control socket\): restart Portico to move it \(PORTICO_STATE_DIR\)/);
      assert.equal(await body(portico.port), 'one');
      writeFileSync(file, `state_dir: ./var/adopt\n${respondConfig('three')}`);
      const named = await cli(['reload', '-c', file]);
      assert.equal(named.code, 0, named.stderr);
      assert.equal(await body(portico.port), 'three');
      assert.ok(existsSync(path.join(state, 'sticky.key')));
    } finally {
      await portico.stop();
    }
  });

  test('the 107-byte limit: a state_dir whose socket path is longer is a config error at file:line:col; a default one that long leaves run serving without a control socket, and the commands say why', async () => {
    const long = 'd'.repeat(110);
    const file = configFile('long.yaml', `state_dir: ./${long}\n${respondConfig('one')}`);
    const check = await cli(['check', '-c', file]);
    assert.equal(check.code, 1);
    assert.match(check.stderr, /long\.yaml:1:12 state_dir: the control socket path .*control\.sock is \d+ bytes, over the 107-byte limit of a unix socket path: choose a shorter state_dir/);
    const deep = configFile('deep.yaml', respondConfig('one'), `deep/${'e'.repeat(100)}`);
    const portico = await PorticoProcess.start(deep, path.dirname(deep));
    try {
      assert.match(portico.stderr, /no control socket .*over the 107-byte limit/);
      assert.equal(await body(portico.port), 'one');
      const status = await cli(['status', '-c', deep]);
      assert.equal(status.code, 1);
      assert.match(status.stderr, /over the 107-byte limit of a unix socket path: choose a shorter state_dir \(PORTICO_CONTROL\)/);
    } finally {
      await portico.stop();
    }
  });
});

describe('the operations queue behind the control socket (Portico in this process)', () => {
  test('a reload asked while a deploy runs is queued behind it: status answers meanwhile, the reload starts once the deploy ends, each streams its progress', async (t) => {
    const tree = makeTree({});
    const file = path.join(tree, 'portico.yaml');
    writeFileSync(file, `${respondConfig('one')}upstreams:\n  app:\n    spawn: { command: "node app.js", ports: 3001-3010 }\n`);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const deploying = new Promise<void>((resolve) => (entered = resolve));
    const deploy = async (upstream: string, progress: (event: unknown) => void) => {
      progress({ message: `${upstream}#1 replaced`, slot: `${upstream}#1` });
      entered();
      await gate;
      progress({ message: `${upstream}#2 replaced`, slot: `${upstream}#2` });
      return { replaced: 2 };
    };
    const server = new Portico(parseConfig(readFileSync(file, 'utf8'), file), pino({ level: 'silent' }), { control: true, deploy, version: 'test' });
    await server.start();
    try {
      const socket = server.config.control.socket;
      assert.equal(socket, path.join(tree, 'var/portico/control.sock'));
      const deployEvents: string[] = [];
      const deployed = callControl(socket, { operation: 'deploy', upstream: 'app', config: file }, { progress: (e) => deployEvents.push(e.message) });
      await deploying;
      const reloadEvents: string[] = [];
      const reloaded = callControl(socket, { operation: 'reload', config: file }, { progress: (e) => reloadEvents.push(e.message) });
      // Status is not queued: it answers while the deploy runs, and shows it.
      const status = await callControl(socket, { operation: 'status' });
      assert.equal(status.ok, true);
      assert.deepEqual((status.running as { operation: string }).operation, 'deploy app');
      // The reload has said it waits (bounded wait for its first line).
      for (let i = 0; i < 200 && reloadEvents.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.match(reloadEvents[0] ?? '', /^queued: reload #2 waits for the 1 operation\(s\) ahead \(deploy app #1 running\)$/);
      release();
      const [deployResult, reloadResult] = await Promise.all([deployed, reloaded]);
      assert.equal(deployResult.ok, true);
      assert.deepEqual(deployResult.report, { replaced: 2 });
      assert.deepEqual(deployEvents, ['deploying upstream "app"', 'app#1 replaced', 'app#2 replaced']);
      assert.equal(reloadResult.ok, true);
      assert.ok(Date.parse(String(reloadResult.started)) >= Date.parse(String(deployResult.finished)), 'the reload started after the deploy finished');
      t.diagnostic(`deploy #${String(deployResult.id)} then reload #${String(reloadResult.id)}; reload progress: ${reloadEvents.join(' | ')}`);
    } finally {
      await server.stop(100);
      rmSync(tree, { recursive: true, force: true });
    }
  });

  test('an unknown route or a body that is not JSON gets a 4xx with one result line, in the same error shape', async () => {
    const tree = makeTree({});
    const file = path.join(tree, 'portico.yaml');
    writeFileSync(file, respondConfig('one'));
    const server = new Portico(parseConfig(readFileSync(file, 'utf8'), file), pino({ level: 'silent' }), { control: true });
    await server.start();
    try {
      const ask = (method: string, pathname: string, payload?: string) =>
        new Promise<{ status: number; text: string }>((resolve, reject) => {
          const req = httpRequest({ socketPath: server.config.control.socket, method, path: pathname, agent: false }, (res) => {
            let text = '';
            res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk)).on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          });
          req.on('error', reject);
          req.end(payload);
        });
      const unknown = await ask('POST', '/v1/frobnicate');
      assert.equal(unknown.status, 404);
      assert.deepEqual(JSON.parse(unknown.text), { result: { ok: false, error: { code: 'PORTICO_NOT_FOUND', message: 'no such operation: POST /v1/frobnicate (POST /v1/reload|deploy|upgrade|status|reopen)' } } });
      const notJson = await ask('POST', '/v1/reload', '{nope');
      assert.equal(notJson.status, 400);
      assert.match(JSON.parse(notJson.text).result.error.message, /not JSON/);
      const method = await ask('GET', '/v1/reload');
      assert.equal(method.status, 405);
      const status = await ask('GET', '/v1/status');
      assert.equal(status.status, 200);
      assert.equal(JSON.parse(status.text.trim().split('\n').pop()!).result.ok, true);
    } finally {
      await server.stop(100);
      rmSync(tree, { recursive: true, force: true });
    }
  });
});

describe('ControlServer on its own', () => {
  const handler = (pid: number) => ({ run: async () => ({ ok: true as const, pid }) });

  test('a successor bound at the same path (an upgrade) keeps its socket file when the old server stops; a file that is no socket is refused', async () => {
    const tree = makeTree({});
    const folder = path.join(tree, 'state');
    mkdirSync(folder, { mode: 0o700 });
    const socket = path.join(folder, 'control.sock');
    const logger = pino({ level: 'silent' });
    const old = new ControlServer(socket, handler(1), logger);
    await old.start();
    // The successor takes the path over (the old one's file removed, as an upgrade does once it holds the lock).
    unlinkSync(socket);
    const successor = new ControlServer(socket, handler(2), logger);
    await successor.start();
    try {
      await old.stop(100);
      assert.ok(existsSync(socket), 'the successor\'s socket file is still there');
      const answer = await callControl(socket, { operation: 'status' });
      assert.equal(answer.pid, 2);
    } finally {
      await successor.stop(100);
    }
    assert.equal(existsSync(socket), false);
    writeFileSync(socket, 'not a socket');
    const refused = new ControlServer(socket, handler(3), logger);
    await assert.rejects(refused.start(), /control\.sock exists and is not a socket: remove it/);
    chmodSync(folder, 0o770);
    await assert.rejects(new ControlServer(path.join(folder, 'other.sock'), handler(4), logger).start(), /the control socket's folder .*state is group-writable \(mode 0770\): chmod 700 it/);
    rmSync(tree, { recursive: true, force: true });
  });
});

describe('control waits are bounded', () => {
  test('a long operation streams heartbeat lines, which the client passes over to the result; a Portico silent past the idle bound is reported, and the operation outlives the client', async (t) => {
    const tree = makeTree({});
    const folder = path.join(tree, 'state');
    mkdirSync(folder, { mode: 0o700 });
    const socket = path.join(folder, 'control.sock');
    let finished = 0;
    const server = new ControlServer(
      socket,
      {
        run: async (request) => {
          await new Promise((resolve) => setTimeout(resolve, request.operation === 'reload' ? 300 : 600));
          finished++;
          return { ok: true as const, operation: request.operation };
        },
      },
      pino({ level: 'silent' }),
      { heartbeatMs: 50 },
    );
    await server.start();
    try {
      const raw = await new Promise<string>((resolve, reject) => {
        const req = httpRequest({ socketPath: socket, method: 'POST', path: '/v1/reload', agent: false }, (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk)).on('end', () => resolve(text));
        });
        req.on('error', reject);
        req.end();
      });
      const lines = raw.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      const heartbeats = lines.filter((line) => line.heartbeat === true).length;
      assert.ok(heartbeats >= 2, `heartbeats: ${heartbeats}`);
      assert.deepEqual(lines[lines.length - 1], { result: { ok: true, operation: 'reload' } });
      assert.deepEqual(await callControl(socket, { operation: 'reload' }), { ok: true, operation: 'reload' });
      // The client gives up after its idle bound when no line comes (here shorter than the first heartbeat's gap
      // would be in production): the operation itself goes on and finishes.
      const quiet = new ControlServer(path.join(folder, 'quiet.sock'), { run: () => new Promise((resolve) => setTimeout(() => { finished++; resolve({ ok: true as const }); }, 600)) }, pino({ level: 'silent' }), { heartbeatMs: 60_000 });
      await quiet.start();
      try {
        const before = finished;
        const gaveUp = await callControl(path.join(folder, 'quiet.sock'), { operation: 'status' }, { idleTimeoutMs: 150 });
        assert.equal(gaveUp.ok, false);
        assert.match(gaveUp.ok ? '' : gaveUp.error.message, /Portico sent nothing for 150 ms on .*quiet\.sock: it may be hung/);
        for (let i = 0; i < 100 && finished === before; i++) await new Promise((resolve) => setTimeout(resolve, 20));
        assert.equal(finished, before + 1, 'the operation finished after its client left');
      } finally {
        await quiet.stop(100);
      }
      t.diagnostic(`${heartbeats} heartbeat lines in a 300 ms operation at 50 ms`);
    } finally {
      await server.stop(100);
      rmSync(tree, { recursive: true, force: true });
    }
  });
});
