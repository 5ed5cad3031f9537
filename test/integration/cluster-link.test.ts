import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Redis, ReplyError } from 'ioredis';
import { ClusterLink, isReadOnly, type ClusterMessage } from '../../src/cluster/link.js';
import { RedisServer, SENTINEL_MASTER } from '../helpers/redis.js';
import { capturingLogger } from '../helpers/pebble.js';
import { requireTool } from '../helpers/tools.js';
import { eventually } from '../helpers/supervise.js';
import { within } from '../helpers/within.js';

function link(redis: RedisServer, name: string, logger = capturingLogger().logger): ClusterLink {
  return new ClusterLink({ redis: redis.url, prefix: 'test:link', name, timeoutMs: 200 }, logger);
}

/** A Redis, a link `a` to it (not started) whose log and onUp calls are watched; both stopped after `body`. */
async function withWatchedLink(t: TestContext, body: (set: { redis: RedisServer; a: ClusterLink; log: ReturnType<typeof capturingLogger>; ups: () => number }) => Promise<void>): Promise<void> {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const log = capturingLogger();
  const a = link(redis, 'a', log.logger);
  let ups = 0;
  a.onUp(() => ups++);
  try {
    await body({ redis, a, log, ups: () => ups });
  } finally {
    redis.resume();
    await a.stop();
    await redis.stop();
  }
}

test('a link runs calls on Redis under its prefix, and passes messages to the other boxes but not to itself', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const a = link(redis, 'a');
  const b = link(redis, 'b');
  try {
    const up = new Promise<void>((resolve) => a.onUp(resolve));
    a.start();
    b.start();
    await within('link a up', up);
    assert.equal(a.key('box', 'a'), 'test:link:box:a');
    const answer = await a.attempt('test', (r) => r.set(a.key('x'), '1').then(() => r.get(a.key('x'))), () => 'fallback');
    assert.equal(answer, '1');
    const atB = new Promise<ClusterMessage>((resolve) => b.subscribe('news', resolve));
    const atA: ClusterMessage[] = [];
    a.subscribe('news', (message) => atA.push(message));
    // Subscriptions are made in the background: publish until b hears.
    const heard = await eventually(async () => {
      a.publish('news', { n: 1 });
      return Promise.race([atB, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 50))]);
    }, 'b hears a');
    assert.equal(heard.box, 'a');
    assert.equal(heard.n, 1);
    assert.equal(atA.length, 0, 'a process does not hear its own messages');
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    await redis.stop();
  }
});

test('with Redis killed, calls fall back at once, the outage is logged once, and Redis back calls onUp to re-sync', async (t) => {
  await withWatchedLink(t, async ({ redis, a, log, ups }) => {
    a.start();
    await eventually(() => ups() === 1, 'first connect');
    await redis.kill();
    const results: string[] = [];
    const started = Date.now();
    for (let i = 0; i < 50; i++) results.push(await a.attempt('rate_limit', (r) => r.get('k').then(() => 'redis'), () => 'local'));
    assert.deepEqual(new Set(results), new Set(['local']));
    assert.ok(Date.now() - started < 1000, `50 fallbacks took ${Date.now() - started} ms`);
    const outages = log.lines.filter((line) => /Redis unreachable/.test(line.msg));
    assert.equal(outages.length, 1, 'one line per outage');
    assert.ok((a.stats().fallbacks.rate_limit ?? 0) >= 50);
    assert.equal(a.stats().up, false);
    await redis.restart();
    await eventually(() => ups() === 2, 'onUp after the outage', 15_000);
    assert.equal(await a.attempt('rate_limit', (r) => r.ping(), () => 'local'), 'PONG');
    assert.equal(log.lines.filter((line) => /Redis reachable again/.test(line.msg)).length, 1);
  });
});

