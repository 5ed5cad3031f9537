/**
 * The shared tier's variants of one key (cache/shared-tier.ts) against a real redis-server: their count is bounded,
 * since every miss reads them all and a `Vary` on a header the client chooses (User-Agent) makes as many as it likes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { ClusterLink } from '../../src/cluster/link.js';
import { MAX_SHARED_VARIANTS, SharedTier } from '../../src/cache/shared-tier.js';
import type { StoredResponse } from '../../src/cache/types.js';
import { RedisServer } from '../helpers/redis.js';
import { capturingLogger } from '../helpers/pebble.js';
import { requireTool } from '../helpers/tools.js';
import { eventually } from '../helpers/supervise.js';
import { within } from '../helpers/within.js';

test(`a key's variants in the shared tier stay at ${MAX_SHARED_VARIANTS} at most (a Vary: User-Agent cannot grow what every miss reads)`, async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const link = new ClusterLink({ redis: redis.url, prefix: 'test:variants', name: 'a', timeoutMs: 1000 }, capturingLogger().logger);
  const inspect = new Redis(redis.url, { maxRetriesPerRequest: 0 });
  const tier = new SharedTier('main', link, { maxObjectSize: 64 * 1024, lockMs: 5000 });
  try {
    const up = new Promise<void>((resolve) => link.onUp(resolve));
    link.start();
    await within('link up', up);
    const key = 'httpshop.example/page';
    const hash = `test:variants:cache:main:e:${key}`;
    const now = Date.now();
    const variant = (i: number): StoredResponse => ({
      key,
      varyKey: `user-agent:agent-${i}\n`,
      status: 200,
      headers: ['Cache-Control', 'max-age=600', 'Vary', 'User-Agent'],
      body: Buffer.alloc(1000, 'x'),
      requestTime: now,
      responseTime: now,
    });
    const written = MAX_SHARED_VARIANTS * 3;
    let most = 0;
    for (let i = 0; i < written; i++) {
      tier.put(variant(i), 600_000);
      await eventually(async () => tier.counts.writes === i + 1, `write ${i}`, 5000);
      most = Math.max(most, await inspect.hlen(hash));
    }
    const read = await tier.get(key);
    t.diagnostic(`${written} variants written: at most ${most} kept at once, ${read.length} read back`);
    assert.ok(most <= MAX_SHARED_VARIANTS, `${most} variants kept`);
    assert.ok(read.length >= 1 && read.length <= MAX_SHARED_VARIANTS);
    assert.ok(read.some((entry) => entry.varyKey === `user-agent:agent-${written - 1}\n`), 'the newest variant is there');
    // A variant written again replaces itself: a full key keeps its variants.
    const before = await inspect.hlen(hash);
    tier.put(variant(written - 1), 600_000);
    await eventually(async () => tier.counts.writes === written + 1, 'rewrite', 5000);
    assert.equal(await inspect.hlen(hash), before);
  } finally {
    tier.stop();
    inspect.disconnect();
    await link.stop();
    await redis.stop();
  }
});
