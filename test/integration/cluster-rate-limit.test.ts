/**
 * Cluster-wide rate limits (docs/cluster.md, "Rate limits"; docs/limits.md, "Rate limits"): one GCRA bucket per key
 * in Redis, taken atomically by a Lua script on Redis's clock, so a 10/s rule holds at 10/s for the whole fleet
 * (within the documented skew); while Redis is away each box limits at its share, rate / boxes; with Redis back the
 * rule is cluster-wide again. A real redis-server and three `portico run` boxes on 127.0.0.1-3.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClusterLink } from '../../src/cluster/link.js';
import { SharedBuckets } from '../../src/cluster/rate-bucket.js';
import { Boxes } from '../helpers/boxes.js';
import { capturingLogger } from '../helpers/pebble.js';
import { RedisServer } from '../helpers/redis.js';
import { eventually } from '../helpers/supervise.js';
import { requireTool } from '../helpers/tools.js';
import { within } from '../helpers/within.js';

/** What one origin answered during a spread load. */
interface Counts {
  ok: number;
  limited: number;
  failed: number;
  errors: number;
}

/**
 * Sends `rate` requests per second in all for `seconds`, in turn to each of `origins` (open loop: a slow answer does
 * not slow the sending), over keep-alive connections; counts 200s, 429s, 5xx and transport errors per origin. `span`
 * is the seconds from the first request sent to the last. `midway.run` is started when `midway.after` requests have
 * been sent (and awaited before returning).
 */
async function spread(origins: readonly string[], rate: number, seconds: number, midway?: { after: number; run: () => Promise<void> }): Promise<{ counts: Counts[]; span: number }> {
  const agents = origins.map(() => new http.Agent({ keepAlive: true, maxSockets: 16 }));
  const counts = origins.map((): Counts => ({ ok: 0, limited: 0, failed: 0, errors: 0 }));
  const pending: Array<Promise<void>> = [];
  const total = Math.round(rate * seconds);
  const started = Date.now();
  let last = started;
  let event: Promise<void> | undefined;
  for (let i = 0; i < total; i++) {
    if (i === midway?.after) event = midway.run();
    const wait = started + (i * 1000) / rate - Date.now();
    if (wait > 0) await sleep(wait);
    last = Date.now();
    const at = i % origins.length;
    pending.push(
      new Promise<void>((resolve) => {
        const req = http.get(`${origins[at]}/`, { agent: agents[at] }, (res) => {
          res.resume();
          res.once('end', () => {
            const status = res.statusCode ?? 0;
            if (status === 200) counts[at]!.ok++;
            else if (status === 429) counts[at]!.limited++;
            else counts[at]!.failed++;
            resolve();
          });
        });
        req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
        req.once('error', () => {
          counts[at]!.errors++;
          resolve();
        });
      }),
    );
  }
  await within('the answers of a spread load', Promise.all(pending), 15_000);
  await event;
  for (const agent of agents) agent.destroy();
  return { counts, span: (last - started) / 1000 };
}

function describeCounts(counts: readonly Counts[]): string {
  return counts.map((c, i) => `box${i + 1}: 200×${c.ok} 429×${c.limited} 5xx×${c.failed} errors×${c.errors}`).join('; ');
}

const sum = (counts: readonly Counts[], field: keyof Counts) => counts.reduce((total, c) => total + c[field], 0);

/** The documented skew on a loaded loopback: the larger of 3 requests and 10 % of what the rule allows. */
const skew = (allowed: number) => Math.max(3, Math.ceil(allowed * 0.1));