test('a link stops within its QUIT deadline when Redis hangs (SIGSTOP), and when it was never reached', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const hung = link(redis, 'hung');
  try {
    const up = new Promise<void>((resolve) => hung.onUp(resolve));
    hung.start();
    hung.subscribe('news', () => {});
    await within('link up', up);
    redis.pause();
    // A call now misses its deadline (the connection stays open: nothing tells the client Redis is frozen).
    assert.equal(await hung.attempt('test', (r) => r.ping(), () => 'local'), 'local');
    const started = Date.now();
    await within('stop with Redis hung', hung.stop(), 5000);
    t.diagnostic(`stopped in ${Date.now() - started} ms with Redis frozen`);
  } finally {
    redis.resume();
    await redis.stop();
  }
  // Never reached: the subscriber's SUBSCRIBE waits in its offline queue, and a QUIT would wait behind it.
  const nowhere = new ClusterLink({ redis: `redis://127.0.0.1:${redis.port}/0`, prefix: 'test:link', name: 'nowhere', timeoutMs: 200 }, capturingLogger().logger);
  nowhere.start();
  nowhere.subscribe('news', () => {});
  await within('stop with Redis never reached', nowhere.stop(), 5000);
});

test('while Redis hangs (SIGSTOP), one call at a time tries it and every other call falls back at once', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const hung = link(redis, 'hung');
  try {
    const up = new Promise<void>((resolve) => hung.onUp(resolve));
    hung.start();
    await within('link up', up);
    redis.pause();
    assert.equal(await hung.attempt('test', (r) => r.ping(), () => 'local'), 'local', 'the first call misses its 200 ms deadline: the calls after it probe');
    // 2.5 s of calls, one every 10 ms, none awaited before the next: two more probes miss their deadline (the
    // outage starts at the third), then the link tries Redis again after 1 s.
    const waits: Array<Promise<number>> = [];
    const end = Date.now() + 2500;
    for (let i = 0; i < 400 && Date.now() < end; i++) {
      const started = Date.now();
      waits.push(hung.attempt('test', (r) => r.ping(), () => 'local').then(() => Date.now() - started));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const took = await within('every call answered', Promise.all(waits), 5000);
    const waited = took.filter((ms) => ms >= 150).length;
    t.diagnostic(`${took.length} calls while Redis hung: ${waited} waited for Redis (≥ 150 ms), the longest ${Math.max(...took)} ms`);
    assert.ok(waited <= 4, `${waited} calls waited for a hung Redis (one probe per retry expected)`);
    assert.ok(Math.max(...took) < 1000, 'no call waits past its deadline');
    // Past the pause after the last failed try, the link may try again, but Redis is no more reachable for it.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    assert.equal(hung.up, false, 'the link reads down until Redis answers (status, metrics)');
    assert.equal(hung.stats().up, false);
    assert.notEqual(hung.stats().down_since, null);
  } finally {
    redis.resume();
    await hung.stop();
    await redis.stop();
  }
});

test('calls that miss their deadline together while Redis answers are one miss, no outage (no log, no re-sync, the link up); three missed one after another are', async (t) => {
  await withWatchedLink(t, async ({ a, log, ups }) => {
    /** A call whose answer never comes in time (a large value, a pause), while Redis answers every other one. */
    const slow = (): Promise<string> => a.attempt('cache', () => new Promise<string>(() => undefined), () => 'local');
    const ping = (): Promise<string> => a.attempt('rate_limit', (r) => r.ping().then(() => 'redis'), () => 'local');
    a.start();
    await eventually(() => ups() === 1, 'first connect');
    assert.deepEqual(new Set(await Promise.all(Array.from({ length: 10 }, slow))), new Set(['local']), 'ten slow calls at once took their fallback at their deadline');
    assert.equal(a.up, true, 'calls that were in flight together miss together: one miss, the link is still up');
    assert.equal(await ping(), 'redis', 'the next call goes to Redis (it probes), and answers');
    assert.equal(await slow(), 'local');
    assert.equal(await slow(), 'local');
    assert.equal(await ping(), 'redis', 'two missed, one answered: the count starts over');
    assert.equal(a.stats().outages, 0);
    assert.equal(ups(), 1, 'no re-sync: there was no outage');
    assert.equal(log.lines.filter((line) => /Redis unreachable/.test(line.msg)).length, 0);
    for (let i = 0; i < 3; i++) assert.equal(await slow(), 'local');
    assert.equal(a.up, false, 'three deadlines missed in a row: an outage');
    assert.equal(a.stats().outages, 1);
    assert.equal(log.lines.filter((line) => /Redis unreachable/.test(line.msg)).length, 1);
  });
});

