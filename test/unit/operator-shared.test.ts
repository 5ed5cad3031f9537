/**
 * The pure rules of the operator's actions across a cluster (src/server/operator-shared.ts): which of a server's
 * two states wins at a re-sync (the newest stamp), which kept purges a box applies when it comes back, and the
 * stamps kept in servers.json.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import pino from 'pino';
import { missedPurges, PURGE_KEEP_MS, reconcileServer, type SharedPurge } from '../../src/server/operator-shared.js';
import { ServerOverrides, SERVERS_FILE } from '../../src/server/operator.js';
import { StateDir } from '../../src/tls/state-dir.js';

describe('reconcileServer: the newest change of a server wins', () => {
  test('Redis newer: take it; this box newer (made while Redis was away): push it; the same: keep', () => {
    assert.equal(reconcileServer(100, true, { at: 200 }), 'take');
    assert.equal(reconcileServer(0, true, { at: 1 }), 'take', 'an unstamped override (from before the cluster) loses to anything Redis has');
    assert.equal(reconcileServer(300, false, { at: 200 }), 'push', 'an enable made while away beats an older drain');
    assert.equal(reconcileServer(200, true, { at: 200 }), 'keep');
  });

  test('Redis has nothing (restarted empty, or never told): push what this box has, stamped or not; nothing to push: keep', () => {
    assert.equal(reconcileServer(0, true, undefined), 'push');
    assert.equal(reconcileServer(150, false, undefined), 'push');
    assert.equal(reconcileServer(0, false, undefined), 'keep');
  });
});

/** Purges as Redis lists them: newest first, stamped `ats` (given oldest first). */
function kept(...ats: number[]): SharedPurge[] {
  return ats.map((at) => ({ id: `p${at}`, zone: 'z', target: { url: `http://a.example/${at}` }, at })).reverse();
}

describe('missedPurges: what a box applies when it (re)connects', () => {
  const none = new Set<string>();

  test('a box never synced (no purges.json) applies every purge kept, oldest first, and has applied up to now after', () => {
    const result = missedPurges(kept(10, 20, 30), 0, none, 1000, false);
    assert.equal(result.gap, false);
    assert.deepEqual(result.apply.map((p) => p.at), [10, 20, 30]);
    assert.equal(result.until, 999);
  });

  test('a box synced up to 20 applies the later ones it has not seen live', () => {
    const result = missedPurges(kept(10, 20, 30, 40), 20, new Set(['p40']), 1000, false);
    assert.deepEqual(result.apply.map((p) => p.at), [30]);
    assert.equal(result.gap, false);
  });

  test('a full list whose oldest is after what the box applied: purges were dropped that it missed (gap: it empties its zones)', () => {
    const result = missedPurges(kept(30, 40), 20, none, 1000, true);
    assert.equal(result.gap, true);
    assert.deepEqual(result.apply, []);
    assert.equal(missedPurges(kept(30, 40), 20, none, 1000, false).gap, false, 'a list not at its cap holds every purge since');
    assert.equal(missedPurges(kept(10, 40), 20, none, 1000, true).gap, false, 'the list reaches back past what it applied');
  });

  test('an empty list: a gap only for a box away longer than purges are kept', () => {
    const now = 10 * PURGE_KEEP_MS;
    assert.equal(missedPurges([], now - PURGE_KEEP_MS - 1, none, now, false).gap, true);
    assert.equal(missedPurges([], now - 1000, none, now, false).gap, false);
    assert.equal(missedPurges([], 0, none, now, false).gap, false);
  });

  test('until never goes back, and covers the newest purge even when stamped past now (a stamp after its predecessor)', () => {
    assert.equal(missedPurges(kept(10), 500, none, 100, false).until, 500);
    assert.equal(missedPurges(kept(10, 2000), 0, none, 1000, false).until, 2000);
  });
});

describe('servers.json stamps', () => {
  test('a stamped change (enable included) is written with its stamp and read back; an unstamped one reads as 0', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'portico-stamps-'));
    try {
      const state = StateDir.open(dir, pino({ level: 'silent' }));
      const first = new ServerOverrides(pino({ level: 'silent' }));
      first.load(state);
      await first.set('app', 'a', { admin: 'draining' }, 1000);
      await first.set('app', 'a', undefined, 2000);
      await first.set('app', 'b', { admin: 'disabled' });
      const file = JSON.parse(readFileSync(path.join(dir, SERVERS_FILE), 'utf8'));
      assert.deepEqual(file, { upstreams: { app: { b: { admin: 'disabled' } } }, stamps: { app: { a: 2000 } } });
      const second = new ServerOverrides(pino({ level: 'silent' }));
      second.load(state);
      assert.equal(second.get('app', 'a'), undefined);
      assert.equal(second.stamp('app', 'a'), 2000, 'the enable keeps its stamp: it beats an older drain at a re-sync');
      assert.equal(second.stamp('app', 'b'), 0);
      assert.deepEqual(second.stamped(), [['app', 'a', 2000]]);
      state.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
