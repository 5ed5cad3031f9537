/**
 * The state directory: created 0700 with its sticky key 0600 (the key survives a restart, so sticky pins do);
 * refused when group- or world-writable or owned by another user; locked against a second `portico run` (real
 * processes), a dead process's lock taken over; and the config checks around it and around ACME sites.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { ConfigError, PorticoError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { LOCK_FILE } from '../../src/tls/state-dir.js';
import { makeTree } from '../helpers/portico.js';
import { capturingLogger } from '../helpers/pebble.js';
import { startUpstream } from '../helpers/upstream.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CLI = path.join(repo, 'dist/src/cli.js');
const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tree(files: Record<string, string> = {}): string {
  const dir = makeTree(files);
  dirs.push(dir);
  return dir;
}

const SITE = 'sites:\n  - routes:\n      - path: /\n        respond: { body: "ok" }\n';

function configIn(dir: string, text: string) {
  return parseConfig(text, path.join(dir, 'portico.yaml'), dir);
}

/** The issues of a config that must fail, as `line:col key: message` strings. */
function issuesOf(dir: string, text: string): string[] {
  try {
    configIn(dir, text);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((issue) => `${issue.line}:${issue.col} ${issue.keyPath}: ${issue.message}`);
    throw err;
  }
  assert.fail('the config was accepted');
}

describe('state directory', () => {
  test('created 0700 (with missing parents) and its sticky key 0600; the key survives a restart, so sticky pins do', async (t) => {
    const app = await startUpstream('ok');
    t.after(() => app.stop());
    const dir = tree();
    const text = `listen: ["127.0.0.1:0"]\nlog: { access: off }\nstate_dir: ./var/portico\nupstreams:\n  app:\n    servers: [{ url: "${app.url}" }]\n    sticky: { cookie: pin }\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
    const pin = async () => {
      const server = new Portico(configIn(dir, text), pino({ level: 'silent' }));
      await server.start();
      try {
        const res = await fetch(`http://127.0.0.1:${server.addresses[0]!.port}/`);
        await res.arrayBuffer();
        return /^pin=([0-9a-f]+);/.exec(res.headers.get('set-cookie') ?? '')?.[1];
      } finally {
        await server.stop(100);
      }
    };
    const first = await pin();
    const state = path.join(dir, 'var/portico');
    assert.equal(statSync(state).mode & 0o777, 0o700);
    assert.equal(statSync(path.join(dir, 'var')).mode & 0o777, 0o700);
    assert.equal(statSync(path.join(state, 'sticky.key')).mode & 0o777, 0o600);
    assert.equal(existsSync(path.join(state, LOCK_FILE)), false, 'the lock is released at stop');
    assert.ok(first !== undefined);
    assert.equal(await pin(), first, 'the same pin after a restart');
  });

  test('a group- or world-writable state directory is refused: a config error at state_dir, and at start', () => {
    const says: Record<number, string> = { 0o770: 'group', 0o707: 'world', 0o777: 'group- and world' };
    for (const mode of [0o770, 0o707, 0o777]) {
      const dir = tree();
      const state = path.join(dir, 'state');
      mkdirSync(state, { mode: 0o700 });
      chmodSync(state, mode);
      const issues = issuesOf(dir, `state_dir: ./state\n${SITE}`);
      assert.equal(issues.length, 1, issues.join('\n'));
      assert.match(issues[0]!, new RegExp(`^1:12 state_dir: state directory .*state is ${says[mode]}-writable \\(mode 0${mode.toString(8)}\\): chmod 700 it$`));
      // Made unsafe after the config was checked: the start refuses it too.
      chmodSync(state, 0o700);
      const config = configIn(dir, `state_dir: ./state\n${SITE}`);
      chmodSync(state, mode);
      assert.throws(() => new Portico(config, pino({ level: 'silent' })), (err: unknown) => err instanceof PorticoError && err.code === 'PORTICO_STATE_DIR' && /writable/.test(err.message));
    }
  });

  test('a state directory owned by another user is refused', (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to give a folder to another user');
    const dir = tree();
    const state = path.join(dir, 'state');
    mkdirSync(state, { mode: 0o700 });
    chownSync(state, 65534, 65534);
    const issues = issuesOf(dir, `state_dir: ./state\n${SITE}`);
    assert.match(issues[0] ?? '', /state_dir: state directory .* is owned by another user \(uid 65534, this process runs as uid 0\)/);
  });

  test('a second `portico run` on the same state directory exits 1 naming the first one\'s pid; the lock goes when the first stops', async () => {
    const dir = tree({ 'portico.yaml': `listen: ["127.0.0.1:0"]\nlog: { access: off }\nstate_dir: ./state\n${SITE}` });
    const first = spawn(process.execPath, [CLI, 'run', '-c', 'portico.yaml'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      first.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (/serving/.test(stderr)) resolve();
      });
      first.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
    try {
      assert.equal(readFileSync(path.join(dir, 'state', LOCK_FILE), 'utf8').trim(), String(first.pid));
      const second = spawnSync(process.execPath, [CLI, 'run', '-c', 'portico.yaml'], { cwd: dir, encoding: 'utf8', timeout: 20_000 });
      assert.equal(second.status, 1, second.stderr);
      assert.match(second.stderr, new RegExp(`state directory .*state is in use by process ${first.pid} .*PORTICO_STATE_DIR`));
      assert.doesNotMatch(second.stderr, /serving/);
    } finally {
      const exited = new Promise((resolve) => first.once('exit', resolve));
      first.kill('SIGTERM');
      await exited;
    }
    assert.equal(existsSync(path.join(dir, 'state', LOCK_FILE)), false);
  });

  test('the lock of a process that is gone is taken over, with a log line', async () => {
    const dir = tree();
    mkdirSync(path.join(dir, 'state'), { mode: 0o700 });
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeFileSync(path.join(dir, 'state', LOCK_FILE), `${gone.stdout}\n`, { mode: 0o600 });
    const logs = capturingLogger();
    const server = new Portico(configIn(dir, `listen: ["127.0.0.1:0"]\nlog: { access: off }\nstate_dir: ./state\n${SITE}`), logs.logger);
    await server.start();
    assert.equal(readFileSync(path.join(dir, 'state', LOCK_FILE), 'utf8').trim(), String(process.pid));
    await server.stop(100);
    const line = logs.lines.find((entry) => entry.msg === 'taking over the state directory lock of a process that is gone');
    assert.equal(line?.pid, gone.stdout);
  });

  test('without an ACME site the challenge path is routed like any other (a state directory alone does not claim it)', async () => {
    const dir = tree();
    const server = new Portico(configIn(dir, `listen: ["127.0.0.1:0"]\nlog: { access: off }\nstate_dir: ./state\nsites:\n  - routes:\n      - path: /.well-known/\n        respond: { body: "mine" }\n`), pino({ level: 'silent' }));
    await server.start();
    try {
      const res = await fetch(`http://127.0.0.1:${server.addresses[0]!.port}/.well-known/acme-challenge/token`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'mine');
    } finally {
      await server.stop(100);
    }
  });

  test('one process cannot open the same state directory twice', async () => {
    const dir = tree();
    const config = configIn(dir, `listen: ["127.0.0.1:0"]\nlog: { access: off }\nstate_dir: ./state\n${SITE}`);
    const server = new Portico(config, pino({ level: 'silent' }));
    try {
      assert.throws(() => new Portico(config, pino({ level: 'silent' })), /is in use by process/);
    } finally {
      await server.stop(100);
    }
  });
});

