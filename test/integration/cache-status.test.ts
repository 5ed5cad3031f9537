/**
 * RFC 9211 Cache-Status: every response of a cache-enabled route says what the cache did — hits with their
 * remaining ttl, each kind of forward, and Portico's own error pages (502, 503, 504) too. A route without a
 * cache sends none.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { answer, assertTtl, cacheStatus, get, startOrigin, type Origin } from './cache-support.js';
import { waitFor } from './proxy-support.js';

let origin: Origin;
let portico: RunningPortico;
let deadPort: number;

before(async () => {
  origin = await startOrigin();
  const dead = await startOrigin();
  deadPort = dead.upstream.port;
  await dead.stop();
  portico = await startPortico(`caches:
  main: { memory: 16MB, max_object: 1MB }
upstreams:
  origin: { servers: [{ url: "${origin.url}" }], retries: 0 }
  slow: { servers: [{ url: "${origin.url}" }], retries: 0, timeouts: { response_header: 200ms } }
  tight: { servers: [{ url: "${origin.url}" }], retries: 0, max_conns: 1, queue: { size: 0 } }
  dead: { servers: [{ url: "http://127.0.0.1:${deadPort}" }], retries: 0 }
sites:
  - routes:
      - path: /slow/
        proxy: { upstream: slow, cache: { zone: main } }
      - path: /tight/
        proxy: { upstream: tight, cache: { zone: main } }
      - path: /dead/
        proxy: { upstream: dead, cache: { zone: main } }
      - path: /uncached/
        proxy: { upstream: origin }
      - path: /
        proxy: { upstream: origin, cache: { zone: main } }
`);
});

after(async () => {
  await portico?.stop();
  await origin?.stop();
});

describe('Cache-Status on every response of a cache-enabled route', () => {
  test('miss then hit: fwd=uri-miss; fwd-status=200; stored, then hit; ttl=…', async () => {
    origin.on('/s/basic', answer({ 'cache-control': 'max-age=100' }, 'x'));
    assert.equal(cacheStatus(await get(portico.port, '/s/basic')), 'Portico; fwd=uri-miss; fwd-status=200; stored');
    assertTtl(await get(portico.port, '/s/basic'), 97, 100);
  });

  test('not stored: no "stored"; and the later requests say so too', async () => {
    origin.on('/s/private', answer({ 'cache-control': 'private' }, 'x'));
    assert.equal(cacheStatus(await get(portico.port, '/s/private')), 'Portico; fwd=uri-miss; fwd-status=200');
    assert.equal(cacheStatus(await get(portico.port, '/s/private')), 'Portico; fwd=uri-miss; fwd-status=200');
  });

  test('fwd=vary-miss for a new variant of a stored key', async () => {
    origin.on('/s/vary', answer({ 'cache-control': 'max-age=60', vary: 'Accept-Language' }, 'x'));
    await get(portico.port, '/s/vary', { 'accept-language': 'en' });
    assert.equal(cacheStatus(await get(portico.port, '/s/vary', { 'accept-language': 'de' })), 'Portico; fwd=vary-miss; fwd-status=200; stored');
  });

  test('fwd=stale for a stale response revalidated or refetched', async () => {
    origin.on('/s/stale', answer({ 'cache-control': 'max-age=10', age: '20' }, 'x'));
    await get(portico.port, '/s/stale');
    assert.equal(cacheStatus(await get(portico.port, '/s/stale')), 'Portico; fwd=stale; fwd-status=200; stored');
  });

  test('fwd=request when the request refuses a fresh stored response (no-cache, max-age=0)', async () => {
    origin.on('/s/refused', answer({ 'cache-control': 'max-age=60' }, 'x'));
    await get(portico.port, '/s/refused');
    assert.equal(cacheStatus(await get(portico.port, '/s/refused', { 'cache-control': 'no-cache' })), 'Portico; fwd=request; fwd-status=200; stored');
    assert.equal(cacheStatus(await get(portico.port, '/s/refused', { 'cache-control': 'max-age=0' })), 'Portico; fwd=request; fwd-status=200; stored');
  });

  test('fwd=request for a request with no-store; fwd=method for POST', async () => {
    origin.on('/s/req', answer({ 'cache-control': 'max-age=60' }, 'x'));
    assert.equal(cacheStatus(await get(portico.port, '/s/req', { 'cache-control': 'no-store' })), 'Portico; fwd=request');
    assert.equal(cacheStatus(await get(portico.port, '/s/req', {}, 'POST', 'body')), 'Portico; fwd=method');
  });

  test('an origin error status passed on carries Cache-Status', async () => {
    origin.on('/s/500', (_req, res) => {
      res.writeHead(500, { 'content-length': 4 });
      res.end('oops');
    });
    const res = await get(portico.port, '/s/500');
    assert.equal(res.status, 500);
    assert.equal(cacheStatus(res), 'Portico; fwd=uri-miss; fwd-status=500');
  });

  test('502 error page (connection refused) carries Cache-Status', async () => {
    const res = await get(portico.port, '/dead/x');
    assert.equal(res.status, 502);
    assert.equal(cacheStatus(res), 'Portico; fwd=uri-miss');
    const post = await get(portico.port, '/dead/x', {}, 'POST', 'x');
    assert.equal(post.status, 502);
    assert.equal(cacheStatus(post), 'Portico; fwd=method');
    const head = await get(portico.port, '/dead/x', {}, 'HEAD');
    assert.equal(head.status, 502);
    assert.equal(cacheStatus(head), 'Portico; fwd=uri-miss');
  });

  test('503 error page (no server has room) carries Cache-Status', async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    origin.on('/tight/busy', (_req, res) => {
      void released.then(() => {
        res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 1 });
        res.end('b');
      });
    });
    const busy = get(portico.port, '/tight/busy');
    await waitFor('the first request at the origin', () => origin.seen('/tight/busy').length === 1);
    const res = await get(portico.port, '/tight/other');
    assert.equal(res.status, 503);
    assert.equal(cacheStatus(res), 'Portico; fwd=uri-miss');
    release();
    assert.equal((await busy).status, 200);
  });

  test('504 error page (the origin never answers) carries Cache-Status', async () => {
    origin.on('/slow/never', () => {});
    const res = await get(portico.port, '/slow/never');
    assert.equal(res.status, 504);
    assert.equal(cacheStatus(res), 'Portico; fwd=uri-miss');
  });

  test('504 for only-if-cached on a miss carries Cache-Status', async () => {
    const res = await get(portico.port, '/s/never-stored', { 'cache-control': 'only-if-cached' });
    assert.equal(res.status, 504);
    assert.equal(cacheStatus(res), 'Portico; fwd=uri-miss; detail=only-if-cached');
  });

  test('a route without a cache sends no Cache-Status', async () => {
    origin.on('/uncached/x', answer({ 'cache-control': 'max-age=60' }, 'x'));
    const res = await get(portico.port, '/uncached/x');
    assert.equal(res.status, 200);
    assert.equal(res.headers['cache-status'], undefined);
  });

  test('an origin\'s own Cache-Status is kept before Portico\'s member on a forward (RFC 9211 §2), Portico\'s is last', async () => {
    origin.on('/s/upstream-status', answer({ 'cache-control': 'max-age=60', 'cache-status': 'OtherCache; hit' }, 'x'));
    const miss = await get(portico.port, '/s/upstream-status');
    assert.equal(cacheStatus(miss), 'OtherCache; hit, Portico; fwd=uri-miss; fwd-status=200; stored');
    const hit = await get(portico.port, '/s/upstream-status');
    assert.match(cacheStatus(hit), /^Portico; hit; ttl=\d+$/);
  });
});
