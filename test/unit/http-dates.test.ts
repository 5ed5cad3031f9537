/**
 * HTTP-date (RFC 9110 §5.6.7), read strictly: IMF-fixdate and the two obsolete forms are dates; the near misses
 * that a lenient parser (Date.parse) takes are not.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parseHttpDate } from '../../src/http/dates.js';
import { evaluatePreconditions, validatorsOf } from '../../src/http/conditional.js';

const NOV_6_1994 = Date.UTC(1994, 10, 6, 8, 49, 37);
const NOW = Date.UTC(2024, 4, 1, 12, 0, 0);

describe('parseHttpDate (strict HTTP-date)', () => {
  test('IMF-fixdate, rfc850-date and asctime-date are dates, and name the same instant', () => {
    assert.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT', NOW), NOV_6_1994);
    assert.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', NOW), NOV_6_1994);
    assert.equal(parseHttpDate('Sun Nov  6 08:49:37 1994', NOW), NOV_6_1994);
    assert.equal(parseHttpDate('Sun Nov 16 08:49:37 1994', NOW), Date.UTC(1994, 10, 16, 8, 49, 37));
  });

  test('near misses that Date.parse accepts are not dates: UTC, no comma, doubled spaces, dashes, one-digit hour or day', () => {
    for (const text of [
      'Sun, 06 Nov 1994 08:49:37 UTC',
      'Sun 06 Nov 1994 08:49:37 GMT',
      'Sun,  06 Nov 1994 08:49:37 GMT',
      'Sun, 06  Nov 1994 08:49:37 GMT',
      'Sun, 06-Nov-1994 08:49:37 GMT',
      'Sun, 06 Nov 1994 8:49:37 GMT',
      'Sun, 6 Nov 1994 08:49:37 GMT',
      'Sun, 06 Nov 1994 08:49:37 +0000',
      'Sun, 06 Nov 1994 08:49:37',
      'sun, 06 nov 1994 08:49:37 gmt',
      '1994-11-06T08:49:37Z',
      '0',
      '',
      'Sun, 06 Nov 94 08:49:37 GMT',
      'Sunday, 06-Nov-1994 08:49:37 GMT',
      'Sun Nov 06 08:49:37 1994 GMT',
    ]) {
      assert.ok(Number.isNaN(parseHttpDate(text, NOW)), `${JSON.stringify(text)} is not an HTTP-date`);
    }
  });

  test('several dates (field lines joined with ", ") are not a date', () => {
    const one = 'Sun, 06 Nov 1994 08:49:37 GMT';
    assert.ok(Number.isNaN(parseHttpDate(`${one}, ${one}`, NOW)));
  });

  test('impossible fields are not dates: 31 Feb, hour 24, minute 60, 29 Feb of a common year', () => {
    assert.ok(Number.isNaN(parseHttpDate('Sat, 31 Feb 2024 00:00:00 GMT', NOW)));
    assert.ok(Number.isNaN(parseHttpDate('Sun, 06 Nov 1994 24:00:00 GMT', NOW)));
    assert.ok(Number.isNaN(parseHttpDate('Sun, 06 Nov 1994 08:60:00 GMT', NOW)));
    assert.ok(Number.isNaN(parseHttpDate('Thu, 29 Feb 2023 00:00:00 GMT', NOW)));
    assert.equal(parseHttpDate('Thu, 29 Feb 2024 00:00:00 GMT', NOW), Date.UTC(2024, 1, 29));
  });

  test('rfc850-date: a two-digit year more than 50 years ahead is the most recent past one', () => {
    assert.equal(parseHttpDate('Wednesday, 01-Jan-30 00:00:00 GMT', NOW), Date.UTC(2030, 0, 1));
    assert.equal(parseHttpDate('Friday, 01-Jan-99 00:00:00 GMT', NOW), Date.UTC(1999, 0, 1));
  });

  test('optional whitespace around the value is allowed', () => {
    assert.equal(parseHttpDate(' Sun, 06 Nov 1994 08:49:37 GMT\t', NOW), NOV_6_1994);
  });

  test('every instant round-trips through toUTCString (IMF-fixdate)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 253_402_300_799 }), (seconds) => {
        assert.equal(parseHttpDate(new Date(seconds * 1000).toUTCString(), NOW), seconds * 1000);
      }),
    );
  });
});

describe('request dates are read strictly (If-Modified-Since, If-Unmodified-Since)', () => {
  test('an If-Modified-Since that is not an HTTP-date is ignored', () => {
    const v = validatorsOf(undefined, 'Sun, 06 Nov 1994 08:49:37 GMT');
    assert.equal(evaluatePreconditions({ 'if-modified-since': 'Sun, 06 Nov 1994 08:49:37 GMT' }, v, true), 304);
    assert.equal(evaluatePreconditions({ 'if-modified-since': 'Sun, 06 Nov 1994 8:49:37 GMT' }, v, true), 200);
    assert.equal(evaluatePreconditions({ 'if-modified-since': 'Sun 06 Nov 1994 08:49:37 GMT' }, v, true), 200);
  });
});