describe('config checks for state_dir and ACME', () => {
  test('a state_dir or a cache disk folder inside a static root is a config error', () => {
    const dir = tree({ 'pub/index.html': 'hi' });
    const issues = issuesOf(dir, `state_dir: ./pub/state
caches:
  c: { disk: { path: ./pub/cache } }
sites:
  - routes:
      - path: /
        static: { root: ./pub }
`);
    assert.equal(issues.length, 2, issues.join('\n'));
    assert.match(issues[0]!, /^1:12 state_dir: the state directory holds private keys and is inside the static root .*pub: move it out$/);
    assert.match(issues[1]!, /^3:22 caches\.c\.disk\.path: a cache folder inside the static root .*pub would serve cached answers as files/);
  });

  test('ACME: agree_tos false, a wildcard host, no hosts, and staging beside a directory are errors at their keys', () => {
    const dir = tree();
    const issues = issuesOf(dir, `sites:
  - hosts: [a.example, "*.a.example"]
    tls: { acme: { email: ops@a.example, agree_tos: false } }
  - tls: { acme: { email: ops@a.example, agree_tos: true } }
`);
    assert.equal(issues.length, 3, issues.join('\n'));
    assert.match(issues[0]!, /^2:24 sites\[0\]\.hosts\[1\]: a wildcard host cannot get an ACME certificate here \(it needs the dns-01 challenge/);
    assert.match(issues[1]!, /^3:53 sites\[0\]\.tls\.acme\.agree_tos: ACME needs the CA's terms of service agreed to/);
    assert.match(issues[2]!, /^4:18 sites\[1\]\.tls\.acme: ACME needs the site's "hosts"/);
    const staging = issuesOf(dir, `sites:
  - hosts: [c.example]
    tls: { acme: { email: ops@a.example, agree_tos: true, staging: true, directory: "https://acme.example/dir" } }
`);
    assert.deepEqual(staging, ['3:68 sites[0].tls.acme.staging: "staging" picks Let\'s Encrypt\'s staging directory: set it or "directory", not both']);
  });

  test('ACME defaults: Let\'s Encrypt production, staging on request, and state_dir ./var/portico beside the config', () => {
    const dir = tree();
    const config = configIn(dir, `sites:
  - hosts: [a.example]
    tls: { acme: { email: ops@a.example, agree_tos: true } }
  - hosts: [b.example]
    tls: { acme: { email: ops@a.example, agree_tos: true, staging: true } }
`);
    assert.equal(config.sites[0]!.tls?.acme?.directory, 'https://acme-v02.api.letsencrypt.org/directory');
    assert.equal(config.sites[1]!.tls?.acme?.directory, 'https://acme-staging-v02.api.letsencrypt.org/directory');
    assert.equal(config.state_dir, path.join(dir, 'var/portico'));
    assert.equal(configIn(dir, SITE).state_dir, undefined, 'no ACME, no state_dir: none');
  });
});
