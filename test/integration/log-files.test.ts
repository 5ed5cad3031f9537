/**
 * Log files, SIGUSR1 and the pid file of real `portico run` processes (docs/operations.md, "Error log",
 * "Reopening log files with logrotate", "Running as a service"): every process (a single one, the primary, each
 * worker) holds SIGUSR1, so Node never opens its inspector on 127.0.0.1:9229; SIGUSR1 and `portico reopen` reopen
 * the access and error log files after a rename, in every worker; stderr has one format (JSON on a pipe, readable
 * lines with `error_format: pretty` or on a terminal); the pid file is written at start, removed at stop and taken
 * over by an upgrade's new process.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { requestText as get } from '../helpers/http-text.js';
import { makeTree } from '../helpers/portico.js';
import { PorticoProcess, runCli } from '../helpers/process.js';
import { alive, APP, eventually, portRange } from '../helpers/supervise.js';
import { haveTool } from '../helpers/tools.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CLI = path.join(repo, 'dist/src/cli.js');
const INSPECTOR_PORT = 9229;

const cleanups: Array<() => void> = [];
after(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** Whether something accepts connections on 127.0.0.1:`port` (answered within 2 s either way). */
function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(true);
    }, 2000);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/** A file's text, '' while it does not exist. */
function text(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** A file's JSON lines. */
function entries(file: string): Array<Record<string, unknown>> {
  return text(file)
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** `portico run -c portico.yaml` in `dir` with its error log in a file: started once that file says it serves. */
async function startLogging(dir: string): Promise<{ child: ChildProcess; port: number; errorLog: string }> {
  const child = spawn(process.execPath, [CLI, 'run', '-c', 'portico.yaml'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  cleanups.push(() => void child.kill('SIGKILL'));
  const errorLog = path.join(dir, 'logs/error.log');
  const serving = await eventually(
    () => (child.exitCode !== null ? assert.fail(`portico exited: ${stderr}`) : entries(errorLog).find((e) => /serving .* on http:\/\/127\.0\.0\.1:\d+\//.test(String(e.msg)))),
    'the serving entry in logs/error.log',
    20_000,
  );
  assert.equal(stderr, '', 'nothing on stderr: the error log is the file');
  return { child, port: Number(/127\.0\.0\.1:(\d+)\//.exec(String(serving.msg))![1]), errorLog };
}

/** Stops a process with SIGTERM; resolves with its exit code. */
async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = once(child, 'exit') as Promise<[number | null]>;
  child.kill('SIGTERM');
  return (await exited)[0];
}

function loggingConfig(workers: number): string {
  return `listen: ["127.0.0.1:0"]
workers: ${workers}
log: { access: logs/access.log, format: json, error: logs/error.log }
sites:
  - routes: [{ path: /, respond: { body: "ok" } }]
`;
}

describe('SIGUSR1 and portico reopen', () => {
  test('one process: 127.0.0.1:9229 stays closed after SIGUSR1, and the renamed access and error logs are reopened (the next lines land in new files); the pid file names the process until it stops', async (t) => {
    if (await portOpen(INSPECTOR_PORT)) return t.skip(`something already listens on 127.0.0.1:${INSPECTOR_PORT}: the check would prove nothing`);
    const dir = makeTree({ 'portico.yaml': loggingConfig(1), 'logs/.keep': '' });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { child, port, errorLog } = await startLogging(dir);
    const accessLog = path.join(dir, 'logs/access.log');
    const pidFile = path.join(dir, 'var/portico/portico.pid');
    assert.equal(text(pidFile), `${child.pid}\n`);

    assert.equal((await get(port, '/before')).status, 200);
    await eventually(() => text(accessLog).includes('"/before"'), 'the first request in access.log');
    renameSync(accessLog, `${accessLog}.1`);
    renameSync(errorLog, `${errorLog}.1`);
    child.kill('SIGUSR1');
    await eventually(() => entries(errorLog).find((e) => e.msg === 'logs reopened'), 'the "logs reopened" entry in a new error.log');
    assert.equal(await portOpen(INSPECTOR_PORT), false, 'no inspector opened by SIGUSR1');
    assert.equal(child.exitCode, null, 'still running');

    assert.equal((await get(port, '/after')).status, 200);
    await eventually(() => text(accessLog).includes('"/after"'), 'the next request in a new access.log');
    assert.doesNotMatch(text(`${accessLog}.1`), /\/after/, 'nothing more in the renamed access log');
    assert.doesNotMatch(text(`${errorLog}.1`), /logs reopened/, 'nothing more in the renamed error log');

    assert.equal(await stop(child), 0);
    assert.equal(existsSync(pidFile), false, 'the pid file is removed at stop');
    assert.ok(entries(errorLog).some((e) => e.msg === 'portico: SIGTERM, stopping'));
  });

  test('workers: 2: `portico reopen` and SIGUSR1 to the primary reopen every worker\'s files; SIGUSR1 to the primary or to a worker leaves 9229 closed', async (t) => {
    if (await portOpen(INSPECTOR_PORT)) return t.skip(`something already listens on 127.0.0.1:${INSPECTOR_PORT}: the check would prove nothing`);
    const dir = makeTree({ 'portico.yaml': loggingConfig(2), 'logs/.keep': '' });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { child, port, errorLog } = await startLogging(dir);
    const accessLog = path.join(dir, 'logs/access.log');
    const workers = entries(errorLog)
      .map((e) => /^portico: worker (\d) serving \(pid (\d+)\)$/.exec(String(e.msg)))
      .filter((m) => m !== null)
      .map((m) => Number(m[2]));
    assert.equal(workers.length, 2);
    assert.equal(text(path.join(dir, 'var/portico/portico.pid')), `${child.pid}\n`, 'the pid file names the primary');
    // Where Node has --disable-sigusr1 (≥ 22.14), the workers are started with it: no window before their handler.
    const hasFlag = process.allowedNodeEnvironmentFlags.has('--disable-sigusr1');
    for (const pid of workers) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      assert.equal(argv.includes('--disable-sigusr1'), hasFlag, `worker ${pid}: ${argv.join(' ')}`);
    }

    assert.equal((await get(port, '/before')).status, 200);
    await eventually(() => text(accessLog).includes('"/before"'), 'the first request in access.log');
    renameSync(accessLog, `${accessLog}.1`);
    renameSync(errorLog, `${errorLog}.1`);
    const reopen = await runCli(['reopen', '-c', 'portico.yaml'], dir);
    assert.equal(reopen.code, 0, reopen.stderr);
    assert.match(reopen.stdout, /^portico: reopen ok/m);
    // The primary answers once each worker said it reopened: their entries are in the new file already.
    const reopened = entries(errorLog).filter((e) => e.msg === 'logs reopened');
    assert.deepEqual(reopened.map((e) => e.worker ?? 'primary').sort(), [1, 2, 'primary']);

    // Requests on new connections until each worker has written to the new access log (json lines carry the pid).
    const seen = new Set<number>();
    let sent = 0;
    await eventually(
      async () => {
        for (let i = 0; i < 10; i++, sent++) assert.equal((await get(port, `/after/${sent}`)).status, 200);
        for (const e of entries(accessLog)) seen.add(Number(e.pid));
        return workers.every((pid) => seen.has(pid));
      },
      'a line from each worker in the new access.log',
      15_000,
    );
    t.diagnostic(`${sent} requests until both workers wrote to the new access log`);
    assert.doesNotMatch(text(`${accessLog}.1`), /\/after/, 'no worker still writes to the renamed access log');

    const mark = entries(errorLog).length;
    child.kill('SIGUSR1');
    await eventually(() => entries(errorLog).slice(mark).find((e) => e.msg === 'logs reopened' && e.workers === 2), "the primary's entry after SIGUSR1");
    process.kill(workers[0]!, 'SIGUSR1');
    await eventually(() => entries(errorLog).slice(mark).find((e) => e.msg === 'logs reopened' && e.worker === 1), "worker 1's entry after its own SIGUSR1");
    assert.equal(await portOpen(INSPECTOR_PORT), false, 'no inspector opened by SIGUSR1 in the primary or a worker');
    assert.ok(workers.every(alive) && alive(child.pid!), 'every process still runs');

    assert.equal(await stop(child), 0);
    assert.equal(existsSync(path.join(dir, 'var/portico/portico.pid')), false);
  });

  test('a SIGUSR1 while portico run is still starting (its app instance not ready yet) opens no inspector and does not end the process: it then serves', async (t) => {
    if (await portOpen(INSPECTOR_PORT)) return t.skip(`something already listens on 127.0.0.1:${INSPECTOR_PORT}: the check would prove nothing`);
    const range = portRange(2);
    const slow = `sleep 1.5 && exec ${JSON.stringify(process.execPath)} ${JSON.stringify(APP)}`;
    const config = `listen: ["127.0.0.1:0"]
log: { access: off }
upstreams:
  app:
    spawn: { command: ${JSON.stringify(slow)}, instances: 1, ports: ${range.text}, health_timeout: 20s }
sites:
  - routes: [{ path: /, proxy: { upstream: app } }]
`;
    const dir = makeTree({ 'portico.yaml': config });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const child = spawn(process.execPath, [CLI, 'run', '-c', 'portico.yaml'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    cleanups.push(() => void child.kill('SIGKILL'));
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await eventually(() => /app#1/.test(stderr) && !/serving/.test(stderr), 'the instance launched, before the serving line', 15_000);
    child.kill('SIGUSR1');
    assert.equal(await portOpen(INSPECTOR_PORT), false, 'no inspector opened by a SIGUSR1 during the start');
    await eventually(() => / serving .* on http:\/\/127\.0\.0\.1:\d+\//.test(stderr), `the serving line; stderr:\n${stderr}`, 30_000);
    assert.equal(child.exitCode, null, 'Portico is still running');
    assert.equal(await stop(child), 0);
  });

  test('`portico reopen` with no Portico running exits 1 and says so', async () => {
    const dir = makeTree({ 'portico.yaml': loggingConfig(1) });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const out = await runCli(['reopen', '-c', 'portico.yaml'], dir);
    assert.equal(out.code, 1);
    assert.match(out.stderr, /portico: reopen failed: no Portico is running for this config/);
  });
});

describe('stderr in one format', () => {
  const SITE = 'sites:\n  - routes: [{ path: /, respond: { body: "ok" } }]\n';

  test('on a pipe (error_format auto) every stderr line is a JSON entry with a level name and an ISO time: the serving line, a reload (whose change of error_format waits for a restart), the stop', async () => {
    const dir = makeTree({ 'portico.yaml': `listen: ["127.0.0.1:0"]\nlog: { access: off }\npid_file: ./portico.pid\n${SITE}` });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const portico = await PorticoProcess.start(path.join(dir, 'portico.yaml'), dir);
    assert.equal(text(path.join(dir, 'portico.pid')), `${portico.child.pid}\n`, 'pid_file as the config names it');
    assert.equal(existsSync(path.join(dir, 'var/portico/portico.pid')), false);
    const { line, log } = await portico.reload(`listen: ["127.0.0.1:${portico.port}"]\nlog: { access: off, error_format: pretty }\npid_file: ./portico.pid\n${SITE}`);
    assert.equal(line, 'portico: config reloaded');
    assert.match(log, /^warning: log\.error_format changed from auto to pretty: takes effect on restart$/m, 'a reload says what it does not apply');
    assert.equal(await portico.stop(), 0);
    await portico.streamClosed;
    const lines = portico.rawStderr.split('\n').filter((l) => l !== '');
    assert.ok(lines.length >= 3, portico.rawStderr);
    for (const raw of lines) {
      const entry = JSON.parse(raw) as { level: unknown; time: unknown; msg: unknown };
      assert.match(String(entry.level), /^(info|warn|error)$/, raw);
      assert.match(String(entry.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, raw);
      assert.equal(typeof entry.msg, 'string', raw);
    }
    assert.equal(existsSync(path.join(dir, 'portico.pid')), false);
  });

  test('error_format: pretty: one readable line per entry (time, level name, message, fields), the serving line among them; pid_file: off writes none', async () => {
    const dir = makeTree({ 'portico.yaml': `listen: ["127.0.0.1:0"]\nlog: { access: access.log, error_format: pretty }\npid_file: "off"\n${SITE}` });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const portico = await PorticoProcess.start(path.join(dir, 'portico.yaml'), dir);
    try {
      const mark = portico.stderr.length;
      portico.signal('SIGUSR1');
      const line = await portico.waitForLine(/logs reopened/, mark);
      assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  logs reopened files=\[".*access\.log"\] error_log_files=0$/);
      assert.equal(existsSync(path.join(dir, 'var/portico/portico.pid')), false);
    } finally {
      assert.equal(await portico.stop(), 0);
    }
    const lines = portico.rawStderr.split('\n').filter((l) => l !== '');
    assert.ok(lines.some((l) => /^\S+Z INFO  portico \S+ serving portico\.yaml on http:\/\/127\.0\.0\.1:\d+\/$/.test(l)), portico.rawStderr);
    for (const l of lines) assert.match(l, /^\d{4}-\d\d-\d\dT\S+Z (INFO |WARN |ERROR) \S/, 'every line readable');
  });

  test('on a terminal (error_format auto) the lines are readable, with the level name in colour', async (t) => {
    if (!haveTool('script')) return t.skip('script (util-linux) is not installed: no terminal to run portico in');
    const dir = makeTree({ 'portico.yaml': `listen: ["127.0.0.1:0"]\nlog: { access: off }\n${SITE}` });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // script runs the command on a pseudo-terminal and copies what it writes to its own stdout.
    const command = `exec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} run -c portico.yaml`;
    const terminal = spawn('script', ['-qfec', command, '/dev/null'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '', TERM: 'xterm' } });
    cleanups.push(() => void terminal.kill('SIGKILL'));
    let output = '';
    terminal.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await eventually(() => / serving portico\.yaml on /.test(output), 'the serving line on the terminal', 20_000);
    const pid = Number(readFileSync(path.join(dir, 'var/portico/portico.pid'), 'utf8'));
    const exited = once(terminal, 'exit');
    process.kill(pid, 'SIGTERM');
    await exited;
    const serving = output.split(/\r?\n/).find((l) => l.includes(' serving '))!;
    assert.match(serving, /^\d{4}-\d\d-\d\dT\S+Z \x1b\[32mINFO \x1b\[39m portico \S+ serving portico\.yaml on http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.doesNotMatch(output, /"level"/, 'no JSON on a terminal');
  });
});

describe('the pid file across an upgrade', () => {
  test("an upgrade's new process takes the pid file over; the old one leaves it when it exits; the new one removes it at its stop", async () => {
    const dir = makeTree({ 'portico.yaml': `listen: ["127.0.0.1:0"]\nlog: { access: off }\nshutdown_timeout: 1s\nsites:\n  - routes: [{ path: /, respond: { body: "ok" } }]\n` });
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'portico.yaml');
    const pidFile = path.join(dir, 'var/portico/portico.pid');
    const portico = await PorticoProcess.start(file, dir);
    let successor = 0;
    try {
      assert.equal(text(pidFile), `${portico.child.pid}\n`);
      const mark = portico.stderr.length;
      portico.signal('SIGUSR2');
      const line = await portico.waitForLine(/^portico: process \d+ took over from process \d+/, mark, 30_000);
      successor = Number(/process (\d+) took over/.exec(line)![1]);
      cleanups.push(() => {
        try {
          process.kill(successor, 'SIGKILL');
        } catch {
          // Gone.
        }
      });
      assert.equal(text(pidFile), `${successor}\n`, 'the new process wrote its pid');
      assert.equal(await portico.exited, 0, 'the old process drained and exited');
      assert.equal(text(pidFile), `${successor}\n`, 'the old process left the file to its successor');
      assert.equal((await get(portico.port, '/')).body, 'ok');
      process.kill(successor, 'SIGTERM');
      await eventually(() => !alive(successor), 'the new process exited', 15_000);
      assert.equal(existsSync(pidFile), false, 'the new process removed the pid file at its stop');
    } finally {
      if (successor === 0) await portico.stop();
    }
  });
});

