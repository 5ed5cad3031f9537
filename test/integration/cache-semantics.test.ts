/**
 * RFC 9111 and RFC 9213 semantics through a real Portico and a real origin: an Expires that is not an HTTP-date
 * (or comes as several lines) is already expired (§5.3), a list-valued Age uses its first value (§5.1), and
 * targeted cache control (`Portico-Cache-Control`, `CDN-Cache-Control` where listed) replaces Cache-Control.
 * A second request tells whether the first answer was stored fresh: a hit, or a forward (`fwd=stale`).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { answer, cacheConfig, cacheStatus, get, httpDate, isHit, type Origin, startOrigin } from './cache-support.js';

let origin: Origin;
let portico: RunningPortico;

before(async () => {
  origin = await startOrigin();
  portico = await startPortico(
    cacheConfig(
      origin.url,
      `      - path: /cdn/
        proxy: { upstream: origin, cache: { zone: main, targeted: [CDN-Cache-Control, Portico-Cache-Control] } }
`,
    ),
  );
});

after(async () => {
  await portico?.stop();
  await origin?.stop();
});

/** Two GETs of `path`; returns them with how many requests the origin saw. */
async function twice(path: string, headers: Record<string, string> = {}) {
  const first = await get(portico.port, path, headers);
  const second = await get(portico.port, path, headers);
  return { first, second, seen: origin.seen(path).length };
}

describe('Expires: an invalid date is already expired (RFC 9111 §5.3)', () => {
  test('a valid Expires an hour ahead serves the second request from the cache', async () => {
    origin.on('/exp/valid', answer({ expires: httpDate(3600) }, 'x'));
    const { second, seen } = await twice('/exp/valid');
    assert.ok(isHit(second), cacheStatus(second));
    assert.equal(seen, 1);
  });

  // Tomorrow at 09:00:00 GMT, each in a form Date.parse takes but RFC 9110 §5.6.7 does not.
  const nearMisses: Array<[string, (imf: string) => string]> = [
    ['UTC for GMT', (d) => d.replace('GMT', 'UTC')],
    ['a missing comma', (d) => d.replace(',', '')],
    ['doubled spaces', (d) => d.replace(' ', '  ')],
    ['dashes', (d) => d.replace(/(\d\d) (\w{3}) (\d{4})/, '$1-$2-$3')],
    ['a one-digit hour', (d) => d.replace(' 09:', ' 9:')],
  ];
  const tomorrowAtNine = () => {
    const t = new Date(Date.now() + 86_400_000);
    t.setUTCHours(9, 0, 0, 0);
    return t.toUTCString();
  };
  for (const [what, mangle] of nearMisses) {
    test(`an Expires with ${what} is expired: the second request goes to the origin`, async () => {
      const path = `/exp/${what.replace(/\W+/g, '-')}`;
      const expires = mangle(tomorrowAtNine());
      assert.notEqual(expires, tomorrowAtNine());
      assert.ok(Date.parse(expires) > Date.now(), `a lenient parser reads ${expires} as a later date`);
      origin.on(path, answer({ expires }, 'x'));
      const { second, seen } = await twice(path);
      assert.match(cacheStatus(second), /^Portico; fwd=stale; fwd-status=200/);
      assert.equal(seen, 2);
    });
  }

  test('several Expires field lines, each a valid date, are expired', async () => {
    origin.on('/exp/two-lines', answer({ expires: [httpDate(3600), httpDate(3600)] }, 'x'));
    const { second, seen } = await twice('/exp/two-lines');
    assert.match(cacheStatus(second), /^Portico; fwd=stale; fwd-status=200/);
    assert.equal(seen, 2);
  });
});

describe('Age: a list uses its first value (RFC 9111 §5.1)', () => {
  test('Age: 7200, 0 with max-age=3600 is stale: the second request goes to the origin', async () => {
    origin.on('/age/list', answer({ 'cache-control': 'max-age=3600', age: '7200, 0' }, 'x'));
    const { second, seen } = await twice('/age/list');
    assert.match(cacheStatus(second), /^Portico; fwd=stale; fwd-status=200/);
    assert.equal(seen, 2);
  });

  test('two Age lines (7200 then 0): the first counts, stale', async () => {
    origin.on('/age/lines', answer({ 'cache-control': 'max-age=3600', age: ['7200', '0'] }, 'x'));
    const { second, seen } = await twice('/age/lines');
    assert.match(cacheStatus(second), /^Portico; fwd=stale; fwd-status=200/);
    assert.equal(seen, 2);
  });

  test('Age: 0, 7200 is fresh: a hit', async () => {
    origin.on('/age/first-zero', answer({ 'cache-control': 'max-age=3600', age: '0, 7200' }, 'x'));
    const { second, seen } = await twice('/age/first-zero');
    assert.ok(isHit(second), cacheStatus(second));
    assert.equal(seen, 1);
  });
});

