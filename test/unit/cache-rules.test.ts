/**
 * The RFC 9111 rules of the shared cache as pure functions, with the clock passed in: what may be stored,
 * freshness lifetime, Age (§4.2.3), whether a stored response may serve a request, stale-if-error, and the
 * Vary secondary key.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { EMPTY_CACHE_CONTROL, parseCacheControl } from '../../src/cache/cache-control.js';
import {
  ageOf,
  ageSeconds,
  DEFAULT_TARGETED,
  currentAge,
  entryFacts,
  freshnessLifetime,
  mayServeStaleOnError,
  mayServeStaleWhenUnreachable,
  notStorable,
  usability,
  varyKey,
  type RuleOptions,
  pragmaNoCache,
} from '../../src/cache/rules.js';
import type { StoredResponse } from '../../src/cache/types.js';

const NOW = Date.parse('2024-05-01T12:00:00Z');
const HTTP_NOW = new Date(NOW).toUTCString();
const DEFAULTS: RuleOptions = { heuristic: false, defaultTtl: 0, defaultTtlWithCredentials: false, ignoreSetCookie: false, staleIfError: 0, targeted: DEFAULT_TARGETED };
const GET = { method: 'GET', cacheControl: EMPTY_CACHE_CONTROL, hasAuthorization: false, hasCookie: false };

function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

/** A flat header list from name/value pairs, with a Date of NOW unless one is given. */
function headers(fields: Record<string, string>): string[] {
  const out = Object.entries(fields).flat();
  if (!('date' in fields)) out.push('date', HTTP_NOW);
  return out;
}

function entry(fields: Record<string, string>, status = 200, times: { requestTime?: number; responseTime?: number } = {}): StoredResponse {
  return {
    key: 'k',
    varyKey: '',
    status,
    headers: headers(fields),
    body: Buffer.from('x'),
    requestTime: times.requestTime ?? NOW,
    responseTime: times.responseTime ?? NOW,
  };
}

function lifetime(fields: Record<string, string>, status = 200, options: RuleOptions = DEFAULTS): number {
  const list = headers(fields);
  return freshnessLifetime(status, list, parseCacheControl(fields['cache-control']), NOW, options);
}

function storable(fields: Record<string, string>, status = 200, options: Partial<RuleOptions> = {}, req: Partial<typeof GET> = {}) {
  return notStorable({ ...GET, ...req }, status, headers(fields), { ...DEFAULTS, ...options });
}

