import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parseRange } from '../../src/http/range.js';

const ranges = (...pairs: Array<[number, number]>) => ({ kind: 'ranges', ranges: pairs.map(([start, end]) => ({ start, end })) });

describe('parseRange', () => {
  test('a closed range, an open range and a suffix range', () => {
    assert.deepEqual(parseRange('bytes=0-4', 10, 16), ranges([0, 4]));
    assert.deepEqual(parseRange('bytes=5-', 10, 16), ranges([5, 9]));
    assert.deepEqual(parseRange('bytes=-3', 10, 16), ranges([7, 9]));
  });

  test('an end past the file and a suffix longer than the file are clamped', () => {
    assert.deepEqual(parseRange('bytes=8-100', 10, 16), ranges([8, 9]));
    assert.deepEqual(parseRange('bytes=-100', 10, 16), ranges([0, 9]));
  });

  test('the unit is case-insensitive and spaces around ranges are allowed', () => {
    assert.deepEqual(parseRange('Bytes=0-1, 4-5', 10, 16), ranges([0, 1], [4, 5]));
  });

  test('a start at or past the end, or a zero-length suffix, is unsatisfiable', () => {
    assert.deepEqual(parseRange('bytes=10-', 10, 16), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=20-30', 10, 16), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=-0', 10, 16), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=0-', 0, 16), { kind: 'unsatisfiable' });
  });

  test('unsatisfiable ranges among satisfiable ones are dropped', () => {
    assert.deepEqual(parseRange('bytes=50-60,0-1', 10, 16), ranges([0, 1]));
  });

  test('another unit, malformed specs and a reversed range make the header ignored', () => {
    for (const header of ['items=0-1', 'bytes', 'bytes=a-b', 'bytes=-', 'bytes=1-2-3', 'bytes=5-2', 'bytes=0x1-2', 'bytes=+1-2']) {
      assert.deepEqual(parseRange(header, 10, 16), { kind: 'ignore' }, header);
    }
  });

  test('more ranges than max_ranges make the header ignored (whole file)', () => {
    const header = 'bytes=' + Array.from({ length: 17 }, (_, i) => `${i * 2}-${i * 2}`).join(',');
    assert.deepEqual(parseRange(header, 100, 16), { kind: 'ignore' });
    assert.equal(parseRange(header, 100, 17).kind, 'ranges');
  });

  test('overlapping ranges asking for more bytes than the file holds make the header ignored', () => {
    assert.deepEqual(parseRange('bytes=0-9,0-9', 10, 16), { kind: 'ignore' });
    assert.deepEqual(parseRange('bytes=0-5,1-6', 10, 16), { kind: 'ignore' });
  });

  test('overlapping and adjacent ranges are coalesced in ascending order', () => {
    assert.deepEqual(parseRange('bytes=6-7,0-1', 100, 16), ranges([0, 1], [6, 7]));
    assert.deepEqual(parseRange('bytes=0-1,2-3', 100, 16), ranges([0, 3]));
    assert.deepEqual(parseRange('bytes=0-4,3-6,20-21', 100, 16), ranges([0, 6], [20, 21]));
  });

  test('property: ranges returned lie inside the file, ascending, disjoint and not adjacent', () => {
    const spec = fc.oneof(
      fc.tuple(fc.nat(200), fc.nat(200)).map(([a, b]) => `${a}-${a + b}`),
      fc.nat(200).map((a) => `${a}-`),
      fc.nat(200).map((n) => `-${n}`),
    );
    fc.assert(
      fc.property(fc.array(spec, { minLength: 1, maxLength: 20 }), fc.nat(300), fc.integer({ min: 1, max: 20 }), (specs, size, max) => {
        const decision = parseRange('bytes=' + specs.join(','), size, max);
        if (specs.length > max) assert.equal(decision.kind, 'ignore');
        if (decision.kind !== 'ranges') return;
        let previousEnd = -2;
        let total = 0;
        for (const { start, end } of decision.ranges) {
          assert.ok(start >= 0 && end < size && start <= end);
          assert.ok(start > previousEnd + 1, 'disjoint and not adjacent');
          previousEnd = end;
          total += end - start + 1;
        }
        assert.ok(total <= size);
        assert.ok(decision.ranges.length <= max);
      }),
      { numRuns: 2000 },
    );
  });
});