test('shared buckets: the burst is shared by two links, refused takes get Retry-After, a key expires once full again, and with Redis away the fallback answers at once', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const make = (name: string) => new ClusterLink({ redis: redis.url, prefix: 'test:rate', name, timeoutMs: 500 }, capturingLogger().logger);
  const a = make('a');
  const b = make('b');
  try {
    const up = Promise.all([new Promise<void>((resolve) => a.onUp(resolve)), new Promise<void>((resolve) => b.onUp(resolve))]);
    a.start();
    b.start();
    await within('both links up', up);
    let fallbacks = 0;
    // 1 token per minute, a burst of 3, one rule seen from two boxes.
    const perMs = 1 / 60_000;
    const atA = new SharedBuckets(a, 'rule', perMs, 3, () => (fallbacks++, 0));
    const atB = new SharedBuckets(b, 'rule', perMs, 3, () => (fallbacks++, 0));
    const other = new SharedBuckets(a, 'other-rule', perMs, 3, () => (fallbacks++, 0));
    const takes = [await atA.take('k'), await atB.take('k'), await atA.take('k')];
    assert.deepEqual(takes, [0, 0, 0], 'the burst of 3, taken from two boxes');
    const refusedAtB = await atB.take('k');
    assert.ok(refusedAtB >= 55 && refusedAtB <= 60, `the 4th take (at b) waits about a minute: Retry-After ${refusedAtB}`);
    assert.ok((await atA.take('k')) > 0, 'and at a too');
    assert.equal(await atA.take('k2'), 0, 'another key has its own bucket');
    assert.equal(await other.take('k'), 0, 'another rule has its own buckets');
    const ttl = await a.redis.pttl(a.key('rate', 'rule', 'k'));
    assert.ok(ttl > 170_000 && ttl <= 180_000, `the key expires when the bucket is full again (3 tokens × 60 s): PTTL ${ttl}`);
    assert.equal(fallbacks, 0);
    // A fast rule: tokens come back at the rate, on Redis's clock.
    const fast = new SharedBuckets(a, 'fast', 1 / 20, 1, () => (fallbacks++, 0));
    assert.equal(await fast.take('k'), 0);
    assert.equal(await fast.take('k'), 1, 'empty: Retry-After rounds up to 1 s');
    await eventually(async () => (await fast.take('k')) === 0, 'a token back after 50 ms', 2000);

    await redis.kill();
    const started = Date.now();
    for (let i = 0; i < 20; i++) assert.equal(await atA.take('k'), 0, 'the fallback answers');
    assert.equal(fallbacks, 20);
    assert.ok(Date.now() - started < 1500, `20 takes with Redis away took ${Date.now() - started} ms`);
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    await redis.stop();
  }
});

