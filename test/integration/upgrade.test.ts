/**
 * Upgrading Portico in place (docs/operations.md, "Upgrading Portico in place"), with real `portico run`
 * processes: SIGUSR2 starts a new process that takes the listening sockets over; the old one drains and exits.
 * Which process answered is told by the config: it is rewritten before the signal, so the old process answers
 * with the old body and the new one (which reads the file) with the new body.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { after, describe, test } from 'node:test';
import net from 'node:net';
import pino from 'pino';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Upgrader, type UpgradeResult } from '../../src/server/upgrade.js';
import { StateDir } from '../../src/tls/state-dir.js';
import { makeTree, startPortico } from '../helpers/portico.js';
import { PorticoProcess } from '../helpers/process.js';
import { alive } from '../helpers/supervise.js';
import { startUpstream } from '../helpers/upstream.js';
import { RawConnection, httpRequest, waitFor } from './proxy-support.js';
import { h2Get, h2Session, httpsGet, testPki } from './tls-support.js';
import { within } from '../helpers/within.js';

const dir = makeTree({});
/** The new processes of the upgrades, stopped after the tests (the test runner does not know them). */
const successors = new Set<number>();
after(() => {
  for (const pid of successors) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

/** A config answering `body` on every path. */
function respondConfig(body: string, extra = ''): string {
  return `listen: ["127.0.0.1:0"]\nlog: { access: off }\nshutdown_timeout: 2s\n${extra}sites:\n  - routes: [{ path: /, respond: { body: ${body} } }]\n`;
}

/** Sends SIGUSR2 and waits for the new process to take over; returns its pid. */
async function upgrade(portico: PorticoProcess): Promise<{ pid: number; mark: number }> {
  const mark = portico.stderr.length;
  portico.signal('SIGUSR2');
  const line = await portico.waitForLine(/^portico: process \d+ took over from process \d+/, mark);
  const pid = Number(/process (\d+) took over/.exec(line)![1]);
  successors.add(pid);
  return { pid, mark };
}

/** Stops an upgrade's new process and waits until every process that wrote the test's stderr pipe has exited. */
async function stopSuccessor(portico: PorticoProcess, pid: number): Promise<void> {
  if (alive(pid)) process.kill(pid, 'SIGTERM');
  await within('the new process to stop', portico.streamClosed, 15_000);
  successors.delete(pid);
}

describe('portico upgrade (SIGUSR2)', () => {
  test('under ~200 req/s of keep-alive and new-connection GETs: zero failed requests, zero refused connections, the new process serving and the old one gone; a second SIGUSR2 meanwhile is refused; the state directory lock names the new process', async (t) => {
    const file = path.join(dir, 'load.yaml');
    writeFileSync(file, respondConfig('one', 'state_dir: ./state-load\n'));
    const portico = await PorticoProcess.start(file, dir);
    const oldPid = portico.child.pid!;
    const lock = path.join(dir, 'state-load', 'portico.lock');
    assert.equal(readFileSync(lock, 'utf8').trim(), String(oldPid));
    const url = `http://127.0.0.1:${portico.port}`;

    const answers = { one: 0, two: 0, oneAfterExit: 0 };
    let ok = 0;
    let refused = 0;
    let keptAlive = 0;
    let fresh = 0;
    const failures: string[] = [];
    let oldGone = false;
    let loading = true;
    const end = Date.now() + 25_000;
    /** One loop: a GET every 15 ms (about 67/s), over keep-alive (fetch's pool) or a new connection each time. */
    const loop = async (keepAlive: boolean, n: number) => {
      for (let i = 0; loading && Date.now() < end && i < 10_000; i++) {
        const started = Date.now();
        const afterExit = oldGone;
        try {
          let status: number;
          let body: string;
          if (keepAlive) {
            const res = await fetch(`${url}/k${n}/${i}`);
            status = res.status;
            body = await res.text();
            keptAlive++;
          } else {
            const res = await httpRequest(portico.port, `/n${n}/${i}`);
            status = res.status;
            body = res.body.toString();
            fresh++;
          }
          if (status === 200 && (body === 'one' || body === 'two')) {
            ok++;
            answers[body]++;
            if (afterExit && body === 'one') answers.oneAfterExit++;
          } else failures.push(`${status} ${body.slice(0, 60)}`);
        } catch (err) {
          const cause = (err as Error & { cause?: NodeJS.ErrnoException }).cause ?? (err as NodeJS.ErrnoException);
          if (cause.code === 'ECONNREFUSED') refused++;
          else failures.push(`${cause.code ?? ''} ${cause.message}`);
        }
        const left = 15 - (Date.now() - started);
        if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
      }
    };
    const load = Promise.all([loop(true, 0), loop(true, 1), loop(false, 2)]);
    let newPid = 0;
    try {
      await waitFor('steady load on the old process', () => ok >= 100, 10_000);
      writeFileSync(file, respondConfig('two', 'state_dir: ./state-load\n'));
      const mark = portico.stderr.length;
      portico.signal('SIGUSR2');
      await portico.waitForLine(/^portico: SIGUSR2, upgrading/, mark);
      // The new process is still starting (a node process, its modules, its listeners): a second upgrade is refused.
      portico.signal('SIGUSR2');
      const refusedLine = await portico.waitForLine(/^portico: upgrade failed: /, mark);
      assert.match(refusedLine, /already running.*PORTICO_UPGRADE_RUNNING/);
      const line = await portico.waitForLine(/^portico: process \d+ took over from process \d+/, mark);
      newPid = Number(/process (\d+) took over/.exec(line)![1]);
      successors.add(newPid);
      assert.notEqual(newPid, oldPid);
      assert.equal(await within('the old process to exit', portico.exited, 10_000), 0, 'the old process exits cleanly after its drain');
      oldGone = true;
      const okAtExit = ok;
      await waitFor('load on the new process alone', () => ok >= okAtExit + 100, 10_000);
      loading = false;
      await load;

      t.diagnostic(
        `${ok + failures.length + refused} requests (${keptAlive} keep-alive, ${fresh} on new connections): ${answers.one} answered by the old ` +
          `process, ${answers.two} by the new; ${failures.length} failed, ${refused} refused`,
      );
      assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}`);
      assert.equal(refused, 0, 'no connection refused');
      assert.ok(answers.one >= 100 && answers.two >= 100, 'both processes answered');
      assert.equal(answers.oneAfterExit, 0, 'no answer from the old process after it exited');
      assert.equal(alive(oldPid), false, 'the old process is gone');
      assert.equal(alive(newPid), true, 'the new process serves');
      assert.equal(readFileSync(lock, 'utf8').trim(), String(newPid), 'the state directory lock was handed to the new process');
      const after = await httpRequest(portico.port, '/after');
      assert.equal(after.body.toString(), 'two');
    } finally {
      loading = false;
      await load;
      if (newPid !== 0) await stopSuccessor(portico, newPid);
      else await portico.stop();
    }
    assert.throws(() => readFileSync(lock), /ENOENT/, 'the new process released the lock when it stopped');
  });

  test('a new process that cannot start (the config made invalid before the signal) is gone, the old one keeps serving, and its log says why with file:line:col', async () => {
    const file = path.join(dir, 'broken.yaml');
    writeFileSync(file, respondConfig('one'));
    const portico = await PorticoProcess.start(file, dir);
    try {
      writeFileSync(file, `${respondConfig('one')}bogus_key: 1\n`);
      const mark = portico.stderr.length;
      portico.signal('SIGUSR2');
      const line = await portico.waitForLine(/^portico: upgrade failed: /, mark);
      const log = portico.stderr.slice(mark);
      assert.match(line, /the config broken\.yaml has 1 error \(the new process exited with code 1\) \(PORTICO_UPGRADE_FAILED\); still serving/);
      assert.match(log, /broken\.yaml:6:1 bogus_key: unknown key/, "the new process's error, at file:line:col");
      const started = /"successor":(\d+)[^\n]*upgrade: new Portico process started/.exec(log);
      assert.ok(started !== null, log);
      assert.equal(alive(Number(started[1])), false, 'the failed new process is gone');
      assert.equal((await httpRequest(portico.port, '/')).body.toString(), 'one', 'the old process still serves');
      assert.equal(portico.child.exitCode, null);
    } finally {
      assert.equal(await portico.stop(), 0);
    }
  });

  test('a TLS listener (HTTP/1.1 and HTTP/2) is handed over: HTTPS requests after the old process is gone are answered by the new one', async () => {
    const pki = await testPki();
    const cert = await pki.issue(['localhost']);
    writeFileSync(path.join(dir, 'site.pem'), cert.cert);
    writeFileSync(path.join(dir, 'site.key'), cert.key);
    const file = path.join(dir, 'tls.yaml');
    const text = (body: string) =>
      `listen: [{ addr: "127.0.0.1:0", tls: { cert: ./site.pem, key: ./site.key } }]\nlog: { access: off }\nshutdown_timeout: 2s\n` +
      `sites:\n  - routes: [{ path: /, respond: { body: ${body} } }]\n`;
    writeFileSync(file, text('one'));
    const portico = await PorticoProcess.start(file, dir);
    let pid = 0;
    try {
      assert.equal((await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'localhost' })).body, 'one');
      writeFileSync(file, text('two'));
      ({ pid } = await upgrade(portico));
      assert.equal(await within('the old process to exit', portico.exited, 10_000), 0);
      const answer = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'localhost' });
      assert.deepEqual([answer.status, answer.body, answer.alpn], [200, 'two', 'http/1.1']);
      const session = await h2Session(portico.port, pki.ca.cert, 'localhost');
      try {
        const h2 = await h2Get(session, 'localhost');
        assert.deepEqual([h2.status, h2.body], [200, 'two']);
      } finally {
        session.close();
      }
    } finally {
      if (pid !== 0) await stopSuccessor(portico, pid);
      else await portico.stop();
    }
  });

  test("a cache zone's disk tier: what the old process stored is served by the new one from disk, and the new one stores there once it took over", async () => {
    const app = await startUpstream((req, res) => {
      res.setHeader('Cache-Control', 'max-age=600');
      res.end(`page ${req.url}`);
    });
    const disk = path.join(dir, 'disk-upgrade');
    /** Entries on disk: files in the two-hex-digit folders (not the temporary ones). */
    const entries = () => {
      try {
        return readdirSync(disk)
          .filter((name) => /^[0-9a-f]{2}$/.test(name))
          .reduce((n, folder) => n + readdirSync(path.join(disk, folder)).length, 0);
      } catch {
        return 0;
      }
    };
    const file = path.join(dir, 'disk.yaml');
    writeFileSync(
      file,
      `listen: ["127.0.0.1:0"]\nlog: { access: off }\nshutdown_timeout: 2s\ncaches:\n  main: { memory: 1MB, disk: { path: ./disk-upgrade, size: 10MB } }\n` +
        `upstreams:\n  app: { servers: ["${app.url}"] }\nsites:\n  - routes: [{ path: /, proxy: { upstream: app, cache: { zone: main } } }]\n`,
    );
    const portico = await PorticoProcess.start(file, dir);
    let pid = 0;
    const appRequests = () => app.requests.length;
    try {
      assert.equal((await httpRequest(portico.port, '/a')).body.toString(), 'page /a');
      await waitFor('the entry on disk', () => entries() === 1, 5000);
      ({ pid } = await upgrade(portico));
      assert.equal(await within('the old process to exit', portico.exited, 10_000), 0);
      const a = await httpRequest(portico.port, '/a');
      assert.equal(a.body.toString(), 'page /a');
      assert.match(String(a.headers['cache-status']), /hit/, 'served from the disk tier by the new process');
      assert.equal(appRequests(), 1, 'the app was not asked again');
      assert.equal((await httpRequest(portico.port, '/b')).body.toString(), 'page /b');
      await waitFor('the new process to store on disk', () => entries() === 2, 5000);
    } finally {
      if (pid !== 0) await stopSuccessor(portico, pid);
      else await portico.stop();
      await app.stop();
    }
  });

  test("a WebSocket open on the old process lives on there after the new one took over, until the old one's shutdown_timeout ends: then it is cut; a new one opens on the new process", async (t) => {
    const app = await startUpstream('app');
    const tunnels = new Set<Duplex>();
    app.server.on('upgrade', (_req: IncomingMessage, socket: Duplex, head: Buffer) => {
      tunnels.add(socket);
      socket.on('close', () => tunnels.delete(socket));
      socket.on('error', () => undefined);
      socket.on('end', () => socket.end());
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      if (head.length > 0) socket.write(head);
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    const file = path.join(dir, 'ws.yaml');
    writeFileSync(
      file,
      `listen: ["127.0.0.1:0"]\nlog: { access: off }\nshutdown_timeout: 1500ms\nupstreams:\n  app: { servers: ["${app.url}"] }\n` +
        'sites:\n  - routes: [{ path: /, proxy: { upstream: app } }]\n',
    );
    const portico = await PorticoProcess.start(file, dir);
    const handshake = 'GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    /** Opens a tunnel and checks that it echoes `word`. */
    const open = async (word: string): Promise<RawConnection> => {
      const ws = await RawConnection.open(portico.port);
      ws.write(handshake);
      await ws.until((r) => r.includes('\r\n\r\n'));
      assert.match(ws.received.toString(), /^HTTP\/1\.1 101 /);
      await echoes(ws, word);
      return ws;
    };
    const echoes = async (ws: RawConnection, word: string) => {
      const before = ws.received.length;
      ws.write(word);
      await ws.until((r) => r.subarray(before).toString() === word);
    };
    let pid = 0;
    const ws = await open('before');
    try {
      const { mark, pid: newPid } = await upgrade(portico);
      pid = newPid;
      const retired = await portico.waitForLine(/^portico: upgraded: process \d+ serves now/, mark);
      assert.ok(retired);
      const retiredAt = Date.now();
      await echoes(ws, 'during');
      assert.equal(ws.closed, false, "the tunnel lives on the old process after the new one took over");
      const fresh = await open('new');
      assert.equal(await ws.waitClosed(10_000), true, "the old process's tunnel is cut");
      const cutAfter = Date.now() - retiredAt;
      assert.ok(cutAfter >= 1000, `cut ${cutAfter} ms after the old process began draining: at its shutdown_timeout (1.5 s)`);
      assert.equal(await within('the old process to exit', portico.exited, 10_000), 0);
      await echoes(fresh, 'still');
      t.diagnostic(`the WebSocket on the old process was cut ${cutAfter} ms after the handover (shutdown_timeout 1.5 s); one opened after it is served by the new process`);
      fresh.close();
    } finally {
      ws.close();
      if (pid !== 0) await stopSuccessor(portico, pid);
      else await portico.stop();
      for (const socket of tunnels) socket.destroy();
      await app.stop();
    }
  });
});


describe('upgrade: a new process that fails', () => {
  test('one that exits before it is ready: the result says so with its exit code; one that hangs is stopped at the ready bound; a second upgrade meanwhile is refused; the server keeps serving', async () => {
    const crash = path.join(dir, 'crash.js');
    const hang = path.join(dir, 'hang.js');
    writeFileSync(crash, 'process.exit(3);\n');
    writeFileSync(hang, 'setInterval(() => {}, 1000);\n');
    const running = await startPortico('sites:\n  - routes: [{ path: /, respond: { body: ok } }]\n');
    const retired: number[] = [];
    try {
      const crashed = await new Upgrader(running.server, pino({ level: 'silent' }), { args: [crash], retire: (pid) => retired.push(pid) }).upgrade();
      assert.deepEqual(crashed, { ok: false, error: { code: 'PORTICO_UPGRADE_FAILED', message: crashed.ok ? '' : crashed.error.message } });
      assert.match(crashed.ok ? '' : crashed.error.message, /^the new process \(pid \d+\) exited with code 3 before it was ready$/);

      const upgrader = new Upgrader(running.server, pino({ level: 'silent' }), { args: [hang], readyTimeoutMs: 500, retire: (pid) => retired.push(pid) });
      const first = upgrader.upgrade();
      const second: UpgradeResult = await upgrader.upgrade();
      assert.deepEqual(second, { ok: false, error: { code: 'PORTICO_UPGRADE_RUNNING', message: 'an upgrade is already running; try again once it is done' } });
      const timedOut = await first;
      assert.match(timedOut.ok ? '' : timedOut.error.message, /^the new process \(pid (\d+)\) was not ready within 500 ms$/);
      const pid = Number(/pid (\d+)/.exec(timedOut.ok ? '' : timedOut.error.message)![1]);
      assert.equal(alive(pid), false, 'the hanging process was stopped before the result');
      assert.deepEqual(retired, [], 'nothing retired');
      assert.equal((await httpRequest(running.port, '/')).body.toString(), 'ok');
    } finally {
      await running.stop();
    }
  });

  test('a new process that cannot bind a new address of its config (in use) fails with PORTICO_LISTEN_FAILED; the old one keeps serving', async () => {
    const blocker = net.createServer();
    blocker.listen(0, '127.0.0.1');
    await new Promise((resolve) => blocker.once('listening', resolve));
    const taken = (blocker.address() as net.AddressInfo).port;
    const file = path.join(dir, 'taken.yaml');
    writeFileSync(file, respondConfig('one'));
    const portico = await PorticoProcess.start(file, dir);
    try {
      writeFileSync(file, respondConfig('one').replace('listen: ["127.0.0.1:0"]', `listen: ["127.0.0.1:0", "127.0.0.1:${taken}"]`));
      const mark = portico.stderr.length;
      portico.signal('SIGUSR2');
      const line = await portico.waitForLine(/^portico: upgrade failed: /, mark);
      assert.match(line, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken}: address already in use \\(PORTICO_LISTEN_FAILED\\) \\(the new process exited with code 1\\)`));
      assert.equal((await httpRequest(portico.port, '/')).body.toString(), 'one');
    } finally {
      assert.equal(await portico.stop(), 0);
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});

describe('upgrade: the state directory lock', () => {
  test('handed over to a live successor pid (this process no longer releases it), taken back when it failed; a successor accepts its predecessor\'s lock and claims it once handed over, or once the predecessor is gone', async () => {
    const stateDir = path.join(dir, 'state-lock');
    const lock = path.join(stateDir, 'portico.lock');
    const logger = pino({ level: 'silent' });
    // A live process standing in for the other Portico.
    const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    await once(other, 'spawn');
    try {
      const state = StateDir.open(stateDir, logger);
      state.handOver(other.pid!);
      assert.equal(readFileSync(lock, 'utf8').trim(), String(other.pid));
      state.release();
      assert.equal(readFileSync(lock, 'utf8').trim(), String(other.pid), 'a lock handed over is not released');
      state.takeBack();
      assert.equal(readFileSync(lock, 'utf8').trim(), String(process.pid));
      state.release();
      assert.throws(() => readFileSync(lock), /ENOENT/);

      // The other process holds the lock: refused, unless it is this one's predecessor.
      writeFileSync(lock, `${other.pid}\n`);
      assert.throws(() => StateDir.open(stateDir, logger), /in use by process/);
      const successor = StateDir.open(stateDir, logger, other.pid);
      successor.release();
      assert.equal(readFileSync(lock, 'utf8').trim(), String(other.pid), 'not this one\'s until claimed');
      writeFileSync(lock, `${process.pid}\n`);
      successor.claim(logger);
      successor.release();
      assert.throws(() => readFileSync(lock), /ENOENT/, 'claimed once handed over: released on stop');

      // A predecessor that died without handing over: its lock is taken over.
      writeFileSync(lock, `${other.pid}\n`);
      const orphan = StateDir.open(stateDir, logger, other.pid);
      other.kill('SIGKILL');
      await once(other, 'exit');
      orphan.claim(logger);
      assert.equal(readFileSync(lock, 'utf8').trim(), String(process.pid));
      orphan.release();
    } finally {
      if (other.exitCode === null && other.signalCode === null) other.kill('SIGKILL');
    }
  });
});
