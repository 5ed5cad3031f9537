/**
 * stale_if_unreachable (RFC 9111 §4.2.4 allows stale "when disconnected"), over real sockets: when no upstream
 * server can be reached — every tried one refused, reset or timed out, or the health checks hold them all down —
 * a stored response that went stale at most that long ago stands in, with
 * `Cache-Status: Portico; fwd=stale; fwd-status=502; detail=unreachable-stale`. Never where the response says
 * must-revalidate, proxy-revalidate, no-cache or s-maxage, nor where the request asks for a fresh or validated
 * answer; and a reachable app's 5xx is not "unreachable" (that is stale-if-error's). Stored responses are made
 * stale without waiting by the origin's `Age`.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { cacheStatus, get, startOrigin, type Origin } from './cache-support.js';
import { waitFor } from './proxy-support.js';

/** Stopped once every path below has been stored: connecting to it is refused. */
let down: Origin;
/** Stays up; some paths answer 5xx once `failing` says so. */
let live: Origin;
/** Its health check fails once `sickHealth` is set. */
let sick: Origin;
/** Never answers after the first request to a path (a hung app): the response_header timeout fires. */
let hung: Origin;
/** Tried first (`policy: first`), `down` after it; answers 503 once its path is failing. */
let busy: Origin;
let portico: RunningPortico;
const failing = new Map<string, number>();
let sickHealth = false;
const held: ServerResponse[] = [];

