// The shared cache tier (issue 19), run through bench/shared-cache.sh: what one request costs when its answer
// comes from the box's memory, from the cluster's Redis (another box fetched it), or from the app (a miss, which
// also takes the cluster lock and writes the answer to Redis), against a box with no shared tier (its miss and its
// memory hit). Two cluster boxes A and B and one lone box C, one redis-server, one origin (1 KiB and 100 KiB
// answers, `Cache-Control: max-age=3600`), all on this machine. Each URL is asked once per phase, so that every
// request of a phase is the kind it measures (checked on its Cache-Status):
//   miss (app)       A asks N new URLs          → the app, then stored in A's memory and in Redis
//   hit from Redis   B asks the same N URLs     → not in B's memory, read from Redis (then kept in B's memory)
//   hit from memory  B asks them again          → B's memory
// Each phase twice: one request at a time (latency: mean, p50, p99) and 16 at a time (requests/s).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startPortico } from '../lib/servers.mjs';
import { progress, table } from '../lib/common.mjs';

const OUT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../out/shared-cache');
const N = Number(process.env.BENCH_SHARED_URLS ?? (process.env.BENCH_QUICK === '1' ? 500 : 3000));
const SIZES = [
  { label: '1 KiB', bytes: 1024 },
  { label: '100 KiB', bytes: 100 * 1024 },
];

async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server not ready: ${log}`)), 10_000);
    child.stdout.on('data', (c) => {
      log += c;
      if (/Ready to accept connections/.test(log)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', () => reject(new Error(`redis-server exited: ${log}`)));
  });
  return { url: `redis://127.0.0.1:${port}/0`, stop: async () => { child.kill('SIGTERM'); await once(child, 'exit'); } };
}

async function startOrigin() {
  const bodies = new Map(SIZES.map((s) => [s.bytes, Buffer.alloc(s.bytes, 'x')]));
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    const size = Number(/^\/(\d+)\//.exec(req.url)?.[1] ?? 1024);
    const body = bodies.get(size) ?? bodies.get(1024);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, 'cache-control': 'max-age=3600' });
    res.end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${server.address().port}`, requests: () => requests, stop: () => new Promise((r) => server.close(r)) };
}

function boxConfig({ port, origin, redis, name }) {
  const cluster = redis === undefined ? '' : `cluster:\n  redis: ${redis}\n  prefix: bench:shared\n  name: ${name}\n  timeout: ${process.env.BENCH_REDIS_TIMEOUT ?? '200ms'}\n`;
  const shared = redis === undefined ? '' : ', shared: { max_object_size: 1MB }';
  return `${cluster}listen: ["127.0.0.1:${port}"]
state_dir: ./var
log: { access: off }
caches:
  main: { memory: 1GB, max_object: 1MB${shared} }
upstreams:
  app: { servers: [{ url: "${origin}" }], retries: 0 }
sites:
  - routes:
      - path: /
        proxy: { upstream: app, cache: { zone: main } }
`;
}

async function startBox(name, origin, redis) {
  const port = await freePort();
  const outDir = path.join(OUT, name);
  mkdirSync(outDir, { recursive: true });
  const box = await startPortico({ name, config: boxConfig({ port, origin, redis, name }), outDir, cpu: 0, readyUrl: `http://127.0.0.1:${port}/ready` });
  return { ...box, port };
}

const agentOf = (concurrency) => new http.Agent({ keepAlive: true, maxSockets: concurrency });

