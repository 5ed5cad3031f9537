/** The keyed once-promise: one run per key for concurrent callers, kept once it succeeded, forgotten when it failed. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KeyedOnce } from '../../src/http/keyed-once.js';

describe('KeyedOnce', () => {
  test('concurrent callers of one key share one run; another key gets its own', async () => {
    const once = new KeyedOnce<number>();
    let runs = 0;
    let finish!: (value: number) => void;
    const make = () => {
      runs++;
      return new Promise<number>((resolve) => (finish = resolve));
    };
    const callers = [once.get('a', make), once.get('a', make), once.get('a', make)];
    assert.equal(runs, 1);
    finish(7);
    assert.deepEqual(await Promise.all(callers), [7, 7, 7]);
    assert.equal(await once.get('a', make), 7, 'a later caller gets the result, with no new run');
    assert.equal(runs, 1);
    const other = once.get('b', make);
    assert.equal(runs, 2);
    finish(8);
    assert.equal(await other, 8);
  });

  test('a failed run is forgotten: its callers all see the failure, the next caller starts a new run', async () => {
    const once = new KeyedOnce<string>();
    let runs = 0;
    const failing = () => (runs++, Promise.reject(new Error('the CA is down')));
    const both = [once.get('k', failing), once.get('k', failing)];
    for (const caller of both) await assert.rejects(caller, /the CA is down/);
    assert.equal(runs, 1);
    assert.equal(once.has('k'), false);
    assert.equal(await once.get('k', () => (runs++, Promise.resolve('ok'))), 'ok');
    assert.equal(runs, 2);
  });
});
