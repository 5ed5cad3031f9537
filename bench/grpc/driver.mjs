// The gRPC benchmark's driver (bench/grpc.sh): unary calls per second of one @grpc/grpc-js channel with
// BENCH_CONNECTIONS calls in flight, straight to the app (TLS), through Portico and through nginx's grpc_pass
// (both TLS + HTTP/2 to the client, h2c to the app); alternating rounds, and the proxy's CPU per call.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { bold, fmtInt, has, progress, settings, table } from '../lib/common.mjs';
import { freePort, startPinned, startPortico } from '../lib/servers.mjs';
import { nginxConf } from '../proxy/contenders.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const OUT = path.join(ROOT, 'bench/out/grpc');
mkdirSync(OUT, { recursive: true });
const seconds = (text) => Number.parseFloat(text) * (text.endsWith('ms') ? 0.001 : 1);
const PROXY_CPU = 0;

const { selfSignedCert } = await import(path.join(ROOT, 'dist/test/helpers/h2.js')); // the working tree's (a BENCH_REF build has only src/)
const { cert, key } = await selfSignedCert();
writeFileSync(path.join(OUT, 'cert.pem'), cert);
writeFileSync(path.join(OUT, 'key.pem'), key);

const [appPort, appTlsPort] = [await freePort(), await freePort()];
const app = spawn('taskset', ['-c', '1', process.execPath, path.join(HERE, 'app.mjs'), String(appPort), String(appTlsPort), path.join(OUT, 'cert.pem'), path.join(OUT, 'key.pem')], { stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise((resolve, reject) => {
  app.stdout.on('data', (chunk) => String(chunk).includes('ready') && resolve());
  app.once('exit', () => reject(new Error('the gRPC app exited')));
});

/** A Portico build as a contender: TLS listener with HTTP/2, one h2c:// app server. */
function porticoContender(id, label, dir, port) {
  return {
    id,
    label,
    port,
    async start(port) {
      const ready = await freePort();
      const config = [
        'log: { access: off }',
        `listen: [{ addr: "127.0.0.1:${port}", tls: { cert: ${OUT}/cert.pem, key: ${OUT}/key.pem }, http2: true }, "127.0.0.1:${ready}"]`,
        'upstreams:',
        `  app: { servers: ["h2c://127.0.0.1:${appPort}"] }`,
        'sites:',
        '  - routes:',
        '      - { path: /, proxy: { upstream: app } }',
        '',
      ].join('\n');
      const outDir = path.join(OUT, id);
      mkdirSync(outDir, { recursive: true });
      // BENCH_PROFILE=1: Portico under `node --cpu-prof`, one profile per round in bench/out/grpc/profile/.
      const nodeArgs = process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.join(OUT, 'profile', id)}`] : [];
      if (process.env.BENCH_NODE_ARGS) nodeArgs.push(...process.env.BENCH_NODE_ARGS.split(' '));
      return startPortico({ name: id, config, outDir, cpu: PROXY_CPU, readyUrl: `http://127.0.0.1:${ready}/`, nodeArgs, dir });
    },
  };
}

/** Each contender: how to start it (undefined: nothing to start) and the port its TLS listener takes. */
const contenders = [
  { id: 'direct', label: 'direct (grpc-js server, TLS)', port: appTlsPort, start: async () => undefined },
  porticoContender('portico', `Portico (h2 TLS → h2c://)${process.env.PORTICO_BASE_DIR ? ` ${process.env.PORTICO_VERSION ?? ''}` : ''}`, process.env.PORTICO_DIR ?? ROOT, await freePort()),
  // BENCH_BASE=<commit>: that build too, in the same rounds (before / after).
  ...(process.env.PORTICO_BASE_DIR ? [porticoContender('portico-base', `Portico ${process.env.PORTICO_BASE_VERSION ?? 'base'} (BENCH_BASE)`, process.env.PORTICO_BASE_DIR, await freePort())] : []),
  ...(has('nginx')
    ? [
        {
          id: 'nginx',
          label: 'nginx grpc_pass (h2 TLS → grpc://)',
          port: await freePort(),
          async start(port) {
            const ready = await freePort();
            const prefix = path.join(OUT, 'nginx');
            mkdirSync(prefix, { recursive: true });
            const conf = nginxConf(path.join(HERE, 'nginx.conf.tmpl'), prefix, { PORT: port, READY_PORT: ready, APP_PORT: appPort, CERT: path.join(OUT, 'cert.pem'), KEY: path.join(OUT, 'key.pem') });
            return startPinned({ name: 'nginx', cpu: PROXY_CPU, command: 'nginx', args: ['-p', prefix, '-c', conf, '-e', path.join(prefix, 'error.log')], readyUrl: `http://127.0.0.1:${ready}/` });
          },
        },
      ]
    : []),
].filter((c) => process.env.BENCH_ONLY === undefined || process.env.BENCH_ONLY.split(',').includes(c.id));

const raw = { requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b };
const Client = grpc.makeGenericClientConstructor({ echo: { path: '/bench.Echo/Echo', requestStream: false, responseStream: false, ...raw } }, 'Echo');
const MESSAGE = Buffer.from('Hello, world!');

/** CPU time (user + system, ms) of a process and its live children (nginx's worker) so far, from /proc. */
function cpuMs(pid) {
  const statOf = (p) => readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
  const own = (fields) => ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  let total = own(statOf(pid));
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const fields = statOf(entry);
      if (Number(fields[1]) === pid) total += own(fields);
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

/** Calls for `ms` with `inFlight` calls outstanding on one channel; resolves with calls completed and failed. */
async function load(client, ms, inFlight) {
  let done = 0;
  let failed = 0;
  const until = Date.now() + ms;
  const worker = () =>
    new Promise((resolve) => {
      const next = () => {
        if (Date.now() >= until) return resolve();
        client.echo(MESSAGE, (err) => {
          if (err) failed++;
          else done++;
          next();
        });
      };
      next();
    });
  await Promise.all(Array.from({ length: inFlight }, worker));
  return { done, failed };
}

// BENCH_PAIR=1 (with BENCH_BASE): both builds on CPU 0 at once, each loaded by its own channel, round by round; their
// CPU per call compared within each round, so that the load of others on the machine falls on both alike.
if (process.env.BENCH_PAIR === '1') {
  const pair = ['portico-base', 'portico'].map((id) => contenders.find((c) => c.id === id));
  if (pair.includes(undefined)) throw new Error('BENCH_PAIR needs BENCH_BASE (and BENCH_ONLY, if given, to name portico and portico-base)');
  const ratios = [];
  for (let round = 1; round <= settings.runs; round++) {
    progress(`pair round ${round}/${settings.runs}`);
    const order = round % 2 === 1 ? pair : [...pair].reverse();
    const servers = new Map();
    for (const c of order) servers.set(c.id, await c.start(c.port));
    const clients = pair.map((c) => new Client(`127.0.0.1:${c.port}`, grpc.credentials.createSsl(Buffer.from(cert)), { 'grpc.ssl_target_name_override': 'localhost' }));
    try {
      await Promise.all(clients.map((client) => load(client, seconds(settings.warmup) * 1000, settings.connections)));
      const before = pair.map((c) => cpuMs(servers.get(c.id).pid));
      const counts = await Promise.all(clients.map((client) => load(client, seconds(settings.duration) * 1000, settings.connections)));
      const perCall = pair.map((c, i) => ((cpuMs(servers.get(c.id).pid) - before[i]) * 1000) / counts[i].done);
      const ratio = perCall[1] / perCall[0];
      ratios.push(ratio);
      console.log(`[${round}/${settings.runs}] CPU per call: portico-base ${perCall[0].toFixed(1)} µs, portico ${perCall[1].toFixed(1)} µs: ${ratio.toFixed(3)}; calls ${counts.map((n) => n.done).join(' / ')}, failed ${counts.map((n) => n.failed).join(' / ')}`);
    } finally {
      clients.forEach((client) => client.close());
      for (const server of servers.values()) await server.stop();
    }
  }
  app.kill('SIGTERM');
  await once(app, 'exit');
  const sorted = [...ratios].sort((a, b) => a - b);
  console.log(bold(`portico / portico-base, CPU per call: ${sorted[Math.floor(sorted.length / 2)].toFixed(3)} (median of ${ratios.length}; min ${sorted[0].toFixed(3)}, max ${sorted.at(-1).toFixed(3)})`));
  process.exit(0);
}

const results = new Map(contenders.map((c) => [c.id, []]));
for (let round = 1; round <= settings.runs; round++) {
  for (const c of contenders) {
    progress(`round ${round}/${settings.runs}: ${c.label}`);
    const server = await c.start(c.port);
    const client = new Client(`127.0.0.1:${c.port}`, grpc.credentials.createSsl(Buffer.from(cert)), { 'grpc.ssl_target_name_override': 'localhost' });
    try {
      await load(client, seconds(settings.warmup) * 1000, settings.connections);
      const cpuBefore = server === undefined ? 0 : cpuMs(server.pid);
      const started = performance.now();
      const { done, failed } = await load(client, seconds(settings.duration) * 1000, settings.connections);
      const elapsed = (performance.now() - started) / 1000;
      const cpu = server === undefined ? NaN : cpuMs(server.pid) - cpuBefore;
      results.get(c.id).push({ rate: done / elapsed, failed, cpuUsPerCall: (cpu * 1000) / done });
    } finally {
      client.close();
      await server?.stop();
    }
  }
}
app.kill('SIGTERM');
await once(app, 'exit');

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const direct = results.get('direct');
const rows = contenders.map((c) => {
  const rs = results.get(c.id);
  const rate = median(rs.map((r) => r.rate));
  const cpu = median(rs.map((r) => r.cpuUsPerCall));
  return [
    c.label,
    fmtInt(rate),
    direct === undefined || c.id === 'direct' ? '' : (rate / median(direct.map((r) => r.rate))).toFixed(2),
    Number.isFinite(cpu) ? `${cpu.toFixed(1)} µs` : '',
    String(rs.reduce((n, r) => n + r.failed, 0)),
  ];
});
console.log(bold(`\ngRPC unary calls/s, ${settings.connections} in flight on one channel, median of ${settings.runs} rounds of ${settings.duration}`));
console.log(table(['contender', 'calls/s', 'vs direct', 'proxy CPU per call', 'failed'], rows));
