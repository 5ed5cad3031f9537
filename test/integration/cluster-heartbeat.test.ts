/**
 * The heartbeat (src/cluster/heartbeat.ts, docs/cluster.md "Boxes and status") against a real redis-server, with
 * short beats: two processes with one box name are warned about once each; a box's first beat over the record of
 * its own previous run is no warning; a box that dies without leaving expires from the others' lists within its
 * TTL; a box that leaves deletes only its own record (an upgrade's new process keeps the one it wrote).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterLink } from '../../src/cluster/link.js';
import { Heartbeat, type BoxFacts } from '../../src/cluster/heartbeat.js';
import { secretId } from '../../src/cluster/sealed.js';
import { clusterStatus } from '../../src/server/status.js';
import { RedisServer } from '../helpers/redis.js';
import { capturingLogger } from '../helpers/pebble.js';
import { requireTool } from '../helpers/tools.js';
import { eventually } from '../helpers/supervise.js';

const PREFIX = 'test:heartbeat';
const BEAT = { intervalMs: 100, ttlMs: 400, timeoutMs: 500 };
const DUPLICATE = /another process uses the box name/;

function facts(digest = 'd1'): () => BoxFacts {
  return () => ({ version: 'test', digest, address: ['http://127.0.0.1:1/'], admin: null, started: new Date().toISOString() });
}

/** A link and its heartbeat for box `name`, started; both stopped by `stop`. */
async function box(redis: RedisServer, name: string, options: { predecessor?: number } = {}, log = capturingLogger()) {
  const link = new ClusterLink({ redis: redis.url, prefix: PREFIX, name, timeoutMs: 200 }, log.logger);
  const heartbeat = new Heartbeat(link, facts(), log.logger, { ...BEAT, ...options });
  heartbeat.start();
  link.start();
  await eventually(() => heartbeat.seen.some((b) => b.id === link.id) || undefined, `${name} beats`);
  return {
    link,
    heartbeat,
    log,
    stop: async () => (await heartbeat.stop(), await link.stop()),
    /** Dies: the link goes without the record being deleted. */
    die: async () => (await link.stop(), await heartbeat.stop()),
  };
}

test('two processes with one box name each warn once; a first beat over a dead run of the same name does not', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const started: Array<{ stop(): Promise<void> }> = [];
  try {
    // A run of "solo" that dies without leaving (its link closed under it), then the next run of "solo".
    const dead = await box(redis, 'solo');
    await dead.die();
    const next = await box(redis, 'solo');
    started.push(next);
    // A few beats: it replaced the dead run's record once, at its first beat: no warning.
    const beats = next.heartbeat.seen[0]!.seenAt;
    await eventually(() => (next.heartbeat.seen[0]?.seenAt ?? 0) > beats + 250 || undefined, 'a few more beats of solo');
    assert.equal(next.log.lines.filter((l) => DUPLICATE.test(l.msg)).length, 0, 'a restart within the TTL is no duplicate');

    // Two live processes named "twin".
    const a = await box(redis, 'twin');
    started.push(a);
    const b = await box(redis, 'twin');
    started.push(b);
    await eventually(() => (a.log.lines.some((l) => DUPLICATE.test(l.msg)) && b.log.lines.some((l) => DUPLICATE.test(l.msg))) || undefined, 'both twins warn');
    // Several more beats each: still one line each.
    const seen = a.heartbeat.seen.find((x) => x.name === 'twin')!.seenAt;
    await eventually(() => (a.heartbeat.seen.find((x) => x.name === 'twin')?.seenAt ?? 0) > seen + 500 || undefined, 'more beats');
    for (const twin of [a, b]) {
      const lines = twin.log.lines.filter((l) => DUPLICATE.test(l.msg));
      assert.equal(lines.length, 1, 'one warning per other process');
      assert.match(lines[0]!.msg, /box name "twin": give each box its own cluster\.name/);
    }
    // The list has one "twin" (one record per name).
    assert.equal(a.heartbeat.seen.filter((x) => x.name === 'twin').length, 1);
  } finally {
    await Promise.all(started.map((s) => s.stop()));
    await redis.stop();
  }
});

