/**
 * No app process outlives Portico, even a `kill -9` of it: a process that runs a Supervisor (a small node script,
 * as `portico run` would) is killed with SIGKILL, and every process of every instance's group must be gone soon
 * after — for an argv command, a `sh -c` command whose app has a child, and `npm start` (npm → sh → node → child).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { alive, APP, CONFIG_MODULE, eventually, groupMembers, portRange, SUPERVISOR_MODULE } from '../helpers/supervise.js';

let dir: string;

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'portico-orphans-'));
  chmodSync(dir, 0o755);
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** A node script that starts a Supervisor of the config given as its argument and prints its slots once started. */
const PARENT = [
  `const { Supervisor } = await import(${JSON.stringify(SUPERVISOR_MODULE)});`,
  `const { parseConfig } = await import(${JSON.stringify(CONFIG_MODULE)});`,
  `const pino = (await import('pino')).default;`,
  `const config = parseConfig(process.argv[1], process.argv[2] + '/portico.yaml', process.argv[2]);`,
  `const sup = new Supervisor(config, pino({ base: undefined }, pino.destination(2)), { moved: async () => {} });`,
  `await sup.start();`,
  `console.log(JSON.stringify(sup.slots()));`,
  `setInterval(() => {}, 60_000);`,
].join('\n');

test('kill -9 of the process running the Supervisor leaves no app process: not of an argv command, nor of a sh -c command with a grandchild, nor of npm start (npm, sh, node, its child)', { timeout: 40_000 }, async (t) => {
  const pids = path.join(dir, 'pids');
  mkdirSync(pids);
  const npmApp = path.join(dir, 'npm-app');
  mkdirSync(npmApp);
  writeFileSync(path.join(npmApp, 'package.json'), JSON.stringify({ name: 'npm-app', private: true, scripts: { start: `node ${APP}` } }));
  const env = { CHILD: '1', PIDS_DIR: pids, npm_config_update_notifier: 'false', npm_config_fund: 'false' };
  const upstreams = {
    argv: { spawn: { command: ['node', APP], ports: portRange(2).text, env } },
    shell: { spawn: { command: `node ${APP} & wait`, ports: portRange(2).text, env } },
    npm: { spawn: { command: ['npm', 'start'], cwd: 'npm-app', ports: portRange(2).text, env } },
  };
  const text = JSON.stringify({ upstreams, sites: [{ routes: [{ path: '/', proxy: { upstream: 'argv' } }] }] });
  const parent = spawn(process.execPath, ['--input-type=module', '-e', PARENT, text, dir], { cwd: path.resolve(SUPERVISOR_MODULE, '../../../..'), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  parent.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let stdout = '';
  parent.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  try {
    await eventually(() => stdout.includes('\n'), `the parent's slots (stderr: ${stderr})`, 20_000);
  } catch (err) {
    parent.kill('SIGKILL');
    throw err;
  }
  const slots = JSON.parse(stdout) as Array<{ upstream: string; pid: number; state: string }>;
  assert.deepEqual(slots.map((s) => [s.upstream, s.state]), [['argv', 'ready'], ['shell', 'ready'], ['npm', 'ready']]);

  // Every app (and its `sleep` child) wrote its pids: the apps are the leaders' children or the leaders themselves.
  const written = await eventually(() => {
    const files = readdirSync(pids);
    return files.length === 3 ? files.map((f) => readFileSync(path.join(pids, f), 'utf8').split(' ').map(Number)) : false;
  }, 'the apps to write their pids');
  const appPids = written.flat();
  const groups = new Map(slots.map((s) => [s.upstream, s.pid]));
  const members = new Map([...groups].map(([name, pgid]) => [name, groupMembers(new Set([pgid]))]));
  t.diagnostic(`processes per group before the kill: ${[...members].map(([name, list]) => `${name} ${list.length}`).join(', ')}`);
  // argv: node, sleep, watcher; shell: sh, node, sleep, watcher; npm: npm, (sh), node, sleep, watcher.
  assert.ok(members.get('argv')!.length >= 3 && members.get('shell')!.length >= 4 && members.get('npm')!.length >= 4, JSON.stringify([...members]));
  for (const pid of appPids) assert.ok(alive(pid), `app process ${pid} alive before the kill`);

  parent.kill('SIGKILL');
  await once(parent, 'exit');
  const all = new Set(groups.values());
  await eventually(() => groupMembers(all).length === 0, 'every group to be empty', 5000);
  for (const pid of appPids) assert.equal(alive(pid), false, `app process ${pid} gone after the kill`);
  for (const [name, list] of members) for (const pid of list) assert.equal(alive(pid), false, `${name}: process ${pid} gone`);
});
