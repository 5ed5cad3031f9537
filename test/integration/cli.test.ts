/**
 * The `portico` command as a real process: `check`, `--version`, `--help`, and `run` on port 0 through to a
 * graceful SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { makeTree } from '../helpers/portico.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CLI = path.join(repo, 'dist/src/cli.js');
const VERSION = (JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as { version: string }).version;

const GOOD = 'listen: ["127.0.0.1:0"]\nlog: { access: stdout }\nsites:\n  - routes:\n      - path: /\n        static: { root: ./pub }\n';
// The same config under several names: each `portico run` of a config file holds its own state directory
// (./var/NAME: its lock and control socket), and the tests below run at the same time.
const dir = makeTree({
  'pub/hello.txt': 'hello from the cli',
  'good.yaml': GOOD,
  'outside.yaml': GOOD,
  'sigterm.yaml': GOOD,
  'holder.yaml': GOOD,
  'broken.yaml': [
    'listen: ["127.0.0.1:0"]',
    'colour: red',
    'sites:',
    '  - routes:',
    '      - path: /',
    '        static:',
    '          root: ./pub-missing',
    '      - path: /x',
    '        respond: { status: 999 }',
  ].join('\n'),
  'hash-session.yaml': [
    'upstreams:',
    '  app:',
    '    servers: ["http://127.0.0.1:9"]',
    '    policy: hash',
    '    hash_key: $cookie_JSESSIONID',
    'sites:',
    '  - routes:',
    '      - path: /',
    '        proxy: { upstream: app }',
  ].join('\n'),
  'compressed-proxy.yaml': [
    'sites:',
    '  - compress: {}',
    '    routes:',
    '      - path: /app/',
    '        proxy: { url: "http://127.0.0.1:9" }',
    '      - path: /api/',
    '        proxy: { url: "http://127.0.0.1:9" }',
    '        compress: { types: [application/json] }',
    '      - path: /public/',
    '        proxy: { url: "http://127.0.0.1:9" }',
    '        compress: { breach_safe: true }',
    '      - path: /',
    '        static: { root: . }',
    '  - hosts: [b.example]',
    '    routes:',
    '      - path: /',
    '        proxy: { url: "http://127.0.0.1:9" }',
    '        compress: { breach_safe: true }',
  ].join('\n'),
  'host-key.yaml': [
    'sites:',
    '  - routes:',
    '      - path: /raw/',
    '        proxy: { url: "http://127.0.0.1:9", host: "$header_host", cache: { zone: main } }',
    '      - path: /keyed/',
    '        proxy: { url: "http://127.0.0.1:9", host: "$header_host", cache: { zone: main, key: "$scheme$header_host$request_uri" } }',
    '      - path: /fixed/',
    '        proxy: { url: "http://127.0.0.1:9", host: backend.internal, cache: { zone: main } }',
    'caches: { main: { memory: 1MB } }',
  ].join('\n'),
  'semantic.yaml': 'sites:\n  - routes:\n      - path: /\n        static:\n          root: ./pub-missing\n',
});
after(() => rmSync(dir, { recursive: true, force: true }));

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion (in `cwd`, by default `dir`) and collects its output. */
function runCli(args: string[], cwd = dir): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

