/** The access log's number formatting: nginx writes times as seconds with exactly three decimals. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { seconds } from '../../src/log/access.js';

test('seconds: milliseconds become s.mmm with three decimals, unreached times become -', () => {
  assert.equal(seconds(0), '0.000');
  assert.equal(seconds(7), '0.007');
  assert.equal(seconds(42), '0.042');
  assert.equal(seconds(999), '0.999');
  assert.equal(seconds(1000), '1.000');
  assert.equal(seconds(61234), '61.234');
  assert.equal(seconds(1.6), '0.002');
  assert.equal(seconds(-1), '-');
});

test('seconds: agrees with (ms / 1000).toFixed(3) for whole milliseconds', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1e9 }), (ms) => {
      assert.equal(seconds(ms), (ms / 1000).toFixed(3));
    }),
  );
});
