/**
 * `Cache-Control` parsing (RFC 9111 §5.2): directive names are case-insensitive, values are tokens or quoted
 * strings, unknown directives are ignored, the first occurrence wins and a bad delta-seconds counts as 0.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EMPTY_CACHE_CONTROL, parseCacheControl } from '../../src/cache/cache-control.js';

describe('parseCacheControl', () => {
  test('an absent or empty header asks for nothing', () => {
    assert.deepEqual(parseCacheControl(undefined), EMPTY_CACHE_CONTROL);
    assert.deepEqual(parseCacheControl(''), EMPTY_CACHE_CONTROL);
  });

  test('response directives, case-insensitive, with token and quoted values', () => {
    const cc = parseCacheControl('Public, MAX-AGE=60, s-maxage="120", Must-Revalidate, proxy-revalidate, immutable');
    assert.equal(cc.public, true);
    assert.equal(cc.maxAge, 60);
    assert.equal(cc.sMaxAge, 120);
    assert.equal(cc.mustRevalidate, true);
    assert.equal(cc.proxyRevalidate, true);
    assert.equal(cc.immutable, true);
    assert.equal(cc.noCache, false);
    assert.equal(cc.private, false);
  });

  test('request directives: max-stale with and without a value, min-fresh, only-if-cached, no-store', () => {
    assert.equal(parseCacheControl('max-stale').maxStale, Infinity);
    assert.equal(parseCacheControl('max-stale=30').maxStale, 30);
    assert.equal(parseCacheControl('min-fresh=5').minFresh, 5);
    assert.equal(parseCacheControl('only-if-cached').onlyIfCached, true);
    assert.equal(parseCacheControl('no-store').noStore, true);
  });

  test('no-cache without field names is true; with field names it lists them (both mean revalidate)', () => {
    assert.equal(parseCacheControl('no-cache').noCache, true);
    assert.deepEqual(parseCacheControl('no-cache="Set-Cookie, X-Foo", max-age=5').noCache, ['set-cookie', 'x-foo']);
    assert.equal(parseCacheControl('no-cache="Set-Cookie, X-Foo", max-age=5').maxAge, 5);
    assert.equal(parseCacheControl('no-cache=""').noCache, true);
  });

  test('qualified private still counts as private', () => {
    assert.equal(parseCacheControl('private="Set-Cookie", max-age=60').private, true);
  });

  test('a comma inside a quoted value does not split directives', () => {
    const cc = parseCacheControl('no-cache="a,b", private');
    assert.deepEqual(cc.noCache, ['a', 'b']);
    assert.equal(cc.private, true);
  });

  test('unknown directives are ignored, never taken for no-cache', () => {
    const cc = parseCacheControl('max-age=60, community="UCI", x-custom, foo=bar');
    assert.deepEqual(cc, { ...EMPTY_CACHE_CONTROL, maxAge: 60 });
  });

  test('the first occurrence of a repeated directive wins', () => {
    assert.equal(parseCacheControl('max-age=10, max-age=1000').maxAge, 10);
    assert.equal(parseCacheControl(['max-age=10', 'max-age=1000']).maxAge, 10);
  });

  test('an invalid delta-seconds counts as 0 (stale), a huge one is capped at 2^31', () => {
    assert.equal(parseCacheControl('max-age=abc').maxAge, 0);
    assert.equal(parseCacheControl('max-age=-5').maxAge, 0);
    assert.equal(parseCacheControl('max-age').maxAge, 0);
    assert.equal(parseCacheControl('max-age=99999999999999').maxAge, 2 ** 31);
  });

  test('repeated header fields are combined', () => {
    const cc = parseCacheControl(['public', 'max-age=30, stale-while-revalidate=10', 'stale-if-error=99']);
    assert.equal(cc.public, true);
    assert.equal(cc.maxAge, 30);
    assert.equal(cc.staleWhileRevalidate, 10);
    assert.equal(cc.staleIfError, 99);
  });

  test('whitespace and empty members are tolerated', () => {
    const cc = parseCacheControl(' ,  max-age = 7 ,, no-store ,');
    assert.equal(cc.maxAge, 7);
    assert.equal(cc.noStore, true);
  });
});
