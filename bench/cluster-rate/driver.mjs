// Cluster-wide rate limits (issue 19, performance): what a rate limit costs per request when its bucket is in Redis
// (one EVALSHA of cluster/rate-bucket.ts's GCRA script per request) against the same rule kept in the box
// (`scope: box`), and against no rate limit at all, on one `respond` route of a box with a `cluster` section.
// The rule's rate is high enough never to refuse (every answer must be a 200).
//
// Portico runs on CPU 0; this driver (the load generator), wrk and redis-server share CPU 1.
// Per mode, alternating over BENCH_ROUNDS rounds (the figures are medians over the rounds):
//  - at a fixed rate (BENCH_RATE req/s, default 1000, for BENCH_RATE_SECONDS, default 8, over 16 keep-alive
//    connections, open loop): p50 and p99 latency as this driver sees them, CPU per request of Portico's process and
//    of redis-server (utime + stime from /proc, over the requests answered);
//  - the most wrk gets (-t1 -c50, BENCH_DURATION, default 5s): requests/s and wrk's p99.
// Then the floor of one Redis round trip on this machine: `redis-benchmark -t get -P 1` with one connection (its
// requests/s is one over the round trip) and with 50, and the same for EVALSHA of the rate script.
//
// Each sample records the share of the machine other processes used meanwhile (a shared machine: read it beside
// the figures). Results on stdout and in bench/out/cluster-rate/results.json.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { cpus, hostname } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { foreignMeter } from '../lib/cpu.mjs';
import { bold, fmtInt, pct, progress, table } from '../lib/common.mjs';
import { freePort, startPortico } from '../lib/servers.mjs';
import { median, runWrk } from '../lib/wrk.mjs';
import { machine, treeJiffies } from '../proxy/harness.mjs';

const BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = path.resolve(BENCH, '..');
const PORTICO_DIR = process.env.PORTICO_DIR ?? ROOT;
const OUT = path.join(BENCH, 'out', 'cluster-rate');
mkdirSync(OUT, { recursive: true });
const SERVER_CPU = 0;
const CLIENT_CPU = 1;
const RATE = Number(process.env.BENCH_RATE ?? 1000);
const RATE_SECONDS = Number(process.env.BENCH_RATE_SECONDS ?? 8);
const DURATION = process.env.BENCH_DURATION ?? '5s';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const HZ = 100;
const KEY = 'bench-cluster-secret-0123456789abcdef0123456789';

const MODES = [
  { id: 'none', label: 'no rate limit', rule: '' },
  { id: 'box', label: 'rate_limit scope: box (local bucket)', rule: 'rate_limit: { rate: 1000000/s, burst: 1000000, scope: box }' },
  { id: 'cluster', label: 'rate_limit cluster-wide (Redis)', rule: 'rate_limit: { rate: 1000000/s, burst: 1000000 }' },
];

/** A redis-server on CPU 1 on a free port, nothing saved; resolves once it answers PING. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('taskset', ['-c', String(CLIENT_CPU), 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error('redis-server exited');
    if (await ping(port)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  // taskset execs redis-server: the child's pid is the server's.
  return { port, pid: child.pid, stop: () => (child.exitCode === null ? (child.kill('SIGTERM'), once(child, 'exit')) : undefined) };
}

function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
    socket.once('data', (data) => (socket.destroy(), resolve(data.toString().startsWith('+PONG'))));
    socket.once('error', () => resolve(false));
  });
}

/** Requests at `rate`/s for `seconds` (open loop), 16 keep-alive connections: latencies (ms) of the 200s, and the rest. */
function fixedRate(url, rate, seconds) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const target = new URL(url);
  const latencies = [];
  let other = 0;
  let sent = 0;
  let done = 0;
  const total = rate * seconds;
  const started = performance.now();
  return new Promise((resolve) => {
    const finish = () => {
      agent.destroy();
      resolve({ latencies, other, seconds: (performance.now() - started) / 1000 });
    };
    const answered = () => {
      if (++done === total) finish();
    };
    const tick = setInterval(() => {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate));
      while (sent < due) {
        sent++;
        const at = performance.now();
        const req = http.get({ host: target.hostname, port: target.port, path: target.pathname, agent }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) latencies.push(performance.now() - at);
            else other++;
            answered();
          });
        });
        req.on('error', () => (other++, answered()));
      }
      if (sent >= total) clearInterval(tick);
    }, 1);
  });
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

/** redis-benchmark `args` on CPU 1: requests/s and p50 (ms) of its one test. */
function redisBenchmark(port, args) {
  const out = execFileSync('taskset', ['-c', String(CLIENT_CPU), 'redis-benchmark', '-p', String(port), '-q', ...args], { encoding: 'utf8' });
  const line = out.split(/\r|\n/).filter((l) => /requests per second/.test(l)).at(-1) ?? '';
  const rps = Number(/([\d.]+) requests per second/.exec(line)?.[1]);
  const p50 = Number(/p50=([\d.]+) msec/.exec(line)?.[1]);
  return { rps, p50, roundTripUs: 1e6 / rps, line: line.trim() };
}

