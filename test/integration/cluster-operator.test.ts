/**
 * The operator's actions across a cluster (docs/cluster.md, "Drains, weights and purges"): three `portico run`
 * boxes on 127.0.0.1-3, one real redis-server, two real app servers. A drain and a purge sent to one box take
 * effect on all three within a second, and so does an unsafe method's invalidation; a box restarted keeps the drain,
 * and one that was down when a weight was set and an object purged gets both from Redis before it serves (its disk
 * tier included); enable reverses the drain everywhere; with Redis away a drain and a purge apply to their box only
 * (and say so), and are shared when Redis is back (empty: the boxes put back what they hold).
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { adminCall } from '../helpers/cluster.js';
import { Boxes, type Box } from '../helpers/boxes.js';
import { RedisServer } from '../helpers/redis.js';
import { eventually } from '../helpers/supervise.js';
import { haveTool, requireTool } from '../helpers/tools.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const TOKEN = 'cluster-operator-test-token-0123456789abcdef';
const HOST = 'shop.example';

/** One answer through a box's public listener (Host: shop.example), on a fresh connection. */
function get(box: Box, path: string, method = 'GET'): Promise<{ status: number; body: string; cacheStatus: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: box.host, port: box.port, path, method, agent: false, headers: { host: HOST }, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), cacheStatus: String(res.headers['cache-status'] ?? '') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} through ${box.name}: no answer within 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** A call to a box's admin API with the token. */
const admin = (box: Box, method: 'GET' | 'POST', path: string, body?: object): Promise<{ status: number; json: any }> => adminCall(box, TOKEN, method, path, body);

/** Server `id` of upstream `app` as box's `/status` shows it. */
async function serverOn(box: Box, id: string): Promise<{ admin: string; weight: number; state: string }> {
  const { json } = await admin(box, 'GET', 'status');
  const upstream = json.upstreams.find((u: { name: string }) => u.name === 'app');
  return upstream.servers.find((s: { id: string }) => s.id === id);
}

/** Polls every box's `/status` until `check` holds for each; resolves with each box's ms from `since`. */
async function onEveryBox(boxes: readonly Box[], id: string, check: (server: { admin: string; weight: number }) => boolean, since: number, timeoutMs: number): Promise<number[]> {
  return Promise.all(
    boxes.map(async (box) => {
      await eventually(async () => check(await serverOn(box, id)), `${box.name}: server ${id} as expected`, timeoutMs);
      return Date.now() - since;
    }),
  );
}

/** `count` requests for `/who` through `box`: how many each app server answered. */
async function spread(box: Box, count: number): Promise<Record<string, number>> {
  const seen: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    const res = await get(box, '/who');
    assert.equal(res.status, 200);
    seen[res.body] = (seen[res.body] ?? 0) + 1;
  }
  return seen;
}

