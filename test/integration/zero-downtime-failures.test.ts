/**
 * Zero downtime when processes die, through real processes (issue 17, "What must be shown"): `kill -9` of one
 * spawned instance under GET load (requests without response bytes are retried elsewhere; only answers under way
 * may fail, and none of them passes for complete; the slot comes back with a new pid); SIGTERM to Portico with a
 * slow request in flight (it completes, Portico exits 0, no app process is left); `kill -9` of Portico (no app
 * process is left).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { alive, eventually, groupMembers } from '../helpers/supervise.js';
import { get, startRunning, status, type Running } from './zero-downtime-support.js';

const opened: Running[] = [];
after(async () => {
  await Promise.all(opened.map((r) => r.close()));
});

/** The stream route: 10 chunks of 1 KiB, one every 30 ms. */
const STREAM = '/stream?n=10&ms=30';
const STREAM_BYTES = 10 * 1024;

/** One request of the GET load below, and how it went. */
interface Outcome {
  path: string;
  sentAt: number;
  /** When its response head arrived (undefined: none did). */
  headAt?: number;
  endAt?: number;
  status?: number;
  pid?: number;
  bytes: number;
  /** `ok`: ended normally, `cut`: its body ended early (an error after the head), `error`: no response at all. */
  result?: 'ok' | 'cut' | 'error';
  error?: string;
  contentLength?: number;
}

/** An open-loop GET load at `rate`/s over keep-alive connections (one in 10 fresh) that records every request. */
function recordingLoad(base: string, paths: readonly string[], rate = 200, maxMs = 30_000): { outcomes: Outcome[]; stop(): Promise<void> } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const outcomes: Outcome[] = [];
  const pending = new Set<Promise<void>>();
  let running = true;
  const one = (outcome: Outcome, fresh: boolean): Promise<void> =>
    new Promise<void>((resolve) => {
      const finish = (result: Outcome['result'], error?: string): void => {
        if (outcome.result !== undefined) return;
        outcome.result = result;
        outcome.error = error;
        outcome.endAt = Date.now();
        resolve();
      };
      const req = http.get(`${base}${outcome.path}`, fresh ? { agent: false, headers: { connection: 'close' } } : { agent }, (res) => {
        outcome.headAt = Date.now();
        outcome.status = res.statusCode;
        outcome.pid = Number(res.headers['x-pid']);
        const length = res.headers['content-length'];
        outcome.contentLength = length === undefined ? undefined : Number(length);
        res.on('data', (chunk: Buffer) => (outcome.bytes += chunk.length));
        res.once('end', () => finish(res.complete ? 'ok' : 'cut', res.complete ? undefined : 'incomplete end'));
        res.once('error', (err: NodeJS.ErrnoException) => finish('cut', err.code ?? err.message));
        res.once('aborted', () => finish('cut', 'aborted'));
      });
      req.setTimeout(20_000, () => req.destroy(new Error('timeout')));
      req.once('error', (err: NodeJS.ErrnoException) => finish(outcome.headAt === undefined ? 'error' : 'cut', err.code ?? err.message));
    });
  const started = Date.now();
  const loop = (async () => {
    const gap = 1000 / rate;
    for (let i = 0; running && Date.now() - started < maxMs; i++) {
      const wait = started + i * gap - Date.now();
      if (wait > 0) await sleep(wait);
      if (!running) break;
      const outcome: Outcome = { path: paths[i % paths.length]!, sentAt: Date.now(), bytes: 0 };
      outcomes.push(outcome);
      const p = one(outcome, i % 10 === 9);
      pending.add(p);
      void p.then(() => pending.delete(p));
    }
  })();
  return {
    outcomes,
    async stop() {
      running = false;
      await loop;
      await Promise.all(pending);
      agent.destroy();
    },
  };
}

/** The size a whole answer has: the stream route's known size, else its Content-Length. */
function expectedBytes(o: Outcome): number | undefined {
  return o.path === STREAM ? STREAM_BYTES : o.contentLength;
}

