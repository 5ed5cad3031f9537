/**
 * Vary (secondary keys, `Vary: *`, Accept-Encoding normalisation) and validation (conditional revalidation, 304
 * refresh, client conditionals, HEAD and Range from a stored GET), over real sockets. A stored response is made
 * stale without waiting by an origin `Age` beyond its max-age.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { answer, assertTtl, cacheConfig, cacheStatus, get, httpDate, isHit, type Origin, startOrigin } from './cache-support.js';

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

describe('Vary', () => {
  test('Accept-Language en and fr are stored separately; both are hits afterwards', async () => {
    origin.on('/lang', answer({ 'cache-control': 'max-age=60', vary: 'Accept-Language' }, (req) => `hello in ${req.headers['accept-language']}`));
    const en1 = await get(portico.port, '/lang', { 'accept-language': 'en' });
    const fr1 = await get(portico.port, '/lang', { 'accept-language': 'fr' });
    assert.equal(cacheStatus(en1), 'Portico; fwd=uri-miss; fwd-status=200; stored');
    assert.equal(cacheStatus(fr1), 'Portico; fwd=vary-miss; fwd-status=200; stored');
    const en2 = await get(portico.port, '/lang', { 'accept-language': 'en' });
    const fr2 = await get(portico.port, '/lang', { 'accept-language': 'fr' });
    assert.ok(isHit(en2) && isHit(fr2));
    assert.equal(en2.body.toString(), 'hello in en');
    assert.equal(fr2.body.toString(), 'hello in fr');
    assert.equal(origin.seen('/lang').length, 2);
  });

  test('Vary: * never matches: every request goes to the origin', async () => {
    origin.on('/vary-star', answer({ 'cache-control': 'public, max-age=60', vary: '*' }, 'x'));
    for (let i = 0; i < 3; i++) assert.ok(!isHit(await get(portico.port, '/vary-star')));
    assert.equal(origin.seen('/vary-star').length, 3);
  });

  test('Accept-Encoding is normalised to br, gzip or identity: equivalent headers share a variant', async () => {
    origin.on('/enc', (req, res) => {
      const accepted = String(req.headers['accept-encoding'] ?? '');
      const encoding = /\bbr\b/.test(accepted) ? 'br' : /\bgzip\b/.test(accepted) ? 'gzip' : undefined;
      const body = `encoded as ${encoding ?? 'identity'}`;
      res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Encoding', 'content-length': body.length, ...(encoding ? { 'content-encoding': encoding } : {}) });
      res.end(body);
    });
    const ask = (value?: string) => get(portico.port, '/enc', value === undefined ? {} : { 'accept-encoding': value });
    assert.equal((await ask('gzip, deflate, br')).body.toString(), 'encoded as br');
    const br = await ask('br');
    assert.ok(isHit(br));
    assert.equal(br.headers['content-encoding'], 'br');
    const gzip = await ask('gzip');
    assert.match(cacheStatus(gzip), /^Portico; fwd=vary-miss/);
    assert.equal(gzip.body.toString(), 'encoded as gzip');
    assert.ok(isHit(await ask('gzip, deflate')));
    assert.ok(isHit(await ask('br;q=0, gzip')));
    const identity = await ask(undefined);
    assert.match(cacheStatus(identity), /^Portico; fwd=vary-miss/);
    assert.equal(identity.body.toString(), 'encoded as identity');
    assert.ok(isHit(await ask('identity')));
    assert.ok(isHit(await ask('deflate')));
    assert.equal(origin.seen('/enc').length, 3);
  });

  test('a client is never served an encoding it did not accept, even from an origin that ignores some it offered', async () => {
    // This origin knows gzip only: offered "gzip, br" it answers gzip.
    origin.on('/enc-gzip-only', (req, res) => {
      const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
      const body = gzip ? 'gzipped' : 'plain';
      res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Encoding', 'content-length': body.length, ...(gzip ? { 'content-encoding': 'gzip' } : {}) });
      res.end(body);
    });
    await get(portico.port, '/enc-gzip-only', { 'accept-encoding': 'gzip, br' });
    const brOnly = await get(portico.port, '/enc-gzip-only', { 'accept-encoding': 'br' });
    assert.notEqual(brOnly.headers['content-encoding'], 'gzip');
    const brOnlyAgain = await get(portico.port, '/enc-gzip-only', { 'accept-encoding': 'br' });
    assert.notEqual(brOnlyAgain.headers['content-encoding'], 'gzip');
  });
});

describe('validation', () => {
  test('a stale entry with an ETag is revalidated with If-None-Match; the 304 refreshes the stored headers', async () => {
    origin.on('/etag', (req, res, n) => {
      if (n > 1 && req.headers['if-none-match'] === '"e1"') {
        res.writeHead(304, { etag: '"e1"', 'cache-control': 'max-age=60', 'x-version': String(n) });
        res.end();
        return;
      }
      res.writeHead(200, { etag: '"e1"', 'cache-control': 'max-age=10', age: '30', 'x-version': '1', 'content-length': 4 });
      res.end('full');
    });
    await get(portico.port, '/etag');
    const revalidated = await get(portico.port, '/etag');
    assert.equal(revalidated.status, 200);
    assert.equal(revalidated.body.toString(), 'full');
    assert.equal(revalidated.headers['x-version'], '2');
    assert.equal(revalidated.headers['content-length'], '4');
    assert.equal(cacheStatus(revalidated), 'Portico; fwd=stale; fwd-status=304');
    const seen = origin.seen('/etag');
    assert.equal(seen[1]!.headers['if-none-match'], '"e1"');
    // The 304 made it fresh again (max-age=60, no Age): the next request is a hit with the new header.
    const hit = await get(portico.port, '/etag');
    assert.ok(isHit(hit), cacheStatus(hit));
    // As old as the 304 says (no Age: just validated), not as old as the first response was.
    assertTtl(hit, 57, 60);
    assert.ok(Number(hit.headers.age) <= 2, `Age ${hit.headers.age}`);
    assert.equal(hit.headers['x-version'], '2');
    assert.equal(hit.body.toString(), 'full');
    assert.equal(origin.seen('/etag').length, 2);
  });

  test('a stale entry with only Last-Modified is revalidated with If-Modified-Since', async () => {
    const lastModified = httpDate(-3600);
    origin.on('/lm', (req, res, n) => {
      if (n > 1 && req.headers['if-modified-since'] === lastModified) {
        res.writeHead(304, { 'cache-control': 'max-age=60' });
        res.end();
        return;
      }
      res.writeHead(200, { 'last-modified': lastModified, 'cache-control': 'max-age=10', age: '30', 'content-length': 2 });
      res.end('lm');
    });
    await get(portico.port, '/lm');
    const b = await get(portico.port, '/lm');
    assert.equal(b.body.toString(), 'lm');
    assert.equal(origin.seen('/lm')[1]!.headers['if-modified-since'], lastModified);
    assert.equal(origin.seen('/lm')[1]!.headers['if-none-match'], undefined);
    assert.ok(isHit(await get(portico.port, '/lm')));
  });

  test('a changed resource: the revalidation gets a 200, which replaces the stored one', async () => {
    origin.on('/changed', (_req, res, n) => {
      res.writeHead(200, { etag: `"c${n}"`, 'cache-control': n === 1 ? 'max-age=10' : 'max-age=60', age: n === 1 ? '30' : '0', 'content-length': 2 });
      res.end(`v${n}`);
    });
    await get(portico.port, '/changed');
    const b = await get(portico.port, '/changed');
    assert.equal(b.body.toString(), 'v2');
    assert.equal(cacheStatus(b), 'Portico; fwd=stale; fwd-status=200; stored');
    const c = await get(portico.port, '/changed');
    assert.ok(isHit(c));
    assert.equal(c.body.toString(), 'v2');
  });

  test('a Set-Cookie on a 304 goes to that client only, never into the stored response', async () => {
    origin.on('/refresh-cookie', (req, res, n) => {
      if (req.headers['if-none-match'] === '"k1"') {
        res.writeHead(304, { etag: '"k1"', 'cache-control': 'max-age=60', 'set-cookie': `sid=secret${n}` });
        res.end();
        return;
      }
      res.writeHead(200, { etag: '"k1"', 'cache-control': 'max-age=10', age: '30', 'content-length': 1 });
      res.end('k');
    });
    await get(portico.port, '/refresh-cookie');
    const revalidating = await get(portico.port, '/refresh-cookie');
    assert.deepEqual(revalidating.headers['set-cookie'], ['sid=secret2']);
    const other = await get(portico.port, '/refresh-cookie');
    assert.ok(isHit(other));
    assert.equal(other.headers['set-cookie'], undefined);
  });

  test('client If-None-Match and If-Modified-Since are answered 304 from the cache', async () => {
    const lastModified = httpDate(-3600);
    origin.on('/cond', answer({ 'cache-control': 'max-age=60', etag: '"c1"', 'last-modified': lastModified }, 'conditional'));
    await get(portico.port, '/cond');
    const inm = await get(portico.port, '/cond', { 'if-none-match': '"c1"' });
    assert.equal(inm.status, 304);
    assert.equal(inm.headers.etag, '"c1"');
    assert.equal(inm.body.length, 0);
    assert.match(cacheStatus(inm), /^Portico; hit/);
    const ims = await get(portico.port, '/cond', { 'if-modified-since': httpDate(0) });
    assert.equal(ims.status, 304);
    const other = await get(portico.port, '/cond', { 'if-none-match': '"other"' });
    assert.equal(other.status, 200);
    assert.equal(other.body.toString(), 'conditional');
    assert.equal(origin.seen('/cond').length, 1);
  });

  test('on a miss, the client\'s validators are not sent upstream; the full response is stored and the client gets its 304', async () => {
    origin.on('/cond-miss', answer({ 'cache-control': 'max-age=60', etag: '"m1"' }, 'full body'));
    const first = await get(portico.port, '/cond-miss', { 'if-none-match': '"m1"' });
    assert.equal(first.status, 304);
    assert.equal(origin.seen('/cond-miss')[0]!.headers['if-none-match'], undefined);
    const second = await get(portico.port, '/cond-miss');
    assert.ok(isHit(second));
    assert.equal(second.body.toString(), 'full body');
  });

  test('HEAD is served from a stored GET; the origin never sees a HEAD', async () => {
    origin.on('/head', answer({ 'cache-control': 'max-age=60' }, 'head body'));
    await get(portico.port, '/head');
    const head = await get(portico.port, '/head', {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '9');
    assert.equal(head.body.length, 0);
    assert.ok(isHit(head));
    assert.deepEqual(origin.seen('/head').map((r) => r.method), ['GET']);
  });

  test('a HEAD that revalidates a stale entry never replaces the stored body with an empty one', async () => {
    origin.on('/head-stale', (req, res, n) => {
      const body = `version ${n}`;
      // The first (GET) response is stale at once; later ones are fresh for a minute.
      res.writeHead(200, { etag: `"h${n}"`, 'cache-control': n === 1 ? 'max-age=10' : 'max-age=60', age: n === 1 ? '30' : '0', 'content-length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    await get(portico.port, '/head-stale');
    const head = await get(portico.port, '/head-stale', {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    const after = await get(portico.port, '/head-stale');
    assert.equal(after.status, 200);
    assert.match(after.body.toString(), /^version \d$/);
    assert.equal(after.headers['content-length'], String(after.body.length));
  });

  test('Range: a stored full response answers 206 with the slice; an unsatisfiable range 416', async () => {
    origin.on('/range', answer({ 'cache-control': 'max-age=60', etag: '"r1"' }, '0123456789'));
    await get(portico.port, '/range');
    const part = await get(portico.port, '/range', { range: 'bytes=2-5' });
    assert.equal(part.status, 206);
    assert.equal(part.body.toString(), '2345');
    assert.equal(part.headers['content-range'], 'bytes 2-5/10');
    assert.equal(part.headers['content-length'], '4');
    assert.ok(isHit(part));
    const suffix = await get(portico.port, '/range', { range: 'bytes=-3' });
    assert.equal(suffix.body.toString(), '789');
    const wrong = await get(portico.port, '/range', { range: 'bytes=20-30' });
    assert.equal(wrong.status, 416);
    assert.equal(wrong.headers['content-range'], 'bytes */10');
    // If-Range with another validator: the whole response.
    const ifRange = await get(portico.port, '/range', { range: 'bytes=2-5', 'if-range': '"old"' });
    assert.equal(ifRange.status, 200);
    assert.equal(ifRange.body.toString(), '0123456789');
    assert.equal(origin.seen('/range').length, 1);
  });

  test('a Range on a miss is not sent upstream: the full response is fetched and stored', async () => {
    origin.on('/range-miss', answer({ 'cache-control': 'max-age=60' }, 'abcdefghij'));
    await get(portico.port, '/range-miss', { range: 'bytes=0-1' });
    assert.equal(origin.seen('/range-miss')[0]!.headers.range, undefined);
    const part = await get(portico.port, '/range-miss', { range: 'bytes=0-1' });
    assert.equal(part.status, 206);
    assert.equal(part.body.toString(), 'ab');
  });
});
