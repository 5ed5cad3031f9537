/**
 * When app servers fail: connect errors, timeouts, clients and servers that go away mid-exchange, and the
 * retry rules (never the same server twice, retry_deadline, idempotent methods only once the app saw them).
 * Error pages are Portico's own and never name an app server.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { RawConnection, httpRequest, statusOf, waitFor, type FullResponse } from './proxy-support.js';

const scratch = mkdtempSync(path.join(tmpdir(), 'portico-proxy-failures-'));
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

async function portico(yaml: string): Promise<RunningPortico> {
  const running = await startPortico(yaml);
  cleanups.push(() => running.stop());
  return running;
}

async function upstream(handler?: Parameters<typeof startUpstream>[0]): Promise<TestUpstream> {
  const started = await startUpstream(handler);
  cleanups.push(() => started.stop());
  return started;
}

/** A backend that is not listening: its port refuses connections. */
let refusingCount = 0;

/**
 * A server address that refuses connections: port 1 on a loopback address of its own. (A port freed by stopping a
 * server could be handed to the next server the test starts — a test then saw its "refusing" server answer.)
 */
async function refusing(): Promise<TestUpstream> {
  refusingCount++;
  const host = `127.0.${Math.floor(refusingCount / 250)}.${2 + (refusingCount % 250)}`;
  return { url: `http://${host}:1`, port: 1, requests: [], stop: async () => {}, restart: async () => {}, server: undefined } as unknown as TestUpstream;
}