describe('zero downtime: a killed app instance, and Portico stopped or killed, under load', { timeout: 120_000 }, () => {
  test('kill -9 of a spawned instance under GET load: requests without response bytes are retried and succeed; failures are at most the answers under way, none passes for complete (bytes = Content-Length); the slot is back with a new pid', async (t) => {
    const running = await startRunning('kill-app');
    opened.push(running);
    const before = (await status(running.file)).instances;
    const victim = before[1]!;
    const load = recordingLoad(running.base, ['/', STREAM, '/cached']);
    // Load running, and answers under way on the victim.
    await eventually(() => load.outcomes.filter((o) => o.result === 'ok' && o.pid === victim.pid).length >= 20, 'answers from the victim', 15_000);
    await eventually(() => load.outcomes.some((o) => o.pid === victim.pid && o.result === undefined && o.path === STREAM), 'a stream under way on the victim', 15_000);
    const killAt = Date.now();
    const underWay = load.outcomes.filter((o) => o.result === undefined).length;
    const underWayOnVictim = load.outcomes.filter((o) => o.result === undefined && o.pid === victim.pid).length;
    process.kill(victim.pid!, 'SIGKILL');
    const back = await eventually(async () => {
      const slot = (await status(running.file)).instances[1]!;
      return slot.state === 'ready' && slot.pid !== victim.pid && slot;
    }, `${victim.slot} back with a new pid`, 15_000);
    await eventually(() => load.outcomes.some((o) => o.result === 'ok' && o.pid === back.pid && o.sentAt > killAt), `answers from the new ${victim.slot} (pid ${back.pid})`, 15_000);
    await load.stop();

    const outcomes = load.outcomes;
    const count = (f: (o: Outcome) => boolean): number => outcomes.filter(f).length;
    const noResponse = outcomes.filter((o) => o.result === 'error');
    const failedStatus = outcomes.filter((o) => o.result !== 'error' && (o.status ?? 0) >= 500);
    const cut = outcomes.filter((o) => o.result === 'cut');
    const lookComplete = outcomes.filter((o) => o.result === 'ok' && o.bytes !== expectedBytes(o));
    t.diagnostic(
      `sent ${outcomes.length}, ok ${count((o) => o.result === 'ok' && (o.status ?? 0) < 500)}, no response ${noResponse.length}, 5xx ${failedStatus.length}, ` +
        `cut short ${cut.length} (of ${underWay} under way at the kill, ${underWayOnVictim} with a head from pid ${victim.pid}), ` +
        `ended "complete" with missing bytes ${lookComplete.length}; ${victim.slot}: pid ${victim.pid} → ${back.pid}, restarts ${back.restarts}`,
    );
    assert.deepEqual(noResponse.map((o) => `${o.path}: ${o.error}`), [], 'every request without response bytes was retried and answered');
    assert.deepEqual(failedStatus.map((o) => `${o.path}: ${o.status}`), [], 'no 5xx');
    assert.deepEqual(lookComplete.map((o) => `${o.path}: ${o.bytes} of ${expectedBytes(o)} bytes`), [], 'no answer cut short passes for complete');
    for (const o of cut) {
      assert.equal(o.pid, victim.pid, `${o.path}: only answers of the killed instance are cut (${o.error})`);
      assert.ok(o.headAt !== undefined && o.sentAt <= killAt, `${o.path}: cut, but it was not under way at the kill`);
      assert.ok(o.bytes < expectedBytes(o)!, `${o.path}: cut, so its body is short`);
    }
    assert.ok(cut.length <= underWay, `${cut.length} cut > ${underWay} under way`);
    assert.ok(back.restarts >= 1);
  });

  test('SIGTERM to Portico under load with a slow request in flight: it and every answer under way complete with 200 and their whole body, Portico exits 0, and no app process is left', async (t) => {
    const running = await startRunning('sigterm');
    opened.push(running);
    const instances = (await status(running.file)).instances;
    const load = recordingLoad(running.base, ['/', STREAM, '/cached']);
    await eventually(() => load.outcomes.filter((o) => o.result === 'ok').length >= 50, 'the load answered', 15_000);
    // The slow answer's head (and half its body) arrives at once; its rest 1.5 s later.
    let headArrived!: () => void;
    const head = new Promise<void>((resolve) => (headArrived = resolve));
    const slow = new Promise<{ status: number; bytes: number; complete: boolean; length: number }>((resolve, reject) => {
      const request = http.get(`${running.base}/slow?ms=1500`, { agent: false, timeout: 15_000 }, (response) => {
        headArrived();
        let bytes = 0;
        response.on('data', (chunk: Buffer) => (bytes += chunk.length));
        response.once('end', () => resolve({ status: response.statusCode ?? 0, bytes, complete: response.complete, length: Number(response.headers['content-length']) }));
        response.once('error', reject);
      });
      request.once('timeout', () => request.destroy(new Error('timeout')));
      request.once('error', reject);
    });
    await head;
    await eventually(() => load.outcomes.some((o) => o.path === STREAM && o.headAt !== undefined && o.result === undefined), 'a stream under way', 15_000);
    const pids = new Set([...instances.map((i) => i.pid!), ...load.outcomes.flatMap((o) => (o.pid === undefined ? [] : [o.pid]))]);
    const exited = once(running.portico.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const stopAt = Date.now();
    running.portico.child.kill('SIGTERM');
    // What was under way at the signal (answers already begun), and no more sending: new connections are refused now.
    const underWay = load.outcomes.filter((o) => o.result === undefined && o.headAt !== undefined);
    const waiting = load.outcomes.filter((o) => o.result === undefined && o.headAt === undefined);
    const stopped = load.stop();
    const answer = await slow;
    const [code, signal] = await exited;
    const exitMs = Date.now() - stopAt;
    await stopped;
    const left = [...pids].filter(alive);
    const groupLeft = groupMembers(pids);
    const unfinished = underWay.filter((o) => o.result !== 'ok' || o.status !== 200 || o.bytes !== expectedBytes(o));
    const waitingOk = waiting.filter((o) => o.result === 'ok' && o.status === 200).length;
    t.diagnostic(
      `slow request: ${answer.status}, ${answer.bytes} of ${answer.length} bytes; answers under way at SIGTERM: ${underWay.length}, not completed ${unfinished.length}; ` +
        `requests sent but not answered yet at SIGTERM: ${waiting.length}, answered 200 ${waitingOk}; portico exited ${code ?? signal} after ${exitMs} ms; ` +
        `app processes left: ${left.length}, group members left: ${groupLeft.length}`,
    );
    assert.deepEqual([answer.status, answer.bytes, answer.complete], [200, 2048, true]);
    assert.equal(answer.length, 2048);
    assert.deepEqual(unfinished.map((o) => `${o.path}: ${o.result} ${o.status} ${o.bytes} bytes ${o.error ?? ''}`), [], 'every answer under way completed');
    assert.equal(code, 0);
    assert.deepEqual(left, [], 'no app instance survives a graceful stop');
    assert.deepEqual(groupLeft, [], 'nothing of their process groups either');
  });

  test('kill -9 of Portico leaves no app process (instances and their process groups gone within a bounded wait)', async (t) => {
    const running = await startRunning('kill-portico');
    opened.push(running);
    const instances = (await status(running.file)).instances;
    const pids = new Set(instances.map((i) => i.pid!));
    assert.equal(pids.size, 3);
    const answer = await get(running.base, '/');
    assert.ok(pids.has(answer.pid));
    const exited = once(running.portico.child, 'exit');
    const killAt = Date.now();
    running.portico.child.kill('SIGKILL');
    await exited;
    await eventually(() => [...pids].every((pid) => !alive(pid)) && groupMembers(pids).length === 0, 'every app process gone', 10_000);
    t.diagnostic(`${pids.size} instances and their groups gone ${Date.now() - killAt} ms after kill -9 of Portico`);
  });
});