async function main() {
  const redis = await startRedis();
  const rows = new Map(MODES.map((mode) => [mode.id, []]));
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of MODES) {
        const port = await freePort();
        const config = `listen: ["127.0.0.1:${port}"]
log: { access: off, level: warn }
cluster:
  redis: redis://127.0.0.1:${redis.port}/0
  prefix: bench:${mode.id}
  name: bench
sites:
  - routes:
      - path: /
        ${mode.rule === '' ? '' : `${mode.rule}\n        `}respond: { body: "ok" }
`;
        const dir = path.join(OUT, mode.id);
        mkdirSync(dir, { recursive: true });
        process.env.PORTICO_CLUSTER_KEY = KEY;
        const url = `http://127.0.0.1:${port}/`;
        const portico = await startPortico({ config, outDir: dir, cpu: SERVER_CPU, readyUrl: url, dir: PORTICO_DIR });
        try {
          progress(`round ${round + 1}/${ROUNDS}: ${mode.label}`);
          // Warm up (and let the link connect: requests before it has may run on the fallback).
          await fixedRate(url, RATE, 2);
          const others = foreignMeter(portico.pid);
          const p0 = treeJiffies(portico.pid);
          const r0 = treeJiffies(redis.pid);
          const run = await fixedRate(url, RATE, RATE_SECONDS);
          const porticoJiffies = treeJiffies(portico.pid) - p0;
          const redisJiffies = treeJiffies(redis.pid) - r0;
          const noise = others();
          const sorted = run.latencies.sort((a, b) => a - b);
          const wrk = await runWrk({ url, cpu: CLIENT_CPU, connections: 50, duration: DURATION });
          const answered = sorted.length;
          rows.get(mode.id).push({
            answered,
            other: run.other + wrk.errors,
            p50: quantile(sorted, 0.5),
            p99: quantile(sorted, 0.99),
            porticoUs: (porticoJiffies * (1e6 / HZ)) / answered,
            redisUs: (redisJiffies * (1e6 / HZ)) / answered,
            wrkRps: wrk.rps,
            wrkP99: wrk.p99,
            noise,
          });
        } finally {
          await portico.stop();
        }
      }
    }
    progress('redis-benchmark');
    const { GCRA_SCRIPT } = await import(pathToFileURL(path.join(PORTICO_DIR, 'dist/src/cluster/rate-bucket.js')).href);
    const sha = execFileSync('redis-cli', ['-p', String(redis.port), 'SCRIPT', 'LOAD', GCRA_SCRIPT], { encoding: 'utf8' }).trim();
    const floors = {
      'GET, 1 connection (-c 1 -P 1)': redisBenchmark(redis.port, ['-t', 'get', '-P', '1', '-c', '1', '-n', '50000']),
      'GET, 50 connections (-c 50 -P 1)': redisBenchmark(redis.port, ['-t', 'get', '-P', '1', '-c', '50', '-n', '200000']),
      'EVALSHA rate script, 1 connection': redisBenchmark(redis.port, ['-P', '1', '-c', '1', '-n', '50000', 'EVALSHA', sha, '1', 'bench:k', '1', '1000000000']),
      'EVALSHA rate script, 50 connections': redisBenchmark(redis.port, ['-P', '1', '-c', '50', '-n', '200000', 'EVALSHA', sha, '1', 'bench:k', '1', '1000000000']),
    };
    const summary = MODES.map((mode) => {
      const samples = rows.get(mode.id);
      const pick = (field) => median(samples.map((s) => s[field]));
      return { id: mode.id, label: mode.label, p50: pick('p50'), p99: pick('p99'), porticoUs: pick('porticoUs'), redisUs: pick('redisUs'), wrkRps: pick('wrkRps'), wrkP99: pick('wrkP99'), noise: pick('noise'), other: samples.reduce((n, s) => n + s.other, 0), samples };
    });
    const info = { date: new Date().toISOString(), host: hostname(), cores: cpus().length, ...machine({ redis: 'redis-server --version', taskset: 'taskset --version' }, ['ioredis']) };
    console.log(bold(`Cluster-wide rate limit: ${RATE} req/s for ${RATE_SECONDS} s (fixed rate) and wrk -c50 ${DURATION}; ${ROUNDS} rounds, medians`));
    console.log(
      table(
        ['mode', 'p50 ms', 'p99 ms', 'Portico CPU µs/req', 'redis CPU µs/req', 'wrk req/s', 'wrk p99 ms', 'others used', 'non-200'],
        summary.map((s) => [s.label, s.p50.toFixed(3), s.p99.toFixed(3), s.porticoUs.toFixed(1), s.redisUs.toFixed(1), fmtInt(s.wrkRps), s.wrkP99.toFixed(2), pct(s.noise), String(s.other)]),
      ),
    );
    console.log(bold('Floor of one Redis round trip (redis-benchmark, same machine, CPU 1)'));
    console.log(table(['test', 'req/s', 'p50 ms', 'µs per request'], Object.entries(floors).map(([name, f]) => [name, fmtInt(f.rps), f.p50.toFixed(3), f.roundTripUs.toFixed(1)])));
    console.log(JSON.stringify(info));
    writeFileSync(path.join(OUT, 'results.json'), JSON.stringify({ info, rate: RATE, seconds: RATE_SECONDS, rounds: ROUNDS, summary, floors }, null, 2));
  } finally {
    await redis.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
