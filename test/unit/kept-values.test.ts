/** Values kept across reloads (server/kept.ts): same key, same value; a dropped one is disposed of when told. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KeptValues } from '../../src/server/kept.js';

describe('kept values', () => {
  test('a key asked for again by the next plan gets the same value; a key no longer asked for is disposed of when the commit\'s disposal runs', async () => {
    const kept = new KeptValues();
    const disposed: string[] = [];
    const first = kept.plan();
    const a = first.keep('a', () => ({ name: 'a' }), (v) => void disposed.push(v.name));
    first.keep('b', () => ({ name: 'b' }), (v) => void disposed.push(v.name));
    first.commit();
    const second = kept.plan();
    assert.equal(second.keep('a', () => ({ name: 'a2' })), a);
    const dispose = second.commit();
    assert.deepEqual(disposed, [], 'nothing is disposed of before the previous config has drained');
    await dispose();
    assert.deepEqual(disposed, ['b']);
    await kept.stop();
    assert.deepEqual(disposed, ['b', 'a']);
  });

  test('a plan discarded (a failed reload) disposes of what it made and leaves the kept values as they were', async () => {
    const kept = new KeptValues();
    const disposed: string[] = [];
    const first = kept.plan();
    const a = first.keep('a', () => 'a', (v) => void disposed.push(v));
    first.commit();
    const failed = kept.plan();
    failed.keep('a', () => 'a2', (v) => void disposed.push(v));
    failed.keep('c', () => 'c', (v) => void disposed.push(v));
    await failed.discard();
    assert.deepEqual(disposed, ['c']);
    assert.equal(kept.plan().keep('a', () => 'other'), a);
  });
});
