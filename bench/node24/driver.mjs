// `npm run bench -- node24` (bench/node24.sh, which installs and builds first): the same Portico build (one dist/)
// under two runtimes, side by side: this driver's Node (the machine's, 20.x here) and Node 24 (NODE24_BIN, from
// .ci/node24.sh). Four measurements, each on the config its own scenario uses:
//
//   static  1 KiB over HTTP/1.1 keep-alive (bench/static's config), wrk
//   proxy   13 B from a keep-alive app server, health checks and the upstream access log on (bench/proxy's), wrk
//   https   1 KiB over HTTPS/1.1 keep-alive (bench/tls's config: one ECDSA P-256 certificate, http2 on), wrk
//   h2      the same over HTTP/2, 10 streams per connection, h2load (skipped, saying so, without h2load)
//
// Only Portico's runtime changes: wrk, h2load and the app server are the same programs for both (the app server
// runs on this driver's Node). Each round starts Portico alone on CPU 0 for each measurement and runtime, checks
// its answer, warms up and measures with the load generator (and the app server) on CPU 1; the order of the two
// runtimes alternates round by round. Medians over the rounds; ratio = Node 24 / this Node. Besides req/s and
// p99, the CPU time Portico's process used per request. Knobs as in the other scenarios: BENCH_RUNS (3),
// BENCH_DURATION (10s), BENCH_WARMUP (3s), BENCH_CONNECTIONS (50), BENCH_QUICK=1, BENCH_REF; BENCH_MEASURES
// (static,proxy,https,h2) picks measurements.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bold, dim, fmtInt, fmtMs, fmtRatio, has, pct, red, settings, table, versionOf, yellow } from '../lib/common.mjs';
import { measureQuietly } from '../lib/cpu.mjs';
import { fetchH2, fetchOnce, freePort, startPortico } from '../lib/servers.mjs';
import { median, runWrk } from '../lib/wrk.mjs';
import { startBackend, treeJiffies } from '../proxy/harness.mjs';
import { makeDocroot } from '../static/docroot.mjs';
import { runH2load } from '../tls/h2load.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(HERE, '../out/node24');
const SERVER_CPU = 0;
const CLIENT_CPU = 1;
const HZ = 100; // USER_HZ: /proc times are in 1/100 s.
const FILE = '1k.txt';
const HELLO = 'Hello, world!';

/** The two runtimes: this driver's Node and Node 24 (NODE24_BIN: the folder holding its `node`). */
function runtimes() {
  const bin = process.env.NODE24_BIN;
  if (bin === undefined || bin === '') throw new Error('NODE24_BIN is not set: run this through `npm run bench -- node24`');
  const node24 = path.join(bin, 'node');
  const version = execFileSync(node24, ['-v'], { encoding: 'utf8' }).trim();
  return [
    { id: 'this', label: `Node ${process.version}`, node: process.execPath },
    { id: 'node24', label: `Node ${version}`, node: node24 },
  ];
}

function makeCertificate(dir) {
  mkdirSync(dir, { recursive: true });
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '30', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  return { cert, key };
}

const staticConfig = (port, { docroot }) => [
  `listen: ["127.0.0.1:${port}"]`,
  `log: { access: "off", level: warn }`,
  `sites:`,
  `  - routes:`,
  `      - path: /`,
  `        static: { root: ${JSON.stringify(docroot)} }`,
];

const tlsConfig = (port, { docroot, tls }) => [
  `listen:`,
  `  - { addr: "127.0.0.1:${port}", tls: { cert: ${JSON.stringify(tls.cert)}, key: ${JSON.stringify(tls.key)} }, http2: true }`,
  `log: { access: "off", level: warn }`,
  `sites:`,
  `  - routes:`,
  `      - path: /`,
  `        static: { root: ${JSON.stringify(docroot)} }`,
];

const proxyConfig = (port, { backend, outDir }) => [
  `listen: ["127.0.0.1:${port}"]`,
  `log: { access: ${JSON.stringify(path.join(outDir, 'access.log'))}, format: upstream, level: warn }`,
  `upstreams:`,
  `  app:`,
  `    servers: [{ url: "${backend.origin}" }]`,
  `    health: { path: /healthz, interval: 2s, timeout: 1s }`,
  `sites:`,
  `  - routes:`,
  `      - path: /`,
  `        proxy: { upstream: app }`,
];

