/**
 * Serving stale (RFC 5861, RFC 9111 §4.2.4) over real sockets: stale-while-revalidate answers at once and asks
 * the origin once in the background, even under a burst; stale-if-error (config and response directive) stands
 * in when every upstream fails — refused connection or a 503 — and never where must-revalidate,
 * proxy-revalidate or s-maxage forbid it. A stored response is made stale without waiting by an origin `Age`.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { assertTtl, cacheStatus, get, isHit, startOrigin, type Origin } from './cache-support.js';
import { sleep, waitFor } from './proxy-support.js';

let origin: Origin;
/** An origin that is stopped during the tests, so that connecting to it is refused. */
let doomed: Origin;
let portico: RunningPortico;
/** Paths whose origin answers 503 from now on. */
const failing = new Set<string>();

before(async () => {
  origin = await startOrigin();
  doomed = await startOrigin();
  portico = await startPortico(`caches:
  main: { memory: 16MB, max_object: 1MB }
upstreams:
  origin: { servers: [{ url: "${origin.url}" }], retries: 0 }
  doomed: { servers: [{ url: "${doomed.url}" }], retries: 0 }
sites:
  - routes:
      - path: /sie/
        proxy: { upstream: origin, cache: { zone: main, stale_if_error: 60s } }
      - path: /down/
        proxy: { upstream: doomed, cache: { zone: main, stale_if_error: 60s, stale_if_unreachable: 0 } }
      - path: /
        proxy: { upstream: origin, cache: { zone: main } }
`);
});

after(async () => {
  await portico?.stop();
  await origin?.stop();
  await doomed?.stop();
});

/** First answer stored already stale (Age 30 > max-age 10), with `cc` added; then 503 once the path is failing. */
function staleThenFailing(target: Origin, path: string, cc: string): void {
  target.on(path, (_req, res: ServerResponse) => {
    if (failing.has(path)) {
      res.writeHead(503, { 'content-length': 4, 'retry-after': '5' });
      res.end('down');
      return;
    }
    res.writeHead(200, { 'cache-control': `max-age=10${cc === '' ? '' : `, ${cc}`}`, age: '30', etag: '"s1"', 'content-length': 5 });
    res.end('stale');
  });
}

describe('stale-while-revalidate', () => {
  test('a burst of 20 is answered at once from the cache; the origin is asked exactly once, in the background', async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    origin.on('/swr', (req, res, n) => {
      if (n === 1) {
        res.writeHead(200, { 'cache-control': 'max-age=10, stale-while-revalidate=60', age: '20', etag: '"w1"', 'content-length': 5 });
        res.end('first');
        return;
      }
      // The background revalidation: answered only when the test says so.
      void released.then(() => {
        assert.equal(req.headers['if-none-match'], '"w1"');
        res.writeHead(304, { etag: '"w1"', 'cache-control': 'max-age=60', 'x-refreshed': 'yes' });
        res.end();
      });
    });
    await get(portico.port, '/swr');
    const started = Date.now();
    const burst = await Promise.all(Array.from({ length: 20 }, () => get(portico.port, '/swr')));
    const elapsed = Date.now() - started;
    for (const res of burst) {
      assert.equal(res.body.toString(), 'first');
      assert.match(cacheStatus(res), /^Portico; hit; ttl=-1\d; detail=stale-while-revalidate$/);
    }
    // The origin has not answered the revalidation yet, and every client has its answer.
    assert.equal(origin.seen('/swr').length, 2);
    assert.ok(elapsed < 2000, `burst took ${elapsed} ms`);
    release();
    await waitFor('the refreshed response', async () => (await get(portico.port, '/swr')).headers['x-refreshed'] === 'yes');
    const fresh = await get(portico.port, '/swr');
    assert.ok(isHit(fresh));
    assertTtl(fresh, 57, 60);
    assert.equal(origin.seen('/swr').length, 2);
  });

  test('beyond the stale-while-revalidate window, the client waits for the revalidation', async () => {
    origin.on('/swr-old', (req, res) => {
      if (req.headers['if-none-match'] === '"o1"') {
        res.writeHead(304, { etag: '"o1"', 'cache-control': 'max-age=60' });
        res.end();
        return;
      }
      res.writeHead(200, { 'cache-control': 'max-age=10, stale-while-revalidate=5', age: '30', etag: '"o1"', 'content-length': 1 });
      res.end('o');
    });
    await get(portico.port, '/swr-old');
    const res = await get(portico.port, '/swr-old');
    assert.equal(cacheStatus(res), 'Portico; fwd=stale; fwd-status=304');
  });

  test('s-maxage forbids it: the stale response is revalidated before use', async () => {
    origin.on('/swr-smaxage', (req, res) => {
      if (req.headers['if-none-match'] === '"m1"') {
        res.writeHead(304, { etag: '"m1"', 'cache-control': 's-maxage=60' });
        res.end();
        return;
      }
      res.writeHead(200, { 'cache-control': 's-maxage=10, stale-while-revalidate=60', age: '30', etag: '"m1"', 'content-length': 1 });
      res.end('m');
    });
    await get(portico.port, '/swr-smaxage');
    const res = await get(portico.port, '/swr-smaxage');
    assert.equal(cacheStatus(res), 'Portico; fwd=stale; fwd-status=304');
  });
});

