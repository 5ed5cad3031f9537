/** The pure parts of ACME: when a certificate is renewed, and which http-01 paths are answered. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { renewalTime } from '../../src/tls/acme.js';
import { CHALLENGE_PREFIX, Http01Challenges } from '../../src/tls/challenges.js';

const DAY = 86_400_000;

describe('renewalTime', () => {
  test('a third of the lifetime before expiry: day 60 of a 90-day certificate, day 4 of a 6-day one', () => {
    assert.equal(renewalTime(0, 90 * DAY), 60 * DAY);
    const start = Date.UTC(2026, 0, 1);
    assert.equal(renewalTime(start, start + 6 * DAY), start + 4 * DAY);
  });
});

describe('Http01Challenges', () => {
  test('only a pending token under /.well-known/acme-challenge/ is answered, until it is removed', () => {
    const challenges = new Http01Challenges();
    challenges.set('tok-1', 'tok-1.thumbprint');
    assert.equal(challenges.answer(`${CHALLENGE_PREFIX}tok-1`), 'tok-1.thumbprint');
    assert.equal(challenges.answer(`${CHALLENGE_PREFIX}tok-2`), undefined);
    assert.equal(challenges.answer('/tok-1'), undefined);
    assert.equal(challenges.answer(`/x${CHALLENGE_PREFIX}tok-1`), undefined);
    assert.equal(challenges.answer(`${CHALLENGE_PREFIX}tok-1/more`), undefined);
    challenges.delete('tok-1');
    assert.equal(challenges.answer(`${CHALLENGE_PREFIX}tok-1`), undefined);
    assert.equal(challenges.size, 0);
  });
});
