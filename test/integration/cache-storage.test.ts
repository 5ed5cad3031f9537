/**
 * What the shared cache stores and serves (RFC 9111 §3–§5), over real sockets: a test origin sends each
 * header combination and the test counts what reached it. Staleness is made without waiting: the origin sends
 * an `Age` beyond the freshness lifetime.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { answer, assertTtl, cacheConfig, cacheStatus, get, httpDate, isHit, type Origin, type OriginHandler, startOrigin } from './cache-support.js';

let origin: Origin;
let portico: RunningPortico;

before(async () => {
  origin = await startOrigin();
  portico = await startPortico(
    cacheConfig(
      origin.url,
      `      - path: /heuristic/
        proxy: { upstream: origin, cache: { zone: main, heuristic: true } }
      - path: /ttl/
        proxy: { upstream: origin, cache: { zone: main, default_ttl: 60s } }
      - path: /ttl-cred/
        proxy: { upstream: origin, cache: { zone: main, default_ttl: 60s, default_ttl_with_credentials: true } }
      - path: /cookie-ok/
        proxy: { upstream: origin, cache: { zone: main, ignore_set_cookie: true } }
`,
    ),
  );
});

after(async () => {
  await portico?.stop();
  await origin?.stop();
});

/** Answers 304 when If-None-Match names `etag`, else 200 with the fields and a body counting the 200s. */
function validating(etag: string, headers: Record<string, string>): OriginHandler {
  let full = 0;
  return (req, res) => {
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, { etag, ...headers });
      res.end();
      return;
    }
    full++;
    const body = `body ${full}`;
    res.writeHead(200, { etag, 'content-type': 'text/plain', 'content-length': body.length, ...headers });
    res.end(body);
  };
}

/** Two GETs in a row; returns both responses. */
async function twice(path: string, first: Record<string, string> = {}, second: Record<string, string> = first) {
  const a = await get(portico.port, path, first);
  const b = await get(portico.port, path, second);
  return [a, b] as const;
}

describe('only GET and HEAD are served from the cache', () => {
  test('a stored GET: the second GET is a hit, the origin saw one request', async () => {
    origin.on('/basic', answer({ 'cache-control': 'max-age=60' }, 'basic'));
    const [a, b] = await twice('/basic');
    assert.equal(cacheStatus(a), 'Portico; fwd=uri-miss; fwd-status=200; stored');
    assertTtl(b, 57, 60);
    assert.equal(b.body.toString(), 'basic');
    assert.equal(b.headers['content-length'], '5');
    assert.equal(origin.seen('/basic').length, 1);
  });

  test('a stored binary body is served byte for byte from memory, every byte value included', async () => {
    const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256));
    origin.on('/binary', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'application/octet-stream', 'content-length': bytes.length });
      res.end(bytes);
    });
    const [a, b] = await twice('/binary');
    assert.ok(a.body.equals(bytes), 'the miss is the origin body');
    assert.ok(isHit(b), cacheStatus(b));
    assert.equal(b.headers['content-length'], String(bytes.length));
    assert.ok(b.body.equals(bytes), 'the hit is the same bytes');
    assert.equal(origin.seen('/binary').length, 1);
  });

  test('hits a second apart carry a larger Age and a smaller ttl (a reused header list follows the clock)', async () => {
    origin.on('/aging', answer({ 'cache-control': 'max-age=60' }, 'aging'));
    const [, first] = await twice('/aging');
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const second = await get(portico.port, '/aging');
    assert.ok(isHit(first) && isHit(second), `${cacheStatus(first)} / ${cacheStatus(second)}`);
    const ttl = (res: typeof first) => Number(/ttl=(-?\d+)/.exec(cacheStatus(res))?.[1]);
    assert.ok(Number(second.headers.age) >= Number(first.headers.age) + 1, `Age ${first.headers.age} then ${second.headers.age}`);
    assert.ok(ttl(second) <= ttl(first) - 1, `ttl ${ttl(first)} then ${ttl(second)}`);
    assert.equal(origin.seen('/aging').length, 1);
  });

  test('POST, PUT and OPTIONS to a stored URI go to the origin (fwd=method)', async () => {
    origin.on('/methods', answer({ 'cache-control': 'max-age=60' }, (req) => `answer to ${req.method}`));
    await get(portico.port, '/methods');
    for (const method of ['POST', 'PUT', 'OPTIONS']) {
      const res = await get(portico.port, '/methods', {}, method, method === 'OPTIONS' ? undefined : 'x');
      assert.equal(res.body.toString(), `answer to ${method}`);
      assert.equal(cacheStatus(res), 'Portico; fwd=method');
    }
    assert.deepEqual(origin.seen('/methods').map((r) => r.method), ['GET', 'POST', 'PUT', 'OPTIONS']);
  });

  test('OPTIONS is safe: it does not invalidate the stored response', async () => {
    origin.on('/options', answer({ 'cache-control': 'max-age=60' }, 'x'));
    await get(portico.port, '/options');
    await get(portico.port, '/options', {}, 'OPTIONS');
    assert.ok(isHit(await get(portico.port, '/options')));
  });
});

