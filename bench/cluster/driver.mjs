// What cluster mode costs a request that asks nothing of Redis (run through bench/cluster.sh): the same build
// with and without a `cluster` section, each proxying GET / to one app server (bench/proxy/backend.mjs), at a fixed
// request rate, with a redis-server the cluster box is connected to (its link, its key rotation timers, and
// whatever else the build runs in the background: heartbeats, subscriptions).
//
// Fixed rate: wrk (Debian's, not wrk2: it has no -R) with a Lua `delay()`: each of BENCH_RATE_CONNECTIONS
// connections waits BENCH_DELAY_MS after each answer before its next request, so the offered rate is about
// connections / (delay + latency), well under what one core serves, and the same for both (a latency 2 % higher
// moves the rate by a few hundredths of a percent). What is compared at that rate: CPU time per request (the
// process's threads' time on CPU from /proc/PID/task/*/schedstat, in ns, ÷ requests answered) and wrk's p99.
//
// BENCH_MODE=concurrent (default): both Porticos on CPU 0 at once, each with its own paced wrk on CPU 1 (with the
// app server and the redis-server): the VM's drift hits both alike within a round, as in bench/lib/pair.mjs.
// BENCH_MODE=alternate: one at a time, the order swapped each round. Ratios are cluster / plain per round; the
// result is their median. Issue 19's target: ≤ 1.02 (2 %).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bold, dim, fmtInt, fmtMs, pct, progress, red, table, yellow } from '../lib/common.mjs';
import { foreignMeter, waitForQuiet } from '../lib/cpu.mjs';
import { fetchOnce, freePort, startPinned } from '../lib/servers.mjs';
import { median, runWrk } from '../lib/wrk.mjs';
import { machine, run, startBackend } from '../proxy/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(HERE, '../out/cluster');
const ROOT = path.resolve(HERE, '../..');
const SERVER_CPU = 0;
const CLIENT_CPU = 1;
const quick = process.env.BENCH_QUICK === '1';
const knobs = {
  mode: process.env.BENCH_MODE ?? 'concurrent',
  rounds: Number(process.env.BENCH_RUNS ?? (quick ? 2 : 7)),
  duration: process.env.BENCH_DURATION ?? (quick ? '3s' : '10s'),
  warmup: process.env.BENCH_WARMUP ?? (quick ? '2s' : '3s'),
  connections: Number(process.env.BENCH_RATE_CONNECTIONS ?? 16),
  delayMs: Number(process.env.BENCH_DELAY_MS ?? 5),
  noise: Number(process.env.BENCH_NOISE ?? 0.05),
  /** Before each round, how long to wait for the rest of the machine to fall under `noise` (then the round runs anyway, marked). */
  quietWaitMs: Number(process.env.BENCH_QUIET_WAIT ?? 30) * 1000,
};
const TARGET = 1.02;
/**
 * The contender compared with `plain`: `cluster`, or with BENCH_AA=1 a second `plain` (`plain-b`): the A/A control,
 * whose spread is what this machine's noise does to the method.
 */
const B = process.env.BENCH_AA === '1' ? 'plain-b' : 'cluster';
const CLUSTER_KEY = 'bench-cluster-secret-0123456789abcdef0123456789';
const HELLO = 'Hello, world!';

/** Nanoseconds on CPU of every thread of `pid` so far (/proc/PID/task/TID/schedstat's first field). */
function cpuNs(pid) {
  let total = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // A thread that ended between the listing and the read.
    }
  }
  return total;
}

/** One command to Redis over a fresh connection (RESP by hand: the driver needs two commands, not a client). */
function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(2000, () => socket.destroy(new Error('redis: no answer within 2 s')));
    socket.on('error', reject);
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
      const nl = text.indexOf('\r\n');
      if (nl < 0) return;
      const head = text.slice(0, nl);
      let reply;
      if (head[0] === '$') {
        const size = Number(head.slice(1));
        if (size >= 0 && text.length < nl + 2 + size) return;
        reply = size < 0 ? null : text.slice(nl + 2, nl + 2 + size);
      } else if (head[0] === '-') return socket.destroy(new Error(`redis: ${head.slice(1)}`));
      else reply = head.slice(1);
      socket.end();
      resolve(reply);
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}