describe('portico check', { concurrency: true }, () => {
  test('a valid config exits 0 with one OK line', async () => {
    const out = await runCli(['check', '-c', 'good.yaml']);
    assert.equal(out.code, 0, out.stderr);
    const lines = out.stdout.trim().split('\n');
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /good\.yaml.*valid/);
    assert.equal(out.stderr, '');
  });

  test('a broken config exits 1 with every error as file:line:col key.path: message', async () => {
    const out = await runCli(['check', '-c', 'broken.yaml']);
    assert.equal(out.code, 1);
    assert.equal(out.stdout, '');
    const errors = out.stderr.split('\n').filter((line) => line.startsWith('broken.yaml:'));
    assert.deepEqual(errors.map((line) => Number(line.split(':')[1])), [2, 9], 'in file order');
    for (const line of errors) assert.match(line, /^broken\.yaml:\d+:\d+ [\w.[\]]+: .+$/, line);
    assert.ok(errors.includes('broken.yaml:2:1 colour: unknown key'), out.stderr);
    assert.ok(errors.some((line) => line.startsWith('broken.yaml:9:28 sites[0].routes[1].respond.status: ')), out.stderr);
    assert.equal(errors.length, 2, out.stderr);
    assert.match(out.stderr, /2 errors in broken\.yaml/);
  });

  test('a config outside the working folder, given by its absolute path, is named by that path on every error line and in the summary', async () => {
    const file = path.join(dir, 'broken.yaml');
    const out = await runCli(['check', '-c', file], repo);
    assert.equal(out.code, 1);
    const lines = out.stderr.trim().split('\n');
    assert.equal(lines.length, 3, out.stderr);
    for (const line of lines.slice(0, -1)) assert.ok(line.startsWith(`${file}:`), line);
    assert.equal(lines.at(-1), `portico: 2 errors in ${file}`);
  });

  test('a config below the working folder is named relative to it, however it was written (./x, x)', async () => {
    const out = await runCli(['check', '-c', './broken.yaml']);
    assert.equal(out.code, 1);
    const lines = out.stderr.trim().split('\n');
    for (const line of lines.slice(0, -1)) assert.ok(line.startsWith('broken.yaml:'), line);
    assert.equal(lines.at(-1), 'portico: 2 errors in broken.yaml');
    const valid = await runCli(['check', '-c', path.join(dir, 'good.yaml')]);
    assert.equal(valid.stdout, 'portico: configuration good.yaml is valid\n');
  });

  test('a missing root is reported like portico.yaml:12:7 sites[0].routes[1].static.root: directory ./pub does not exist', async () => {
    const out = await runCli(['check', '--config', 'semantic.yaml']);
    assert.equal(out.code, 1);
    assert.match(out.stderr, /^semantic\.yaml:5:17 sites\[0\]\.routes\[0\]\.static\.root: directory \.\/pub-missing does not exist$/m);
  });

  test('hash_key on the app\'s session cookie is valid but warned about at its line, naming sticky.app_cookie', async () => {
    const out = await runCli(['check', '-c', 'hash-session.yaml']);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /hash-session\.yaml is valid \(1 warning above\)/);
    assert.match(out.stderr, /^hash-session\.yaml:5:15 upstreams\.app\.hash_key: warning: hashing on the app's session cookie JSESSIONID loses sessions: .*sticky: \{ app_cookie: JSESSIONID \}/m);
  });

  test('compress on a proxy route is valid but warned about (BREACH) at its compress key, a site\'s once; breach_safe: true and static routes are not', async () => {
    const out = await runCli(['check', '-c', 'compressed-proxy.yaml']);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /compressed-proxy\.yaml is valid \(2 warnings above\)/);
    const warnings = out.stderr.split('\n').filter((line) => line.includes('warning:'));
    assert.equal(warnings.length, 2, out.stderr);
    assert.match(warnings[0]!, /^compressed-proxy\.yaml:2:15 sites\[0\]\.compress: warning: compress on a proxied route: .*BREACH.*breach_safe: true$/);
    assert.match(warnings[1]!, /^compressed-proxy\.yaml:8:19 sites\[0\]\.routes\[1\]\.compress: warning: compress on a proxied route/);
  });

  test('a cached proxy route whose host sends a value its cache key does not hold is warned about at proxy.host; a keyed or fixed host is not', async () => {
    const out = await runCli(['check', '-c', 'host-key.yaml']);
    assert.equal(out.code, 0, out.stderr);
    const warnings = out.stderr.split('\n').filter((line) => line.includes('warning:'));
    assert.equal(warnings.length, 1, out.stderr);
    assert.match(warnings[0]!, /^host-key\.yaml:4:51 sites\[0\]\.routes\[0\]\.proxy\.host: warning: the app is sent a Host made of \$header_host, .*Add \$header_host to cache\.key$/);
  });

  test('a config file that does not exist exits 1 naming its absolute path and that it does not exist', async () => {
    const out = await runCli(['check', '-c', 'nope.yaml']);
    assert.equal(out.code, 1);
    // Absolute, so that the folder it was looked for in shows; no line:col, as there is no line.
    const absolute = path.join(realpathSync(dir), 'nope.yaml');
    assert.ok(out.stderr.startsWith(`${absolute}: cannot read the config file: it does not exist\n`), out.stderr);
  });
});