describe('what is stored', () => {
  test('no-store in the response: never stored', async () => {
    origin.on('/no-store', answer({ 'cache-control': 'no-store, max-age=60' }, 'x'));
    const [a, b] = await twice('/no-store');
    assert.equal(cacheStatus(a), 'Portico; fwd=uri-miss; fwd-status=200');
    assert.equal(cacheStatus(b), 'Portico; fwd=uri-miss; fwd-status=200');
    assert.equal(origin.seen('/no-store').length, 2);
  });

  test('no-store in the request: forwarded (fwd=request), the response not stored', async () => {
    origin.on('/req-no-store', answer({ 'cache-control': 'max-age=60' }, 'x'));
    const a = await get(portico.port, '/req-no-store', { 'cache-control': 'no-store' });
    assert.equal(cacheStatus(a), 'Portico; fwd=request');
    const b = await get(portico.port, '/req-no-store');
    assert.equal(cacheStatus(b), 'Portico; fwd=uri-miss; fwd-status=200; stored');
    assert.equal(origin.seen('/req-no-store').length, 2);
  });

  test('private, qualified or not: never stored', async () => {
    origin.on('/private', answer({ 'cache-control': 'private, max-age=60' }, 'x'));
    origin.on('/private-q', answer({ 'cache-control': 'private="X-User", max-age=60' }, 'x'));
    await twice('/private');
    await twice('/private-q');
    assert.equal(origin.seen('/private').length, 2);
    assert.equal(origin.seen('/private-q').length, 2);
  });

  test('s-maxage over max-age: s-maxage=60, max-age=0 is a hit', async () => {
    origin.on('/smaxage', answer({ 'cache-control': 's-maxage=60, max-age=0' }, 'x'));
    const [, b] = await twice('/smaxage');
    assert.ok(isHit(b));
  });

  test('s-maxage over max-age: s-maxage=0, max-age=60 is refetched', async () => {
    origin.on('/smaxage0', answer({ 'cache-control': 's-maxage=0, max-age=60' }, 'x'));
    const [, b] = await twice('/smaxage0');
    assert.ok(!isHit(b));
    assert.equal(origin.seen('/smaxage0').length, 2);
  });

  test('max-age over Expires: max-age=60 with an Expires in the past is a hit', async () => {
    origin.on('/maxage-expires', answer({ 'cache-control': 'max-age=60', expires: httpDate(-3600) }, 'x'));
    const [, b] = await twice('/maxage-expires');
    assert.ok(isHit(b));
  });

  test('Expires alone gives freshness; an Expires in the past or invalid does not', async () => {
    origin.on('/expires', answer({ expires: httpDate(120) }, 'x'));
    origin.on('/expired', answer({ expires: httpDate(-120) }, 'x'));
    origin.on('/expires-0', answer({ expires: '0' }, 'x'));
    const [, fresh] = await twice('/expires');
    assertTtl(fresh, 116, 120);
    await twice('/expired');
    await twice('/expires-0');
    assert.equal(origin.seen('/expired').length, 2);
    assert.equal(origin.seen('/expires-0').length, 2);
  });

  test('a 200 with Last-Modified and no Cache-Control is NOT stored by default', async () => {
    origin.on('/lm-only', answer({ 'last-modified': httpDate(-86_400 * 30) }, 'x'));
    const [, b] = await twice('/lm-only');
    assert.ok(!isHit(b));
    assert.equal(origin.seen('/lm-only').length, 2);
  });

  test('heuristic: true stores a 200 with Last-Modified for 10 % of its age', async () => {
    origin.on('/heuristic/lm', answer({ 'last-modified': httpDate(-10_000) }, 'x'));
    const [, b] = await twice('/heuristic/lm');
    assertTtl(b, 997, 1000);
    assert.equal(origin.seen('/heuristic/lm').length, 1);
  });

  test('heuristic: true does not apply to statuses that are not heuristically cacheable (302, 307), nor without Last-Modified', async () => {
    for (const status of [302, 307]) {
      origin.on(`/heuristic/r${status}`, (_req, res) => {
        res.writeHead(status, { location: '/elsewhere', 'last-modified': httpDate(-86_400), 'content-length': 0 });
        res.end();
      });
      const [a, b] = await twice(`/heuristic/r${status}`);
      assert.equal(a.status, status);
      assert.ok(!isHit(b));
      assert.equal(origin.seen(`/heuristic/r${status}`).length, 2);
    }
    origin.on('/heuristic/no-lm', answer({}, 'x'));
    await twice('/heuristic/no-lm');
    assert.equal(origin.seen('/heuristic/no-lm').length, 2);
  });

  test('default_ttl: a response with no freshness information is kept that long', async () => {
    origin.on('/ttl/plain', answer({}, 'x'));
    const [, b] = await twice('/ttl/plain');
    assertTtl(b, 57, 60);
  });

  test('default_ttl: the answer to a request with a Cookie, with no cache fields, is not stored nor given to a client without it (cache deception)', async () => {
    origin.on('/ttl/account', (req, res) => {
      const body = req.headers.cookie === undefined ? 'anonymous' : `account of ${req.headers.cookie}`;
      res.writeHead(200, { 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    const victim = await get(portico.port, '/ttl/account', { cookie: 'sid=victim' });
    assert.equal(victim.body.toString(), 'account of sid=victim');
    assert.doesNotMatch(cacheStatus(victim), /stored/);
    const attacker = await get(portico.port, '/ttl/account');
    assert.equal(attacker.body.toString(), 'anonymous');
    // The cookie-less answer is stored under default_ttl as before, and served from the cache.
    assert.ok(isHit(await get(portico.port, '/ttl/account')));
    assert.equal(origin.seen('/ttl/account').length, 2);
  });

  test('default_ttl: the app\'s own public max-age to a request with a Cookie is stored; default_ttl_with_credentials lets default_ttl apply too', async () => {
    origin.on('/ttl/public', answer({ 'cache-control': 'public, max-age=60' }, 'x'));
    const [a, b] = await twice('/ttl/public', { cookie: 'sid=1' }, {});
    assert.match(cacheStatus(a), /stored$/);
    assert.ok(isHit(b));
    origin.on('/ttl-cred/plain', answer({}, 'x'));
    const [c, d] = await twice('/ttl-cred/plain', { cookie: 'sid=1' }, {});
    assert.match(cacheStatus(c), /stored$/);
    assertTtl(d, 57, 60);
  });

  test('unknown response and request directives are ignored, not taken for no-cache', async () => {
    origin.on('/unknown', answer({ 'cache-control': 'max-age=60, x-vendor-thing, community="UCI"' }, 'x'));
    const [a, b] = await twice('/unknown', {}, { 'cache-control': 'x-unknown, foo=bar' });
    assert.match(cacheStatus(a), /stored$/);
    assert.ok(isHit(b));
    assert.equal(origin.seen('/unknown').length, 1);
  });

  test('a request with Authorization: stored only with public, s-maxage or must-revalidate', async () => {
    const auth = { authorization: 'Bearer secret' };
    for (const [path, cc, stored] of [
      ['/auth/plain', 'max-age=60', false],
      ['/auth/proxy-revalidate', 'max-age=60, proxy-revalidate', false],
      ['/auth/public', 'public, max-age=60', true],
      ['/auth/smaxage', 's-maxage=60', true],
      ['/auth/must', 'max-age=60, must-revalidate', true],
    ] as const) {
      origin.on(path, answer({ 'cache-control': cc }, 'x'));
      const [a, b] = await twice(path, auth, {});
      assert.equal(/stored$/.test(cacheStatus(a)), stored, `${path}: ${cacheStatus(a)}`);
      assert.equal(isHit(b), stored, path);
      assert.equal(origin.seen(path).length, stored ? 1 : 2, path);
    }
  });

  test('Set-Cookie: not stored, even with public; every client gets its own cookie', async () => {
    origin.on('/cookie', answer({ 'cache-control': 'public, max-age=60' }, 'x'));
    origin.on('/cookie', (req, res, n) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'set-cookie': `sid=client${n}`, 'content-length': 1 });
      res.end('x');
    });
    const [a, b] = await twice('/cookie');
    assert.deepEqual(a.headers['set-cookie'], ['sid=client1']);
    assert.deepEqual(b.headers['set-cookie'], ['sid=client2']);
    assert.equal(origin.seen('/cookie').length, 2);
  });

  test('ignore_set_cookie: stored without Set-Cookie; a second client never receives the first one\'s cookie', async () => {
    origin.on('/cookie-ok/x', (_req, res, n) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'set-cookie': `sid=client${n}`, 'content-length': 1 });
      res.end('x');
    });
    const [a, b] = await twice('/cookie-ok/x');
    assert.deepEqual(a.headers['set-cookie'], ['sid=client1']);
    assert.ok(isHit(b));
    assert.equal(b.headers['set-cookie'], undefined);
  });
});