describe('operator actions and purges across three boxes', { timeout: 60_000, skip: !haveTool('redis-server') && process.env.CI !== 'true' ? 'redis-server is not installed (on CI, with CI=true, this fails instead)' : false }, () => {
  let redis: RedisServer;
  let boxes: Boxes;
  const apps: TestUpstream[] = [];
  /** Requests for /page each app server saw. */
  let pageFetches = 0;

  before(async () => {
    redis = await RedisServer.start();
    for (const name of ['a', 'b']) {
      apps.push(
        await startUpstream((req, res) => {
          if (req.url === '/c/page') pageFetches++;
          res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': req.url!.startsWith('/c/') ? 'max-age=600' : 'no-store' });
          res.end(name);
        }),
      );
    }
    boxes = await Boxes.start({
      redis: redis.url,
      env: { PORTICO_TEST_ADMIN_TOKEN: TOKEN },
      config: ({ host }) => `listen: ["${host}:0"]
log: { access: off }
admin:
  listen: "${host}:0"
  token_env: PORTICO_TEST_ADMIN_TOKEN
  open_reads: true
caches:
  pages: { memory: 1MB, disk: { path: cache, size: 10MB } }
upstreams:
  app:
    servers:
      - { url: "${apps[0]!.url}", name: a }
      - { url: "${apps[1]!.url}", name: b }
sites:
  - routes:
      - path: /c/
        proxy: { upstream: app, cache: { zone: pages } }
      - path: /
        proxy: { upstream: app }
`,
    });
  });

  after(async () => {
    await boxes?.stop();
    await Promise.all(apps.map((app) => app.stop()));
    await redis?.stop();
  });

  test('a drain sent to box 1 shows on every box\'s /status within 1 s, and new requests through every box avoid the drained server', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    const before = await spread(boxes.box(2), 10);
    assert.ok((before.a ?? 0) > 0 && (before.b ?? 0) > 0, `both servers serve before the drain: ${JSON.stringify(before)}`);
    for (const box of boxes.boxes) assert.equal((await serverOn(box, 'a')).admin, 'enabled', `${box.name}: a is enabled before`);
    const sent = Date.now();
    const answer = await admin(boxes.box(1), 'POST', 'upstreams/app/servers/a/drain');
    const answered = Date.now() - sent;
    assert.equal(answer.status, 200, JSON.stringify(answer.json));
    assert.equal(answer.json.admin, 'draining');
    assert.deepEqual(answer.json.cluster, { shared: true, published_to: 3 }, 'kept in Redis and published to the three boxes');
    const ms = await onEveryBox(boxes.boxes, 'a', (server) => server.admin === 'draining', sent, 1000);
    t.diagnostic(`drain answered after ${answered} ms; seen in /status of box1..3 after ${ms.join(', ')} ms`);
    assert.ok(Math.max(...ms) < 1000, `every box within 1 s: ${ms.join(', ')} ms`);
    for (const box of boxes.boxes) {
      const seen = await spread(box, 20);
      t.diagnostic(`${box.name} after the drain: ${JSON.stringify(seen)}`);
      assert.deepEqual(seen, { b: 20 }, `${box.name} sends nothing new to the drained server`);
    }
  });

  test('a purge sent to box 2 removes the cached object on all three boxes within 1 s: the next request through each reaches the app', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    for (const box of boxes.boxes) {
      await get(box, '/c/page');
      assert.match((await get(box, '/c/page')).cacheStatus, /^Portico; hit/, `${box.name} has /c/page cached`);
    }
    const fetchesBefore = pageFetches;
    const sent = Date.now();
    const answer = await admin(boxes.box(2), 'POST', 'caches/pages/purge', { url: `http://${HOST}/c/page` });
    assert.equal(answer.status, 200, JSON.stringify(answer.json));
    assert.equal(answer.json.purged, 1);
    assert.deepEqual(answer.json.cluster, { shared: true, published_to: 3 });
    // A box still holding it answers from cache (and stays as it is); the first answer that is not a hit came from the app.
    const ms = await Promise.all(
      boxes.boxes.map(async (box) => {
        await eventually(async () => !/^Portico; hit/.test((await get(box, '/c/page')).cacheStatus), `${box.name}: /c/page no longer cached`, 1000);
        return Date.now() - sent;
      }),
    );
    t.diagnostic(`purge took effect on box1..3 after ${ms.join(', ')} ms; the app saw ${pageFetches - fetchesBefore} requests for /c/page`);
    assert.ok(Math.max(...ms) < 1000, `every box within 1 s: ${ms.join(', ')} ms`);
    assert.equal(pageFetches - fetchesBefore, 3, 'each box fetched /c/page from the app once after the purge');
  });

  test('an unsafe method through box 1 invalidates the object on the other boxes too: their next request reaches the app', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    for (const box of boxes.boxes) {
      await get(box, '/c/page');
      assert.match((await get(box, '/c/page')).cacheStatus, /^Portico; hit/, `${box.name} has /c/page cached`);
    }
    const sent = Date.now();
    assert.equal((await get(boxes.box(1), '/c/page', 'POST')).status, 200);
    const ms = await Promise.all(
      boxes.boxes.map(async (box) => {
        await eventually(async () => !/^Portico; hit/.test((await get(box, '/c/page')).cacheStatus), `${box.name}: /c/page invalidated`, 1000);
        return Date.now() - sent;
      }),
    );
    t.diagnostic(`invalidation took effect on box1..3 after ${ms.join(', ')} ms`);
  });

  test('box 3 restarted keeps the drain, and serves with the weight set and without the object purged while it was down', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    for (const path of ['/c/one', '/c/two']) {
      await get(boxes.box(3), path);
      assert.match((await get(boxes.box(3), path)).cacheStatus, /^Portico; hit/, `box3 has ${path} cached`);
    }
    await boxes.box(3).process.stop();
    const weight = await admin(boxes.box(1), 'POST', 'upstreams/app/servers/b/weight', { weight: 7 });
    assert.equal(weight.status, 200, JSON.stringify(weight.json));
    assert.deepEqual(weight.json.cluster, { shared: true, published_to: 2 }, 'two boxes were listening');
    const purge = await admin(boxes.box(1), 'POST', 'caches/pages/purge', { url: `http://${HOST}/c/one` });
    assert.deepEqual(purge.json.cluster, { shared: true, published_to: 2 });
    const box3 = await boxes.restart(3);
    // From its first answer: it read Redis before it served.
    assert.equal((await serverOn(box3, 'a')).admin, 'draining', 'the drain holds on the restarted box');
    assert.equal((await serverOn(box3, 'b')).weight, 7, 'the weight kept in Redis');
    assert.match((await get(box3, '/c/two')).cacheStatus, /^Portico; hit/, 'its disk tier kept /c/two over the restart');
    assert.doesNotMatch((await get(box3, '/c/one')).cacheStatus, /^Portico; hit/, 'the purge it missed was applied to its disk tier');
    const seen = await spread(box3, 20);
    t.diagnostic(`box3 after its restart: ${JSON.stringify(seen)}`);
    assert.deepEqual(seen, { b: 20 });
  });

  test('enable sent to box 3 reverses the drain on every box within 1 s', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    const sent = Date.now();
    const answer = await admin(boxes.box(3), 'POST', 'upstreams/app/servers/a/enable');
    assert.equal(answer.status, 200, JSON.stringify(answer.json));
    assert.equal(answer.json.admin, 'enabled');
    assert.deepEqual(answer.json.cluster, { shared: true, published_to: 3 });
    const ms = await onEveryBox(boxes.boxes, 'a', (server) => server.admin === 'enabled', sent, 1000);
    t.diagnostic(`enable seen on box1..3 after ${ms.join(', ')} ms`);
    for (const box of boxes.boxes) {
      const seen = await spread(box, 20);
      assert.ok((seen.a ?? 0) > 0, `${box.name} sends to a again: ${JSON.stringify(seen)}`);
    }
  });

  test('with Redis away a drain and a purge apply to their own box and say they did not reach the cluster; Redis back (empty) gets them from that box and every box applies them', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    for (const box of boxes.boxes) {
      await get(box, '/c/away');
      assert.match((await get(box, '/c/away')).cacheStatus, /^Portico; hit/, `${box.name} has /c/away cached`);
    }
    await redis.kill();
    const answer = await admin(boxes.box(2), 'POST', 'upstreams/app/servers/b/drain');
    assert.equal(answer.status, 200, JSON.stringify(answer.json));
    assert.equal(answer.json.admin, 'draining');
    assert.equal(answer.json.cluster.shared, false);
    assert.match(answer.json.cluster.note, /Redis is unreachable/);
    const purge = await admin(boxes.box(2), 'POST', 'caches/pages/purge', { url: `http://${HOST}/c/away` });
    assert.equal(purge.json.purged, 1);
    assert.equal(purge.json.cluster.shared, false);
    assert.equal((await serverOn(boxes.box(1), 'b')).admin, 'enabled', 'box 1 has not heard of the drain');
    assert.match((await get(boxes.box(1), '/c/away')).cacheStatus, /^Portico; hit/, 'box 1 has not heard of the purge');
    await redis.restart();
    const since = Date.now();
    const ms = await onEveryBox(boxes.boxes, 'b', (server) => server.admin === 'draining' && server.weight === 7, since, 15_000);
    t.diagnostic(`after Redis came back, the drain reached box1..3 in ${ms.join(', ')} ms`);
    for (const box of [boxes.box(1), boxes.box(3)]) {
      await eventually(async () => !/^Portico; hit/.test((await get(box, '/c/away')).cacheStatus), `${box.name}: the purge made while Redis was away`, 15_000);
    }
    t.diagnostic(`and the purge in ${Date.now() - since} ms`);
    // The servers' states that Redis lost are back in it: the newest change of each server, from the boxes.
    for (const box of boxes.boxes) assert.equal((await serverOn(box, 'a')).admin, 'enabled');
  });
});
