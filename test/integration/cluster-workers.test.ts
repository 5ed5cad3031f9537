/**
 * A cluster box with `workers: 2` (docs/cluster.md, "Workers in a box"): two `portico run` boxes on 127.0.0.1-2,
 * each a primary and two workers, one real redis-server, two real app servers that echo the worker that forwarded
 * (`X-Worker: $pid`). The primary holds the box's place in the cluster (one heartbeat, the operator's actions), each
 * worker its own link for its data plane: each box is listed once in /status, a drain and a purge sent to box 1 reach
 * every worker of box 2, and a cluster-wide rate limit is one bucket for every worker of every box. With pebble: one
 * ACME order for the cluster (a primary's), whose certificate every worker of both boxes serves, and an http-01
 * token in Redis answered by every worker. With a TLS listener and a sticky upstream: a client pinned through box 1
 * lands on its app server through every worker of box 2, and a TLS session from box 1 resumes on every worker of box 2
 * (each worker derives the cluster's keys itself).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { tlsVisit, adminCall } from '../helpers/cluster.js';
import { Redis } from 'ioredis';
import { Boxes, type Box } from '../helpers/boxes.js';
import { selfSignedCert } from '../helpers/h2.js';
import { freePort, startPebble } from '../helpers/pebble.js';
import { RedisServer } from '../helpers/redis.js';
import { eventually } from '../helpers/supervise.js';
import { haveTool, requireTool } from '../helpers/tools.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const TOKEN = 'cluster-workers-test-token-0123456789abcdef';
const HOST = 'shop.example';
/** How many requests a loop that waits to have met every worker of a box sends at most. */
const MAX_TRIES = 80;

interface Answer {
  status: number;
  body: string;
}

/** One answer through a box's public listener, on a fresh connection (so the kernel may hand it to either worker). */
function get(box: Box, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: box.host, port: box.port, path, agent: false, headers: { host: HOST }, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} through ${box.name}: no answer within 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** A call to a box's admin API with the token. */
const admin = (box: Box, method: 'GET' | 'POST', path: string, body?: object): Promise<{ status: number; json: any }> => adminCall(box, TOKEN, method, path, body);

/** The pids of a box's workers, from its /status. */
async function workerPids(box: Box): Promise<string[]> {
  const { json } = await admin(box, 'GET', 'status');
  return (json.workers as Array<{ pid: number }>).map((w) => String(w.pid));
}