describe('notStorable (§3)', () => {
  test('only GET responses are stored', () => {
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 200, {}, { method: 'HEAD' }), 'method');
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 200, {}, { method: 'POST' }), 'method');
    assert.equal(storable({ 'cache-control': 'max-age=60' }), undefined);
  });

  test('no-store in the request or the response, and private (qualified or not), are never stored', () => {
    assert.equal(storable({ 'cache-control': 'max-age=60, no-store' }), 'no-store');
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 200, {}, { cacheControl: parseCacheControl('no-store') }), 'no-store');
    assert.equal(storable({ 'cache-control': 'private, max-age=60' }), 'private');
    assert.equal(storable({ 'cache-control': 'private="x-user", max-age=60' }), 'private');
    assert.equal(storable({ 'cache-control': 'public, private, max-age=60' }), 'private');
  });

  test('a request with Authorization: stored only with public, s-maxage or must-revalidate (§3.5)', () => {
    const auth = { hasAuthorization: true };
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 200, {}, auth), 'authorization');
    assert.equal(storable({ 'cache-control': 'public, max-age=60' }, 200, {}, auth), undefined);
    assert.equal(storable({ 'cache-control': 's-maxage=60' }, 200, {}, auth), undefined);
    assert.equal(storable({ 'cache-control': 'max-age=60, must-revalidate' }, 200, {}, auth), undefined);
    assert.equal(storable({ 'cache-control': 'max-age=60, proxy-revalidate' }, 200, {}, auth), 'authorization');
  });

  test('Set-Cookie: not stored, even with public, unless ignore_set_cookie', () => {
    assert.equal(storable({ 'cache-control': 'public, max-age=60', 'set-cookie': 'sid=1' }), 'set-cookie');
    assert.equal(storable({ 'cache-control': 'public, max-age=60', 'set-cookie': 'sid=1' }, 200, { ignoreSetCookie: true }), undefined);
  });

  test('Vary: * is never stored', () => {
    assert.equal(storable({ 'cache-control': 'max-age=60', vary: '*' }), 'vary-star');
    assert.equal(storable({ 'cache-control': 'max-age=60', vary: 'accept, *' }), 'vary-star');
  });

  test('partial content and statuses a cache does not understand are not stored', () => {
    assert.equal(storable({ 'cache-control': 'max-age=60', 'content-range': 'bytes 0-1/10' }, 206), 'partial');
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 500), 'status');
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 201), 'status');
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 404), undefined);
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 302), undefined);
  });

  test('a 200 with Last-Modified and no Cache-Control is NOT stored by default', () => {
    assert.equal(storable({ 'last-modified': httpDate(NOW - 10 * 86_400_000) }), 'no-freshness');
    assert.equal(storable({}), 'no-freshness');
  });

  test('with heuristic: true, a heuristically cacheable status with Last-Modified is stored', () => {
    const lm = { 'last-modified': httpDate(NOW - 10 * 86_400_000) };
    assert.equal(storable(lm, 200, { heuristic: true }), undefined);
    assert.equal(storable(lm, 404, { heuristic: true }), undefined);
    // 302 and 307 are not heuristically cacheable (RFC 9110 §15.1).
    assert.equal(storable(lm, 302, { heuristic: true }), 'no-freshness');
    assert.equal(storable(lm, 307, { heuristic: true }), 'no-freshness');
    // No Last-Modified: nothing to base a heuristic on.
    assert.equal(storable({}, 200, { heuristic: true }), 'no-freshness');
  });

  test('default_ttl makes a response without freshness information storable', () => {
    assert.equal(storable({}, 200, { defaultTtl: 30_000 }), undefined);
  });

  test('a request with Cookie or Authorization: default_ttl and heuristic freshness do not apply unless default_ttl_with_credentials', () => {
    // With Authorization, §3.5 wants public (or s-maxage, must-revalidate) first; public gives no lifetime.
    for (const [req, cc] of [[{ hasCookie: true }, {}], [{ hasCookie: true }, { 'cache-control': 'public' }], [{ hasAuthorization: true }, { 'cache-control': 'public' }]] as const) {
      const lm = { ...cc, 'last-modified': httpDate(NOW - 100_000) };
      assert.equal(storable(cc, 200, { defaultTtl: 30_000 }, req), 'credentials');
      assert.equal(storable(lm, 200, { heuristic: true }, req), 'credentials');
      assert.equal(storable(cc, 200, { defaultTtl: 30_000, defaultTtlWithCredentials: true }, req), undefined);
      assert.equal(storable(lm, 200, { heuristic: true, defaultTtlWithCredentials: true }, req), undefined);
    }
    assert.equal(storable({}, 200, { defaultTtl: 30_000, defaultTtlWithCredentials: true }, { hasAuthorization: true }), 'authorization');
    // The app's own lifetime still counts (Authorization keeps its §3.5 rule).
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 200, { defaultTtl: 30_000 }, { hasCookie: true }), undefined);
    assert.equal(storable({ expires: httpDate(NOW + 60_000) }, 200, {}, { hasCookie: true }), undefined);
    assert.equal(storable({ 'cache-control': 'public, max-age=60' }, 200, {}, { hasAuthorization: true }), undefined);
    assert.equal(storable({ 'cache-control': 's-maxage=60' }, 200, {}, { hasAuthorization: true }), undefined);
    assert.equal(storable({ 'cache-control': 'max-age=60' }, 200, { defaultTtlWithCredentials: true }, { hasAuthorization: true }), 'authorization');
  });

  test('explicit zero freshness (max-age=0, an invalid Expires) is stored, to be revalidated', () => {
    assert.equal(storable({ 'cache-control': 'max-age=0', etag: '"a"' }), undefined);
    assert.equal(storable({ expires: '0' }), undefined);
  });

  test('unknown response directives do not prevent storing', () => {
    assert.equal(storable({ 'cache-control': 'max-age=60, x-unknown, foo="bar"' }), undefined);
  });
});