test('a call Redis answers with an error (OOM at maxmemory) falls back alone: the link stays up, no outage, one line per feature', async (t) => {
  await withWatchedLink(t, async ({ a, log, ups }) => {
    a.start();
    await eventually(() => ups() === 1, 'first connect');
    await a.attempt('setup', (r) => r.config('SET', 'maxmemory-policy', 'noeviction').then(() => r.config('SET', 'maxmemory', '1')), () => 'failed');
    const writes: string[] = [];
    for (let i = 0; i < 20; i++) writes.push(await a.attempt('cache', (r) => r.set(a.key('big', String(i)), 'x'.repeat(1000)), () => 'local'));
    assert.deepEqual(new Set(writes), new Set(['local']), 'every write refused (OOM) took its fallback');
    assert.equal(a.up, true, 'the link is up: Redis answered');
    assert.equal(await a.attempt('rate_limit', (r) => r.get(a.key('none')).then(() => 'redis'), () => 'local'), 'redis', 'a read right after goes to Redis');
    assert.equal(a.stats().outages, 0);
    assert.equal(a.stats().fallbacks.cache, 20);
    assert.equal(ups(), 1, 'no re-sync: there was no outage');
    assert.equal(log.lines.filter((line) => /Redis unreachable/.test(line.msg)).length, 0);
    assert.equal(log.lines.filter((line) => /Redis refused a cache call/.test(line.msg)).length, 1, 'said once');
  });
});

test('a link started while Redis hangs (connection accepted, no answers) reports the outage, and the re-sync when Redis answers', async (t) => {
  await withWatchedLink(t, async ({ redis, a, log, ups }) => {
    redis.pause();
    a.start();
    await eventually(() => a.stats().down_since !== null || undefined, 'the outage is reported', 8000);
    assert.equal(a.up, false);
    assert.equal(a.stats().outages, 1);
    assert.equal(log.lines.filter((line) => /Redis unreachable/.test(line.msg)).length, 1, 'said once');
    redis.resume();
    await eventually(() => ups() === 1 || undefined, 'onUp once Redis answers', 8000);
    assert.equal(a.up, true);
    assert.equal(log.lines.filter((line) => /Redis reachable again/.test(line.msg)).length, 1);
  });
});

test('a message on a cluster channel that is JSON but not an object (null, a number, a list) is dropped; the process lives and the next message arrives', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const a = link(redis, 'a');
  const raw = new Redis(redis.url, { maxRetriesPerRequest: 0 });
  try {
    const up = new Promise<void>((resolve) => a.onUp(resolve));
    const heard: ClusterMessage[] = [];
    a.subscribe('operator', (message) => heard.push(message));
    a.start();
    await within('link up', up);
    // Subscribed in the background: publish until the subscription counts.
    await eventually(async () => (await raw.publish(a.key('ch', 'operator'), 'null')) === 1 || undefined, 'a subscribed');
    for (const payload of ['null', '5', '"text"', '[1,2]', 'true', '{"from":']) await raw.publish(a.key('ch', 'operator'), payload);
    await raw.publish(a.key('ch', 'operator'), JSON.stringify({ from: 'other', box: 'b', kind: 'test' }));
    await eventually(() => heard.length > 0 || undefined, 'the good message is delivered');
    assert.deepEqual(heard.map((m) => m.kind), ['test'], 'only the object is delivered');
  } finally {
    raw.disconnect();
    await a.stop();
    await redis.stop();
  }
});

/**
 * A master, its replica and a Sentinel watching them (which knows the replica), a link `a` through the Sentinel, up,
 * that has written "before" to the master (seen on the replica); `ask` talks to the Sentinel, `onReplica` to the
 * replica (it connects again: Sentinel cuts the promoted server's clients at a switch). Everything stopped after.
 */