describe('a cluster of two boxes with workers: 2 each', { timeout: 60_000, skip: !haveTool('redis-server') && process.env.CI !== 'true' ? 'redis-server is not installed (on CI, with CI=true, this fails instead)' : false }, () => {
  let redis: RedisServer;
  let boxes: Boxes;
  const apps: TestUpstream[] = [];
  /** Every fetch of /c/page the apps saw: the worker (pid) that forwarded it. */
  const pageFetches: string[] = [];

  before(async () => {
    redis = await RedisServer.start();
    for (const name of ['a', 'b']) {
      apps.push(
        await startUpstream((req, res) => {
          const worker = String(req.headers['x-worker'] ?? '');
          if (req.url === '/c/page') pageFetches.push(worker);
          res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': req.url!.startsWith('/c/') ? 'max-age=600' : 'no-store' });
          res.end(`${name} ${worker}`);
        }),
      );
    }
    boxes = await Boxes.start({
      count: 2,
      redis: redis.url,
      env: { PORTICO_TEST_ADMIN_TOKEN: TOKEN },
      config: ({ host }) => `workers: 2
listen: ["${host}:0"]
log: { access: off }
admin:
  listen: "${host}:0"
  token_env: PORTICO_TEST_ADMIN_TOKEN
  open_reads: true
caches:
  pages: { memory: 1MB }
upstreams:
  app:
    servers:
      - { url: "${apps[0]!.url}", name: a }
      - { url: "${apps[1]!.url}", name: b }
sites:
  - routes:
      - path: /limited
        rate_limit: { rate: 1/m, burst: 10, key: "fleet" }
        proxy: { upstream: app, set_headers: { X-Worker: "$pid" } }
      - path: /c/
        proxy: { upstream: app, cache: { zone: pages }, set_headers: { X-Worker: "$pid" } }
      - path: /
        proxy: { upstream: app, set_headers: { X-Worker: "$pid" } }
`,
    });
    for (const box of boxes.boxes) {
      const line = await box.process.waitForLine(/admin API on (\S+)/, 0);
      box.admin = /admin API on (\S+)/.exec(line)![1];
    }
  });

  after(async () => {
    await boxes?.stop();
    await Promise.all(apps.map((app) => app.stop()));
    await redis?.stop();
  });

  test('each box is listed once in /status (one heartbeat per box, not per worker), with no duplicate-name warning', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    for (const box of boxes.boxes) {
      const names = await eventually(
        async () => {
          const { json } = await admin(box, 'GET', 'status');
          const listed = (json.cluster?.boxes ?? []).map((b: { name: string }) => b.name) as string[];
          return listed.length === 2 ? listed : undefined;
        },
        `${box.name}: two boxes listed`,
        10_000,
      );
      assert.deepEqual(names, ['box1', 'box2'], `${box.name} lists each box once`);
      const { json } = await admin(box, 'GET', 'status');
      assert.equal(json.workers.length, 2, `${box.name} runs two workers`);
      assert.equal(json.cluster.redis.up, true, `${box.name}: Redis up for the primary and both workers`);
      const self = json.cluster.boxes.find((b: { self: boolean }) => b.self);
      assert.equal(self.name, box.name);
      assert.equal(self.pid, json.pid, 'the record is the primary\'s');
      assert.doesNotMatch(box.process.stderr, /another process uses the box name/, `${box.name}: no duplicate-name warning`);
      // /metrics aggregates the primary's and the workers' registries: the box count is the box's, not a sum.
      const metrics = await (await fetch(new URL('metrics', box.admin), { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(5000) })).text();
      assert.match(metrics, /^portico_cluster_boxes 2$/m, `${box.name}: portico_cluster_boxes is 2 (not summed over the processes)`);
      assert.match(metrics, /^portico_cluster_redis_up 1$/m);
    }
  });

  test('a cluster-wide rate limit (burst 10) lets exactly 10 requests through for the whole fleet, over both boxes and their four workers', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    const statuses: number[] = [];
    const passedBy = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const res = await get(boxes.box((i % 2) + 1), '/limited');
      statuses.push(res.status);
      if (res.status === 200) passedBy.add(res.body.split(' ')[1]!);
    }
    const passed = statuses.filter((s) => s === 200).length;
    const refused = statuses.filter((s) => s === 429).length;
    t.diagnostic(`40 requests over 2 boxes × 2 workers: ${passed} passed (by ${passedBy.size} workers), ${refused} refused`);
    assert.equal(passed + refused, 40, 'every answer is 200 or 429');
    assert.equal(passed, 10, 'one bucket in Redis for the fleet: not per box, not per worker, and not divided among the workers');
  });

  test('a drain sent to box 1 applies in every worker of box 2', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    const box2 = boxes.box(2);
    const pids = await workerPids(box2);
    const sent = Date.now();
    const answer = await admin(boxes.box(1), 'POST', 'upstreams/app/servers/a/drain');
    assert.equal(answer.status, 200, JSON.stringify(answer.json));
    assert.deepEqual(answer.json.cluster, { shared: true, published_to: 2 }, 'published to the two boxes (their primaries), once each');
    await eventually(
      async () => {
        const { json } = await admin(box2, 'GET', 'status');
        return json.upstreams.find((u: { name: string }) => u.name === 'app').servers.find((s: { id: string }) => s.id === 'a').admin === 'draining';
      },
      'box2 /status: a draining',
      2000,
    );
    t.diagnostic(`box2 shows the drain after ${Date.now() - sent} ms`);
    // Every worker of box 2 (each met on a fresh connection) sends new requests to b only.
    const met = new Set<string>();
    let sentCount = 0;
    while (met.size < pids.length && sentCount < MAX_TRIES) {
      const res = await get(box2, '/who');
      sentCount++;
      assert.equal(res.status, 200);
      const [server, worker] = res.body.split(' ') as [string, string];
      assert.equal(server, 'b', `worker ${worker} of box2 avoids the drained server`);
      met.add(worker);
    }
    t.diagnostic(`${sentCount} requests through box2 met workers ${[...met].join(', ')} (box2's: ${pids.join(', ')}); every one went to b`);
    assert.deepEqual([...met].sort(), [...pids].sort(), 'both workers of box2 were met');
    assert.equal((await admin(boxes.box(1), 'POST', 'upstreams/app/servers/a/enable')).status, 200);
  });

  test('a purge sent to box 1 reaches every worker of box 2: each fetches the object again', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    const box2 = boxes.box(2);
    const pids = await workerPids(box2);
    /** Requests /c/page through box2 until each of its workers has fetched it (since `from`), bounded. */
    const fetchedByEach = async (from: number): Promise<number> => {
      let sentCount = 0;
      while (sentCount < MAX_TRIES && !pids.every((pid) => pageFetches.slice(from).includes(pid))) {
        assert.equal((await get(box2, '/c/page')).status, 200);
        sentCount++;
      }
      return sentCount;
    };
    const warm = await fetchedByEach(pageFetches.length);
    assert.ok(pids.every((pid) => pageFetches.includes(pid)), `both workers of box2 cached /c/page (fetches by ${pageFetches.join(', ')})`);
    const before = pageFetches.length;
    // Cached in each worker now: more requests are hits.
    for (let i = 0; i < 10; i++) assert.equal((await get(box2, '/c/page')).status, 200);
    assert.equal(pageFetches.length, before, 'every worker of box2 serves /c/page from its cache');
    const answer = await admin(boxes.box(1), 'POST', 'caches/pages/purge', { url: `http://${HOST}/c/page` });
    assert.equal(answer.status, 200, JSON.stringify(answer.json));
    assert.equal(answer.json.cluster?.shared, true, JSON.stringify(answer.json));
    const after = await fetchedByEach(before);
    t.diagnostic(`warm-up ${warm} requests; after the purge, ${after} requests through box2 had both its workers fetch again (fetches since: ${pageFetches.slice(before).join(', ')})`);
    assert.ok(pids.every((pid) => pageFetches.slice(before).includes(pid)), 'each worker of box2 forgot /c/page and fetched it again');
  });

  // Last: it takes Redis away.
  test('Redis killed: no request fails, each worker limits at burst / boxes / workers (10 / 2 / 2, rounded up: 3), /status sums the workers\' fallbacks; Redis back: up again', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    await redis.kill();
    const statuses: number[] = [];
    const passedBy = new Map<string, number>();
    for (let i = 0; i < 80; i++) {
      const res = await get(boxes.box((i % 2) + 1), '/limited');
      statuses.push(res.status);
      if (res.status === 200) {
        const worker = res.body.split(' ')[1]!;
        passedBy.set(worker, (passedBy.get(worker) ?? 0) + 1);
      }
    }
    const passed = statuses.filter((s) => s === 200).length;
    t.diagnostic(`Redis down: 80 requests over 2 boxes × 2 workers: ${passed} passed, by worker ${JSON.stringify(Object.fromEntries(passedBy))}, ${statuses.filter((s) => s === 429).length} refused`);
    assert.ok(statuses.every((s) => s === 200 || s === 429), `no request failed: ${[...new Set(statuses)].join(', ')}`);
    for (const [worker, n] of passedBy) assert.ok(n <= 3, `worker ${worker} let ${n} through: its share is ceil(10 / 2 boxes / 2 workers) = 3`);
    assert.ok(passed <= 12 && passed >= 3, `the fleet let ${passed} through: at most 4 workers × 3`);
    for (const box of boxes.boxes) {
      const { json } = await admin(box, 'GET', 'status');
      assert.equal(json.cluster.redis.up, false, `${box.name}: Redis down in /status`);
      assert.ok((json.cluster.redis.fallbacks.rate_limit ?? 0) >= 1, `${box.name}: the workers' rate_limit fallbacks are summed in /status: ${JSON.stringify(json.cluster.redis.fallbacks)}`);
    }
    await redis.restart();
    for (const box of boxes.boxes) {
      await eventually(async () => {
        const { json } = await admin(box, 'GET', 'status');
        // The workers' links find Redis again with their next call.
        await get(box, '/who');
        return json.cluster.redis.up === true;
      }, `${box.name}: Redis up again for the primary and both workers`, 10_000);
    }
  });
});