/** Config text: one upstream `app` with the given servers and options, proxied at `/`. */
function config(servers: readonly TestUpstream[], options = '', top = ''): string {
  const list = servers.map((s) => `{ url: "${s.url}" }`).join(', ');
  return `${top}upstreams:\n  app:\n    servers: [${list}]\n${options.replace(/^/gm, '    ')}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
}

/** Asserts that a response names none of the app servers, in its body or its headers. */
function assertHides(res: FullResponse, servers: readonly TestUpstream[]): void {
  const text = `${res.rawHeaders.join('\n')}\n${res.body.toString('latin1')}`;
  for (const server of servers) {
    const { host, hostname } = new URL(server.url);
    assert.ok(!text.includes(host) && !text.includes(hostname), `response reveals ${host}:\n${text}`);
    if (server.port > 1000) assert.ok(!text.includes(String(server.port)), `response reveals port ${server.port}:\n${text}`);
  }
  assert.doesNotMatch(text, /127\.0\.0\.1:\d|ECONNREFUSED|UND_ERR|at .*\.js/);
}

function status(code: number, body = String(code)) {
  return (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(code, { 'content-type': 'text/plain' });
    res.end(body);
  };
}

describe('errors', () => {
  test('a connect failure moves on to the next server', async () => {
    const dead = await refusing();
    const live = await upstream('live');
    const server = await portico(config([dead, live], 'policy: first'));
    const res = await httpRequest(server.port, '/');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'live');
  });

  test("all servers down: 502 with Portico's page, naming no app server", async () => {
    const a = await refusing();
    const b = await refusing();
    const server = await portico(config([a, b]));
    const res = await httpRequest(server.port, '/x');
    assert.equal(res.status, 502);
    assert.match(res.body.toString(), /502 Bad Gateway/);
    assert.equal(res.headers.server, 'Portico');
    assertHides(res, [a, b]);
  });

  test('no answer within timeouts.response_header (300ms): 504, naming no app server', async () => {
    const slow = await upstream((_req, res) => {
      const timer = setTimeout(() => res.end('late'), 2000);
      res.on('close', () => clearTimeout(timer));
    });
    const server = await portico(config([slow], 'timeouts: { response_header: 300ms }'));
    const started = Date.now();
    const res = await httpRequest(server.port, '/');
    const took = Date.now() - started;
    assert.equal(res.status, 504);
    assert.ok(took >= 280 && took < 1500, `answered after ${took} ms`);
    assertHides(res, [slow]);
  });

  test('max_conns reached and no room in the queue: 503, naming no app server', async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    const busy = await upstream((_req, res) => void held.then(() => res.end('done')));
    const server = await portico(config([busy], 'max_conns: 1\nqueue: { size: 0 }'));
    const first = httpRequest(server.port, '/first');
    await waitFor('the first request to reach the app server', () => busy.requests.length === 1);
    const second = await httpRequest(server.port, '/second');
    release();
    assert.equal(second.status, 503);
    assertHides(second, [busy]);
    assert.equal((await first).status, 200);
  });

  test('a client that disconnects mid-request aborts the upstream request (the app server sees close)', async () => {
    let closed = false;
    const hanging = await upstream((_req, res) => res.on('close', () => (closed = true)));
    const server = await portico(config([hanging]));
    const conn = await RawConnection.open(server.port);
    conn.write('GET /hang HTTP/1.1\r\nHost: a\r\n\r\n');
    await waitFor('the request to reach the app server', () => hanging.requests.length === 1);
    conn.close();
    await waitFor('the app server to see its request closed', () => closed, 2000);
  });

  test('with the access log on (one shared close listener), a client that disconnects still aborts the upstream request and is logged as 499', async () => {
    let closed = false;
    const hanging = await upstream((_req, res) => res.on('close', () => (closed = true)));
    const logFile = path.join(scratch, 'abort-access.log');
    const server = await portico(config([hanging], '', `log: { access: ${JSON.stringify(logFile)}, format: upstream }\n`));
    const conn = await RawConnection.open(server.port);
    conn.write('GET /hang-logged HTTP/1.1\r\nHost: a\r\n\r\n');
    await waitFor('the request to reach the app server', () => hanging.requests.length === 1);
    conn.close();
    await waitFor('the app server to see its request closed', () => closed, 2000);
    await server.stop();
    const line = readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('/hang-logged'));
    assert.ok(line !== undefined, 'the request is in the access log');
    assert.match(line, /" 499 /);
  });

  test('an app server dying halfway through a Content-Length body: the client sees an incomplete response', async () => {
    const dying = await upstream((req, res) => {
      res.writeHead(200, { 'content-length': 1000 });
      res.write('x'.repeat(500));
      setTimeout(() => req.socket.destroy(), 30);
    });
    const server = await portico(config([dying]));
    const res = await fetch(`${server.url}/`);
    assert.equal(res.status, 200);
    await assert.rejects(res.arrayBuffer());
  });

  test('an app server dying halfway through a chunked body: the client never gets the terminating chunk', async () => {
    const dying = await upstream((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first part;');
      setTimeout(() => req.socket.destroy(), 30);
    });
    const server = await portico(config([dying]));
    const conn = await RawConnection.open(server.port);
    conn.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    assert.ok(await conn.waitClosed(2000), 'Portico closes the connection');
    const text = conn.received.toString('latin1');
    assert.equal(statusOf(text), 200);
    assert.match(text, /transfer-encoding: chunked/i);
    assert.match(text, /first part;/);
    assert.doesNotMatch(text, /\r\n0\r\n\r\n$/);
  });
});

describe('retries', () => {
  test('a retry never re-picks a failed server: three servers, one refusing, every request lands on a healthy one', async () => {
    const dead = await refusing();
    const a = await upstream('a');
    const b = await upstream('b');
    const logFile = path.join(scratch, 'retries.log');
    const server = await portico(
      config([dead, a, b], 'retries: 2\npassive: { max_fails: 0 }', `log: { access: "${logFile}", format: upstream }\n`),
    );
    for (let i = 0; i < 12; i++) {
      const res = await httpRequest(server.port, `/r${i}`);
      assert.equal(res.status, 200);
    }
    assert.equal(a.requests.length + b.requests.length, 12);
    let lines: string[] = [];
    await waitFor('12 access-log lines', () => {
      try {
        lines = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('upstream_addr'));
      } catch {
        lines = [];
      }
      return lines.length === 12;
    });
    let retried = 0;
    for (const line of lines) {
      const addrs = /upstream_addr="([^"]*)"/.exec(line)![1]!.split(', ');
      assert.ok(addrs.filter((addr) => addr === dead.url).length <= 1, line);
      assert.ok(addrs.length <= 2, line);
      if (addrs.length === 2) retried++;
    }
    assert.equal(retried, 4, 'round robin sends a third of the requests to the refusing server first');
  });

  test('policy first with its first server refusing: the retry goes to the next one, not the same one again', async () => {
    const dead = await refusing();
    const live = await upstream('live');
    const server = await portico(config([dead, live], 'policy: first\nretries: 3\npassive: { max_fails: 0 }'));
    for (let i = 0; i < 3; i++) assert.equal((await httpRequest(server.port, '/')).status, 200);
    assert.equal(live.requests.length, 3);
  });

  test('retries stop at retry_deadline: a slow 503 after the deadline is passed on, not retried', async () => {
    const slow503 = () =>
      upstream((_req, res) => {
        setTimeout(() => status(503, 'busy')(_req, res), 150);
      });
    const servers = [await slow503(), await slow503(), await slow503(), await slow503()];
    const server = await portico(config(servers, 'retries: 10\nretry_deadline: 250ms\npassive: { max_fails: 0 }'));
    const started = Date.now();
    const res = await httpRequest(server.port, '/');
    const took = Date.now() - started;
    const attempts = servers.reduce((n, s) => n + s.requests.length, 0);
    assert.equal(attempts, 2, 'one attempt before the deadline, one started before it that answers after');
    // Each answer takes 150 ms: the two attempts take ~300 ms. The bound only catches a wait far past the
    // deadline (more attempts are caught above); it is generous for a loaded machine.
    assert.ok(took < 1500, `took ${took} ms`);
    assert.equal(res.status, 503);
    assert.equal(res.body.toString(), 'busy', "the last app server's own answer");
  });

  test('GET is retried on 502 and 503 (retry_on) and lands on a healthy server', async () => {
    const bad = await upstream(status(502));
    const busy = await upstream(status(503));
    const good = await upstream('good');
    const server = await portico(config([bad, busy, good], 'policy: first\npassive: { max_fails: 0 }'));
    const res = await httpRequest(server.port, '/');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'good');
    assert.deepEqual([bad, busy, good].map((s) => s.requests.length), [1, 1, 1]);
  });

  test('a status not in retry_on is passed on as the app sent it', async () => {
    const busy = await upstream(status(503, 'busy'));
    const good = await upstream('good');
    const server = await portico(config([busy, good], 'policy: first\nretry_on: [connect_error]\npassive: { max_fails: 0 }'));
    const res = await httpRequest(server.port, '/');
    assert.equal(res.status, 503);
    assert.equal(res.body.toString(), 'busy');
    assert.equal(good.requests.length, 0);
  });

  test('POST is not retried once the app server received it (it dies after reading the body): 502, exactly one POST', async () => {
    const dies = await upstream((req) => req.socket.destroy());
    const other = await upstream('other');
    const server = await portico(
      config([dies, other], 'policy: first\nretry_on: [connect_error, timeout, reset, 502, 503, 504]\npassive: { max_fails: 0 }'),
    );
    const res = await httpRequest(server.port, '/order', { method: 'POST', body: 'buy one' });
    assert.equal(res.status, 502);
    assertHides(res, [dies, other]);
    assert.equal(dies.requests.filter((r) => r.method === 'POST').length, 1);
    assert.equal(other.requests.length, 0);
  });

  test('POST is retried when the connection was refused (the app never saw it)', async () => {
    const dead = await refusing();
    const live = await upstream((_req, res, body) => res.end(`stored ${body}`));
    const server = await portico(config([dead, live], 'policy: first\npassive: { max_fails: 0 }'));
    const res = await httpRequest(server.port, '/order', { method: 'POST', body: 'buy one' });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'stored buy one');
  });

  test('an idempotent request whose connection was reset before any answer is retried by default (reset is in retry_on)', async () => {
    const dies = await upstream((req) => req.socket.destroy());
    const other = await upstream('other');
    const server = await portico(config([dies, other], 'policy: first\npassive: { max_fails: 0 }'));
    const res = await httpRequest(server.port, '/', { method: 'PUT', body: 'x' });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'other');
  });
});


describe('the capacity queue', () => {
  test('a turn its woken waiter cannot use (it already tried the freed server) goes on to the next waiter, long before queue.timeout', async () => {
    // Both app servers hold /slow until told, and refuse /flaky with a retryable 503.
    const held: ServerResponse[] = [];
    const app = (_req: IncomingMessage, res: ServerResponse): void => {
      if (_req.url === '/slow') return void held.push(res);
      if (_req.url === '/flaky') return status(503)(_req, res);
      res.end('ok');
    };
    const x = await upstream(app);
    const y = await upstream(app);
    const server = await portico(
      config([x, y], 'policy: first\nmax_conns: 1\nqueue: { size: 10, timeout: 30s }\npassive: { max_fails: 0 }')
        .replace('      - path: /\n', '      - path: /ping\n        respond: { body: "pong" }\n      - path: /\n'),
    );
    const answers: Array<Promise<FullResponse>> = [];
    try {
      // x and then y are busy; x's request is answered, so x is free again and y stays busy.
      answers.push(httpRequest(server.port, '/slow'));
      await waitFor('x to hold /slow', () => held.length === 1 && x.requests.length === 1);
      answers.push(httpRequest(server.port, '/slow'));
      await waitFor('y to hold /slow', () => held.length === 2 && y.requests.length === 1);
      held.shift()!.end('done');
      assert.equal((await answers.shift()!).status, 200);
      // A request refused by x (503) is retried: y is busy, so it waits, with x tried.
      const retried = httpRequest(server.port, '/flaky');
      await waitFor('x to refuse /flaky', () => x.requests.length === 2);
      // x is busy again; a second request waits behind the first.
      answers.push(httpRequest(server.port, '/slow'));
      await waitFor('x to hold /slow again', () => held.length === 2 && x.requests.length === 3);
      const started = Date.now();
      const waiting = httpRequest(server.port, '/small');
      // A round trip on another connection: the waiting request has been read and queued by then.
      assert.equal((await httpRequest(server.port, '/ping')).status, 200);
      // x is free: the first waiter (which tried x) cannot use it, the second can.
      held.pop()!.end('done');
      const answered = await Promise.race([waiting, new Promise<undefined>((resolve) => setTimeout(resolve, 3000))]);
      assert.ok(answered !== undefined, `the waiting request was not answered within 3 s (queue.timeout 30 s)`);
      assert.equal(answered.status, 200);
      assert.ok(Date.now() - started < 3000);
      held.shift()!.end('done');
      assert.equal((await retried).status, 503, 'the retried request went to y when it was free (and got its 503)');
    } finally {
      for (const res of held.splice(0)) res.end('done');
      await Promise.allSettled(answers);
    }
  });
});
