/**
 * The shared cache tier's pure parts (docs/cluster.md, "A shared cache tier"): how long an answer is of use in
 * Redis (freshness left plus the stale windows RFC 9111 and RFC 5861 allow it), and the binary-safe encoding of
 * one variant. The tier against a real Redis is tested in test/integration/cluster-cache.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_TARGETED, entryFacts, type RuleOptions } from '../../src/cache/rules.js';
import { decodeEntry, encodeEntry, usableFor } from '../../src/cache/shared-tier.js';
import type { StoredResponse } from '../../src/cache/types.js';

const RULES: RuleOptions = { heuristic: false, defaultTtl: 0, defaultTtlWithCredentials: false, ignoreSetCookie: false, staleIfError: 0, targeted: DEFAULT_TARGETED };

function entry(cacheControl: string, extra: string[] = [], body: Buffer = Buffer.from('body')): StoredResponse {
  const now = Date.now();
  return { key: 'httpa.example/x', varyKey: '', status: 200, headers: ['Cache-Control', cacheControl, ...extra], body, requestTime: now, responseTime: now };
}

test('an answer is of use for its freshness left, less the age it came with', () => {
  assert.equal(usableFor(entryFacts(entry('max-age=60'), RULES), 0), 60_000);
  assert.equal(usableFor(entryFacts(entry('max-age=60', ['Age', '20']), RULES), 0), 40_000);
});

test('the stale windows count: the response\'s stale-while-revalidate / stale-if-error, or the route\'s, the longest', () => {
  assert.equal(usableFor(entryFacts(entry('max-age=60, stale-while-revalidate=30'), RULES), 0), 90_000);
  assert.equal(usableFor(entryFacts(entry('max-age=60, stale-if-error=120, stale-while-revalidate=30'), RULES), 0), 180_000);
  assert.equal(usableFor(entryFacts(entry('max-age=60'), RULES), 300_000), 360_000);
});

test('no stale window where stale is forbidden (must-revalidate, proxy-revalidate, s-maxage, no-cache)', () => {
  for (const cc of ['max-age=60, must-revalidate, stale-if-error=100', 'max-age=60, proxy-revalidate', 's-maxage=60, stale-while-revalidate=100', 'max-age=60, no-cache']) {
    assert.equal(usableFor(entryFacts(entry(cc), RULES), 300_000), 60_000, cc);
  }
});

test('a variant round-trips through its encoding, binary body and all; a value past its end or garbled is refused', () => {
  const body = Buffer.from([0, 1, 2, 255, 0x0d, 0x0a, 0]);
  const stored = entry('max-age=60', ['Content-Type', 'application/octet-stream'], body);
  const value = encodeEntry(stored, Date.now() + 1000);
  const back = decodeEntry(stored.key, 'accept-encoding:gzip\n', value, Date.now());
  assert.ok(back !== undefined);
  assert.deepEqual(back.body, body);
  assert.deepEqual(back.headers, stored.headers);
  assert.equal(back.status, 200);
  assert.equal(back.varyKey, 'accept-encoding:gzip\n');
  assert.equal(back.responseTime, stored.responseTime);
  assert.equal(decodeEntry(stored.key, '', value, Date.now() + 2000), undefined, 'past its usable end');
  assert.equal(decodeEntry(stored.key, '', value.subarray(0, 6), Date.now()), undefined, 'truncated');
  assert.equal(decodeEntry(stored.key, '', Buffer.from('garbage!'), Date.now()), undefined, 'not an entry');
});

test('a value in Redis that Node could not send (a status out of range, a header with a line break, times not numbers) is a miss, not a 500', () => {
  const until = Date.now() + 60_000;
  const valueOf = (meta: Record<string, unknown>): Buffer => {
    const json = Buffer.from(JSON.stringify(meta));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(json.length, 0);
    return Buffer.concat([head, json, Buffer.from('evil')]);
  };
  const now = Date.now();
  const good = { s: 200, h: ['Cache-Control', 'max-age=60'], q: now, r: now, u: until };
  assert.ok(decodeEntry('k', '', valueOf(good), now) !== undefined, 'a well-formed value is read');
  for (const [what, meta] of [
    ['status 1000', { ...good, s: 1000 }],
    ['status 200.5', { ...good, s: 200.5 }],
    ['a line break in a header value', { ...good, h: ['Cache-Control', 'max-age=60', 'X-Bad', 'a\nb'] }],
    ['a space in a header name', { ...good, h: ['Cache Control', 'max-age=60'] }],
    ['a header value not a string', { ...good, h: ['Cache-Control', 60] }],
    ['request time not a number', { ...good, q: 'zz' }],
    ['response time missing', { s: 200, h: good.h, q: now, u: until }],
  ] as const) {
    assert.equal(decodeEntry('k', '', valueOf(meta), now), undefined, what);
  }
});