/** The pids of a box's workers, from its `portico: worker N serving (pid P)` lines. */
function servingPids(box: Box): string[] {
  return [...new Set([...box.process.stderr.matchAll(/worker \d+ serving \(pid (\d+)\)/g)].map((m) => m[1]!))];
}

/** An HTTPS request for `SITE` through a box on a fresh connection: the certificate served and the worker that forwarded. */
function overTls(box: Box, port: number, site: string): Promise<{ serial: string; issuer: string; worker: string } | undefined> {
  return new Promise((resolve) => {
    const req = httpsRequest({ host: box.host, port, path: '/', servername: site, headers: { host: site }, agent: false, rejectUnauthorized: false, timeout: 3000 }, (res) => {
      const cert = (res.socket as import('node:tls').TLSSocket).getPeerX509Certificate();
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve(cert === undefined ? undefined : { serial: cert.serialNumber, issuer: cert.issuer, worker: Buffer.concat(chunks).toString().split(' ')[1] ?? '' }));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

describe('ACME in a cluster of two boxes with workers: 2 each', { timeout: 60_000, skip: (!haveTool('redis-server') || !haveTool('pebble')) && process.env.CI !== 'true' ? 'redis-server or pebble is not installed (on CI, with CI=true, this fails instead)' : false }, () => {
  const SITE = 'shop.test';
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('one order for the whole cluster (by a primary); every worker of both boxes serves its certificate; an http-01 token in Redis is answered by every worker', async (t) => {
    if (!requireTool(t, 'redis-server') || !requireTool(t, 'pebble')) return;
    const dir = mkdtempSync(path.join(tmpdir(), 'portico-cluster-workers-acme-'));
    dirs.push(dir);
    const redis = await RedisServer.start();
    t.after(() => redis.stop());
    const app = await startUpstream((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`app ${String(req.headers['x-worker'] ?? '')}`);
    });
    t.after(() => app.stop());
    const [httpPort, tlsPort] = [await freePort(), await freePort()];
    const pebble = await startPebble(dir, { alwaysValid: true, httpPort });
    t.after(() => pebble.stop());
    const boxes = await Boxes.start({
      count: 2,
      redis: redis.url,
      cluster: '  acme_lease: 3s\n',
      config: ({ host }) => `workers: 2
listen: ["${host}:${httpPort}", { addr: "${host}:${tlsPort}", tls: {} }]
log: { access: off }
upstreams: { app: { servers: ["${app.url}"] } }
sites:
  - hosts: [${SITE}]
    tls: { acme: { email: ops@${SITE}, agree_tos: true, directory: "${pebble.directory}", trusted_roots: ${pebble.caFile} } }
    routes: [{ path: /, proxy: { upstream: app, set_headers: { X-Worker: "$pid" } } }]
`,
    });
    t.after(async () => {
      await boxes.stop();
      for (const box of boxes.boxes) dirs.push(box.dir);
    });
    const started = Date.now();
    // Every worker of each box (met on fresh connections) serves one certificate from pebble.
    const serials = new Set<string>();
    for (const box of boxes.boxes) {
      const pids = servingPids(box);
      assert.equal(pids.length, 2, `${box.name} runs two workers`);
      const met = new Set<string>();
      await eventually(async () => {
        const answer = await overTls(box, tlsPort, SITE);
        if (answer === undefined || !/Pebble Intermediate CA/.test(answer.issuer)) return false;
        serials.add(answer.serial);
        met.add(answer.worker);
        return pids.every((pid) => met.has(pid));
      }, `every worker of ${box.name} serving pebble's certificate`, 30_000);
    }
    t.diagnostic(`both boxes' four workers serve pebble's certificate ${Date.now() - started} ms after start; pebble issued ${pebble.issued()}; serials ${[...serials].join(', ')}`);
    assert.equal(serials.size, 1, 'one certificate, the same in every worker of every box');
    assert.equal(pebble.issued(), 1, 'one order for the whole cluster, not one per box or per worker');
    const ordered = boxes.boxes.flatMap((box) => box.process.stderr.split('\n').filter((line) => line.includes('acme: certificate obtained')));
    assert.equal(ordered.length, 1, 'one primary obtained it; the other installed it from the cluster');

    // A token another box's order put in Redis: every worker of box 2 answers it (each looks up on its own link).
    const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    t.after(() => client.disconnect());
    const token = 'workerToken_0123456789';
    await client.set(`${boxes.prefix}:acme:token:${token}`, `${token}.thumbprint`, 'PX', 60_000);
    const answers: number[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ host: boxes.box(2).host, port: httpPort, path: `/.well-known/acme-challenge/${token}`, agent: false, headers: { host: SITE }, timeout: 3000 }, (r) => {
          const chunks: Buffer[] = [];
          r.on('data', (chunk: Buffer) => chunks.push(chunk));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        });
        req.on('error', reject);
        req.end();
      });
      answers.push(res.status);
      assert.equal(res.body, `${token}.thumbprint`);
    }
    // 20 fresh connections reach both workers (reusePort / the shared socket spread them): each answered from Redis.
    assert.ok(answers.every((status) => status === 200), `every answer 200: ${answers.join(', ')}`);
  });
});

