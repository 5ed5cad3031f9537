/**
 * Invalidation (RFC 9111 §4.4) and purge over real sockets: a successful unsafe request invalidates its target
 * URI and same-origin Location / Content-Location; a failed one does not; purge by key and by prefix through
 * the running Portico's zone.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { answer, cacheConfig, cacheStatus, get, isHit, type Origin, startOrigin } from './cache-support.js';

let origin: Origin;
let portico: RunningPortico;

before(async () => {
  origin = await startOrigin();
  portico = await startPortico(cacheConfig(origin.url));
});

after(async () => {
  await portico?.stop();
  await origin?.stop();
});

/** A path whose GET is cacheable for a minute and whose other methods answer `status` with `headers`. */
function resource(path: string, status = 200, headers: Record<string, string> = {}): void {
  origin.on(path, (req, res, n) => {
    if (req.method === 'GET') return answer({ 'cache-control': 'max-age=60' }, `get ${n}`)(req, res, n);
    res.writeHead(status, { 'content-length': 0, ...headers });
    res.end();
  });
}

/** Stores `path` and checks it is a hit. */
async function warm(path: string): Promise<void> {
  await get(portico.port, path);
  assert.ok(isHit(await get(portico.port, path)), `${path} should be a hit`);
}

describe('invalidation by unsafe methods (§4.4)', () => {
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
    test(`a successful ${method} invalidates its URI: the next GET is a miss`, async () => {
      const path = `/inv/${method.toLowerCase()}`;
      resource(path, method === 'POST' ? 201 : 204);
      await warm(path);
      const res = await get(portico.port, path, {}, method, 'data');
      assert.equal(cacheStatus(res), 'Portico; fwd=method');
      const next = await get(portico.port, path);
      assert.equal(cacheStatus(next), 'Portico; fwd=uri-miss; fwd-status=200; stored');
    });
  }

  test('the query is part of the invalidated URI', async () => {
    resource('/inv/q');
    await warm('/inv/q?a=1');
    await warm('/inv/q?a=2');
    await get(portico.port, '/inv/q?a=1', {}, 'POST', 'x');
    assert.ok(!isHit(await get(portico.port, '/inv/q?a=1')));
    assert.ok(isHit(await get(portico.port, '/inv/q?a=2')));
  });

  test('same-origin Location and Content-Location are invalidated too (relative and absolute)', async () => {
    resource('/inv/item');
    resource('/inv/list');
    origin.on('/inv/create', (req, res) => {
      res.writeHead(201, { location: '/inv/item', 'content-location': `http://${req.headers.host}/inv/list`, 'content-length': 0 });
      res.end();
    });
    await warm('/inv/item');
    await warm('/inv/list');
    await get(portico.port, '/inv/create', {}, 'POST', 'x');
    assert.ok(!isHit(await get(portico.port, '/inv/item')));
    assert.ok(!isHit(await get(portico.port, '/inv/list')));
  });

  test('a Location on another origin is not invalidated here', async () => {
    resource('/inv/kept');
    origin.on('/inv/elsewhere', (_req, res) => {
      res.writeHead(201, { location: 'http://other.example/inv/kept', 'content-length': 0 });
      res.end();
    });
    await warm('/inv/kept');
    await get(portico.port, '/inv/elsewhere', {}, 'POST', 'x');
    assert.ok(isHit(await get(portico.port, '/inv/kept')));
  });

  test('a failed unsafe request (500, 404) does not invalidate', async () => {
    resource('/inv/fail', 500, { location: '/inv/fail' });
    resource('/inv/missing', 404);
    await warm('/inv/fail');
    await warm('/inv/missing');
    const res = await get(portico.port, '/inv/fail', {}, 'DELETE');
    assert.equal(res.status, 500);
    assert.equal(cacheStatus(res), 'Portico; fwd=method');
    await get(portico.port, '/inv/missing', {}, 'PUT', 'x');
    assert.ok(isHit(await get(portico.port, '/inv/fail')));
    assert.ok(isHit(await get(portico.port, '/inv/missing')));
  });
});

describe('purge through the zone', () => {
  test('by exact key: only that key is refetched', async () => {
    resource('/purge/a');
    resource('/purge/ab');
    await warm('/purge/a');
    await warm('/purge/ab');
    const zone = portico.server.cacheZone('main')!;
    // The client named a port (127.0.0.1:PORT): the key ends with the authority the app was told.
    assert.equal(await zone.purge(`http127.0.0.1/purge/a\u0000127.0.0.1:${portico.port}`), 1);
    assert.ok(!isHit(await get(portico.port, '/purge/a')));
    assert.ok(isHit(await get(portico.port, '/purge/ab')));
  });

  test('by prefix: every key under it is refetched, others stay', async () => {
    for (const path of ['/purge/p/1', '/purge/p/2', '/purge/p/3?x=1', '/purge/q/1']) {
      resource(path.replace(/\?.*/, ''));
      await warm(path);
    }
    const zone = portico.server.cacheZone('main')!;
    assert.equal(await zone.purgePrefix('http127.0.0.1/purge/p/'), 3);
    for (const path of ['/purge/p/1', '/purge/p/2', '/purge/p/3?x=1']) assert.ok(!isHit(await get(portico.port, path)), path);
    assert.ok(isHit(await get(portico.port, '/purge/q/1')));
  });

  test('an unknown zone name gives undefined', () => {
    assert.equal(portico.server.cacheZone('nope'), undefined);
  });
});
