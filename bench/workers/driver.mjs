// `workers: 2` against `workers: 1` (issue 17 §5): static 1 KiB, proxy 13 B and cache hits 1 KiB.
//
// Two measurements per (scenario, mode):
//  - throughput: wrk -t2 -c50 for BENCH_DURATION, unpinned (the load generator shares the 2 cores with Portico:
//    recorded without a target, as the issue says);
//  - CPU per request at a fixed rate (BENCH_RATE req/s, default 2000, over 16 keep-alive connections, and a run
//    with a new connection per request at BENCH_RATE_NEW, default 500): utime+stime of every process of
//    Portico's tree (primary and workers, /proc/<pid>/stat) divided by the requests answered.
// Modes: workers 1; workers 2 with node:cluster's round robin (PORTICO_ACCEPT=cluster), its shared socket
// (PORTICO_ACCEPT=shared), reusePort where this Node has it (≥ 22.12); nginx with 1 and 2 workers; the bare-Node
// floor (static only). BENCH_MODES picks some (w1,w2-cluster,w2-shared,w2-reuseport,nginx1,nginx2,floor1,floor2). Run under another Node with `BENCH_NODE=/path/to/node` (e.g. Node 24 from
// `npx -y node@24`).
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { cpus, hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { treeJiffies } from '../proxy/harness.mjs';
import { freePort, fetchOnce } from '../lib/servers.mjs';
import { runWrk, median } from '../lib/wrk.mjs';

const BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = path.resolve(BENCH, '..');
const OUT = path.join(BENCH, 'out', 'workers');
mkdirSync(OUT, { recursive: true });
const NODE = process.env.BENCH_NODE ?? process.execPath;
const DURATION = process.env.BENCH_DURATION ?? '6s';
const RUNS = Number(process.env.BENCH_RUNS ?? 2);
const RATE = Number(process.env.BENCH_RATE ?? 2000);
const RATE_NEW = Number(process.env.BENCH_RATE_NEW ?? 500);
const RATE_SECONDS = Number(process.env.BENCH_RATE_SECONDS ?? 8);
const HZ = 100;
/** BENCH_WRK=0: CPU per request only (no throughput runs). */
const WRK = process.env.BENCH_WRK !== '0';
/** Rounds over the modes, alternating (the CPU figures are the median of the rounds). */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 1);