describe('stale-if-error', () => {
  test('config stale_if_error: the origin answers 503, the stale copy is served (fwd=stale)', async () => {
    staleThenFailing(origin, '/sie/503', '');
    await get(portico.port, '/sie/503');
    failing.add('/sie/503');
    const res = await get(portico.port, '/sie/503');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'stale');
    assert.equal(cacheStatus(res), 'Portico; fwd=stale; fwd-status=503; detail=stale-if-error');
    assert.ok(Number(res.headers.age) >= 30);
  });

  test('response directive stale-if-error: the origin answers 503, the stale copy is served', async () => {
    staleThenFailing(origin, '/sie-directive', 'stale-if-error=60');
    await get(portico.port, '/sie-directive');
    failing.add('/sie-directive');
    const res = await get(portico.port, '/sie-directive');
    assert.equal(res.body.toString(), 'stale');
    assert.match(cacheStatus(res), /^Portico; fwd=stale; fwd-status=503/);
  });

  test('request directive stale-if-error lets that client have the stale copy', async () => {
    staleThenFailing(origin, '/sie-request', '');
    await get(portico.port, '/sie-request');
    failing.add('/sie-request');
    assert.equal((await get(portico.port, '/sie-request')).status, 503);
    const res = await get(portico.port, '/sie-request', { 'cache-control': 'stale-if-error=120' });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'stale');
  });

  test('beyond the stale-if-error window the error is passed on', async () => {
    staleThenFailing(origin, '/sie-short', 'stale-if-error=5');
    await get(portico.port, '/sie-short');
    failing.add('/sie-short');
    const res = await get(portico.port, '/sie-short');
    assert.equal(res.status, 503);
    assert.match(cacheStatus(res), /^Portico; fwd=stale; fwd-status=503/);
  });

  test('must-revalidate, proxy-revalidate, s-maxage and no-cache forbid it, whatever the config and the directive say', async () => {
    for (const cc of ['must-revalidate', 'proxy-revalidate', 's-maxage=10', 'no-cache']) {
      const path = `/sie/forbidden-${cc.replace(/\W/g, '')}`;
      staleThenFailing(origin, path, `${cc}, stale-if-error=600`);
      await get(portico.port, path);
      failing.add(path);
      const res = await get(portico.port, path);
      assert.equal(res.status, 503, cc);
      assert.equal(res.body.toString(), 'down', cc);
    }
  });

  test('every upstream refuses connections: the stale copy is served; where forbidden, a 502 with Cache-Status', async () => {
    staleThenFailing(doomed, '/down/ok', '');
    staleThenFailing(doomed, '/down/must', 'must-revalidate');
    await get(portico.port, '/down/ok');
    await get(portico.port, '/down/must');
    await doomed.stop();
    const res = await get(portico.port, '/down/ok');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'stale');
    assert.match(cacheStatus(res), /^Portico; fwd=stale; fwd-status=502; detail=stale-if-error$/);
    const refused = await get(portico.port, '/down/must');
    assert.equal(refused.status, 502);
    assert.equal(cacheStatus(refused), 'Portico; fwd=stale');
    // A cold key: nothing stale to stand in; the error page still says what the cache did.
    const cold = await get(portico.port, '/down/cold');
    assert.equal(cold.status, 502);
    assert.equal(cacheStatus(cold), 'Portico; fwd=uri-miss');
    await sleep(0);
  });
});
