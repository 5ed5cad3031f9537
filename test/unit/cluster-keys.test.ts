/**
 * The keys a cluster's boxes share (src/cluster/keys.ts): derived from the cluster secret per rotation epoch, the
 * same on every box, rotating with the clock (injected here); and an upstream's sticky cookie across a rotation.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { EpochKeys, epochKey, fixedKeyRing } from '../../src/cluster/keys.js';
import { upstreamSchema } from '../../src/config/schema.js';
import { ClusterKeys, STICKY_PERIOD_MS, TICKET_PERIOD_MS } from '../../src/server/cluster.js';
import { Upstream } from '../../src/upstream/upstream.js';
import type { PickContext } from '../../src/upstream/policies/types.js';
import { makeTree } from '../helpers/portico.js';

const SECRET = 'unit-cluster-secret-0123456789abcdef0123456789';
const PERIOD = 60_000;
const dir = makeTree();
const upstreams: Upstream[] = [];
after(async () => {
  for (const upstream of upstreams) await upstream.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A clock the test moves. */
function clock(start: number): { now: () => number; at: number } {
  const c = { at: start, now: () => c.at };
  return c;
}

describe('epoch keys', () => {
  test('two boxes with the same secret compute the same key for the same epoch; another secret or purpose gives another', () => {
    const t = clock(10 * PERIOD + 5);
    const a = new EpochKeys(SECRET, 'sticky', { periodMs: PERIOD, now: t.now });
    const b = new EpochKeys(SECRET, 'sticky', { periodMs: PERIOD, now: t.now });
    assert.equal(a.epoch, 10);
    assert.deepEqual(a.current, b.current);
    assert.deepEqual(a.current, epochKey(SECRET, 'sticky', 10));
    assert.notDeepEqual(a.current, new EpochKeys(`${SECRET}x`, 'sticky', { periodMs: PERIOD, now: t.now }).current);
    assert.notDeepEqual(a.current, new EpochKeys(SECRET, 'tickets', { periodMs: PERIOD, now: t.now }).current);
    assert.equal(new EpochKeys(SECRET, 'tickets', { periodMs: PERIOD, bytes: 48, now: t.now }).current.length, 48);
  });

  test('the key changes at each epoch and only then; the previous and next epochs\' keys are accepted beside it', () => {
    const t = clock(10 * PERIOD);
    const ring = new EpochKeys(SECRET, 'sticky', { periodMs: PERIOD, now: t.now });
    const rotations: number[] = [];
    ring.onRotate((r) => rotations.push(r.epoch));
    const first = ring.current;
    const generation = ring.generation;
    t.at = 11 * PERIOD - 1;
    assert.equal(ring.refresh(), false);
    assert.equal(ring.generation, generation);
    assert.deepEqual(ring.current, first);
    t.at = 11 * PERIOD;
    assert.equal(ring.refresh(), true);
    assert.notEqual(ring.generation, generation);
    assert.notDeepEqual(ring.current, first);
    assert.deepEqual(rotations, [11]);
    assert.deepEqual(ring.accepted, [epochKey(SECRET, 'sticky', 11), epochKey(SECRET, 'sticky', 10), epochKey(SECRET, 'sticky', 12)]);
  });

  test('a fixed ring (a configured secret, the state directory\'s key) never changes and its id does not show the key', () => {
    const key = Buffer.from('0123456789abcdef0123456789abcdef');
    const ring = fixedKeyRing(key);
    assert.deepEqual(ring.accepted, [key]);
    assert.equal(ring.generation, 0);
    assert.ok(!ring.id.includes(key.toString('base64')) && !ring.id.includes(key.toString('hex')));
    assert.equal(fixedKeyRing(Buffer.from(key)).id, ring.id);
  });

  test('start() rotates on a timer and stop() leaves none; the cluster\'s periods are 24 h (sticky) and 12 h (tickets)', async () => {
    const ring = new EpochKeys(SECRET, 'sticky', { periodMs: 1000 });
    const rotated = new Promise<number>((resolve) => ring.onRotate((r) => resolve(r.epoch)));
    const before = ring.epoch;
    ring.start();
    try {
      const epoch = await Promise.race([rotated, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no rotation within 3 s')), 3000))]);
      assert.ok(epoch > before);
    } finally {
      ring.stop();
    }
    const keys = new ClusterKeys(SECRET);
    assert.equal(keys.sticky.periodMs, STICKY_PERIOD_MS);
    assert.equal(keys.tickets.periodMs, TICKET_PERIOD_MS);
    assert.equal(STICKY_PERIOD_MS, 24 * 3600_000);
    assert.equal(TICKET_PERIOD_MS, 12 * 3600_000);
    assert.equal(keys.tickets.current.length, 48);
    keys.stop();
  });
});

describe('a sticky cookie across a rotation', () => {
  const pick: PickContext = { clientIp: '127.0.0.1', hashKey: '', random: () => 0 };
  const config = upstreamSchema.parse({ servers: ['http://127.0.0.1:9', 'http://127.0.0.1:10', 'http://127.0.0.1:11'], sticky: { cookie: 'pin' } }) as Upstream['config'];

  function upstreamOn(ring: EpochKeys): Upstream {
    const upstream = new Upstream('app', config, dir, pino({ level: 'silent' }), ring);
    upstreams.push(upstream);
    return upstream;
  }

  test('a cookie signed in the previous epoch still pins its server and is signed again under the new key; two epochs old, it no longer pins', () => {
    const t = clock(100 * PERIOD);
    const ring = new EpochKeys(SECRET, 'sticky', { periodMs: PERIOD, now: t.now });
    const upstream = upstreamOn(ring);
    const server = upstream.servers[2]!;
    const old = upstream.stickyId(server);
    assert.equal(upstream.stickyCookie(server, old), undefined, 'the current value is not set again');
    for (let i = 0; i < 3; i++) assert.equal(upstream.select(undefined, pick, old), server);
    t.at += PERIOD;
    ring.refresh();
    const fresh = upstream.stickyId(server);
    assert.notEqual(fresh, old);
    for (let i = 0; i < 3; i++) assert.equal(upstream.select(undefined, pick, old), server, 'the previous epoch\'s value pins');
    assert.equal(upstream.stickyCookie(server, old), `pin=${fresh}; Path=/; HttpOnly; SameSite=Lax`);
    assert.equal(upstream.stickyCookieUnforwarded(pick, old), `pin=${fresh}; Path=/; HttpOnly; SameSite=Lax`);
    t.at += PERIOD;
    ring.refresh();
    const seen = new Set<number>();
    for (let i = 0; i < 6; i++) {
      const chosen = upstream.select(undefined, pick, old);
      assert.notEqual(typeof chosen, 'string');
      seen.add((chosen as { id: number }).id);
    }
    assert.ok(seen.size > 1, 'a value two epochs old is no pin: the policy spreads its requests');
  });

  test('a box whose clock is an epoch ahead signs with a key the others accept; two upstreams on two boxes name a server alike', () => {
    const t1 = clock(100 * PERIOD);
    const t2 = clock(101 * PERIOD + 10);
    const box1 = upstreamOn(new EpochKeys(SECRET, 'sticky', { periodMs: PERIOD, now: t1.now }));
    const box2 = upstreamOn(new EpochKeys(SECRET, 'sticky', { periodMs: PERIOD, now: t2.now }));
    const ahead = box2.stickyId(box2.servers[1]!);
    for (let i = 0; i < 3; i++) assert.equal(box1.select(undefined, pick, ahead), box1.servers[1]);
    t2.at = 100 * PERIOD;
    const same = upstreamOn(new EpochKeys(SECRET, 'sticky', { periodMs: PERIOD, now: t2.now }));
    assert.equal(same.stickyId(same.servers[0]!), box1.stickyId(box1.servers[0]!));
  });

  test('a configured sticky.secret wins over the cluster\'s rotating key', () => {
    const t = clock(100 * PERIOD);
    const ring = new EpochKeys(SECRET, 'sticky', { periodMs: PERIOD, now: t.now });
    const withSecret = upstreamSchema.parse({ servers: ['http://127.0.0.1:9'], sticky: { cookie: 'pin', secret: 'a-configured-secret-of-16+' } }) as Upstream['config'];
    const upstream = new Upstream('app', withSecret, dir, pino({ level: 'silent' }), ring);
    upstreams.push(upstream);
    const plain = new Upstream('app', withSecret, dir, pino({ level: 'silent' }));
    upstreams.push(plain);
    const value = upstream.stickyId(upstream.servers[0]!);
    assert.equal(value, plain.stickyId(plain.servers[0]!));
    t.at += 5 * PERIOD;
    ring.refresh();
    assert.equal(upstream.stickyId(upstream.servers[0]!), value);
  });
});
