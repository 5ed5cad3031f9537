import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { evaluatePreconditions, ifRangeAllows, parseETagList, parseHttpDate, validatorsOf, type Validators } from '../../src/http/conditional.js';

const LM = Date.UTC(2024, 0, 15, 12, 0, 0);
const v: Validators = { etag: '"abc-10"', lastModifiedMs: LM };
const date = (ms: number) => new Date(ms).toUTCString();

describe('evaluatePreconditions', () => {
  test('If-None-Match matching the ETag gives 304 on GET/HEAD', () => {
    assert.equal(evaluatePreconditions({ 'if-none-match': '"abc-10"' }, v, true), 304);
    assert.equal(evaluatePreconditions({ 'if-none-match': '"x", "abc-10"' }, v, true), 304);
    assert.equal(evaluatePreconditions({ 'if-none-match': '*' }, v, true), 304);
  });

  test('If-None-Match uses the weak comparison: W/"abc-10" matches', () => {
    assert.equal(evaluatePreconditions({ 'if-none-match': 'W/"abc-10"' }, v, true), 304);
  });

  test('If-None-Match not matching gives 200, and If-Modified-Since is then ignored', () => {
    assert.equal(evaluatePreconditions({ 'if-none-match': '"other"' }, v, true), 200);
    assert.equal(evaluatePreconditions({ 'if-none-match': '"other"', 'if-modified-since': date(LM + 60_000) }, v, true), 200);
  });

  test('If-None-Match matching on an unsafe method gives 412', () => {
    assert.equal(evaluatePreconditions({ 'if-none-match': '*' }, v, false), 412);
  });

  test('If-Modified-Since at or after Last-Modified gives 304; before gives 200', () => {
    assert.equal(evaluatePreconditions({ 'if-modified-since': date(LM) }, v, true), 304);
    assert.equal(evaluatePreconditions({ 'if-modified-since': date(LM + 1000) }, v, true), 304);
    assert.equal(evaluatePreconditions({ 'if-modified-since': date(LM - 1000) }, v, true), 200);
  });

  test('an invalid or zone-less If-Modified-Since is ignored', () => {
    assert.equal(evaluatePreconditions({ 'if-modified-since': 'yesterday' }, v, true), 200);
    assert.equal(evaluatePreconditions({ 'if-modified-since': '2099-01-01T00:00:00' }, v, true), 200);
  });

  test('If-Match: strong match or * passes; mismatch or a weak tag gives 412', () => {
    assert.equal(evaluatePreconditions({ 'if-match': '"abc-10"' }, v, true), 200);
    assert.equal(evaluatePreconditions({ 'if-match': '*' }, v, true), 200);
    assert.equal(evaluatePreconditions({ 'if-match': '"nope"' }, v, true), 412);
    assert.equal(evaluatePreconditions({ 'if-match': 'W/"abc-10"' }, v, true), 412);
  });

  test('If-Unmodified-Since before Last-Modified gives 412; at or after passes', () => {
    assert.equal(evaluatePreconditions({ 'if-unmodified-since': date(LM - 1000) }, v, true), 412);
    assert.equal(evaluatePreconditions({ 'if-unmodified-since': date(LM) }, v, true), 200);
  });

  test('If-Unmodified-Since is ignored when If-Match is present', () => {
    assert.equal(evaluatePreconditions({ 'if-match': '"abc-10"', 'if-unmodified-since': date(LM - 1000) }, v, true), 200);
  });

  test('a failed If-Match wins over a matching If-None-Match (412 before 304)', () => {
    assert.equal(evaluatePreconditions({ 'if-match': '"nope"', 'if-none-match': '"abc-10"' }, v, true), 412);
  });
});

describe('ifRangeAllows', () => {
  test('no If-Range: the Range applies', () => {
    assert.equal(ifRangeAllows(undefined, v), true);
  });

  test('an identical strong ETag applies the Range; another or a weak one does not', () => {
    assert.equal(ifRangeAllows('"abc-10"', v), true);
    assert.equal(ifRangeAllows('"abc-11"', v), false);
    assert.equal(ifRangeAllows('W/"abc-10"', v), false);
  });

  test('a date applies the Range only when exactly equal to Last-Modified', () => {
    assert.equal(ifRangeAllows(date(LM), v), true);
    assert.equal(ifRangeAllows(date(LM + 1000), v), false);
    assert.equal(ifRangeAllows('garbage', v), false);
  });
});

describe('parsing helpers', () => {
  test('parseETagList splits strong, weak and * tags', () => {
    assert.deepEqual(parseETagList('"a", W/"b" ,*, "c,d"'), ['"a"', 'W/"b"', '*', '"c,d"']);
  });

  test('parseHttpDate reads IMF-fixdate and rejects dates without GMT', () => {
    assert.equal(parseHttpDate('Mon, 15 Jan 2024 12:00:00 GMT'), LM);
    assert.ok(Number.isNaN(parseHttpDate('Mon, 15 Jan 2024 12:00:00 +0100')));
  });
});

describe('validatorsOf (stored responses)', () => {
  test('a stored Last-Modified in a zone other than GMT still answers If-Modified-Since with 304, as before the refactor', () => {
    const v = validatorsOf(undefined, 'Wed, 21 Oct 2015 07:28:00 -0000');
    assert.equal(evaluatePreconditions({ 'if-modified-since': 'Wed, 21 Oct 2015 07:28:00 GMT' }, v, true), 304);
  });

  test('no ETag: a listed tag never matches, * does; no Last-Modified: date conditions are ignored', () => {
    const v = validatorsOf(undefined, undefined);
    assert.equal(evaluatePreconditions({ 'if-none-match': '""' }, v, true), 200);
    assert.equal(evaluatePreconditions({ 'if-none-match': '*' }, v, true), 304);
    assert.equal(evaluatePreconditions({ 'if-unmodified-since': 'Wed, 21 Oct 2015 07:28:00 GMT' }, v, true), 200);
    assert.equal(ifRangeAllows('"x"', v), false);
  });
});