/** The measurements: the Portico config, the URL, how it is checked, and the load generator. */
const MEASURES = [
  { id: 'static', label: 'static 1 KiB (HTTP/1.1, wrk)', scheme: 'http', path: `/${FILE}`, config: staticConfig, tool: 'wrk' },
  { id: 'proxy', label: 'proxy 13 B (health checks, access log; wrk)', scheme: 'http', path: '/', config: proxyConfig, tool: 'wrk', backend: true },
  { id: 'https', label: 'HTTPS/1.1 keep-alive 1 KiB (wrk)', scheme: 'https', path: `/${FILE}`, config: tlsConfig, tool: 'wrk' },
  { id: 'h2', label: 'HTTP/2 1 KiB, 10 streams per connection (h2load)', scheme: 'https', path: `/${FILE}`, config: tlsConfig, tool: 'h2load', needs: 'h2load' },
];

/** Refuses to measure a Portico that does not answer as expected. */
async function verify(measure, url, expected) {
  const res = measure.tool === 'h2load' ? await fetchH2(url) : await fetchOnce(url);
  if (measure.tool === 'h2load' && res.alpn !== 'h2') throw new Error(`${measure.id}: ALPN ${res.alpn}, not h2`);
  if (Number(res.status) !== 200 || !res.body.equals(expected)) {
    throw new Error(`${measure.id}: ${url} answered ${res.status} with ${res.body.length} bytes, not the expected ${expected.length}`);
  }
}

/** One run of the measurement's load generator for `duration`, with Portico's CPU time per request. */
async function runLoad(measure, url, serverPid, duration, logFile) {
  const before = treeJiffies(serverPid);
  const result =
    measure.tool === 'h2load'
      ? await runH2load({ url, cpu: CLIENT_CPU, connections: Math.max(1, Math.round(settings.connections / 5)), streams: 10, duration, logFile })
      : await runWrk({ url, cpu: CLIENT_CPU, threads: settings.threads, connections: settings.connections, duration });
  result.cpuUs = result.requests > 0 ? ((treeJiffies(serverPid) - before) * (1e6 / HZ)) / result.requests : NaN;
  return result;
}

const fmtUs = (n) => (Number.isFinite(n) ? `${n.toFixed(1)} µs` : 'n/a');