function nodeVersion() {
  return new Promise((resolve) => {
    const child = spawn(NODE, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.on('close', () => resolve(out.trim()));
  });
}

function reusePortAvailable(version) {
  const [major, minor] = version.replace(/^v/, '').split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

/** An nginx config for the three scenarios with `workers` worker processes (everything under `prefix`). */
function nginxConfig(prefix, port, backendPort, workers) {
  mkdirSync(path.join(prefix, 'cache'), { recursive: true });
  return `${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes ${workers};
daemon off;
master_process on;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 1024; }
http {
    default_type text/plain;
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path ${prefix}/client_body;
    proxy_temp_path ${prefix}/proxy;
    fastcgi_temp_path ${prefix}/fastcgi;
    uwsgi_temp_path ${prefix}/uwsgi;
    scgi_temp_path ${prefix}/scgi;
    proxy_cache_path ${prefix}/cache keys_zone=main:10m;
    upstream app { server 127.0.0.1:${backendPort}; keepalive 32; }
    server {
        listen 127.0.0.1:${port};
        location /static/ { root ${OUT}; }
        location /cached/ { proxy_pass http://app/; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_cache main; }
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
`;
}

async function startProcess(command, args, env, readyUrl) {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let err = '';
  child.stderr.on('data', (c) => (err += c));
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${command} exited: ${err}`);
    // Portico's `serving … on` line (with workers, the primary's: every worker serves then), the floor's `serving on`;
    // the backend prints nothing.
    const announced = command === 'nginx' || (command === process.execPath && args[0]?.endsWith('backend.mjs')) ? true : /serving .*on /.test(err);
    if (announced && (await fetchOnce(readyUrl).catch(() => 0)) !== 0) return child;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`${command} did not start: ${err}`);
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  });
}

/** Requests at a fixed rate for `seconds`; resolves with those answered 2xx and the errors. */
function fixedRate(url, rate, seconds, keepAlive) {
  const agent = new http.Agent({ keepAlive, maxSockets: keepAlive ? 16 : Infinity });
  const target = new URL(url);
  let ok = 0;
  let errors = 0;
  let inFlight = 0;
  const started = performance.now();
  let sent = 0;
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      const due = Math.min(rate * seconds, Math.floor(((performance.now() - started) / 1000) * rate));
      while (sent < due) {
        sent++;
        inFlight++;
        const req = http.get({ host: target.hostname, port: target.port, path: target.pathname, agent }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode < 300) ok++;
            else errors++;
            if (--inFlight === 0 && sent >= rate * seconds) finish();
          });
        });
        req.on('error', () => {
          errors++;
          if (--inFlight === 0 && sent >= rate * seconds) finish();
        });
      }
      if (sent >= rate * seconds) clearInterval(tick);
    }, 2);
    const finish = () => {
      agent.destroy();
      resolve({ ok, errors, seconds: (performance.now() - started) / 1000 });
    };
  });
}

const FILE_1K = 'x'.repeat(1023) + '\n';

async function main() {
  const version = await nodeVersion();
  const modes = [
    { id: 'w1', label: 'workers: 1', workers: 1, env: {} },
    { id: 'w2-cluster', label: 'workers: 2, node:cluster round robin', workers: 2, env: { PORTICO_ACCEPT: 'cluster' } },
    { id: 'w2-shared', label: 'workers: 2, node:cluster shared socket', workers: 2, env: { PORTICO_ACCEPT: 'shared' } },
  ];
  if (reusePortAvailable(version)) modes.push({ id: 'w2-reuseport', label: 'workers: 2, reusePort', workers: 2, env: { PORTICO_ACCEPT: 'reuseport' } });
  // The floor (bare Node http, static scenario only): what spreading the rate over 2 processes costs by itself.
  const floorEnv = reusePortAvailable(version) ? { FLOOR_REUSEPORT: '1' } : {};
  modes.push({ id: 'nginx1', label: 'nginx, 1 worker', workers: 1, nginx: true, env: {} });
  modes.push({ id: 'nginx2', label: 'nginx, 2 workers', workers: 2, nginx: true, env: {} });
  modes.push({ id: 'floor1', label: 'bare Node http, 1 process', workers: 1, floor: true, env: floorEnv });
  modes.push({ id: 'floor2', label: 'bare Node http, 2 workers', workers: 2, floor: true, env: floorEnv });
  const chosen = process.env.BENCH_MODES?.split(',');
  if (chosen !== undefined) modes.splice(0, modes.length, ...modes.filter((m) => chosen.includes(m.id)));
  const only = process.env.BENCH_ONLY?.split(',');
  const docroot = path.join(OUT, 'static');
  mkdirSync(docroot, { recursive: true });
  writeFileSync(path.join(docroot, '1k.txt'), FILE_1K);
  const backendPort = await freePort();
  const backend = await startProcess(process.execPath, [path.join(BENCH, 'proxy/backend.mjs'), String(backendPort), docroot, '1k.txt'], {}, `http://127.0.0.1:${backendPort}/healthz`);
  const scenarios = [
    { id: 'static', label: 'static 1 KiB', path: '/static/1k.txt' },
    { id: 'proxy', label: 'proxy 13 B', path: '/' },
    { id: 'cache', label: 'cache hit 1 KiB', path: '/cached/1k.txt' },
  ];
  const rows = [];
  try {
    for (const scenario of scenarios) {
      if (only !== undefined && !only.includes(scenario.id)) continue;
      for (let round = 0; round < ROUNDS; round++)
      for (const mode of modes) {
        const port = await freePort();
        const config = `listen: ["127.0.0.1:${port}"]
workers: ${mode.workers}
log: { access: off, level: warn }
caches: { main: { memory: 64MB } }
upstreams:
  app: { servers: ["http://127.0.0.1:${backendPort}"] }
sites:
  - routes:
      - { path: /static/, static: { root: ${JSON.stringify(OUT)} } }
      - path: /cached/
        proxy: { upstream: app, strip_prefix: true, cache: { zone: main } }
      - { path: /, proxy: { upstream: app } }
`;
        const file = path.join(OUT, `${mode.id}.yaml`);
        writeFileSync(file, config);
        const url = `http://127.0.0.1:${port}${scenario.path}`;
        if (mode.floor && scenario.id !== 'static') continue;
        let portico;
        if (mode.floor) portico = await startProcess(NODE, [path.join(BENCH, 'workers/floor.mjs'), String(port), String(mode.workers)], mode.env, url);
        else if (mode.nginx) {
          const prefix = path.join(OUT, mode.id);
          mkdirSync(prefix, { recursive: true });
          writeFileSync(path.join(prefix, 'nginx.conf'), nginxConfig(prefix, port, backendPort, mode.workers));
          portico = await startProcess('nginx', ['-p', prefix, '-c', path.join(prefix, 'nginx.conf')], {}, url);
        } else portico = await startProcess(NODE, [path.join(ROOT, 'dist/src/cli.js'), 'run', '-c', file], mode.env, url);
        try {
          if (WRK) await runWrk({ url, cpu: '0-1', threads: 2, connections: 50, duration: '2s' });
          else await fixedRate(url, RATE, 1, true);
          const rps = [];
          for (let i = 0; i < (WRK ? RUNS : 0); i++) {
            const run = await runWrk({ url, cpu: '0-1', threads: 2, connections: 50, duration: DURATION });
            if (run.errors > 0) throw new Error(`${scenario.id} ${mode.id}: wrk saw ${run.errors} errors`);
            rps.push(run.rps);
          }
          const cpu = async (rate, keepAlive) => {
            const j0 = treeJiffies(portico.pid);
            const run = await fixedRate(url, rate, RATE_SECONDS, keepAlive);
            const jiffies = treeJiffies(portico.pid) - j0;
            return { usPerReq: ((jiffies / HZ) * 1e6) / Math.max(1, run.ok), ok: run.ok, errors: run.errors, cores: jiffies / HZ / run.seconds };
          };
          const ka = await cpu(RATE, true);
          const fresh = await cpu(RATE_NEW, false);
          const row = { scenario: scenario.label, mode: mode.label, rps: rps.length === 0 ? NaN : median(rps), runs: rps, ka, fresh };
          rows.push(row);
          console.log(JSON.stringify(row));
        } finally {
          await stop(portico);
        }
      }
    }
  } finally {
    await stop(backend);
  }
  console.log(`\n${new Date().toISOString()} ${hostname()} ${cpus().length}× ${cpus()[0]?.model} Node ${version}; wrk -t2 -c50 -d${DURATION} ×${RUNS} (median); CPU at ${RATE} req/s keep-alive (16 conns) and ${RATE_NEW} req/s new connections, ${RATE_SECONDS} s each\n`);
  console.log('| scenario | mode | req/s (wrk) | CPU µs/req, keep-alive | CPU µs/req, new conn. |');
  console.log('| --- | --- | --- | --- | --- |');
  const keys = [...new Set(rows.map((r) => `${r.scenario}\0${r.mode}`))];
  for (const key of keys) {
    const same = rows.filter((r) => `${r.scenario}\0${r.mode}` === key);
    const r = same[0];
    const ka = same.map((x) => x.ka.usPerReq);
    const fresh = same.map((x) => x.fresh.usPerReq);
    const errors = same.reduce((sum, x) => sum + x.ka.errors + x.fresh.errors, 0);
    const rps = same.filter((x) => Number.isFinite(x.rps)).map((x) => x.rps);
    const list = (values) => (values.length > 1 ? ` (${values.map((v) => v.toFixed(0)).join(', ')})` : '');
    console.log(`| ${r.scenario} | ${r.mode} | ${rps.length === 0 ? '—' : Math.round(median(rps))} | ${median(ka).toFixed(1)}${list(ka)} | ${median(fresh).toFixed(1)}${list(fresh)}${errors ? ` (${errors} errors)` : ''} |`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
