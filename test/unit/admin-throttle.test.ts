/**
 * The admin API's bounds on refused requests, with an injected clock: the audit lines of refused POSTs per peer per
 * second and their summary, and the wrong-token count that answers 429 for the rest of the minute.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FAILURE_WINDOW_MS, MAX_FAILURES, REFUSED_LINES_PER_SECOND, RefusalThrottle } from '../../src/control/admin-throttle.js';
import { onlyFields } from '../../src/control/admin-http.js';
import { routeAdmin } from '../../src/control/admin-routes.js';

test('refused audit lines: the first few per peer are written, the rest counted into one summary per peer', () => {
  const summaries: Array<[string, number]> = [];
  const throttle = new RefusalThrottle((peer, count) => summaries.push([peer, count]));
  const written = Array.from({ length: 100 }, () => throttle.auditRefused('10.0.0.1')).filter(Boolean).length;
  assert.equal(written, REFUSED_LINES_PER_SECOND);
  assert.equal(throttle.auditRefused('10.0.0.2'), true, 'another peer has its own count');
  throttle.stop();
  assert.deepEqual(summaries, [['10.0.0.1', 100 - REFUSED_LINES_PER_SECOND]]);
});

test(`wrong tokens: ${MAX_FAILURES} within a minute hold the peer back until the minute since its first is over`, () => {
  let now = 1_000_000;
  const throttle = new RefusalThrottle(() => {}, () => now);
  for (let i = 0; i < MAX_FAILURES - 1; i++) throttle.failed('10.0.0.1');
  assert.equal(throttle.retryAfter('10.0.0.1'), undefined);
  now += 20_000;
  throttle.failed('10.0.0.1');
  assert.equal(throttle.retryAfter('10.0.0.1'), (FAILURE_WINDOW_MS - 20_000) / 1000);
  assert.equal(throttle.retryAfter('10.0.0.2'), undefined);
  now += FAILURE_WINDOW_MS - 20_000;
  assert.equal(throttle.retryAfter('10.0.0.1'), undefined, 'free again once the minute is over');
  // Failures spread over more than a minute never add up.
  for (let i = 0; i < 3 * MAX_FAILURES; i++) {
    throttle.failed('10.0.0.3');
    now += 7_000;
  }
  assert.equal(throttle.retryAfter('10.0.0.3'), undefined);
  throttle.stop();
});

test('onlyFields refuses unknown fields naming the first 5 and counting the rest', () => {
  assert.doesNotThrow(() => onlyFields({ weight: 1 }, ['weight'], 'x'));
  assert.throws(() => onlyFields({ a: 1 }, [], 'a reload takes no fields'), { code: 'PORTICO_BAD_REQUEST', message: 'unknown field "a": a reload takes no fields' });
  const many = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`k${i}`, i]));
  assert.throws(() => onlyFields(many, [], 't'), { message: 'unknown fields "k0", "k1", "k2", "k3", "k4" and 3 more: t' });
});

test('routeAdmin: a bad percent-encoding is a 400, a good one routes', () => {
  for (const id of ['%ZZ', '%FF%FE', '%C0%AF', '%E0%80%AF', 'a%']) {
    const routed = routeAdmin('POST', `/upstreams/app/servers/${id}/drain`);
    assert.ok('status' in routed && routed.status === 400, id);
  }
  assert.deepEqual(routeAdmin('POST', '/upstreams/app/servers/app%231/drain'), { route: { kind: 'server', upstream: 'app', server: 'app#1', action: 'drain' }, method: 'POST' });
});