describe('freshnessLifetime (§4.2.1)', () => {
  test('s-maxage over max-age over Expires', () => {
    const expires = httpDate(NOW + 300_000);
    assert.equal(lifetime({ 'cache-control': 's-maxage=100, max-age=10', expires }), 100_000);
    assert.equal(lifetime({ 'cache-control': 'max-age=10', expires }), 10_000);
    assert.equal(lifetime({ expires }), 300_000);
  });

  test('Expires is measured from Date; an invalid or past Expires is 0', () => {
    assert.equal(lifetime({ expires: httpDate(NOW + 60_000), date: httpDate(NOW - 30_000) }), 90_000);
    assert.equal(lifetime({ expires: 'not a date' }), 0);
    assert.equal(lifetime({ expires: httpDate(NOW - 60_000) }), 0);
  });

  test('heuristic: 10 % of Date − Last-Modified, capped at one day, only when enabled', () => {
    const on = { ...DEFAULTS, heuristic: true };
    assert.equal(lifetime({ 'last-modified': httpDate(NOW - 1_000_000) }, 200, on), 100_000);
    assert.equal(lifetime({ 'last-modified': httpDate(NOW - 100 * 86_400_000) }, 200, on), 86_400_000);
    assert.equal(lifetime({ 'last-modified': httpDate(NOW - 1_000_000) }, 200, DEFAULTS), 0);
    assert.equal(lifetime({ 'last-modified': httpDate(NOW - 1_000_000) }, 302, on), 0);
    // A Last-Modified in the future gives nothing.
    assert.equal(lifetime({ 'last-modified': httpDate(NOW + 1_000_000) }, 200, on), 0);
  });

  test('default_ttl when nothing else applies; never over explicit freshness', () => {
    const ttl = { ...DEFAULTS, defaultTtl: 42_000 };
    assert.equal(lifetime({}, 200, ttl), 42_000);
    assert.equal(lifetime({ 'cache-control': 'max-age=5' }, 200, ttl), 5_000);
    assert.equal(lifetime({ 'cache-control': 'max-age=0' }, 200, ttl), 0);
  });
});

describe('currentAge (§4.2.3)', () => {
  test('a response received at once with no Age is 0 s old, then ages with the clock', () => {
    const e = entry({});
    assert.equal(currentAge(e, NOW), 0);
    assert.equal(currentAge(e, NOW + 5_000), 5_000);
  });

  test('the Age field counts: Age: 10 makes the stored response at least 10 s old', () => {
    assert.equal(currentAge(entry({ age: '10' }), NOW), 10_000);
    assert.equal(currentAge(entry({ age: '10' }), NOW + 2_000), 12_000);
  });

  test('response_delay is added to the Age value (corrected_age_value)', () => {
    const e = entry({ age: '10' }, 200, { requestTime: NOW - 3_000, responseTime: NOW });
    assert.equal(currentAge(e, NOW), 13_000);
  });

  test('apparent_age (response_time − Date) counts when it exceeds the corrected Age', () => {
    const e = entry({ date: httpDate(NOW - 20_000), age: '5' });
    assert.equal(currentAge(e, NOW), 20_000);
    // A Date in the future (clock skew) gives no negative age.
    assert.equal(currentAge(entry({ date: httpDate(NOW + 60_000) }), NOW), 0);
  });

  test('an invalid Age field is ignored', () => {
    assert.equal(currentAge(entry({ age: 'ten' }), NOW), 0);
    assert.equal(currentAge(entry({ age: '-5' }), NOW), 0);
  });

  test('ageOf (from the facts made at store time) equals currentAge for any Age, Date, delay and clock', () => {
    fc.assert(
      fc.property(
        fc.option(fc.integer({ min: 0, max: 100_000 })),
        fc.option(fc.integer({ min: -100_000, max: 100_000 })),
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer({ min: -5_000, max: 1_000_000 }),
        (age, dateOffset, delay, later) => {
          const fields: Record<string, string> = {};
          if (age !== null) fields.age = String(age);
          if (dateOffset !== null) fields.date = httpDate(NOW + dateOffset * 1000);
          const e = entry(fields, 200, { requestTime: NOW - delay, responseTime: NOW });
          assert.equal(ageOf(entryFacts(e, DEFAULTS), NOW + later), currentAge(e, NOW + later));
        },
      ),
    );
  });
});

