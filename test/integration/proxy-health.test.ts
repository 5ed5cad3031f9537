/**
 * Which server gets a request, over time: active health checks (fall / rise), passive ejection and its cap,
 * backup servers, slow start, waiting for a server (try_duration), max_conns with its queue, sticky cookies.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { capturingLogger } from '../helpers/pebble.js';
import { makeTree, startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { appRequests, httpRequest, settle, sleep, waitFor, watchUpstreamRequests } from './proxy-support.js';
import { within } from '../helpers/within.js';

const cleanups: Array<() => Promise<void> | void> = [];
const checks = watchUpstreamRequests('/health');
const attempts = watchUpstreamRequests();
cleanups.push(() => checks.stop(), () => attempts.stop());
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function portico(yaml: string): Promise<RunningPortico> {
  const running = await startPortico(yaml);
  cleanups.push(() => running.stop());
  return running;
}

/** A backend named `name` whose /health answers 200 or 500 as `healthy` says, and which counts its checks. */
interface Checked extends TestUpstream {
  healthy: boolean;
  /** Health checks answered so far, passing and failing. */
  passes: number;
  fails: number;
  /**
   * When set, health checks are held unanswered until afterChecks() lets the next ones through, so Portico's
   * view changes only when the test says (use a check timeout longer than the test).
   */
  gated: boolean;
  credits: number;
  held: Array<() => void>;
}

function releaseChecks(backend: Checked): void {
  while (backend.credits > 0 && backend.held.length > 0) {
    backend.credits--;
    backend.held.shift()!();
  }
}

async function checked(name: string, answer?: (req: IncomingMessage, res: ServerResponse) => void): Promise<Checked> {
  const backend = (await startUpstream((req, res) => {
    if (req.url === '/health') {
      const reply = () => {
        if (backend.healthy) backend.passes++;
        else backend.fails++;
        res.writeHead(backend.healthy ? 200 : 500);
        res.end();
      };
      if (!backend.gated) return reply();
      backend.held.push(reply);
      return releaseChecks(backend);
    }
    if (answer !== undefined) return answer(req, res);
    res.end(name);
  })) as Checked;
  backend.healthy = true;
  backend.passes = 0;
  backend.fails = 0;
  backend.gated = false;
  backend.credits = 0;
  backend.held = [];
  cleanups.push(() => backend.stop());
  return backend;
}

