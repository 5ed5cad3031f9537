/**
 * The admin API in real `portico run` processes: a single process serves it and stops it on SIGTERM; with
 * `workers: 2` the primary serves it (never a worker): /status lists the workers, a reload asked through it
 * reaches every worker, and an upgrade (which cannot run with workers) is refused at once.
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import { freePort } from '../helpers/pebble.js';
import { makeTree } from '../helpers/portico.js';
import { PorticoProcess } from '../helpers/process.js';
import { alive } from '../helpers/supervise.js';
import { call, finishedJob } from './admin-support.js';

const TOKEN = 'process-test-token-42';
process.env.PORTICO_PROC_TEST_TOKEN = TOKEN;
const bearer = { authorization: `Bearer ${TOKEN}` };

const dir = makeTree({});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A config with an admin listener on `admin` (port 0 by default), `workers` processes, answering `body`. */
function config(workers: number, body: string, admin = '127.0.0.1:0'): string {
  return `listen: ["127.0.0.1:0"]
log: { access: off }
shutdown_timeout: 2s
workers: ${workers}
admin:
  listen: "${admin}"
  token_env: PORTICO_PROC_TEST_TOKEN
sites:
  - routes:
      - path: /
        respond: { body: "${body}" }
`;
}

/** Writes the config in a folder of its own (its own default state directory). */
function configFile(name: string, text: string): string {
  const sub = path.join(dir, name);
  mkdirSync(sub, { recursive: true });
  const file = path.join(sub, 'portico.yaml');
  writeFileSync(file, text);
  return file;
}

/** The admin port the process printed. */
async function adminPort(running: PorticoProcess): Promise<number> {
  const line = await running.waitForLine(/^portico: admin API on http:\/\/127\.0\.0\.1:(\d+)\/$/, 0);
  return Number(/:(\d+)\/$/.exec(line)![1]);
}

/** Whether something accepts on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Bodies of fresh connections to the public port (spread over the workers by connection). */
async function bodies(port: number, count: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) seen.add(await (await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: 'close' } })).text());
  return seen;
}

test('a single portico run serves the admin API, runs a reload job through it, and closes it on SIGTERM', async (t) => {
  const file = configFile('single', config(1, 'one'));
  const running = await PorticoProcess.start(file, dir);
  t.after(() => running.stop());
  const port = await adminPort(running);
  assert.deepEqual((await call(port, 'GET', '/healthz')).json, { ok: true });
  const status = await call(port, 'GET', '/status', { headers: bearer });
  assert.equal(status.json.pid, running.child.pid);
  assert.equal(status.json.admin, `http://127.0.0.1:${port}/`);
  writeFileSync(file, config(1, 'two'));
  const answer = await call(port, 'POST', '/reload', { headers: bearer });
  assert.equal(answer.status, 202);
  const job = await finishedJob(port, answer.json.job.id, bearer);
  assert.equal(job.state, 'done');
  assert.deepEqual(await bodies(running.port, 1), new Set(['two']));
  assert.equal(await running.stop(), 0);
  assert.equal(await accepts(port), false);
});

test('with workers: 2 the primary serves the admin API: /status lists both workers, a reload job reaches each, an upgrade is refused at once (501)', async (t) => {
  const file = configFile('workers', config(2, 'one'));
  const running = await PorticoProcess.start(file, dir);
  t.after(() => running.stop());
  const port = await adminPort(running);
  const status = await call(port, 'GET', '/status', { headers: bearer });
  assert.equal(status.status, 200);
  assert.equal(status.json.pid, running.child.pid, 'the primary answers');
  assert.equal(status.json.workers.length, 2);
  for (const worker of status.json.workers) assert.equal(typeof worker.pid, 'number');
  writeFileSync(file, config(2, 'two'));
  const answer = await call(port, 'POST', '/reload', { headers: bearer });
  const job = await finishedJob(port, answer.json.job.id, bearer);
  assert.equal(job.state, 'done', JSON.stringify(job.result));
  assert.equal(job.result.workers, 2);
  assert.deepEqual(await bodies(running.port, 8), new Set(['two']));
  // An upgrade in place cannot run with workers: refused at once, not a 202 whose job then fails.
  const jobs = (await call(port, 'GET', '/jobs', { headers: bearer })).json.jobs.length;
  const upgrade = await call(port, 'POST', '/upgrade', { headers: bearer });
  assert.equal(upgrade.status, 501, upgrade.text);
  assert.equal(upgrade.json.error.code, 'PORTICO_UNSUPPORTED');
  assert.match(upgrade.json.error.message, /not supported with workers \(workers: 2\)/);
  assert.equal((await call(port, 'GET', '/jobs', { headers: bearer })).json.jobs.length, jobs, 'no job was made');
  assert.equal(await running.stop(), 0);
  assert.equal(await accepts(port), false);
});

test('POST /upgrade is a job; the new process takes the admin listener over at the same address', async (t) => {
  const port = await freePort();
  const file = configFile('upgrade', config(1, 'one', `127.0.0.1:${port}`));
  const running = await PorticoProcess.start(file, dir);
  let successor: number | undefined;
  t.after(async () => {
    if (successor !== undefined && alive(successor)) process.kill(successor, 'SIGTERM');
    await running.stop();
    await running.streamClosed;
  });
  assert.equal(await adminPort(running), port);
  const mark = running.stderr.length;
  const answer = await call(port, 'POST', '/upgrade', { headers: bearer });
  assert.equal(answer.status, 202);
  assert.equal(answer.json.job.operation, 'upgrade');
  const line = await running.waitForLine(/^portico: process \d+ took over from process \d+/, mark);
  successor = Number(/process (\d+) took over/.exec(line)![1]);
  await running.waitForLine(new RegExp(`^portico: admin API on http://127\\.0\\.0\\.1:${port}/$`), mark);
  const status = await call(port, 'GET', '/status', { headers: bearer });
  assert.equal(status.json.pid, successor, 'the new process answers on the admin address');
});
