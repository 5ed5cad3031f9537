// The FastCGI benchmark (issue 20 §1), run through bench/fastcgi.sh: a small PHP page through Portico's `php`
// route and through nginx's `fastcgi_pass`, both to one php-fpm pool; req/s, p99 and the front end's CPU per
// request (its process tree's utime + stime over the measurement, from /proc), in alternating rounds.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bold, fmtInt, has, progress, table } from '../lib/common.mjs';
import { fetchOnce, freePort, startPinned, startPortico } from '../lib/servers.mjs';
import { median, runWrk } from '../lib/wrk.mjs';
import { treeJiffies } from '../proxy/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(HERE, '../out/fastcgi');
const FRONT_CPU = 0;
const BACK_CPU = 1;
const quick = process.env.BENCH_QUICK === '1';
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const DURATION = process.env.BENCH_DURATION ?? (quick ? '3s' : '10s');
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const WORKERS = Number(process.env.BENCH_FPM_WORKERS ?? 4);
// Both front ends keep their FastCGI connections (Portico's `fastcgi: { keep_conn: true }`, nginx's
// `fastcgi_keep_conn on`), or with BENCH_KEEP_CONN=0 both open one per request (both their defaults).
const KEEP_CONN = process.env.BENCH_KEEP_CONN !== '0';
const PAGE = '<?php header("Content-Type: text/html; charset=utf-8"); echo "<p>Hello from PHP ", PHP_VERSION, " at ", $_SERVER["REQUEST_URI"], "</p>\\n";';

async function startFpm() {
  const conf = path.join(OUT, 'php-fpm.conf');
  const socket = path.join(OUT, 'fpm.sock');
  writeFileSync(
    conf,
    `[global]\npid = ${OUT}/fpm.pid\nerror_log = ${OUT}/fpm.log\ndaemonize = no\n\n[www]\nlisten = ${socket}\nlisten.mode = 0666\npm = static\npm.max_children = ${WORKERS}\npm.max_requests = 0\n`,
  );
  const args = ['-c', String(BACK_CPU), '/usr/sbin/php-fpm8.2', '-F', '-y', conf, '-p', OUT];
  if (process.getuid?.() === 0) args.push('-R');
  const child = spawn('taskset', args, { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (existsSync(socket)) {
      const ok = await new Promise((resolve) => {
        const s = connect(socket, () => (s.destroy(), resolve(true)));
        s.on('error', () => resolve(false));
      });
      if (ok) break;
    }
    if (Date.now() > deadline) throw new Error(`php-fpm not ready: ${readFileSync(path.join(OUT, 'fpm.log'), 'utf8')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    socket,
    async stop() {
      child.kill('SIGQUIT');
      await once(child, 'exit');
    },
  };
}

function porticoConfig(port, socket) {
  return `listen: ["127.0.0.1:${port}"]
log: { access: off }
upstreams:
  fpm:
    servers: ["unix:${socket}"]
    keepalive: ${WORKERS}
    fastcgi: { keep_conn: ${KEEP_CONN} }
sites:
  - routes:
      - path: /
        php: { root: ${path.join(OUT, 'app')}, upstream: fpm }
`;
}

function nginxConfig(port, socket, prefix) {
  return `${process.getuid?.() === 0 ? `user ${os.userInfo().username};` : ''}
worker_processes 1;
daemon off;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path ${prefix}/client_body;
    proxy_temp_path ${prefix}/proxy;
    fastcgi_temp_path ${prefix}/fastcgi;
    uwsgi_temp_path ${prefix}/uwsgi;
    scgi_temp_path ${prefix}/scgi;
    upstream fpm {
        server unix:${socket};
        keepalive ${WORKERS};
    }
    server {
        listen 127.0.0.1:${port};
        root ${path.join(OUT, 'app')};
        index index.php;
        location / { try_files $uri $uri/ /index.php$is_args$args; }
        location ~ [^/]\\.php(/|$) {
            fastcgi_split_path_info ^(.+?\\.php)(/.*)$;
            if (!-f $document_root$fastcgi_script_name) { return 404; }
            fastcgi_pass fpm;
            fastcgi_keep_conn ${KEEP_CONN ? 'on' : 'off'};
            fastcgi_index index.php;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_param HTTP_PROXY "";
        }
    }
}
`;
}

const CONTENDERS = [
  {
    id: 'portico',
    label: `Portico php route (keepalive 4${KEEP_CONN ? ', keep_conn' : ''})`,
    async start(port, socket) {
      const outDir = path.join(OUT, 'portico');
      mkdirSync(outDir, { recursive: true });
      return startPortico({ config: porticoConfig(port, socket), outDir, cpu: FRONT_CPU, readyUrl: `http://127.0.0.1:${port}/` });
    },
  },
  {
    id: 'nginx',
    label: `nginx fastcgi_pass (1 worker, keepalive 4${KEEP_CONN ? ', fastcgi_keep_conn' : ''})`,
    needs: 'nginx',
    async start(port, socket) {
      const prefix = path.join(OUT, 'nginx');
      mkdirSync(prefix, { recursive: true });
      const conf = path.join(prefix, 'nginx.conf');
      writeFileSync(conf, nginxConfig(port, socket, prefix));
      return startPinned({ name: 'nginx', cpu: FRONT_CPU, command: 'nginx', args: ['-p', prefix, '-c', conf, '-e', path.join(prefix, 'error.log')], readyUrl: `http://127.0.0.1:${port}/` });
    },
  },
].filter((c) => c.needs === undefined || has(c.needs));