describe('flags', { concurrency: true }, () => {
  test('--version prints the package version and exits 0', async () => {
    for (const flag of ['--version', '-v']) {
      const out = await runCli([flag]);
      assert.equal(out.code, 0);
      assert.equal(out.stdout, `portico ${VERSION}\n`);
    }
  });

  test('--help prints the usage with run and check and exits 0', async () => {
    const out = await runCli(['--help']);
    assert.equal(out.code, 0);
    assert.match(out.stdout, /portico run/);
    assert.match(out.stdout, /portico check/);
    assert.match(out.stdout, /-c, --config/);
  });

  test('--help says which errors check prints: the first syntax error, else the shape errors, else the rest (not "every error")', async () => {
    const out = await runCli(['--help']);
    assert.doesNotMatch(out.stdout, /with every error/);
    assert.match(out.stdout, /first YAML\s+syntax error; else every error of the file's shape \(keys, types, values\);\s+else every error of the checks that need the file system/);
  });

  test('check prints every error of the shape pass and none of the next one, as its help says', async () => {
    // broken.yaml has a missing root too (a second-pass error): it appears once the shape errors are fixed.
    const out = await runCli(['check', '-c', 'broken.yaml']);
    assert.doesNotMatch(out.stderr, /pub-missing/);
    const fixed = await runCli(['check', '-c', 'semantic.yaml']);
    assert.match(fixed.stderr, /pub-missing does not exist/);
  });

  test('an unknown command or option exits 2 with the usage', async () => {
    const command = await runCli(['frobnicate']);
    assert.equal(command.code, 2);
    assert.match(command.stderr, /unknown command "frobnicate"/);
    const option = await runCli(['check', '--frob']);
    assert.equal(option.code, 2);
    assert.match(option.stderr, /Usage:/);
  });
});

describe('portico run', { concurrency: true }, () => {
  /** Starts `portico run` and resolves once the startup line names the chosen port. */
  function start(config: string, cwd = dir): Promise<{ child: ChildProcess; port: number; stdout: () => string; stderr: () => string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, 'run', '-c', config], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr!.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const port = /serving .* on http:\/\/127\.0\.0\.1:(\d+)\//.exec(stderr)?.[1];
        if (port !== undefined) resolve({ child, port: Number(port), stdout: () => stdout, stderr: () => stderr });
      });
      child.on('error', reject);
      child.on('exit', (code) => reject(new Error(`exited with ${code} before serving: ${stderr}`)));
    });
  }

  test('run -c on port 0 prints the chosen port, serves GET, and exits 0 on SIGTERM with the access log flushed', async () => {
    const { child, port, stdout, stderr } = await start('good.yaml');
    try {
      assert.notEqual(port, 0);
      const res = await fetch(`http://127.0.0.1:${port}/hello.txt`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'hello from the cli');
    } finally {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr());
    }
    assert.match(stderr(), /SIGTERM, stopping/);
    assert.match(stdout(), /"GET \/hello\.txt HTTP\/1\.1" 200 18 /);
  });

  test('the serving line names a config outside the working folder by its absolute path, as the error lines do', async () => {
    const file = path.join(dir, 'outside.yaml');
    const { child, stderr } = await start(file, repo);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr());
    assert.match(stderr(), new RegExp(`serving ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} on http://`));
  });

  test('a SIGTERM sent the moment the serving line appears stops Portico gracefully (exit 0), five times running', async () => {
    // The line comes once the signals are Portico's: a supervisor may stop it as soon as it reads the line.
    for (let i = 0; i < 5; i++) {
      const { child, stderr } = await start('sigterm.yaml');
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr());
      assert.match(stderr(), /SIGTERM, stopping/);
    }
  });

  test('run with a broken config exits 1 without serving', async () => {
    const out = await runCli(['run', '-c', 'broken.yaml']);
    assert.equal(out.code, 1);
    assert.doesNotMatch(out.stderr, /serving/);
    assert.match(out.stderr, /broken\.yaml:2:1 colour: unknown key/);
  });

  test('run on an address already in use exits 1 with a clear message', async () => {
    const { child, port } = await start('holder.yaml');
    try {
      writeFileSync(path.join(dir, 'taken.yaml'), `listen: ["127.0.0.1:${port}"]\nsites:\n  - routes: [{ path: /, respond: {} }]\n`);
      const out = await runCli(['run', '-c', 'taken.yaml']);
      assert.equal(out.code, 1);
      assert.match(out.stderr, /address already in use/);
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  });
});