describe('usability (§4.2, §5.2.1, RFC 5861)', () => {
  const none = EMPTY_CACHE_CONTROL;
  const facts = (fields: Record<string, string>, options = DEFAULTS) => entryFacts(entry(fields), options);

  test('fresh while age < lifetime, then revalidate', () => {
    const f = facts({ 'cache-control': 'max-age=60' });
    assert.equal(usability(f, 59_000, none, false), 'fresh');
    assert.equal(usability(f, 60_000, none, false), 'revalidate');
  });

  test('response no-cache, with or without field names, always revalidates', () => {
    assert.equal(usability(facts({ 'cache-control': 'max-age=60, no-cache' }), 0, none, false), 'revalidate');
    assert.equal(usability(facts({ 'cache-control': 'max-age=60, no-cache="set-cookie"' }), 0, none, false), 'revalidate');
  });

  test('request no-cache, Pragma: no-cache, max-age and min-fresh', () => {
    const f = facts({ 'cache-control': 'max-age=60' });
    assert.equal(usability(f, 10_000, parseCacheControl('no-cache'), false), 'revalidate');
    assert.equal(usability(f, 10_000, none, true), 'revalidate');
    assert.equal(usability(f, 10_000, parseCacheControl('max-age=5'), false), 'revalidate');
    assert.equal(usability(f, 10_000, parseCacheControl('max-age=15'), false), 'fresh');
    assert.equal(usability(f, 10_000, parseCacheControl('min-fresh=55'), false), 'revalidate');
    assert.equal(usability(f, 10_000, parseCacheControl('min-fresh=45'), false), 'fresh');
  });

  test('Pragma: no-cache counts only as a token, and only when the request has no Cache-Control (RFC 9111 §5.4)', () => {
    assert.equal(pragmaNoCache(undefined, 'no-cache'), true);
    assert.equal(pragmaNoCache(undefined, 'x-foo, No-Cache'), true);
    assert.equal(pragmaNoCache(undefined, 'x-no-cache-please'), false);
    assert.equal(pragmaNoCache(undefined, undefined), false);
    assert.equal(pragmaNoCache('max-stale=60', 'no-cache'), false);
    assert.equal(pragmaNoCache('', 'no-cache'), false);
  });

  test('unknown request directives are ignored', () => {
    assert.equal(usability(facts({ 'cache-control': 'max-age=60' }), 10_000, parseCacheControl('x-foo, bar=1'), false), 'fresh');
  });

  test('request max-stale accepts a stale response within its bound', () => {
    const f = facts({ 'cache-control': 'max-age=60' });
    assert.equal(usability(f, 70_000, parseCacheControl('max-stale=20'), false), 'stale-ok');
    assert.equal(usability(f, 90_000, parseCacheControl('max-stale=20'), false), 'revalidate');
    assert.equal(usability(f, 10_000_000, parseCacheControl('max-stale'), false), 'stale-ok');
  });

  test('must-revalidate, proxy-revalidate and s-maxage: never stale, not even with max-stale', () => {
    for (const cc of ['max-age=60, must-revalidate', 'max-age=60, proxy-revalidate', 's-maxage=60', 's-maxage=60, stale-while-revalidate=100']) {
      const f = facts({ 'cache-control': cc });
      assert.equal(f.neverStale, true, cc);
      assert.equal(usability(f, 70_000, parseCacheControl('max-stale'), false), 'revalidate', cc);
      assert.equal(usability(f, 70_000, none, false), 'revalidate', cc);
    }
  });

  test('stale-while-revalidate: within the window serve and refresh, beyond it revalidate', () => {
    const f = facts({ 'cache-control': 'max-age=60, stale-while-revalidate=30' });
    assert.equal(usability(f, 80_000, none, false), 'stale-while-revalidate');
    assert.equal(usability(f, 91_000, none, false), 'revalidate');
  });
});

describe('mayServeStaleOnError (RFC 5861 §4)', () => {
  const facts = (cc: string) => entryFacts(entry({ 'cache-control': cc }), DEFAULTS);
  const none = EMPTY_CACHE_CONTROL;

  test('the response directive sets the window, else the request directive, else the configured one', () => {
    assert.equal(mayServeStaleOnError(facts('max-age=10, stale-if-error=30'), 35_000, none, 0), true);
    assert.equal(mayServeStaleOnError(facts('max-age=10, stale-if-error=30'), 45_000, none, 999_000), false);
    assert.equal(mayServeStaleOnError(facts('max-age=10'), 35_000, parseCacheControl('stale-if-error=30'), 0), true);
    assert.equal(mayServeStaleOnError(facts('max-age=10'), 35_000, none, 30_000), true);
    assert.equal(mayServeStaleOnError(facts('max-age=10'), 35_000, none, 0), false);
  });

  test('never where must-revalidate, proxy-revalidate, s-maxage or no-cache forbid serving stale', () => {
    for (const cc of ['max-age=10, must-revalidate', 'max-age=10, proxy-revalidate', 's-maxage=10', 'max-age=10, no-cache']) {
      assert.equal(mayServeStaleOnError(facts(`${cc}, stale-if-error=300`), 15_000, none, 300_000), false, cc);
    }
  });
});

