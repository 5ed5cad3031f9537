import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { normalizeAcceptEncoding } from '../../src/cache/rules.js';
import { isCompressible, negotiateEncoding, type Encoding } from '../../src/http/negotiate.js';

const ALL: Encoding[] = ['br', 'gzip', 'identity'];

describe('negotiateEncoding', () => {
  test('no Accept-Encoding: identity', () => {
    assert.equal(negotiateEncoding(undefined, ALL), 'identity');
  });

  test('the server prefers br over gzip when the client weighs them equally', () => {
    assert.equal(negotiateEncoding('gzip, deflate, br', ALL), 'br');
    assert.equal(negotiateEncoding('*', ALL), 'br');
  });

  test('q-values decide: the highest weight wins', () => {
    assert.equal(negotiateEncoding('br;q=0.5, gzip;q=0.8', ALL), 'gzip');
    assert.equal(negotiateEncoding('br;q=0.9, gzip;q=0.8', ALL), 'br');
    assert.equal(negotiateEncoding('gzip;q=0.5, identity;q=0.9', ALL), 'identity');
    assert.equal(negotiateEncoding('gzip ; Q = 0.7 , br;q=0.6', ALL), 'gzip');
  });

  test('q=0 refuses an encoding', () => {
    assert.equal(negotiateEncoding('br;q=0, gzip', ALL), 'gzip');
    assert.equal(negotiateEncoding('br;q=0, *', ALL), 'gzip');
    assert.equal(negotiateEncoding('gzip;q=0', ALL), 'identity');
  });

  test('identity is acceptable unless refused explicitly or by *;q=0', () => {
    assert.equal(negotiateEncoding('deflate', ALL), 'identity');
    assert.equal(negotiateEncoding('*;q=0', ['identity']), null);
    assert.equal(negotiateEncoding('identity;q=0', ['identity']), null);
    assert.equal(negotiateEncoding('identity;q=0, gzip', ALL), 'gzip');
  });

  test('names are case-insensitive and x-gzip means gzip', () => {
    assert.equal(negotiateEncoding('GZIP', ALL), 'gzip');
    assert.equal(negotiateEncoding('x-gzip', ALL), 'gzip');
  });

  test('only what is available is chosen', () => {
    assert.equal(negotiateEncoding('br', ['gzip', 'identity']), 'identity');
    assert.equal(negotiateEncoding('br, gzip', ['gzip', 'identity']), 'gzip');
    assert.equal(negotiateEncoding('br, gzip', ['identity']), 'identity');
  });
});

describe('isCompressible', () => {
  test('text, JSON, JavaScript, XML, SVG and WASM are compressible', () => {
    for (const type of ['text/html; charset=utf-8', 'text/css', 'application/json', 'application/javascript', 'text/javascript', 'application/xml', 'image/svg+xml', 'application/wasm', 'application/ld+json', 'application/vnd.api+json']) {
      assert.equal(isCompressible(type), true, type);
    }
  });

  test('already-compressed types are not: png, jpeg, zip, gzip, woff2, mp4', () => {
    for (const type of ['image/png', 'image/jpeg', 'application/zip', 'application/gzip', 'font/woff2', 'video/mp4', 'application/octet-stream']) {
      assert.equal(isCompressible(type), false, type);
    }
  });
});

describe('one Accept-Encoding rule for static files and the cache', () => {
  test('br;q=0.1, gzip picks gzip for a static file and for the cache key alike (the q-value decides, not the name)', () => {
    assert.equal(negotiateEncoding('br;q=0.1, gzip', ALL), 'gzip');
    assert.equal(normalizeAcceptEncoding('br;q=0.1, gzip'), 'gzip');
  });

  test('the cache key and static negotiation agree on a corpus of real and odd values', () => {
    for (const value of [undefined, '', 'gzip, deflate, br', 'gzip', 'br', '*', 'identity', 'br;q=0, gzip;q=0.5', 'x-gzip', 'gzip;q=0, br;q=0', 'deflate, gzip;q=1.0, *;q=0.5', 'BR']) {
      assert.equal(normalizeAcceptEncoding(value), negotiateEncoding(value, ALL) ?? 'identity', String(value));
    }
  });
});

describe('isCompressible keeps every type compressed before the compressible package', () => {
  test('the types of the former hand-written list are still compressible', () => {
    for (const type of [
      'text/plain', 'text/html', 'text/css', 'text/csv', 'text/xml', 'text/javascript', 'application/json', 'application/javascript',
      'application/ecmascript', 'application/xml', 'application/xhtml+xml', 'application/rss+xml', 'application/atom+xml',
      'application/ld+json', 'application/manifest+json', 'application/wasm', 'application/x-javascript', 'application/vnd.ms-fontobject',
      'application/x-font-ttf', 'application/x-font-opentype', 'image/svg+xml', 'image/x-icon', 'image/vnd.microsoft.icon', 'image/bmp',
      'font/ttf', 'font/otf', 'font/eot', 'application/problem+json', 'application/soap+xml', 'TEXT/HTML; charset=utf-8',
    ]) {
      assert.equal(isCompressible(type), true, type);
    }
  });
});

describe('negotiation memo', () => {
  test('a header shaped like another set of encodings cannot poison the answer for that set (regression: one shared memo keyed by joined names)', () => {
    assert.equal(negotiateEncoding('br,gzip,identity|identity', ALL), 'br');
    const staticSet: Encoding[] = ['br', 'gzip', 'identity'];
    assert.equal(negotiateEncoding('identity', staticSet), 'identity');
    assert.equal(negotiateEncoding('gzip', ['gzip', 'identity']), 'gzip');
    assert.equal(negotiateEncoding('br', ['gzip', 'identity']), 'identity');
  });

  test('x-gzip is gzip in any case (X-Gzip, X-GZIP)', () => {
    for (const value of ['x-gzip', 'X-Gzip', 'X-GZIP']) assert.equal(negotiateEncoding(value, ALL), 'gzip', value);
  });
});