/** A redis-server pinned to CLIENT_CPU on a free port, nothing saved to disk. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('taskset', ['-c', String(CLIENT_CPU), 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server not ready within 10 s:\n${log}`)), 10_000);
    const take = (chunk) => {
      log = (log + chunk).slice(-4000);
      if (/Ready to accept connections/.test(log)) (clearTimeout(timer), resolve());
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.once('exit', () => (clearTimeout(timer), reject(new Error(`redis-server exited:\n${log}`))));
  });
  const exited = once(child, 'exit');
  await ready;
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    pid: child.pid,
    async stop() {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Portico's config: one proxied route, no access log, no rate limit, no cache; `cluster` when given its Redis. */
function porticoConfig(port, backend, redisUrl) {
  return [
    '# Generated by bench/cluster/driver.mjs',
    `listen: ["127.0.0.1:${port}"]`,
    'log: { access: off, level: warn }',
    ...(redisUrl === undefined ? [] : ['cluster:', `  redis: ${redisUrl}`, '  prefix: bench:cluster', '  name: bench']),
    'upstreams:',
    '  app:',
    `    servers: [{ url: "${backend.origin}" }]`,
    'sites:',
    '  - routes:',
    '      - path: /',
    '        proxy: { upstream: app }',
    '',
  ].join('\n');
}

async function startContender(id, backend, redis) {
  const port = await freePort();
  const outDir = path.join(OUT, id);
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'portico.yaml');
  writeFileSync(file, porticoConfig(port, backend, id === 'cluster' ? redis.url : undefined));
  const base = `http://127.0.0.1:${port}`;
  const handle = await startPinned({
    name: id,
    cpu: SERVER_CPU,
    command: process.execPath,
    args: [path.join(process.env.PORTICO_DIR ?? ROOT, 'dist/src/cli.js'), 'run', '-c', file],
    readyUrl: `${base}/`,
    env: { PORTICO_CLUSTER_KEY: CLUSTER_KEY },
  });
  const res = await fetchOnce(`${base}/`);
  if (res.status !== 200 || res.body.toString() !== HELLO) throw new Error(`${id} answered ${res.status} ${JSON.stringify(res.body.toString().slice(0, 80))}, not the app's answer`);
  return { id, handle, url: `${base}/` };
}

/** wrk's Lua file that paces each connection (see the file comment). */
function pacedScript() {
  const file = path.join(OUT, `paced-${knobs.delayMs}ms.lua`);
  writeFileSync(file, `-- each connection waits this long after an answer before its next request\nfunction delay()\n  return ${knobs.delayMs}\nend\n`);
  return file;
}

/** Loads `servers` at once for `duration` (wrks started in the given order); each one's rate, p99 and CPU per request. */
async function load(servers, duration, script) {
  const before = servers.map((s) => cpuNs(s.handle.pid));
  const t0 = performance.now();
  const results = await Promise.all(servers.map((s) => runWrk({ url: s.url, cpu: CLIENT_CPU, connections: knobs.connections, duration, script })));
  const seconds = (performance.now() - t0) / 1000;
  return servers.map((s, i) => {
    const ns = cpuNs(s.handle.pid) - before[i];
    const r = results[i];
    return { id: s.id, rps: r.rps, p99: r.p99, errors: r.errors, requests: r.requests, cpuUs: ns / 1000 / r.requests, cpuShare: ns / 1e9 / seconds };
  });
}