describe('mayServeStaleWhenUnreachable (RFC 9111 §4.2.4, disconnected)', () => {
  const facts = (cc: string) => entryFacts(entry({ 'cache-control': cc }), DEFAULTS);
  const none = EMPTY_CACHE_CONTROL;

  test('within the window after going stale; 0 turns it off; the response stale-if-error does not widen it', () => {
    assert.equal(mayServeStaleWhenUnreachable(facts('max-age=10'), 70_000, none, false, 60_000), true);
    assert.equal(mayServeStaleWhenUnreachable(facts('max-age=10'), 70_001, none, false, 60_000), false);
    assert.equal(mayServeStaleWhenUnreachable(facts('max-age=10'), 11_000, none, false, 0), false);
    assert.equal(mayServeStaleWhenUnreachable(facts('max-age=10, stale-if-error=600'), 100_000, none, false, 60_000), false);
  });

  test('never where the response says must-revalidate, proxy-revalidate, s-maxage or no-cache', () => {
    for (const cc of ['max-age=10, must-revalidate', 'max-age=10, proxy-revalidate', 's-maxage=10', 'max-age=10, no-cache', 'max-age=10, no-cache="x"']) {
      assert.equal(mayServeStaleWhenUnreachable(facts(cc), 15_000, none, false, 60_000), false, cc);
    }
  });

  test('never where the request says no-cache, Pragma: no-cache, max-age=0 or min-fresh', () => {
    for (const cc of ['no-cache', 'max-age=0', 'min-fresh=1', 'min-fresh=0']) {
      assert.equal(mayServeStaleWhenUnreachable(facts('max-age=10'), 15_000, parseCacheControl(cc), false, 60_000), false, cc);
    }
    assert.equal(mayServeStaleWhenUnreachable(facts('max-age=10'), 15_000, none, true, 60_000), false, 'Pragma: no-cache');
    assert.equal(mayServeStaleWhenUnreachable(facts('max-age=10'), 15_000, parseCacheControl('max-age=5'), false, 60_000), true, 'max-age=5');
  });
});

describe('varyKey', () => {
  test('no Vary: the empty secondary key', () => {
    assert.equal(varyKey(undefined, {}), '');
    assert.equal(varyKey([], { 'accept-language': 'en' }), '');
  });

  test('each named field by value, whitespace-normalised; an absent field is empty', () => {
    const a = varyKey(['accept-language'], { 'accept-language': 'en' });
    const b = varyKey(['accept-language'], { 'accept-language': 'fr' });
    assert.notEqual(a, b);
    assert.equal(varyKey(['accept-language', 'x-a'], { 'accept-language': 'en,  fr' }), varyKey(['accept-language', 'x-a'], { 'accept-language': 'en, fr' }));
    assert.notEqual(varyKey(['x-a'], {}), varyKey(['x-a'], { 'x-a': '1' }));
  });

  test('Vary: * never matches', () => {
    assert.equal(varyKey(['*'], {}), undefined);
    assert.equal(varyKey(['accept', '*'], { accept: 'x' }), undefined);
  });

  test('Accept-Encoding is reduced to the encoding that would be chosen: br, gzip or identity', () => {
    const ae = (value: string | undefined) => varyKey(['accept-encoding'], { 'accept-encoding': value });
    assert.equal(ae('gzip, deflate, br'), ae('br'));
    assert.equal(ae('br;q=1.0, gzip;q=0.8'), ae('br'));
    assert.equal(ae('gzip'), ae('x-gzip, deflate'));
    assert.equal(ae('gzip, br;q=0'), ae('gzip'));
    assert.equal(ae('deflate'), ae(undefined));
    assert.equal(ae('br;q=0, gzip;q=0'), ae('identity'));
    assert.notEqual(ae('br'), ae('gzip'));
    assert.notEqual(ae('gzip'), ae('identity'));
  });
});