async function main() {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(path.join(OUT, 'app'), { recursive: true });
  writeFileSync(path.join(OUT, 'app', 'index.php'), PAGE);
  const fpm = await startFpm();
  const results = new Map(CONTENDERS.map((c) => [c.id, []]));
  try {
    for (let round = 1; round <= RUNS; round++) {
      for (const contender of CONTENDERS) {
        const port = await freePort();
        const server = await contender.start(port, fpm.socket);
        try {
          const url = `http://127.0.0.1:${port}/index.php`;
          const check = await fetchOnce(url);
          if (check.status !== 200 || !check.body.toString().includes('Hello from PHP')) throw new Error(`${contender.id} did not answer the page: ${check.status} ${check.body}`);
          await runWrk({ url, cpu: BACK_CPU, connections: CONNECTIONS, duration: quick ? '1s' : '3s' });
          const before = treeJiffies(server.pid);
          const run = await runWrk({ url, cpu: BACK_CPU, connections: CONNECTIONS, duration: DURATION });
          const jiffies = treeJiffies(server.pid) - before;
          const cpuUs = (jiffies * 10_000) / Math.max(1, run.requests ?? run.rps);
          results.get(contender.id).push({ rps: run.rps, p99: run.p99, cpuUs, errors: run.errors });
          progress(`round ${round} ${contender.id}: ${fmtInt(run.rps)} req/s, p99 ${run.p99.toFixed(2)} ms, ${cpuUs.toFixed(1)} µs CPU/request, ${run.errors} errors`);
        } finally {
          await server.stop();
        }
      }
    }
  } finally {
    await fpm.stop();
  }
  console.log(bold(`\nFastCGI: small PHP page (${CONNECTIONS} connections, ${DURATION}, php-fpm ${WORKERS} workers on CPU ${BACK_CPU}, front end on CPU ${FRONT_CPU}); medians of ${RUNS} rounds`));
  const rows = CONTENDERS.map((c) => {
    const r = results.get(c.id);
    return [c.label, fmtInt(median(r.map((x) => x.rps))), `${median(r.map((x) => x.p99)).toFixed(2)} ms`, `${median(r.map((x) => x.cpuUs)).toFixed(1)} µs`, String(r.reduce((s, x) => s + x.errors, 0))];
  });
  console.log(table(['front end', 'req/s', 'p99', 'CPU per request', 'errors'], rows));
  if (results.has('nginx')) {
    const p = results.get('portico');
    const n = results.get('nginx');
    console.log(`Portico / nginx req/s: ${(median(p.map((x) => x.rps)) / median(n.map((x) => x.rps))).toFixed(3)}; CPU per request: ${(median(p.map((x) => x.cpuUs)) / median(n.map((x) => x.cpuUs))).toFixed(2)}×`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
