/**
 * The shared cache tier (docs/cluster.md, "A shared cache tier"): three boxes (three `portico run` processes on
 * 127.0.0.1-3), one real redis-server, one real app server counting its requests. Every request names the same
 * Host (as behind a balancer), so the boxes make the same cache keys.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Redis } from 'ioredis';
import { RedisServer } from '../helpers/redis.js';
import { Boxes, type Box } from '../helpers/boxes.js';
import { requireTool } from '../helpers/tools.js';
import { eventually } from '../helpers/supervise.js';
import { startOrigin, type Origin } from './cache-support.js';

interface Answer {
  status: number;
  body: string;
  cacheStatus: string;
}

/** One request to a box on a fresh connection, with the cluster's Host. */
function ask(box: Box, path: string, method = 'GET', headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: box.host, port: box.port, path, method, headers: { host: 'shop.example', 'content-length': '0', ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString(), cacheStatus: String(res.headers['cache-status'] ?? '') }));
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer from ${box.name} within 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Runs `count` requests made by `make`, `concurrency` at a time; every outcome (an error as its message). */
async function inParallel(count: number, concurrency: number, make: (i: number) => Promise<Answer>): Promise<Array<Answer | string>> {
  const out: Array<Answer | string> = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      out[i] = await make(i).catch((err: Error) => err.message);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

function gets(origin: Origin, path: string): number {
  return origin.seen(path).filter((r) => r.method === 'GET').length;
}

test('the shared cache tier across three boxes', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const origin = await startOrigin();
  const version = new Map<string, number>();
  const object = (path: string, size: number, maxAge = 60) => {
    origin.on(path, (req, res) => {
      if (req.method !== 'GET') {
        version.set(path, (version.get(path) ?? 0) + 1);
        res.writeHead(200, { 'content-length': 7, 'cache-control': 'no-store' });
        res.end('changed');
        return;
      }
      const body = `${path} v${version.get(path) ?? 0} #${gets(origin, path)} `.padEnd(size, '.');
      // The app answers a little slowly, as a real one does: the crowd arrives while the first fetch runs.
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'cache-control': `max-age=${maxAge}` });
        res.end(body);
      }, 30);
    });
  };
  object('/one', 2000);
  object('/big', 100 * 1024);
  let boxes: Boxes | undefined;
  const inspect = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  inspect.on('error', () => {});
  try {
    boxes = await Boxes.start({
      redis: redis.url,
      // A loaded test machine: a generous deadline, so that no fallback (a second fetch) comes of a slow answer.
      cluster: '  timeout: 500ms\n',
      config: ({ host }) => `listen: ["${host}:0"]
admin: { listen: "${host}:0", open_reads: true }
caches:
  main: { memory: 16MB, max_object: 1MB, shared: { max_object_size: 64KB, lock: 5s } }
upstreams:
  app: { servers: [{ url: "${origin.url}" }], retries: 0 }
sites:
  - routes:
      - path: /
        proxy: { upstream: app, cache: { zone: main } }
`,
    });
    const all = boxes.boxes;
    const [box1, box2, box3] = all as [Box, Box, Box];
    await inspect.connect();
    // Each box connects to Redis in the background: wait until one's answer is read by the two others from Redis.
    let probe = 0;
    await eventually(async () => {
      const path = `/warm-${++probe}`;
      object(path, 10);
      await ask(box1, path);
      const [two, three] = await Promise.all([ask(box2, path), ask(box3, path)]);
      return /detail=shared/.test(two.cacheStatus) && /detail=shared/.test(three.cacheStatus);
    }, 'every box on the shared tier', 20_000);

    await t.test('3 boxes × 100 concurrent requests for one cacheable URL make exactly 1 request at the app', async () => {
      const answers = await inParallel(300, 30, (i) => ask(all[i % 3]!, '/one'));
      const failed = answers.filter((a) => typeof a === 'string' || a.status !== 200);
      assert.deepEqual(failed, [], 'every request answered 200');
      const bodies = new Set(answers.map((a) => (a as Answer).body.slice(0, 12)));
      assert.deepEqual([...bodies], ['/one v0 #1 .'], 'every box served the one answer');
      assert.equal(gets(origin, '/one'), 1, 'one request at the app');
      const kinds = new Map<string, number>();
      for (const a of answers as Answer[]) {
        const kind = /detail=shared/.test(a.cacheStatus) ? 'shared hit' : /^Portico; hit/.test(a.cacheStatus) ? 'memory hit' : /collapsed/.test(a.cacheStatus) ? 'collapsed' : 'fetched';
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
      t.diagnostic(`300 requests: ${JSON.stringify(Object.fromEntries(kinds))}; app GETs: ${gets(origin, '/one')}`);
    });

    await t.test('a POST through box 1 invalidates the object on every box: boxes 2 and 3 do not serve the old one, and the app sees one new request', async () => {
      // Every box holds the object in memory now.
      for (const box of all) assert.match((await ask(box, '/one')).cacheStatus, /^Portico; hit/);
      const posted = await ask(box1, '/one', 'POST');
      assert.equal(posted.status, 200);
      const two = await ask(box2, '/one');
      const three = await ask(box3, '/one');
      const one = await ask(box1, '/one');
      for (const [name, a] of [['box2', two], ['box3', three], ['box1', one]] as const) {
        assert.equal(a.body.slice(0, 10), '/one v1 #2', `${name} serves the new object (${a.cacheStatus})`);
      }
      assert.equal(gets(origin, '/one'), 2, 'one new request at the app, for the three boxes');
      t.diagnostic(`after the POST: box2 ${two.cacheStatus}; box3 ${three.cacheStatus}; box1 ${one.cacheStatus}`);
    });

    await t.test('when the object goes stale on every box at once, the app sees one request for the three boxes (one per freshness lifetime)', async () => {
      object('/short', 500, 2);
      const fill = await inParallel(30, 10, (i) => ask(all[i % 3]!, '/short'));
      assert.ok(fill.every((a) => typeof a !== 'string' && a.status === 200));
      assert.equal(gets(origin, '/short'), 1);
      // Until its freshness has ended: only-if-cached answers 504 for a stale copy without asking the app.
      await eventually(async () => (await ask(box1, '/short', 'GET', { 'cache-control': 'only-if-cached' })).status === 504, 'the object stale', 10_000);
      assert.equal(gets(origin, '/short'), 1);
      const again = await inParallel(90, 15, (i) => ask(all[i % 3]!, '/short'));
      const failed = again.filter((a) => typeof a === 'string' || a.status !== 200);
      assert.deepEqual(failed, []);
      assert.ok(again.every((a) => (a as Answer).body.startsWith('/short v0 #2')), 'every box serves the refreshed copy');
      assert.equal(gets(origin, '/short'), 2, 'one refresh at the app for the three boxes');
    });

    await t.test('an object larger than max_object_size is kept on its box and not written to Redis', async () => {
      const first = await ask(box1, '/big');
      assert.equal(first.status, 200);
      assert.equal(first.body.length, 100 * 1024);
      assert.match((await ask(box1, '/big')).cacheStatus, /^Portico; hit; ttl=/, 'box 1 keeps it in memory');
      const keys = await inspect.keys(`${boxes!.prefix}:cache:main:e:*`);
      assert.ok(keys.some((key) => key.endsWith('/one')), `the small object is in Redis: ${keys.join(', ')}`);
      assert.ok(!keys.some((key) => key.includes('/big')), `no Redis key for the large object: ${keys.join(', ')}`);
      const second = await ask(box2, '/big');
      assert.equal(second.status, 200);
      assert.equal(gets(origin, '/big'), 2, 'box 2 fetched its own copy');
      // Each box's /status counts its shared tier.
      const shared = async (box: Box) => {
        // The admin API's line may come after the one Boxes waited for.
        const admin = box.admin ?? /admin API on (\S+)/.exec(await box.process.waitForLine(/admin API on \S+/, 0))![1]!;
        const res = await fetch(new URL('status', admin), { headers: { accept: 'application/json' } });
        const report = (await res.json()) as { caches: Array<{ zone: string; shared?: { hits: number; writes: number; too_large: number } }> };
        return report.caches.find((c) => c.zone === 'main')!.shared!;
      };
      const [one, two] = [await shared(box1), await shared(box2)];
      assert.ok(one.too_large >= 1 && two.too_large >= 1, `each box kept the large object to itself: ${JSON.stringify([one, two])}`);
      assert.ok(one.writes >= 1 && two.hits >= 1, `box 1 wrote, box 2 read: ${JSON.stringify([one, two])}`);
      t.diagnostic(`/status shared: box1 ${JSON.stringify(one)}, box2 ${JSON.stringify(two)}`);
    });

    await t.test('a lock whose holder died (never released) is freed by its TTL: a waiting box then fetches, once', async () => {
      object('/orphan', 100);
      // A box that took the lock and died: the lock stays until its TTL.
      await inspect.set(`${boxes!.prefix}:cache:main:lock:httpshop.example/orphan`, 'dead-box', 'PX', 1500);
      const started = Date.now();
      const answers = await Promise.all([ask(box2, '/orphan'), ask(box3, '/orphan')]);
      const waited = Date.now() - started;
      for (const a of answers) assert.equal(a.status, 200);
      assert.ok(waited >= 1200 && waited < 5000, `answered after the lock expired (${waited} ms)`);
      assert.equal(gets(origin, '/orphan'), 1, 'one request at the app');
      t.diagnostic(`orphaned lock: answered after ${waited} ms; ${answers.map((a) => a.cacheStatus).join(' | ')}`);
    });

    await t.test('with Redis killed, requests through the three boxes still succeed (from memory or the app), none fail', async () => {
      await redis.kill();
      const before = origin.upstream.requests.length;
      const answers = await inParallel(150, 15, (i) => {
        const box = all[i % 3]!;
        // Half for the object each box holds in memory, half for new ones (misses go to the app).
        return i % 2 === 0 ? ask(box, '/one') : (object(`/new-${i}`, 100), ask(box, `/new-${i}`));
      });
      const failed = answers.filter((a) => typeof a === 'string' || a.status !== 200);
      assert.deepEqual(failed, [], 'no request failed');
      const fromMemory = (answers as Answer[]).filter((a, i) => i % 2 === 0 && /^Portico; hit/.test(a.cacheStatus)).length;
      assert.equal(fromMemory, 75, 'the object each box holds is served from its memory');
      assert.equal(origin.upstream.requests.length - before, 75, 'each new object fetched from the app once');
      for (const box of all) await box.process.waitForLine(/Redis unreachable/, 0);
      t.diagnostic(`Redis killed: 150 requests, 0 failed, ${fromMemory} from memory, ${origin.upstream.requests.length - before} to the app`);
    });
  } finally {
    inspect.disconnect();
    await boxes?.stop();
    await origin.stop();
    await redis.stop();
  }
});