async function main() {
  mkdirSync(OUT, { recursive: true });
  const nodes = runtimes();
  const onlyMeasures = process.env.BENCH_MEASURES?.split(',').map((s) => s.trim());
  const measures = MEASURES.filter((m) => onlyMeasures === undefined || onlyMeasures.includes(m.id)).filter((m) => {
    if (m.needs !== undefined && !has(m.needs)) {
      console.log(yellow(`    skipping ${m.id}: ${m.needs} is not installed (apt-get install -y nghttp2-client, as root)`));
      return false;
    }
    return true;
  });
  const tls = makeCertificate(path.join(OUT, 'cert'));
  const { docroot, bodies } = makeDocroot(path.join(OUT, 'docroot'));
  const info = {
    nproc: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    kernel: os.release(),
    runtimes: nodes.map((n) => n.label),
    wrk: versionOf('wrk -v').replace(/ \[.*$/, '').replace(/ Copyright.*$/, ''),
    h2load: has('h2load') ? versionOf('h2load --version') : 'not installed',
    openssl: versionOf('openssl version'),
    portico: process.env.PORTICO_VERSION ?? 'unknown',
  };
  console.log(bold('==> node24: measuring'));
  console.log(dim(`    Portico ${info.portico} (one build) under ${info.runtimes.join(' and ')}; ${info.nproc} CPUs (${info.cpu}), ${info.wrk}, ${info.h2load}, ${info.openssl}`));
  console.log(
    dim(
      `    Portico alone on CPU ${SERVER_CPU}; load generator and app server on CPU ${CLIENT_CPU}; wrk -c${settings.connections}, h2load -c${Math.max(1, Math.round(settings.connections / 5))} -m10;` +
        ` ${settings.duration} after ${settings.warmup} warm-up; ${settings.runs} rounds, runtimes alternating`,
    ),
  );

  /** samples[measure][runtime] = [{ rps, p99, errors, noise, cpuUs }, ...] */
  const samples = Object.fromEntries(measures.map((m) => [m.id, Object.fromEntries(nodes.map((n) => [n.id, []]))]));
  for (let round = 0; round < settings.runs; round++) {
    for (const [index, measure] of measures.entries()) {
      // Alternating: A then B in one round, B then A in the next (and shifted per measurement).
      const order = (round + index) % 2 === 0 ? nodes : [...nodes].reverse();
      for (const runtime of order) {
        const outDir = path.join(OUT, measure.id, runtime.id);
        mkdirSync(outDir, { recursive: true });
        const backend = measure.backend ? await startBackend({}) : undefined;
        let server;
        try {
          const port = await freePort();
          const url = `${measure.scheme}://127.0.0.1:${port}${measure.path}`;
          const config = [`# Generated by bench/node24/driver.mjs (${measure.id})`, ...measure.config(port, { docroot, tls, backend, outDir }), ''].join('\n');
          server = await startPortico({ name: `portico on ${runtime.label}`, config, outDir, cpu: SERVER_CPU, readyUrl: url, node: runtime.node });
          await verify(measure, url, measure.backend ? Buffer.from(HELLO) : bodies.get(FILE));
          const what = `${measure.id} on ${runtime.label}`;
          const logFile = path.join(outDir, 'h2load.log');
          // The whole tree of this driver is the benchmark (Portico, app server, load generator): the rest is noise.
          const r = await measureQuietly(process.pid, (duration) => runLoad(measure, url, server.pid, duration, logFile), what, settings, (line) => console.log(yellow(line)));
          samples[measure.id][runtime.id].push(r);
          const errors = r.errors > 0 ? red(`  ${r.errors} errors`) : '';
          const noise = r.noise >= settings.noise ? yellow(`  others used ${pct(r.noise)} of the CPUs`) : dim(`  others ${pct(r.noise)}`);
          console.log(
            `    [${round + 1}/${settings.runs}] ${measure.id.padEnd(7)} ${runtime.label.padEnd(16)}${fmtInt(r.rps).padStart(9)} req/s   p99 ${fmtMs(r.p99).padStart(10)}` +
              `   ${fmtUs(r.cpuUs).padStart(9)}/req${errors}${noise}`,
          );
        } finally {
          await server?.stop();
          await backend?.stop();
        }
      }
    }
  }

  // Medians per measurement and runtime, over the clean samples (all of them if none was clean).
  const med = {};
  for (const m of measures) {
    med[m.id] = {};
    for (const n of nodes) {
      const every = samples[m.id][n.id];
      const clean = every.filter((r) => r.noise < settings.noise);
      const runs = clean.length > 0 ? clean : every;
      med[m.id][n.id] = {
        rps: median(runs.map((r) => r.rps)),
        p99: median(runs.map((r) => r.p99)),
        cpuUs: median(runs.map((r) => r.cpuUs)),
        errors: every.reduce((s, r) => s + r.errors, 0),
        clean: clean.length,
        of: every.length,
      };
    }
  }
  const [a, b] = nodes;
  const mark = (m) => (m.clean === m.of ? '' : ` (${m.clean}/${m.of} clean)`);
  const results = table(
    ['measurement', `${a.label} req/s`, `${b.label} req/s`, `${b.label.split(' ')[1]} / ${a.label.split(' ')[1]}`, `p99 ${a.id}`, `p99 ${b.id}`, `CPU/req ${a.id}`, `CPU/req ${b.id}`, 'errors'],
    measures.map((m) => {
      const x = med[m.id][a.id];
      const y = med[m.id][b.id];
      return [m.label, fmtInt(x.rps) + mark(x), fmtInt(y.rps) + mark(y), fmtRatio(y.rps / x.rps), fmtMs(x.p99), fmtMs(y.p99), fmtUs(x.cpuUs), fmtUs(y.cpuUs), x.errors + y.errors];
    }),
  );
  const runsTable = table(
    ['measurement', 'runtime', ...Array.from({ length: settings.runs }, (_, i) => `round ${i + 1}: req/s (p99, CPU/req)`)],
    measures.flatMap((m) =>
      nodes.map((n) => [
        m.id,
        n.label,
        ...samples[m.id][n.id].map((r) => `${fmtInt(r.rps)} (${fmtMs(r.p99)}, ${fmtUs(r.cpuUs)})${r.errors ? ` ${r.errors} err` : ''}${r.noise >= settings.noise ? ` noisy ${pct(r.noise)}` : ''}`),
      ]),
    ),
  );
  const legend = `CPU/req: Portico's CPU time (utime + stime, all threads) during the run ÷ requests. Ratio: req/s, cut, not rounded.`;
  console.log(`\n${bold('Medians')} (${settings.runs} rounds; samples disturbed by other processes are left out when clean ones exist)\n${results}\n${dim(legend)}\n`);
  console.log(`${dim('All rounds')}\n${runsTable}\n`);
  writeFileSync(path.join(OUT, 'results.md'), `## Medians\n\n${legend}\n\n${results}\n\n## All rounds\n\n${runsTable}\n`);
  writeFileSync(
    path.join(OUT, 'results.json'),
    JSON.stringify({ date: new Date().toISOString(), machine: info, settings, medians: med, samples }, (k, v) => (k === 'raw' ? undefined : v), 2),
  );
  console.log(dim('    written: bench/out/node24/results.md, bench/out/node24/results.json'));
}

main().catch((err) => {
  console.error(red(`error: ${err.message}`));
  process.exit(1);
});