test('a box that dies leaves the others\' lists within its TTL; one that leaves deletes only its own record', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const started: Array<{ stop(): Promise<void> }> = [];
  try {
    const one = await box(redis, 'one');
    started.push(one);
    const two = await box(redis, 'two');
    await eventually(() => (one.heartbeat.seen.length === 2 && one.link.boxes === 2) || undefined, 'one sees two boxes');
    // "two" dies: its record is not deleted, and expires.
    await two.die();
    const died = Date.now();
    await eventually(() => (one.heartbeat.seen.length === 1 && one.link.boxes === 1) || undefined, 'one drops two', 5000);
    const gone = Date.now() - died;
    t.diagnostic(`a dead box left the list ${gone} ms after its last beat (TTL ${BEAT.ttlMs} ms, beat ${BEAT.intervalMs} ms)`);
    assert.ok(gone < BEAT.ttlMs + 3 * BEAT.intervalMs + 500, `${gone} ms`);

    // An upgrade: the new process of "three" writes its record (naming its predecessor: here the same pid, one
    // test process), the old one beats on a while, then leaves: the new record stays, and neither warns.
    const old = await box(redis, 'three');
    const fresh = await box(redis, 'three', { predecessor: process.pid });
    started.push(fresh);
    const overlap = Date.now();
    await eventually(() => (old.heartbeat.seen.find((b) => b.name === 'three')?.seenAt ?? 0) > overlap + 300 || undefined, 'the old process beats on');
    await old.stop();
    await eventually(() => fresh.heartbeat.seen.some((b) => b.name === 'three' && b.id === fresh.link.id) || undefined, 'the new record is read');
    const stored = await one.link.attempt('test', (r) => r.get(one.link.key('box', 'three')), () => null, 1000);
    assert.equal(JSON.parse(stored!).id, fresh.link.id, "the old process's leave kept the new process's record");
    for (const side of [old, fresh]) assert.equal(side.log.lines.filter((l) => DUPLICATE.test(l.msg)).length, 0, 'an upgrade is no duplicate');
    // And a box that leaves for good is gone at once from Redis.
    await fresh.stop();
    started.pop();
    assert.equal(await one.link.attempt('test', (r) => r.exists(one.link.key('box', 'three')), () => -1, 1000), 0);
    await eventually(() => one.heartbeat.seen.every((b) => b.name !== 'three') || undefined, 'three gone from the list', 2000);
  } finally {
    await Promise.all(started.map((s) => s.stop()));
    await redis.stop();
  }
});

test('a box with another cluster secret is warned about once by each side and flagged in the status; boxes with the same one are not', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const boxes: Array<{ link: ClusterLink; heartbeat: Heartbeat; log: ReturnType<typeof capturingLogger> }> = [];
  try {
    for (const [name, secret] of [['one', 'the-secret-of-the-cluster-0123456789'], ['two', 'the-secret-of-the-cluster-0123456789'], ['odd', 'a-typo-in-the-secret-0123456789abcdef']] as const) {
      const log = capturingLogger();
      const link = new ClusterLink({ redis: redis.url, prefix: `${PREFIX}:secret`, name, timeoutMs: 200 }, log.logger);
      const heartbeat = new Heartbeat(link, () => ({ ...facts()(), secret_id: secretId(secret) }), log.logger, BEAT);
      heartbeat.start();
      link.start();
      boxes.push({ link, heartbeat, log });
    }
    await eventually(() => boxes.every((b) => b.heartbeat.seen.length === 3) || undefined, 'every box sees the three');
    // A few more beats: still one warning each.
    const [one, two, odd] = boxes as [(typeof boxes)[0], (typeof boxes)[0], (typeof boxes)[0]];
    const beats = one.heartbeat.seen[0]!.seenAt;
    await eventually(() => (one.heartbeat.seen[0]?.seenAt ?? 0) > beats + 250 || undefined, 'a few more beats');
    const warned = (b: (typeof boxes)[0]) => b.log.lines.filter((l) => /has another cluster secret/.test(l.msg)).map((l) => l.msg);
    assert.equal(warned(one).length, 1, 'one warns once, of odd');
    assert.match(warned(one)[0]!, /box "odd"/);
    assert.equal(warned(two).length, 1);
    assert.equal(warned(odd).length, 2, 'odd warns of one and of two');
    assert.doesNotMatch(JSON.stringify(one.log.lines), /the-secret-of-the-cluster/, 'the secret is not logged');
    for (const b of boxes) {
      const status = clusterStatus(b.link, b.heartbeat);
      assert.equal(status.secret_differs, true);
      assert.deepEqual(status.boxes.filter((s) => s.secret_differs).map((s) => s.name), ['odd'], 'every box flags the odd one out');
    }
    t.diagnostic(warned(odd).join(' | '));
  } finally {
    for (const b of boxes) {
      await b.heartbeat.stop();
      await b.link.stop();
    }
    await redis.stop();
  }
});