run(async () => {
  if (!['concurrent', 'alternate'].includes(knobs.mode)) throw new Error(`BENCH_MODE is concurrent or alternate (got ${knobs.mode})`);
  mkdirSync(OUT, { recursive: true });
  const info = machine({ redis: 'redis-server --version' });
  console.log(bold(`==> cluster: what a \`cluster\` section costs a proxied request that needs nothing of Redis`));
  console.log(dim(`    Portico ${info.portico}; ${info.nproc} CPUs (${info.cpu}), node ${info.node}, ${info.wrk}; ${info.redis}`));
  console.log(
    dim(
      `    started first: ${process.env.BENCH_FIRST ?? 'plain, then (restarted) the other, half the rounds each'}; ${knobs.mode}: ${knobs.mode === 'concurrent' ? 'both Porticos on CPU 0 at once' : 'one Portico at a time on CPU 0, order swapped each round'}; ` +
        `wrk -c${knobs.connections} paced by delay() ${knobs.delayMs} ms, app server and redis-server on CPU 1; ${knobs.rounds} rounds of ${knobs.duration} after ${knobs.warmup}`,
    ),
  );
  const redis = await startRedis();
  const backend = await startBackend({});
  const script = pacedScript();
  const servers = [];
  const rounds = [];
  /** Starts both Porticos (`first` first), warms them up and measures `count` rounds; stops them. */
  const session = async (first, count) => {
    try {
      for (const id of first === 'plain' ? ['plain', B] : [B, 'plain']) {
        progress(`    starting ${id} on CPU ${SERVER_CPU}`);
        servers.push(await startContender(id, backend, redis));
      }
      // The cluster box must really be linked: its connections (commands, subscriptions) are in Redis's list.
      const clients = (await redisCommand(redis.port, 'CLIENT', 'LIST')).split('\n').filter((l) => l.trim() !== '').length - 1;
      if (B === 'cluster' && clients < 1) throw new Error('the cluster Portico has no connection to Redis');
      console.log(dim(`    started ${first} first; redis-server on ${redis.port}: ${clients} connection(s)${B === 'cluster' ? ' from the cluster Portico' : ' (A/A control: no cluster)'}`));
      // Measured in one order whichever started first (the wrks' start order alternates by round).
      const pair = [servers.find((x) => x.id === 'plain'), servers.find((x) => x.id === B)];
      const measure = async (duration, round) => {
        const order = round % 2 === 0 ? pair : [...pair].reverse();
        if (knobs.mode === 'concurrent') return Object.fromEntries((await load(order, duration, script)).map((r) => [r.id, r]));
        const out = {};
        for (const x of order) out[x.id] = (await load([x], duration, script))[0];
        return out;
      };
      progress(`    warming up for ${knobs.warmup}`);
      await measure(knobs.warmup, 0);
      await measure(knobs.warmup, 1);
      for (let i = 0; i < count; i++) {
        const round = rounds.length + 1;
        const quiet = await waitForQuiet(process.pid, {
          threshold: knobs.noise,
          maxWaitMs: knobs.quietWaitMs,
          onWait: (share) => progress(`    waiting up to ${knobs.quietWaitMs / 1000} s for a quiet machine (others use ${pct(share)} of the CPUs)…`),
        });
        if (quiet.share >= knobs.noise) progress(`    others still use ${pct(quiet.share)}: measuring anyway (the round is marked)`);
        progress(`    round ${round}/${knobs.rounds} (${knobs.duration})…`);
        const stop = foreignMeter(process.pid);
        const r = await measure(knobs.duration, round);
        const noise = stop();
        const cpuRatio = r[B].cpuUs / r.plain.cpuUs;
        const p99Ratio = r[B].p99 / r.plain.p99;
        rounds.push({ first, plain: r.plain, [B]: r[B], cpuRatio, p99Ratio, noise });
        const errors = r.plain.errors + r[B].errors;
        console.log(
          `    [${round}/${knobs.rounds}] plain ${fmtInt(r.plain.rps)} req/s ${r.plain.cpuUs.toFixed(1)} µs/req p99 ${fmtMs(r.plain.p99)}; ` +
            `${B} ${fmtInt(r[B].rps)} req/s ${r[B].cpuUs.toFixed(1)} µs/req p99 ${fmtMs(r[B].p99)}: ` +
            `CPU/req ${bold(cpuRatio.toFixed(3))}, p99 ${p99Ratio.toFixed(3)}` +
            (noise >= knobs.noise ? yellow(`   others used ${pct(noise)} of the CPUs`) : dim(`   others ${pct(noise)}`)) +
            (errors > 0 ? red(`  ${errors} socket errors or non-2xx answers`) : ''),
        );
      }
    } finally {
      for (const x of servers.splice(0)) await x.handle.stop();
    }
  };
  try {
    // The process started second measured ~1.5 % dearer in A/A runs here: unless BENCH_FIRST names one order, half
    // the rounds start plain first and half the compared one first (both restarted between the halves).
    const firsts = process.env.BENCH_FIRST === 'b' ? [B] : process.env.BENCH_FIRST === 'plain' ? ['plain'] : ['plain', B];
    for (const [i, first] of firsts.entries()) {
      const count = Math.floor(knobs.rounds / firsts.length) + (i < knobs.rounds % firsts.length ? 1 : 0);
      await session(first, count);
    }
    // Medians over the rounds the rest of the machine left alone, when there are some (all rounds otherwise).
    const clean = rounds.filter((r) => r.noise < knobs.noise);
    const counted = clean.length > 0 ? clean : rounds;
    const summary = (key) => {
      const values = counted.map((r) => r[key]);
      return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
    };
    const cpu = summary('cpuRatio');
    const p99 = summary('p99Ratio');
    const med = (id, key) => median(counted.map((r) => r[id][key]));
    const results = table(
      ['Portico', 'req/s', 'CPU/req', 'CPU of core 0', 'p99'],
      ['plain', B].map((id) => [id, fmtInt(med(id, 'rps')), `${med(id, 'cpuUs').toFixed(1)} µs`, pct(med(id, 'cpuShare')), fmtMs(med(id, 'p99'))]),
    );
    const verdict = (s) => (s.median <= TARGET ? 'met' : 'MISSED');
    const ratios = table(
      [`${B} / plain`, 'median', 'min', 'max', `target ≤ ${TARGET}`],
      [
        ['CPU per request', cpu.median.toFixed(3), cpu.min.toFixed(3), cpu.max.toFixed(3), verdict(cpu)],
        ['p99', p99.median.toFixed(3), p99.min.toFixed(3), p99.max.toFixed(3), verdict(p99)],
      ],
    );
    const over = clean.length > 0 ? `${clean.length} clean rounds of ${rounds.length}` : `all ${rounds.length} rounds, none clean: others used ≥ ${pct(knobs.noise)} of the CPUs in each`;
    const byOrder = [...new Set(rounds.map((r) => r.first))]
      .map((first) => {
        const of = counted.filter((r) => r.first === first);
        return of.length === 0 ? undefined : `${first} started first: CPU/req ${median(of.map((r) => r.cpuRatio)).toFixed(3)}, p99 ${median(of.map((r) => r.p99Ratio)).toFixed(3)} (${of.length} rounds)`;
      })
      .filter(Boolean)
      .join('; ');
    console.log(`\n${bold('Medians')} (${over}; ${knobs.mode})\n${results}\n\n${ratios}\n${dim(`    by start order: ${byOrder}`)}\n`);
    const name = B === 'cluster' ? 'results' : 'results-aa';
    writeFileSync(path.join(OUT, `${name}.json`), JSON.stringify({ date: new Date().toISOString(), machine: info, knobs, rounds, cpu, p99 }, null, 2));
    writeFileSync(path.join(OUT, `${name}.md`), `Medians over ${over} (${knobs.mode}).\n\n${results}\n\n${ratios}\n\nBy start order: ${byOrder}\n`);
    console.log(dim(`    written: bench/out/cluster/${name}.md, bench/out/cluster/${name}.json`));
  } finally {
    for (const x of servers) await x.handle.stop();
    await backend.stop();
    await redis.stop();
  }
});