/** `path` answers 200 `body` with max-age=10 and the given Age (so it is stale by `age - 10` s), `cc` added. */
function storedStale(origin: Origin, path: string, age: number, cc = '', body = 'stale'): void {
  origin.on(path, (_req, res) => {
    const status = failing.get(path);
    if (status !== undefined) {
      res.writeHead(status, { 'content-length': 4 });
      res.end('fail');
      return;
    }
    res.writeHead(200, { 'cache-control': `max-age=10${cc === '' ? '' : `, ${cc}`}`, age: String(age), etag: '"u1"', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}

/** Paths stored from `down` before it stops: [path, Age, added Cache-Control]. */
const DOWN_PATHS: Array<[string, number, string]> = [
  ['/page', 30, ''],
  ['/old', 100, ''],
  ['/must', 30, 'must-revalidate'],
  ['/proxy', 30, 'proxy-revalidate'],
  ['/nocache', 30, 'no-cache'],
  ['/smaxage', 30, 's-maxage=10'],
  ['/asks', 30, ''],
  ['/pragma', 30, ''],
  ['/window/recent', 30, ''],
  ['/window/old', 60, ''],
  ['/off/page', 30, ''],
  ['/both/page', 30, ''],
];

before(async () => {
  [down, live, sick, hung, busy] = await Promise.all([startOrigin(), startOrigin(), startOrigin(), startOrigin(), startOrigin()]);
  sick.on('/health', (_req, res) => {
    res.writeHead(sickHealth ? 503 : 200, { 'content-length': 2 });
    res.end('hc');
  });
  sick.on('/sick/plain', (_req, res) => {
    res.writeHead(200, { 'content-length': 5 });
    res.end('plain');
  });
  portico = await startPortico(`caches:
  main: { memory: 16MB, max_object: 1MB }
upstreams:
  down: { servers: [{ url: "${down.url}" }], retries: 0 }
  live: { servers: [{ url: "${live.url}" }], retries: 0 }
  sick:
    servers: [{ url: "${sick.url}" }]
    retries: 0
    health: { path: /health, interval: 50ms, timeout: 500ms, rise: 1, fall: 1 }
  hung: { servers: [{ url: "${hung.url}" }], retries: 0, timeouts: { response_header: 300ms } }
  busy:
    policy: first
    servers: [{ url: "${busy.url}" }, { url: "${down.url}" }]
    retries: 1
    passive: { max_fails: 0 }
sites:
  - routes:
      - path: /window/
        proxy: { upstream: down, cache: { zone: main, stale_if_unreachable: 30s } }
      - path: /off/
        proxy: { upstream: down, cache: { zone: main, stale_if_unreachable: 0 } }
      - path: /both/
        proxy: { upstream: down, cache: { zone: main, stale_if_error: 10m } }
      - path: /live/
        proxy: { upstream: live, cache: { zone: main } }
      - path: /sick/plain
        proxy: { upstream: sick }
      - path: /sick/
        proxy: { upstream: sick, cache: { zone: main } }
      - path: /hung/
        proxy: { upstream: hung, cache: { zone: main } }
      - path: /busy/
        proxy: { upstream: busy, cache: { zone: main } }
      - path: /
        proxy: { upstream: down, cache: { zone: main } }
`);
  for (const [path, age, cc] of DOWN_PATHS) {
    storedStale(down, path, age, cc);
    const first = await get(portico.port, path);
    assert.match(cacheStatus(first), /; stored$/, path);
  }
  await down.stop();
});

after(async () => {
  for (const res of held) res.destroy();
  await portico?.stop();
  await Promise.all([live, sick, hung, busy].map((o) => o?.stop()));
});

/** The answer is the stored copy, served stale because the upstream was unreachable. */
function assertUnreachableStale(res: Awaited<ReturnType<typeof get>>, fwdStatus: number, what = ''): void {
  assert.equal(res.status, 200, what);
  assert.equal(res.body.toString(), 'stale', what);
  assert.equal(cacheStatus(res), `Portico; fwd=stale; fwd-status=${fwdStatus}; detail=unreachable-stale`, what);
}

/** The answer is Portico's error page, not the stored copy. */
function assertError(res: Awaited<ReturnType<typeof get>>, status: number, what = ''): void {
  assert.equal(res.status, status, what);
  assert.notEqual(res.body.toString(), 'stale', what);
  assert.doesNotMatch(cacheStatus(res), /unreachable-stale/, what);
}

describe('stale_if_unreachable', () => {
  test('the backend is stopped: the stale copy is served with detail=unreachable-stale (default window 1m)', async () => {
    const res = await get(portico.port, '/page');
    assertUnreachableStale(res, 502);
    assert.ok(Number(res.headers.age) >= 30, `Age ${res.headers.age}`);
    // The client's own validators are answered from the stale copy as from any stored one.
    const revalidated = await get(portico.port, '/page', { 'if-none-match': '"u1"' });
    assert.equal(revalidated.status, 304);
    assert.equal(cacheStatus(revalidated), 'Portico; fwd=stale; fwd-status=502; detail=unreachable-stale');
  });

  test('stale for longer than the window (default 1m): the error is passed on', async () => {
    // Stale by 90 s: beyond the default 1m.
    const res = await get(portico.port, '/old');
    assertError(res, 502);
    assert.equal(cacheStatus(res), 'Portico; fwd=stale');
  });

  test('a configured window: within it the stale copy is served, beyond it the error', async () => {
    // stale_if_unreachable: 30s; stale by 20 s, then by 50 s.
    assertUnreachableStale(await get(portico.port, '/window/recent'), 502);
    assertError(await get(portico.port, '/window/old'), 502);
  });

  test('stale_if_unreachable: 0 turns it off: the error is passed on', async () => {
    const res = await get(portico.port, '/off/page');
    assertError(res, 502);
    assert.equal(cacheStatus(res), 'Portico; fwd=stale');
  });

  test('must-revalidate, proxy-revalidate, no-cache and s-maxage in the response: the error, never the stale copy', async () => {
    for (const path of ['/must', '/proxy', '/nocache', '/smaxage']) assertError(await get(portico.port, path), 502, path);
  });

  test('request no-cache, Pragma: no-cache, max-age=0 or min-fresh: the error, never the stale copy', async () => {
    const asks: Array<Record<string, string>> = [
      { 'cache-control': 'no-cache' },
      { pragma: 'no-cache' },
      { 'cache-control': 'max-age=0' },
      { 'cache-control': 'min-fresh=5' },
      { 'cache-control': 'max-stale=0, min-fresh=1' },
    ];
    for (const headers of asks) assertError(await get(portico.port, '/asks', headers), 502, JSON.stringify(headers));
    // The same stored copy, asked for plainly, does stand in: the refusals above were the request's.
    assertUnreachableStale(await get(portico.port, '/asks'), 502);
  });

  test('Pragma: no-cache beside a Cache-Control is ignored here as in the lookup (RFC 9111 §5.4): the stale copy stands in', async () => {
    assertUnreachableStale(await get(portico.port, '/pragma', { 'cache-control': 'no-transform', pragma: 'no-cache' }), 502);
  });

  test('with stale_if_error configured as well, an unreachable upstream is reported as unreachable-stale', async () => {
    assertUnreachableStale(await get(portico.port, '/both/page'), 502);
  });

  test('health checks hold every server down: the stale copy is served (fwd-status=503) without asking the app', async () => {
    await waitFor('the sick upstream in service', async () => (await get(portico.port, '/sick/plain')).status === 200);
    storedStale(sick, '/sick/page', 30);
    await get(portico.port, '/sick/page');
    sickHealth = true;
    await waitFor('the health checks to take the server down', async () => (await get(portico.port, '/sick/plain')).status === 503);
    const asked = sick.seen('/sick/page').length;
    assertUnreachableStale(await get(portico.port, '/sick/page'), 503);
    assert.equal(sick.seen('/sick/page').length, asked, 'the app was not asked');
  });

  test('every server times out: the stale copy is served (fwd-status=504)', async () => {
    hung.on('/hung/page', (_req, res, n) => {
      if (n > 1) return void held.push(res);
      res.writeHead(200, { 'cache-control': 'max-age=10', age: '30', 'content-length': 5 });
      res.end('stale');
    });
    await get(portico.port, '/hung/page');
    assertUnreachableStale(await get(portico.port, '/hung/page'), 504);
  });

  test('a 500 or 503 from a reachable app is not "unreachable": it is passed on (stale-if-error is the knob for it)', async () => {
    for (const status of [500, 503]) {
      const path = `/live/${status}`;
      storedStale(live, path, 30);
      await get(portico.port, path);
      failing.set(path, status);
      const res = await get(portico.port, path);
      assert.equal(res.status, status);
      assert.equal(res.body.toString(), 'fail');
      assert.equal(cacheStatus(res), `Portico; fwd=stale; fwd-status=${status}`);
    }
  });

  test('one server answered 503 (discarded for a retry) and the other refused: not unreachable, the error is passed on', async () => {
    storedStale(busy, '/busy/page', 30);
    await get(portico.port, '/busy/page');
    failing.set('/busy/page', 503);
    const res = await get(portico.port, '/busy/page');
    assertError(res, 502);
    assert.equal(cacheStatus(res), 'Portico; fwd=stale');
    assert.equal(busy.seen('/busy/page').length, 2, 'the primary was asked again and answered 503');
  });
});