test('three boxes: a 10/s limit holds at 10/s for the fleet, a scope: box rule is each box\'s own; Redis killed under load: no 5xx, and each box allows rate / boxes; Redis back: cluster-wide again', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const rate = 10;
  // A burst of 5: each box's share while Redis is away is 2 (ceil(5 / 3)); a share of 1 would lose the tokens that
  // come while it is full, between two requests, and allow less than its rate.
  const burst = 5;
  const boxes = await Boxes.start({
    redis: redis.url,
    // A deadline roomier than the 50 ms default: the test machine is shared, and a call past it falls back.
    cluster: '  timeout: 300ms\n  boxes: 3\n',
    config: ({ host, index }) => `listen: ["${host}:0"]
log: { access: off }
sites:
  - routes:
      - path: /local
        rate_limit: { rate: 1/m, burst: 2, key: "local-route", scope: box }
        respond: { body: "local" }
      - path: /probe
        rate_limit: { rate: 1000/s, key: "probe-box${index}" }
        respond: { body: "probe" }
      - path: /
        rate_limit: { rate: ${rate}/s, burst: ${burst}, key: "whole-route" }
        respond: { body: "ok" }
`,
  });
  try {
    const origins = boxes.boxes.map((box) => box.origin);
    // Each box's link connects in the background: once a probe's bucket is in Redis, that box limits there.
    for (const [i, origin] of origins.entries()) {
      await eventually(async () => {
        await fetch(`${origin}/probe`).then((res) => res.arrayBuffer());
        return (await rawKeys(redis.port, `${boxes.prefix}:rate:*:probe-box${i + 1}`)).length === 1;
      }, `box ${i + 1}'s rate limit in Redis`);
    }

    // scope: box: each box has its own bucket (a burst of 2 each), none in Redis.
    for (const origin of origins) {
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${origin}/local`);
        await res.arrayBuffer();
        statuses.push(res.status);
      }
      assert.deepEqual(statuses, [200, 200, 429], `scope: box at ${origin}`);
    }
    assert.deepEqual(await rawKeys(redis.port, `${boxes.prefix}:rate:*:local-route`), [], 'a box-scoped rule keeps nothing in Redis');

    // 1. Cluster-wide: 45 requests/s spread over the three boxes for 4 s.
    const shared = await spread(origins, 45, 4);
    const sharedOk = sum(shared.counts, 'ok');
    const sharedExpected = rate * shared.span + burst;
    t.diagnostic(`cluster-wide, ${shared.span.toFixed(2)} s: ${describeCounts(shared.counts)}; 200s ${sharedOk}, expected ${sharedExpected.toFixed(1)} ± ${skew(sharedExpected)}`);
    assert.equal(sum(shared.counts, 'failed') + sum(shared.counts, 'errors'), 0, 'no request failed');
    assert.ok(Math.abs(sharedOk - sharedExpected) <= skew(sharedExpected), `the fleet allowed ${sharedOk}, not ${sharedExpected.toFixed(1)} ± ${skew(sharedExpected)}`);
    // Which box gets a token that comes back is the load's timing (one may get few): each refused some.
    for (const [i, c] of shared.counts.entries()) assert.ok(c.limited > 0, `box ${i + 1} refused some`);
    for (const box of boxes.boxes) assert.doesNotMatch(box.process.stderr, /Redis unreachable/, `${box.name} stayed on Redis`);

    // 2. Redis killed under load: no request fails. Then, on their own, each box at its share: 10/3 per second with a
    // burst of 2.
    const marks = boxes.boxes.map((box) => box.process.stderr.length);
    const killed = await spread(origins, 45, 2, { after: 30, run: () => redis.kill() });
    t.diagnostic(`Redis killed after 30 of 90 requests: ${describeCounts(killed.counts)}`);
    assert.equal(sum(killed.counts, 'failed') + sum(killed.counts, 'errors'), 0, 'no request failed as Redis was killed');
    const alone = await spread(origins, 45, 4);
    const share = rate / 3;
    const shareBurst = Math.ceil(burst / 3);
    // The local buckets were used since the kill: each starts this run with 0 to 2 tokens.
    const [low, high] = [share * alone.span, share * alone.span + shareBurst];
    const slack = skew(high);
    t.diagnostic(`Redis down, ${alone.span.toFixed(2)} s: ${describeCounts(alone.counts)}; each box expected ${low.toFixed(1)}–${high.toFixed(1)} ± ${slack}`);
    assert.equal(sum(alone.counts, 'failed') + sum(alone.counts, 'errors'), 0, 'no request failed while Redis was away');
    for (const [i, c] of alone.counts.entries()) {
      assert.ok(c.ok >= low - slack && c.ok <= high + slack, `box ${i + 1} allowed ${c.ok} alone, not ${low.toFixed(1)}–${high.toFixed(1)} ± ${slack}`);
    }
    for (const [i, box] of boxes.boxes.entries()) {
      await box.process.waitForLine(/Redis unreachable/, marks[i]!, 5000);
      assert.equal(box.process.stderr.slice(marks[i]).match(/Redis unreachable/g)?.length, 1, `${box.name} logged the outage once`);
    }

    // 3. Redis back: once every box has noticed, one box alone gets the whole rate (a share would give it a third).
    await redis.restart();
    for (const [i, box] of boxes.boxes.entries()) await box.process.waitForLine(/Redis reachable again/, marks[i]!, 15_000);
    const back = await spread([origins[0]!], 20, 3);
    const backOk = back.counts[0]!.ok;
    const backExpected = rate * back.span + burst;
    t.diagnostic(`Redis back, box 1 alone, ${back.span.toFixed(2)} s: ${describeCounts(back.counts)}; expected ${backExpected.toFixed(1)} ± ${skew(backExpected)} (its share would be ${(share * back.span + shareBurst).toFixed(1)})`);
    assert.equal(back.counts[0]!.failed + back.counts[0]!.errors, 0);
    assert.ok(Math.abs(backOk - backExpected) <= skew(backExpected), `box 1 allowed ${backOk}, not the cluster's ${backExpected.toFixed(1)} ± ${skew(backExpected)}`);
    const keys = await within('the bucket in Redis', rawKeys(redis.port, `${boxes.prefix}:rate:*:whole-route`));
    assert.equal(keys.length, 1, `one bucket in Redis under the cluster's prefix: ${keys.join(', ')}`);
  } finally {
    await boxes.stop();
    await redis.stop();
  }
});

/** The keys matching `pattern`, read with a connection of the test's own. */
async function rawKeys(port: number, pattern: string): Promise<string[]> {
  const { Redis } = await import('ioredis');
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await client.connect();
    return await client.keys(pattern);
  } finally {
    client.disconnect();
  }
}