describe('Expires: only an HTTP-date, else already expired (RFC 9111 §5.3)', () => {
  const later = NOW + 3_600_000;
  const imf = httpDate(later);
  // Near misses of a later instant that a lenient parser (Date.parse) takes.
  const nearMisses = [
    'Wed, 01 May 2024 13:00:00 UTC',
    'Wed 01 May 2024 13:00:00 GMT',
    'Wed,  01 May 2024 13:00:00 GMT',
    'Wed, 01-May-2024 13:00:00 GMT',
    'Thu, 02 May 2024 9:00:00 GMT',
    '2024-05-01T13:00:00Z',
  ];

  test('a valid Expires an hour ahead gives an hour of freshness; in each obsolete form too', () => {
    assert.equal(lifetime({ expires: imf }), 3_600_000);
    assert.equal(lifetime({ expires: 'Wednesday, 01-May-24 13:00:00 GMT' }), 3_600_000);
    assert.equal(lifetime({ expires: 'Wed May  1 13:00:00 2024' }), 3_600_000);
  });

  test('UTC for GMT, a missing comma, doubled spaces, dashes, a one-digit hour: each is expired', () => {
    for (const expires of nearMisses) {
      assert.ok(Date.parse(expires) > NOW, `Date.parse takes ${expires} as a later instant`);
      assert.equal(lifetime({ expires }), 0, expires);
      assert.equal(usability(entryFacts(entry({ expires }), DEFAULTS), 0, EMPTY_CACHE_CONTROL, false), 'revalidate', expires);
    }
  });

  test('several Expires field lines are invalid: expired, even when each is a valid date', () => {
    const list = ['expires', imf, 'expires', imf, 'date', HTTP_NOW];
    assert.equal(freshnessLifetime(200, list, EMPTY_CACHE_CONTROL, NOW, DEFAULTS), 0);
    const e: StoredResponse = { ...entry({}), headers: list };
    assert.equal(usability(entryFacts(e, DEFAULTS), 0, EMPTY_CACHE_CONTROL, false), 'revalidate');
    // One line with two dates is the same list.
    assert.equal(lifetime({ expires: `${imf}, ${imf}` }), 0);
  });

  test('a Date that is not an HTTP-date is not used: the response time stands in', () => {
    assert.equal(lifetime({ expires: imf, date: imf.replace('GMT', 'UTC') }), 3_600_000);
  });
});

describe('Age: a list uses its first value (RFC 9111 §5.1)', () => {
  test('Age: 7200, 0 is 7200 s old, so max-age=3600 is stale', () => {
    const e = entry({ age: '7200, 0', 'cache-control': 'max-age=3600' });
    assert.equal(currentAge(e, NOW), 7_200_000);
    const facts = entryFacts(e, DEFAULTS);
    assert.equal(usability(facts, ageOf(facts, NOW), EMPTY_CACHE_CONTROL, false), 'revalidate');
  });

  test('several Age lines: the first one counts', () => {
    const e: StoredResponse = { ...entry({}), headers: ['age', '7200', 'age', '0', 'cache-control', 'max-age=3600', 'date', HTTP_NOW] };
    assert.equal(currentAge(e, NOW), 7_200_000);
    assert.equal(ageSeconds('0, 7200'), 0);
  });

  test('an invalid first member is ignored as a whole', () => {
    assert.equal(ageSeconds('x, 7200'), 0);
    assert.equal(ageSeconds(' 12 ,3'), 12);
  });
});