function get(port, urlPath, agent) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    http
      .get({ host: '127.0.0.1', port, path: urlPath, agent, headers: { host: 'shop.example' } }, (res) => {
        let bytes = 0;
        res.on('data', (c) => (bytes += c.length));
        res.on('end', () => resolve({ status: res.statusCode, bytes, cacheStatus: String(res.headers['cache-status'] ?? ''), ms: Number(process.hrtime.bigint() - started) / 1e6 }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** Asks every path once, `concurrency` at a time; checks each answer's kind. */
async function phase(port, paths, concurrency, expect) {
  const agent = agentOf(concurrency);
  const times = [];
  let wrong = 0;
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < paths.length) {
        const answer = await get(port, paths[next++], agent);
        if (answer.status !== 200 || !expect.test(answer.cacheStatus)) wrong++;
        times.push(answer.ms);
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  agent.destroy();
  times.sort((a, b) => a - b);
  const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
  return { mean: times.reduce((s, t) => s + t, 0) / times.length, p50: at(0.5), p99: at(0.99), rps: paths.length / seconds, wrong };
}

const MISS = /^Portico; fwd=uri-miss; fwd-status=200; stored$/;
const REDIS = /^Portico; hit; ttl=\d+; detail=shared$/;
const MEMORY = /^Portico; hit; ttl=\d+$/;

async function main() {
  process.env.PORTICO_CLUSTER_KEY ??= 'bench-cluster-secret-0123456789abcdef0123456789';
  const redis = await startRedis();
  const origin = await startOrigin();
  const a = await startBox('box-a', origin.url, redis.url);
  const b = await startBox('box-b', origin.url, redis.url);
  const c = await startBox('box-c', origin.url, undefined);
  const rows = [];
  const notes = [];
  try {
    // The boxes' links connect in the background: wait until B reads what A stored.
    for (let i = 0; ; i++) {
      await get(a.port, `/1024/warm-${i}`);
      if (REDIS.test((await get(b.port, `/1024/warm-${i}`)).cacheStatus)) break;
      if (i > 200) throw new Error('box B never read from Redis');
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const size of SIZES) {
      for (const concurrency of [1, 16]) {
        const paths = Array.from({ length: N }, (_, i) => `/${size.bytes}/c${concurrency}/o${i}`);
        progress(`${size.label}, ${concurrency} at a time: miss at A`);
        const before = origin.requests();
        const miss = await phase(a.port, paths, concurrency, MISS);
        const appRequests = origin.requests() - before;
        progress(`${size.label}, ${concurrency} at a time: Redis hits at B`);
        const fromRedis = await phase(b.port, paths, concurrency, REDIS);
        progress(`${size.label}, ${concurrency} at a time: memory hits at B`);
        const fromMemory = await phase(b.port, paths, concurrency, MEMORY);
        progress(`${size.label}, ${concurrency} at a time: lone box C (miss, then memory hit)`);
        const lonePaths = paths.map((p) => `${p}-lone`);
        const loneMiss = await phase(c.port, lonePaths, concurrency, MISS);
        const loneHit = await phase(c.port, lonePaths, concurrency, MEMORY);
        // More than one per URL per box kind: a Redis call missed its deadline and the box fell back to the app.
        const extra = origin.requests() - before - 2 * N;
        if (extra !== 0) notes.push(`${size.label}, ${concurrency} in flight: the app saw ${extra} requests more than one per URL (fallbacks)`);
        for (const [kind, r] of [['miss to the app (cluster box)', miss], ['hit from Redis', fromRedis], ['hit from memory', fromMemory], ['miss to the app (no shared tier)', loneMiss], ['hit from memory (no shared tier)', loneHit]]) {
          rows.push([size.label, String(concurrency), kind, r.mean.toFixed(3), r.p50.toFixed(3), r.p99.toFixed(3), Math.round(r.rps).toLocaleString('en-US'), String(r.wrong)]);
        }
        void appRequests;
      }
    }
    for (const box of [a, b]) {
      for (const line of box.log().split('\n')) if (/cluster:/.test(line)) notes.push(`${box === a ? 'A' : 'B'}: ${line.slice(0, 300)}`);
    }
  } finally {
    await Promise.all([a.stop(), b.stop(), c.stop()]);
    await origin.stop();
    await redis.stop();
  }
  console.log(`shared cache tier: ${N} URLs per phase; ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}; node ${process.version}; ${new Date().toISOString()}`);
  for (const note of notes) console.log(note);
  console.log(table(['size', 'in flight', 'answer', 'mean ms', 'p50 ms', 'p99 ms', 'req/s', 'wrong kind'], rows));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
