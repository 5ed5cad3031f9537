// Runs one Node contender of the proxy or cache benchmark (default: Portico) under `node --cpu-prof` while wrk
// loads it, then summarises the profile per request (bench/tools/cpuprofile-top.mjs). Profiling the Node floor
// the same way shows what Portico adds on top of Node's own HTTP (and undici's) path.
//
//   node profile.mjs proxy [portico|undici|undici-dispatch|http-proxy]
//   node profile.mjs cache [portico|portico-nocache|floor] [1k.txt|100k.txt]
//
// Run through bench/proxy.sh / bench/cache.sh (`npm run bench -- proxy profile`), which build Portico first.
// Same pinning as the benchmark: the contender on CPU 0, app server and wrk on CPU 1.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitForQuiet } from '../lib/cpu.mjs';
import { freePort } from '../lib/servers.mjs';
import { runWrk } from '../lib/wrk.mjs';
import { FILES, makeDocroot } from '../static/docroot.mjs';
import { CONTENDERS as CACHE_CONTENDERS } from '../cache/contenders.mjs';
import { CLIENT_CPU, OUT_ROOT, SERVER_CPU, startBackend } from './harness.mjs';
import { CONTENDERS as PROXY_CONTENDERS } from './contenders.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const [scenario, ...args] = process.argv.slice(2);
if (scenario !== 'proxy' && scenario !== 'cache') throw new Error('usage: profile.mjs proxy|cache [contender] [file]');
const list = scenario === 'proxy' ? PROXY_CONTENDERS : CACHE_CONTENDERS;
const contender = list.find((c) => args.includes(c.id)) ?? list.find((c) => c.id === 'portico');
if (!contender.node) throw new Error(`${contender.id} is not a Node process: it cannot be profiled with --cpu-prof`);
const file = FILES.find((f) => args.includes(f.name)) ?? FILES[0];
const duration = process.env.BENCH_DURATION ?? '10s';
const OUT = path.join(OUT_ROOT, 'profile', `${scenario}-${contender.id}${scenario === 'cache' ? `-${file.name}` : ''}`);

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
const { docroot } = makeDocroot(path.join(OUT, 'docroot'));
const backend = await startBackend({ docroot, files: FILES.map((f) => f.name) });
const port = await freePort();
const url = `http://127.0.0.1:${port}${scenario === 'proxy' ? '/' : `/${file.name}`}`;
let server;
let requests = 0;
let result;
try {
  server = await contender.start({
    port,
    backend,
    docroot,
    items: FILES.map((f) => ({ path: `/${f.name}` })),
    outDir: OUT,
    cpu: SERVER_CPU,
    readyUrl: url,
    nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${OUT}`],
  });
  await waitForQuiet(process.pid, { threshold: 0.05, maxWaitMs: 300_000, onWait: () => console.log('    waiting for a quiet machine…') });
  requests += (await runWrk({ url, cpu: CLIENT_CPU, duration: '3s' })).requests;
  console.log(`==> profiling ${scenario} ${contender.id}: wrk -t1 -c50 -d${duration} ${url}`);
  result = await runWrk({ url, cpu: CLIENT_CPU, duration });
  requests += result.requests;
} finally {
  await server?.stop();
  await backend.stop();
}
console.log(`    ${Math.round(result.rps).toLocaleString('en-US')} req/s under the profiler, p99 ${result.p99.toFixed(2)} ms; ${requests} requests in all (warm-up included)`);
const profile = readdirSync(OUT).find((name) => name.endsWith('.cpuprofile'));
if (profile === undefined) throw new Error('no .cpuprofile was written');
console.log(`    profile: ${path.relative(path.resolve(HERE, '../..'), path.join(OUT, profile))}\n`);
execFileSync(process.execPath, [path.join(HERE, '../tools/cpuprofile-top.mjs'), path.join(OUT, profile), '30', String(requests)], { stdio: 'inherit' });