describe('revalidation forced by no-cache and by the request', () => {
  test('response no-cache, with and without field names: every use is revalidated with the stored ETag', async () => {
    for (const cc of ['no-cache, max-age=60', 'no-cache="Set-Cookie", max-age=60']) {
      const path = `/no-cache/${cc.length}`;
      origin.on(path, validating('"v1"', { 'cache-control': cc }));
      const [a, b] = await twice(path);
      assert.match(cacheStatus(a), /stored$/);
      assert.equal(b.status, 200);
      assert.equal(b.body.toString(), 'body 1');
      assert.equal(cacheStatus(b), 'Portico; fwd=stale; fwd-status=304');
      const seen = origin.seen(path);
      assert.equal(seen.length, 2);
      assert.equal(seen[1]!.headers['if-none-match'], '"v1"');
    }
  });

  test('request no-cache and Pragma: no-cache revalidate a fresh response', async () => {
    origin.on('/req-no-cache', validating('"r1"', { 'cache-control': 'max-age=60' }));
    await get(portico.port, '/req-no-cache');
    const b = await get(portico.port, '/req-no-cache', { 'cache-control': 'no-cache' });
    const c = await get(portico.port, '/req-no-cache', { pragma: 'no-cache' });
    assert.equal(b.body.toString(), 'body 1');
    assert.equal(c.body.toString(), 'body 1');
    // The stored response was fresh: it was the request that asked to forward (RFC 9211 fwd=request).
    assert.equal(cacheStatus(b), 'Portico; fwd=request; fwd-status=304');
    assert.equal(cacheStatus(c), 'Portico; fwd=request; fwd-status=304');
    const seen = origin.seen('/req-no-cache');
    assert.equal(seen.length, 3);
    assert.equal(seen[1]!.headers['if-none-match'], '"r1"');
    assert.equal(seen[2]!.headers['if-none-match'], '"r1"');
  });

  test('Pragma: no-cache beside a Cache-Control is ignored (RFC 9111 §5.4): a fresh response is a hit', async () => {
    origin.on('/pragma-with-cc', validating('"p1"', { 'cache-control': 'max-age=60' }));
    await get(portico.port, '/pragma-with-cc');
    assert.ok(isHit(await get(portico.port, '/pragma-with-cc', { 'cache-control': 'no-transform', pragma: 'no-cache' })));
    assert.equal(origin.seen('/pragma-with-cc').length, 1);
  });

  test('request max-age: an older response is revalidated, a younger one served', async () => {
    origin.on('/req-max-age', validating('"m1"', { 'cache-control': 'max-age=60', age: '30' }));
    await get(portico.port, '/req-max-age');
    assert.ok(isHit(await get(portico.port, '/req-max-age', { 'cache-control': 'max-age=40' })));
    const b = await get(portico.port, '/req-max-age', { 'cache-control': 'max-age=10' });
    assert.equal(cacheStatus(b), 'Portico; fwd=request; fwd-status=304');
    assert.equal(origin.seen('/req-max-age').length, 2);
  });

  test('request min-fresh: served only with that much freshness left', async () => {
    origin.on('/min-fresh', validating('"f1"', { 'cache-control': 'max-age=60', age: '30' }));
    await get(portico.port, '/min-fresh');
    assert.ok(isHit(await get(portico.port, '/min-fresh', { 'cache-control': 'min-fresh=10' })));
    assert.ok(!isHit(await get(portico.port, '/min-fresh', { 'cache-control': 'min-fresh=40' })));
  });

  test('request max-stale: a stale response is served within the bound', async () => {
    origin.on('/max-stale', validating('"s1"', { 'cache-control': 'max-age=10', age: '30' }));
    await get(portico.port, '/max-stale');
    const ok = await get(portico.port, '/max-stale', { 'cache-control': 'max-stale=60' });
    assert.ok(isHit(ok));
    assert.match(cacheStatus(ok), /ttl=-2\d/);
    assert.ok(!isHit(await get(portico.port, '/max-stale', { 'cache-control': 'max-stale=5' })));
    assert.equal(origin.seen('/max-stale').length, 2);
  });

  test('must-revalidate, proxy-revalidate and s-maxage: never served stale, not even with max-stale', async () => {
    for (const cc of ['max-age=10, must-revalidate', 'max-age=10, proxy-revalidate', 's-maxage=10']) {
      const path = `/never-stale/${cc.replace(/\W/g, '')}`;
      origin.on(path, validating('"n1"', { 'cache-control': cc, age: '30' }));
      await get(portico.port, path);
      const b = await get(portico.port, path, { 'cache-control': 'max-stale' });
      assert.equal(cacheStatus(b), 'Portico; fwd=stale; fwd-status=304', cc);
      assert.equal(origin.seen(path).length, 2, cc);
      assert.equal(origin.seen(path)[1]!.headers['if-none-match'], '"n1"');
    }
  });

  test('only-if-cached: 504 on a miss (with Cache-Status), the stored response on a hit; the origin is not asked', async () => {
    origin.on('/oic', answer({ 'cache-control': 'max-age=60' }, 'x'));
    const miss = await get(portico.port, '/oic', { 'cache-control': 'only-if-cached' });
    assert.equal(miss.status, 504);
    assert.match(cacheStatus(miss), /^Portico; fwd=uri-miss/);
    assert.equal(origin.seen('/oic').length, 0);
    await get(portico.port, '/oic');
    const hit = await get(portico.port, '/oic', { 'cache-control': 'only-if-cached' });
    assert.equal(hit.status, 200);
    assert.ok(isHit(hit));
    assert.equal(origin.seen('/oic').length, 1);
  });
});

describe('Age (§4.2.3)', () => {
  test('the origin sent Age: 10: the hit is at least 10 s old and its ttl counts from there', async () => {
    origin.on('/age', answer({ 'cache-control': 'max-age=60', age: '10' }, 'x'));
    const [a, b] = await twice('/age');
    assert.equal(a.headers.age, '10');
    assert.ok(Number(b.headers.age) >= 10, `Age ${b.headers.age}`);
    assertTtl(b, 47, 50);
    // One Age field, the computed one.
    assert.equal(b.rawHeaders.filter((name) => name.toLowerCase() === 'age').length, 1);
  });

  test('a hit without an origin Age gets Age: 0 and it grows', async () => {
    origin.on('/age0', answer({ 'cache-control': 'max-age=60' }, 'x'));
    const [, b] = await twice('/age0');
    assert.equal(b.headers.age, '0');
  });
});