async function withSentinelLink(
  t: TestContext,
  body: (set: { master: RedisServer; replica: RedisServer; sentinel: RedisServer; a: ClusterLink; log: ReturnType<typeof capturingLogger>; ask: Redis; onReplica: Redis }) => Promise<void>,
): Promise<void> {
  if (!requireTool(t, 'redis-server')) return;
  const master = await RedisServer.start();
  const replica = await RedisServer.replicaOf(master);
  const sentinel = await RedisServer.sentinel(master);
  const log = capturingLogger();
  const a = new ClusterLink({ redis: `redis://${SENTINEL_MASTER}/0`, sentinels: [`127.0.0.1:${sentinel.port}`], prefix: 'test:link', name: 'a', timeoutMs: 200 }, log.logger);
  const ask = new Redis(sentinel.port, '127.0.0.1', { maxRetriesPerRequest: 0 });
  const onReplica = new Redis(replica.url);
  try {
    // Sentinel learns of the replica from the master's INFO, and fails over only to a replica it knows.
    await eventually(async () => ((await ask.call('SENTINEL', 'REPLICAS', SENTINEL_MASTER)) as unknown[]).length === 1 || undefined, 'Sentinel knows the replica', 15_000);
    const up = new Promise<void>((resolve) => a.onUp(resolve));
    a.start();
    await within('link up', up);
    assert.equal(await a.attempt('test', (r) => r.set(a.key('k'), 'before'), () => 'local'), 'OK');
    await eventually(async () => (await onReplica.get(a.key('k'))) === 'before' || undefined, 'the write reached the replica');
    await body({ master, replica, sentinel, a, log, ask, onReplica });
  } finally {
    ask.disconnect();
    onReplica.disconnect();
    await a.stop();
    await Promise.all([sentinel.stop(), replica.stop(), master.stop()]);
  }
}

test('through Sentinel, a link finds the master; when the master dies, calls fall back until Sentinel promotes the replica, then go to it', async (t) => {
  await withSentinelLink(t, async ({ master, sentinel, a, log, onReplica }) => {
    await master.kill();
    const fallbacks: string[] = [];
    await eventually(
      async () => {
        const answer = await a.attempt('test', (r) => r.set(a.key('k'), 'after'), () => 'local');
        if (answer === 'local') fallbacks.push(answer);
        return answer === 'OK' || undefined;
      },
      'a write after the failover',
      20_000,
    );
    t.diagnostic(`${fallbacks.length} calls fell back while Sentinel failed over`);
    assert.equal(await onReplica.get(a.key('k')), 'after', 'the write went to the promoted replica');
    assert.equal(((await onReplica.call('ROLE')) as unknown[])[0], 'master');
    assert.ok(fallbacks.length > 0, 'calls fell back meanwhile (none waited)');
    assert.equal(log.lines.filter((line) => /Redis unreachable/.test(line.msg)).length, 1);
    assert.match(String(log.lines.find((line) => /Redis unreachable/.test(line.msg))?.redis), new RegExp(`through the sentinels 127\\.0\\.0\\.1:${sentinel.port}`));
  });
});

test('through Sentinel, an operator\'s failover with both servers alive (SENTINEL FAILOVER) moves the link to the new master', async (t) => {
  await withSentinelLink(t, async ({ a, ask, onReplica }) => {
    await ask.call('SENTINEL', 'FAILOVER', SENTINEL_MASTER);
    await eventually(async () => ((await onReplica.call('ROLE').catch(() => [])) as unknown[])[0] === 'master' || undefined, 'the replica promoted', 20_000);
    // Until the link follows, a write falls back (the old master, demoted, answers READONLY), or lands on the old
    // master before Sentinel demotes it and is lost (as in any Redis failover); then writes reach the new master.
    let n = 0;
    await eventually(
      async () => {
        const value = `after-${++n}`;
        const answer = await a.attempt('test', (r) => r.set(a.key('k'), value), () => 'local');
        return (answer === 'OK' && (await onReplica.get(a.key('k')).catch(() => undefined)) === value) || undefined;
      },
      'a write on the new master',
      20_000,
    );
    t.diagnostic(`${n} writes until one reached the new master`);
  });
});

test('through Sentinel, a write answered READONLY (a master demoted without the link hearing of it) is an outage, not a refused call; also inside a script\'s error (Redis before 7)', async (t) => {
  await withSentinelLink(t, async ({ a, log }) => {
    const readOnly = (message: string): Promise<string> => a.attempt('rate_limit', () => Promise.reject(new ReplyError(message)), () => 'local');
    assert.equal(await readOnly("READONLY You can't write against a read only replica."), 'local');
    assert.equal(a.up, false, 'an outage: the link connects again through Sentinel');
    assert.equal(log.lines.filter((line) => /Redis unreachable/.test(line.msg)).length, 1);
    assert.equal(log.lines.filter((line) => /refused/.test(line.msg)).length, 0, 'not said as a refused call');
    assert.equal(isReadOnly(new ReplyError("ERR Error running script (call to f_0123): @user_script:1: @user_script: 1: -READONLY You can't write against a read only replica.")), true);
    assert.equal(isReadOnly(new ReplyError('OOM command not allowed when used memory > maxmemory.')), false);
  });
});