function config(servers: ReadonlyArray<TestUpstream | string>, options = ''): string {
  const list = servers.map((s) => (typeof s === 'string' ? s : `{ url: "${s.url}" }`)).join(', ');
  return `upstreams:\n  app:\n    servers: [${list}]\n${options.replace(/^/gm, '    ')}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
}

/** Sends `n` GETs one after another; returns the bodies. */
async function bodies(server: RunningPortico, n: number, headers: Record<string, string> = {}): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await httpRequest(server.port, `/n${i}`, { headers });
    assert.equal(res.status, 200, res.body.toString());
    out.push(res.body.toString());
  }
  return out;
}

function count(list: readonly string[], name: string): number {
  return list.filter((x) => x === name).length;
}

/**
 * Waits until `backend` has answered `n` more checks of the given kind than now, and Portico has read every
 * answer the backend gave and recorded it.
 */
async function afterChecks(backend: Checked, kind: 'passes' | 'fails', n: number): Promise<void> {
  const target = backend[kind] + n;
  if (backend.gated) {
    backend.credits += n;
    releaseChecks(backend);
  }
  await waitFor(`${n} more ${kind} on a health check`, () => backend[kind] >= target, 5000, 5);
  const answered = backend.passes + backend.fails;
  await waitFor('Portico to read the check answers', () => checks.of(backend.url).completed >= answered, 5000, 5);
  await settle();
}

/** Starts Portico from YAML text with an error log the test reads (the lines, parsed). */
async function logged(yaml: string): Promise<{ port: number; log: ReturnType<typeof capturingLogger> }> {
  const dir = makeTree();
  const log = capturingLogger();
  const server = new Portico(parseConfig(`listen: ["127.0.0.1:0"]\nlog: { access: off }\n${yaml}`, `${dir}/portico.yaml`, dir), log.logger);
  await server.start();
  cleanups.push(() => server.stop(100));
  return { port: server.addresses[0]!.port, log };
}

describe('what the error log says of a failed attempt', () => {
  test('an attempt that ends in 502 or 504 leaves a warn line with its cause (connection refused, timeout after the limit), the upstream, the server, the client and the request line', async () => {
    const refusing = 'http://127.0.3.250:1';
    const down = await logged(config([refusing]));
    assert.equal((await httpRequest(down.port, '/a?b=1')).status, 502);
    const [refused] = await within('the refused attempt logged', down.log.waitFor('upstream attempt failed'), 5000);
    assert.equal(refused!.level, 40, 'warn');
    assert.equal(refused!.reason, 'connection refused');
    assert.equal(refused!.during, 'connecting');
    assert.equal(refused!.upstream, 'app');
    assert.equal(refused!.server, refusing);
    assert.equal(refused!.client, '127.0.0.1');
    assert.equal(refused!.request, 'GET /a?b=1 HTTP/1.1');

    const silent = await startUpstream(() => undefined);
    cleanups.push(() => silent.stop());
    const slow = await logged(config([silent], 'timeouts: { response_header: 300ms }'));
    assert.equal((await httpRequest(slow.port, '/')).status, 504);
    const [late] = await within('the timed-out attempt logged', slow.log.waitFor('upstream attempt failed'), 5000);
    assert.equal(late!.reason, 'timeout after 300 ms');
    assert.equal(late!.during, 'reading the response head');
    assert.equal(late!.server, silent.url);
  });

  test('a streamed body past max_body_size is answered 413 and not logged as a failure of the app', async () => {
    // Answers GETs; reads a POST's body and never answers it.
    const reading = await startUpstream((req, res) => {
      if (req.method === 'GET') return void res.end('ok');
      req.on('data', () => undefined);
    });
    cleanups.push(() => reading.stop());
    const portico = await logged(
      `upstreams:\n  app:\n    servers: [{ url: "${reading.url}" }]\nsites:\n  - routes:\n      - path: /\n        max_body_size: 1KB\n        proxy: { upstream: app, request_buffering: false }\n`,
    );
    const res = await httpRequest(portico.port, '/upload', { method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: Buffer.alloc(100_000) });
    assert.equal(res.status, 413);
    // A request answered after it: the cut attempt's end (in the same turns as the 413) has been logged by then.
    assert.equal((await httpRequest(portico.port, '/after')).status, 200);
    assert.deepEqual(
      portico.log.lines.filter((line) => line.msg === 'upstream attempt failed'),
      [],
    );
  });
});

describe('what the error log says of a change of health', () => {
  test('"server is down" carries the reason (connection refused, a wrong status, a timeout) and the URL checked', async () => {
    const notFound = await startUpstream((_req, res) => {
      res.writeHead(404);
      res.end();
    });
    cleanups.push(() => notFound.stop());
    const silent = await startUpstream(() => undefined);
    cleanups.push(() => silent.stop());
    const refusing = 'http://127.0.3.250:1';
    const { log } = await logged(config([refusing, notFound, silent], 'health: { path: /health, interval: 200ms, timeout: 500ms, fall: 1 }'));
    const lines = await within('three "server is down" lines', log.waitFor('server is down', 3), 5000);
    const of = (url: string) => lines.find((line) => line.server === url);
    assert.match(String(of(refusing)?.reason), /connection refused/);
    assert.equal(of(refusing)?.check, `${refusing}/health`);
    assert.match(String(of(notFound.url)?.reason), /status 404 \(expected 200-399\)/);
    assert.equal(of(notFound.url)?.check, `${notFound.url}/health`);
    assert.match(String(of(silent.url)?.reason), /timeout after 500 ms/);
    assert.equal(of(silent.url)?.check, `${silent.url}/health`);
  });

  test('"server ejected" (passive health) carries the last failure: a status or a refused connection', async () => {
    const busy = await startUpstream((_req, res) => {
      res.writeHead(503);
      res.end();
    });
    cleanups.push(() => busy.stop());
    const refusing = 'http://127.0.3.251:1';
    const { port, log } = await logged(config([busy, refusing], 'policy: first\nretries: 0\npassive: { max_fails: 1, max_ejection_percent: 100 }'));
    assert.equal((await httpRequest(port, '/')).status, 503);
    const [first] = await within('the busy server to be ejected', log.waitFor('server ejected'), 3000);
    assert.equal(first!.server, busy.url);
    assert.match(String(first!.reason), /the last: status 503/);
    assert.equal((await httpRequest(port, '/')).status, 502);
    const lines = await within('the refusing server to be ejected', log.waitFor('server ejected', 2), 3000);
    assert.match(String(lines[1]!.reason), /the last: connection refused/);
  });
});

describe('active health checks', () => {
  test('a server is marked down after `fall` failed checks and up after `rise` passes; while down it gets no requests', async () => {
    const a = await checked('a');
    a.gated = true; // each check of a is answered only when the test lets it: no check lands mid-step
    const b = await checked('b');
    const server = await portico(config([a, b], 'health: { path: /health, interval: 100ms, timeout: 60s, fall: 2, rise: 2 }'));
    await afterChecks(a, 'passes', 1);
    assert.equal(count(await bodies(server, 4), 'a'), 2, 'both serve while healthy');

    a.healthy = false;
    await afterChecks(a, 'fails', 1);
    assert.ok(count(await bodies(server, 4), 'a') > 0, 'one failed check (fall: 2) does not mark it down');
    await afterChecks(a, 'fails', 1);
    const before = appRequests(a);
    assert.equal(count(await bodies(server, 10), 'a'), 0, 'down after two failed checks');
    assert.equal(appRequests(a), before, 'a down server receives no requests');

    a.healthy = true;
    await afterChecks(a, 'passes', 1);
    assert.equal(count(await bodies(server, 4), 'a'), 0, 'one pass (rise: 2) does not mark it up');
    await afterChecks(a, 'passes', 1);
    assert.equal(count(await bodies(server, 4), 'a'), 2, 'up again after two passes');
  });

  test('a server ejected by live traffic while it was down is back as soon as its active checks pass (regression)', async () => {
    const a = await checked('a');
    const b = await checked('b');
    const server = await portico(
      config([a, b], 'passive: { max_fails: 2, fail_timeout: 10s }\nhealth: { path: /health, interval: 100ms, fall: 3, rise: 1 }'),
    );
    await a.stop();
    // Before three checks have failed, live traffic meets the refused connections and ejects a for 10 s.
    assert.deepEqual(new Set(await bodies(server, 8)), new Set(['b']));
    // Then three failed checks (fall: 3) mark it down as well.
    const failed = checks.of(a.url).errored;
    await waitFor('three failed checks of the stopped server', () => checks.of(a.url).errored >= failed + 3, 5000, 5);
    await settle();
    await a.restart();
    await afterChecks(a, 'passes', 1);
    assert.equal(count(await bodies(server, 4), 'a'), 2, 'the passing check lifted the ejection');
  });

  test('backup servers serve only when every primary is down', async () => {
    const primary = await checked('primary');
    const backup = await checked('backup');
    const server = await portico(
      config([primary, `{ url: "${backup.url}", backup: true }`], 'health: { path: /health, interval: 100ms, fall: 1, rise: 1 }'),
    );
    assert.deepEqual(new Set(await bodies(server, 5)), new Set(['primary']));
    primary.healthy = false;
    await afterChecks(primary, 'fails', 1);
    assert.deepEqual(new Set(await bodies(server, 5)), new Set(['backup']));
    primary.healthy = true;
    await afterChecks(primary, 'passes', 1);
    assert.deepEqual(new Set(await bodies(server, 5)), new Set(['primary']));
  });

  test("slow start: a recovered server's share of requests grows over slow_start", async () => {
    const a = await checked('a');
    const b = await checked('b');
    const server = await portico(config([a, b], 'slow_start: 1s\nhealth: { path: /health, interval: 100ms, fall: 1, rise: 1 }'));
    a.healthy = false;
    await afterChecks(a, 'fails', 1);
    a.healthy = true;
    await afterChecks(a, 'passes', 1);
    const early: string[] = [];
    for (const until = Date.now() + 250; Date.now() < until; ) early.push(...(await bodies(server, 1)));
    await sleep(1000);
    const late = await bodies(server, 40);
    const earlyShare = count(early, 'a') / early.length;
    const lateShare = count(late, 'a') / late.length;
    assert.ok(earlyShare < 0.3, `share right after recovery: ${earlyShare.toFixed(2)} of ${early.length}`);
    assert.ok(lateShare > 0.4, `share after slow_start: ${lateShare.toFixed(2)}`);
  });
});

describe('passive health', () => {
  test('without active checks, a server failing max_fails (2) requests is ejected and gets no more', async () => {
    const bad = await checked('bad', (_req, res) => {
      res.writeHead(502);
      res.end('bad');
    });
    const good = await checked('good');
    const server = await portico(config([bad, good], 'passive: { max_fails: 2, fail_timeout: 10s }'));
    const got = await bodies(server, 12);
    assert.deepEqual(new Set(got), new Set(['good']), 'the 502s were retried on the good server');
    assert.equal(appRequests(bad), 2);
  });

  test('max_ejection_percent: 50 keeps one of two failing servers in service', async () => {
    const fail = (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(502);
      res.end('failing');
    };
    const a = await checked('a', fail);
    const b = await checked('b', fail);
    const server = await portico(config([a, b], 'passive: { max_fails: 1, max_ejection_percent: 50 }'));
    for (let i = 0; i < 6; i++) {
      const res = await httpRequest(server.port, '/');
      assert.equal(res.status, 502);
      assert.equal(res.body.toString(), 'failing', "the app's own answer");
    }
    assert.equal(appRequests(a), 1, 'a was ejected after its first failure');
    assert.equal(appRequests(b), 6, 'b failed too but stays in service: ejecting it would pass 50 %');
  });

  test('with every server ejected, the ejected ones are still tried rather than answering 503 (panic)', async () => {
    const fail = (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(502);
      res.end('failing');
    };
    const a = await checked('a', fail);
    const b = await checked('b', fail);
    const server = await portico(config([a, b], 'passive: { max_fails: 1, max_ejection_percent: 100 }'));
    for (let i = 0; i < 4; i++) {
      const res = await httpRequest(server.port, '/');
      assert.equal(res.status, 502);
      assert.equal(res.body.toString(), 'failing');
    }
  });
});

describe('waiting for a server', () => {
  for (const back of ['a', 'b', 'c']) {
    test(`try_duration: 5s: every server stopped, the request waits and gets 200 from the first one back (${back})`, async () => {
      const servers = { a: await checked('a'), b: await checked('b'), c: await checked('c') };
      const server = await portico(config(Object.values(servers), 'try_duration: 5s\ntry_interval: 100ms'));
      await Promise.all(Object.values(servers).map((s) => s.stop()));
      const failedBefore = Object.values(servers).map((s) => attempts.of(s.url).errored);
      const pending = httpRequest(server.port, '/');
      // The request has been refused by every server (twice) and is waiting for one to come back.
      await waitFor('two refused attempts on every server', () => Object.values(servers).every((s, i) => attempts.of(s.url).errored >= failedBefore[i]! + 2), 5000, 5);
      // Regression: whichever server passive health ejected while all were down used to be ignored when back.
      await servers[back as 'a'].restart();
      const restartedAt = Date.now();
      const res = await pending;
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), back);
      assert.ok(Date.now() - restartedAt < 1500, `answered ${Date.now() - restartedAt} ms after the server was back (try_interval: 100ms)`);
    });
  }

  test('max_conns: 1 with a queue: excess requests wait their turn and all succeed, one at a time', async () => {
    let inFlight = 0;
    let peak = 0;
    const slow = await checked('slow', (_req, res) => {
      peak = Math.max(peak, ++inFlight);
      setTimeout(() => {
        inFlight--;
        res.end('slow');
      }, 60);
    });
    const server = await portico(config([slow], 'max_conns: 1\nqueue: { size: 10, timeout: 2s }'));
    const results = await Promise.all([1, 2, 3, 4].map(() => httpRequest(server.port, '/')));
    assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200]);
    assert.equal(peak, 1);
  });

  test('max_conns: 1: a full queue or a queue timeout gets 503', async () => {
    // While `holding`, the app server holds each request until the test lets them go.
    let holding = true;
    const held: Array<() => void> = [];
    const letGo = () => {
      holding = false;
      for (const answer of held.splice(0)) answer();
    };
    cleanups.push(letGo);
    const slow = await checked('slow', (_req, res) => {
      if (holding) held.push(() => res.end('slow'));
      else res.end('slow');
    });

    const full = await portico(config([slow], 'max_conns: 1\nqueue: { size: 1, timeout: 5s }'));
    const first = httpRequest(full.port, '/');
    await waitFor('the first request at the app server', () => appRequests(slow) === 1);
    // One of these two takes the only queue place; the other finds the queue full while the first is still held.
    const queued = [httpRequest(full.port, '/'), httpRequest(full.port, '/')];
    const earliest = await Promise.race(queued);
    assert.equal(earliest.status, 503, 'the queue was full');
    assert.equal(appRequests(slow), 1);
    letGo();
    const statuses = [(await first).status, ...(await Promise.all(queued)).map((r) => r.status)];
    assert.deepEqual(statuses.sort(), [200, 200, 503]);

    holding = true;
    const timing = await portico(config([slow], 'max_conns: 1\nqueue: { size: 10, timeout: 150ms }'));
    const before = appRequests(slow);
    const served = httpRequest(timing.port, '/');
    await waitFor('the first request at the app server', () => appRequests(slow) === before + 1);
    const started = Date.now();
    const timedOut = await httpRequest(timing.port, '/');
    assert.equal(timedOut.status, 503);
    assert.ok(Date.now() - started < 1500, `queue timeout (150ms) after ${Date.now() - started} ms`);
    letGo();
    assert.equal((await served).status, 200);
  });
});

describe('sticky cookie', () => {
  test('the first response sets the cookie; requests with it stay on that server while it is up, then move', async () => {
    const a = await checked('a');
    const b = await checked('b');
    const server = await portico(config([a, b], 'sticky: { cookie: pin }\npassive: { max_fails: 0 }'));
    const first = await httpRequest(server.port, '/');
    const setCookie = first.headers['set-cookie']?.[0] ?? '';
    const pin = /^pin=([^;]+)/.exec(setCookie)?.[1];
    assert.ok(pin !== undefined, `Set-Cookie: ${setCookie}`);
    for (const port of [a.port, b.port]) assert.ok(!setCookie.includes(String(port)), 'the cookie does not reveal the server');
    const owner = first.body.toString();
    const pinned = await bodies(server, 6, { Cookie: `other=1; pin=${pin}` });
    assert.deepEqual(new Set(pinned), new Set([owner]));

    await (owner === 'a' ? a : b).stop();
    const moved = await httpRequest(server.port, '/', { headers: { Cookie: `pin=${pin}` } });
    assert.equal(moved.status, 200);
    assert.notEqual(moved.body.toString(), owner);
    assert.match(String(moved.headers['set-cookie']), /^pin=/, 'the cookie is re-issued for the new server');
  });
});