describe('targeted cache control (RFC 9213)', () => {
  const CDN = { ...DEFAULTS, targeted: ['cdn-cache-control', 'portico-cache-control'] };

  test('Portico-Cache-Control replaces Cache-Control: its max-age sets the lifetime', () => {
    const e = entry({ 'cache-control': 'max-age=10', 'portico-cache-control': 'max-age=600' });
    const facts = entryFacts(e, DEFAULTS);
    assert.equal(facts.lifetime, 600_000);
    assert.equal(facts.targeted, 'portico-cache-control');
    assert.equal(usability(facts, 300_000, EMPTY_CACHE_CONTROL, false), 'fresh');
  });

  test('CDN-Cache-Control counts only when listed', () => {
    const e = entry({ 'cache-control': 'max-age=10', 'cdn-cache-control': 'max-age=600' });
    assert.equal(entryFacts(e, DEFAULTS).lifetime, 10_000);
    assert.equal(entryFacts(e, CDN).lifetime, 600_000);
  });

  test('the first listed field that is present and valid wins', () => {
    const both = { 'cdn-cache-control': 'max-age=100', 'portico-cache-control': 'max-age=200' };
    assert.equal(entryFacts(entry(both), CDN).lifetime, 100_000);
    assert.equal(entryFacts(entry(both), { ...DEFAULTS, targeted: ['portico-cache-control', 'cdn-cache-control'] }).lifetime, 200_000);
    // An invalid first one is skipped for the next.
    assert.equal(entryFacts(entry({ ...both, 'cdn-cache-control': 'max-age=1, Private' }), CDN).lifetime, 200_000);
  });

  test('an invalid or empty targeted field is ignored: Cache-Control decides', () => {
    for (const value of ['max-age=600, Private', 'max-age=600,', 'max-age="600', '', 'max-age=600;;']) {
      const e = entry({ 'cache-control': 'max-age=10', 'portico-cache-control': value });
      assert.equal(entryFacts(e, DEFAULTS).lifetime, 10_000, value);
      assert.equal(entryFacts(e, DEFAULTS).targeted, undefined, value);
    }
  });

  test('private, no-store and no-cache in the targeted field count; Cache-Control public does not help', () => {
    assert.equal(storable({ 'cache-control': 'public, max-age=60', 'portico-cache-control': 'private, max-age=60' }), 'private');
    assert.equal(storable({ 'cache-control': 'public, max-age=60', 'portico-cache-control': 'no-store' }), 'no-store');
    const facts = entryFacts(entry({ 'cache-control': 'max-age=60', 'portico-cache-control': 'no-cache, max-age=60' }), DEFAULTS);
    assert.equal(usability(facts, 0, EMPTY_CACHE_CONTROL, false), 'revalidate');
  });

  test('a targeted field allows what Cache-Control forbids: Cache-Control no-store with Portico-Cache-Control max-age is stored', () => {
    assert.equal(storable({ 'cache-control': 'no-store', 'portico-cache-control': 'max-age=60' }), undefined);
    assert.equal(storable({ 'cache-control': 'no-store' }), 'no-store');
  });

  test('s-maxage in the targeted field sets the lifetime and forbids serving stale', () => {
    const facts = entryFacts(entry({ 'portico-cache-control': 's-maxage=30, max-age=5' }), DEFAULTS);
    assert.equal(facts.lifetime, 30_000);
    assert.equal(facts.neverStale, true);
  });

  test('with a targeted field in effect, Expires is ignored too', () => {
    const expires = httpDate(NOW + 3_600_000);
    assert.equal(storable({ expires, 'portico-cache-control': 'must-revalidate' }), 'no-freshness');
    assert.equal(entryFacts(entry({ expires, 'portico-cache-control': 'max-age=5' }), DEFAULTS).lifetime, 5_000);
  });

  test('Authorization (§3.5) is judged on the field in effect', () => {
    const auth = { hasAuthorization: true };
    assert.equal(storable({ 'cache-control': 'public, max-age=60', 'portico-cache-control': 'max-age=60' }, 200, {}, auth), 'authorization');
    assert.equal(storable({ 'cache-control': 'max-age=60', 'portico-cache-control': 'public, max-age=60' }, 200, {}, auth), undefined);
  });

  test('Set-Cookie and Vary rules stay as they are', () => {
    assert.equal(storable({ 'portico-cache-control': 'public, max-age=60', 'set-cookie': 'sid=1' }), 'set-cookie');
    assert.equal(storable({ 'portico-cache-control': 'max-age=60', vary: '*' }), 'vary-star');
  });

  test('a max-age that is not an Integer counts as 0; several lines of the field are one Dictionary', () => {
    assert.equal(entryFacts(entry({ 'portico-cache-control': 'max-age=6.5' }), DEFAULTS).lifetime, 0);
    assert.equal(entryFacts(entry({ 'portico-cache-control': 'max-age="60"' }), DEFAULTS).lifetime, 0);
    const e: StoredResponse = { ...entry({}), headers: ['portico-cache-control', 'max-age=60', 'portico-cache-control', 'private', 'date', HTTP_NOW] };
    assert.equal(notStorable(GET, 200, e.headers, DEFAULTS), 'private');
  });
});
