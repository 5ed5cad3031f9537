/**
 * A cluster box with `workers: 2` whose `cluster` section a reload changed (docs/cluster.md: it takes effect on
 * restart): a worker started afterwards (a crash's replacement) joins the cluster its box is in, with the section the
 * box started with, not the one the edited config names. A real redis-server, one `portico run` box.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { Boxes } from '../helpers/boxes.js';
import { RedisServer } from '../helpers/redis.js';
import { eventually } from '../helpers/supervise.js';
import { requireTool } from '../helpers/tools.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** The pids of the box's workers, from its /status. */
async function workerPids(admin: string): Promise<number[]> {
  const res = await fetch(new URL('status', admin), { signal: AbortSignal.timeout(5000) });
  const json = (await res.json()) as { workers: Array<{ pid: number }> };
  return json.workers.map((w) => w.pid);
}

test('a worker that replaces a crashed one after a reload changed cluster.prefix joins the box\'s cluster (the prefix it started with), not the edited one', { timeout: 40_000 }, async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  cleanups.push(() => redis.stop());
  const boxes = await Boxes.start({
    count: 1,
    redis: redis.url,
    config: ({ host }) => `workers: 2
listen: ["${host}:0"]
log: { access: off }
admin: { listen: "${host}:0", open_reads: true }
caches:
  pages: { memory: 1MB, shared: { max_object_size: 100KB } }
sites:
  - routes:
      - path: /
        rate_limit: { rate: 100/s, burst: 100, key: "fleet" }
        respond: { status: 200, body: "ok" }
`,
  });
  cleanups.push(() => boxes.stop());
  const box = boxes.box(1);
  const admin = /admin API on (\S+)/.exec(await box.process.waitForLine(/admin API on (\S+)/, 0))![1]!;
  const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  cleanups.push(() => client.quit());
  const edited = `${boxes.prefix}-edited`;
  const text = readFileSync(box.process.file, 'utf8');
  const { line } = await box.process.reload(text.replace(`prefix: ${boxes.prefix}`, `prefix: ${edited}`));
  assert.match(line, /config reloaded/);
  const subscribed = async (): Promise<string> => {
    const channels = (await client.pubsub('CHANNELS', `${boxes.prefix}*`)) as string[];
    const counts = channels.length === 0 ? [] : ((await client.pubsub('NUMSUB', ...channels.sort())) as Array<string | number>);
    return JSON.stringify(counts);
  };
  const before = await subscribed();
  const [first] = await workerPids(admin);
  process.kill(first!, 'SIGKILL');
  const replaced = await eventually(async () => {
    const pids = await workerPids(admin).catch((): number[] => []);
    return pids.length === 2 && pids.every((pid) => typeof pid === "number" && pid !== first) && pids;
  }, 'the crashed worker replaced');
  t.diagnostic(`worker ${first} replaced: workers now ${replaced.join(', ')}`);
  // Requests through both workers (each rate-limited request asks Redis).
  for (let i = 0; i < 20; i++) assert.equal((await fetch(`${box.origin}/`, { headers: { connection: 'close' } })).status, 200);
  const channels = await client.pubsub('CHANNELS', `${edited}*`);
  const keys = await client.keys(`${edited}*`);
  assert.deepEqual([channels, keys], [[], []], 'nothing of the box under the edited prefix');
  t.diagnostic(`subscriptions under the box's prefix before the crash: ${before}`);
  await eventually(async () => (await subscribed()) === before, 'the replacement subscribed under the box\'s prefix as the crashed worker was');
});