describe('targeted cache control (RFC 9213)', () => {
  test('Portico-Cache-Control: max-age=60 is obeyed over Cache-Control: no-store, and never reaches the client', async () => {
    origin.on('/t/own', answer({ 'cache-control': 'no-store', 'portico-cache-control': 'max-age=60' }, 'x'));
    const { first, second, seen } = await twice('/t/own');
    assert.equal(cacheStatus(first), 'Portico; fwd=uri-miss; fwd-status=200; stored');
    assert.ok(isHit(second), cacheStatus(second));
    assert.equal(seen, 1);
    for (const res of [first, second]) {
      assert.equal(res.headers['portico-cache-control'], undefined);
      // Cache-Control is the browser's and passes on as it came.
      assert.equal(res.headers['cache-control'], 'no-store');
    }
  });

  test('Portico-Cache-Control: private is not stored, even with Cache-Control: public, max-age=60', async () => {
    origin.on('/t/private', answer({ 'cache-control': 'public, max-age=60', 'portico-cache-control': 'private' }, 'x'));
    const { first, second, seen } = await twice('/t/private');
    assert.equal(seen, 2);
    assert.ok(!isHit(second));
    assert.equal(first.headers['portico-cache-control'], undefined);
  });

  test('Portico-Cache-Control: no-cache makes every request revalidate', async () => {
    origin.on('/t/no-cache', answer({ 'cache-control': 'max-age=60', 'portico-cache-control': 'no-cache, max-age=60' }, 'x'));
    const { second, seen } = await twice('/t/no-cache');
    assert.match(cacheStatus(second), /^Portico; fwd=stale/);
    assert.equal(seen, 2);
  });

  test('CDN-Cache-Control is not obeyed by default, and is passed on', async () => {
    origin.on('/t/cdn', answer({ 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60' }, 'x'));
    const { first, second, seen } = await twice('/t/cdn');
    assert.equal(seen, 2);
    assert.ok(!isHit(second));
    assert.equal(first.headers['cdn-cache-control'], 'max-age=60');
  });

  test('CDN-Cache-Control is obeyed where listed in targeted, and still passed on', async () => {
    origin.on('/cdn/page', answer({ 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60', 'portico-cache-control': 'no-store' }, 'x'));
    const { first, second, seen } = await twice('/cdn/page');
    assert.ok(isHit(second), cacheStatus(second));
    assert.equal(seen, 1);
    for (const res of [first, second]) {
      assert.equal(res.headers['cdn-cache-control'], 'max-age=60');
      assert.equal(res.headers['portico-cache-control'], undefined);
    }
  });

  test('an invalid Portico-Cache-Control is ignored: Cache-Control decides', async () => {
    origin.on('/t/invalid-store', answer({ 'cache-control': 'max-age=60', 'portico-cache-control': 'no-store, Private' }, 'x'));
    const stored = await twice('/t/invalid-store');
    assert.ok(isHit(stored.second), cacheStatus(stored.second));
    assert.equal(stored.seen, 1);
    assert.equal(stored.first.headers['portico-cache-control'], undefined);
    origin.on('/t/invalid-fresh', answer({ 'cache-control': 'no-store', 'portico-cache-control': 'max-age=60,' }, 'x'));
    const notStored = await twice('/t/invalid-fresh');
    assert.equal(notStored.seen, 2);
  });

  test('Authorization (§3.5) is judged on the field in effect: Cache-Control public does not count', async () => {
    const auth = { authorization: 'Bearer x' };
    origin.on('/t/auth-cc', answer({ 'cache-control': 'public, max-age=60', 'portico-cache-control': 'max-age=60' }, 'x'));
    assert.equal((await twice('/t/auth-cc', auth)).seen, 2);
    origin.on('/t/auth-targeted', answer({ 'cache-control': 'max-age=60', 'portico-cache-control': 'public, max-age=60' }, 'x'));
    assert.equal((await twice('/t/auth-targeted', auth)).seen, 1);
  });

  test('Portico-Cache-Control is removed from answers the cache passes through (a no-store request)', async () => {
    origin.on('/t/pass', answer({ 'portico-cache-control': 'max-age=60' }, 'x'));
    const res = await get(portico.port, '/t/pass', { 'cache-control': 'no-store' });
    assert.equal(cacheStatus(res), 'Portico; fwd=request');
    assert.equal(res.headers['portico-cache-control'], undefined);
  });

  test('a revalidated response keeps obeying the field; the 304 refresh does not leak it', async () => {
    origin.on('/t/reval', (req, res, n) => {
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { etag: '"v1"', 'portico-cache-control': 'max-age=60' });
        return res.end();
      }
      res.writeHead(200, { etag: '"v1"', 'content-length': 1, 'portico-cache-control': 'max-age=60', age: '120' });
      res.end(String(n));
    });
    const { first, second, seen } = await twice('/t/reval');
    assert.equal(seen, 2);
    assert.match(cacheStatus(second), /^Portico; fwd=stale; fwd-status=304/);
    assert.equal(first.headers['portico-cache-control'], undefined);
    assert.equal(second.headers['portico-cache-control'], undefined);
    const third = await get(portico.port, '/t/reval');
    assert.ok(isHit(third), cacheStatus(third));
    assert.equal(third.headers['portico-cache-control'], undefined);
  });
});