describe('the cluster\'s keys in two boxes with workers: 2 each', { timeout: 60_000, skip: !haveTool('redis-server') && process.env.CI !== 'true' ? 'redis-server is not installed (on CI, with CI=true, this fails instead)' : false }, () => {
  test('a client pinned through box 1 lands on its app server through every worker of box 2, and a TLS session from box 1 resumes on every worker of box 2', async (t) => {
    if (!requireTool(t, 'redis-server')) return;
    const cert = await selfSignedCert();
    const redis = await RedisServer.start();
    t.after(() => redis.stop());
    const apps: TestUpstream[] = [];
    for (const name of ['app1', 'app2', 'app3']) {
      apps.push(
        await startUpstream((req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end(`${name} ${String(req.headers['x-worker'] ?? '')}`);
        }),
      );
    }
    t.after(() => Promise.all(apps.map((app) => app.stop())));
    const tlsPort = await freePort();
    const boxes = await Boxes.start({
      count: 2,
      redis: redis.url,
      config: ({ host, dir }) => {
        writeFileSync(path.join(dir, 'cert.pem'), cert.cert);
        writeFileSync(path.join(dir, 'cert.key'), cert.key);
        return `workers: 2
listen:
  - "${host}:0"
  - { addr: "${host}:${tlsPort}", tls: { cert: ./cert.pem, key: ./cert.key } }
log: { access: off }
upstreams:
  app:
    servers: [${apps.map((app) => `"${app.url}"`).join(', ')}]
    sticky: { cookie: pin }
sites:
  - routes:
      - path: /
        proxy: { upstream: app, set_headers: { X-Worker: "$pid" } }
`;
      },
    });
    t.after(() => boxes.stop());
    const box2 = boxes.box(2);
    const pids = servingPids(box2);
    assert.equal(pids.length, 2);

    // Pinned through box 1 (a worker of it), then sent through box 2 on fresh connections until both its workers answered.
    const first = await tlsVisit(boxes.box(1).host, tlsPort);
    assert.ok(first.setCookie !== undefined, 'box1 set the sticky cookie');
    assert.equal(first.reused, false);
    assert.ok(first.session !== undefined, 'box1 issued a session ticket');
    const [pinned] = first.body.split(' ') as [string];
    const met = new Set<string>();
    let tries = 0;
    let session = first.session;
    while (met.size < pids.length && tries < MAX_TRIES) {
      tries++;
      const answer = await tlsVisit(box2.host, tlsPort, session, first.setCookie);
      const [server, worker] = answer.body.split(' ') as [string, string];
      assert.equal(answer.reused, true, `worker ${worker} of box2 resumed box1's session`);
      assert.equal(server, pinned, `worker ${worker} of box2 sent the client pinned to ${pinned} there`);
      assert.equal(answer.setCookie, undefined, `worker ${worker} of box2 knew the cookie (set none)`);
      met.add(worker);
      session = answer.session ?? session;
    }
    t.diagnostic(`pinned to ${pinned} through box1; ${tries} TLS connections to box2 met workers ${[...met].join(', ')}: each resumed the session and kept the pin`);
    assert.deepEqual([...met].sort(), [...pids].sort(), 'both workers of box2 were met');
  });
});
