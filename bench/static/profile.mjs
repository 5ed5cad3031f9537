// Runs one static contender (default Portico) under `node --cpu-prof` while wrk loads one file, then
// summarises the profile with the CPU time per request of each area and function. Profiling the floor the
// same way shows what Portico adds on top of Node's own HTTP path. Run through bench/profile-static.sh.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitForQuiet } from '../lib/cpu.mjs';
import { freePort } from '../lib/servers.mjs';
import { runWrk } from '../lib/wrk.mjs';
import { CONTENDERS } from './contenders.mjs';
import { FILES, makeDocroot } from './docroot.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const contender = CONTENDERS.find((c) => args.includes(c.id)) ?? CONTENDERS.find((c) => c.id === 'portico');
const file = FILES.find((f) => args.includes(f.name)) ?? FILES[0];
if (contender.id === 'nginx') throw new Error('nginx is not a Node process: it cannot be profiled with --cpu-prof');
const duration = process.env.BENCH_DURATION ?? '10s';
const OUT = path.resolve(HERE, '../out/profile', contender.id);

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
const { docroot } = makeDocroot(path.join(OUT, 'docroot'));
const port = await freePort();
const url = `http://127.0.0.1:${port}/${file.name}`;
const server = await contender.start({
  port,
  docroot,
  outDir: OUT,
  files: FILES.map((f) => f.name),
  cpu: 0,
  readyUrl: url,
  nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${OUT}`],
});
let requests = 0;
let result;
try {
  await waitForQuiet(server.pid, { threshold: 0.05, maxWaitMs: 300_000, onWait: () => console.log('    waiting for a quiet machine…') });
  requests += (await runWrk({ url, cpu: 1, duration: '3s' })).requests;
  console.log(`==> profiling ${contender.id}: wrk -t1 -c50 -d${duration} ${url}`);
  result = await runWrk({ url, cpu: 1, duration });
  requests += result.requests;
} finally {
  await server.stop();
}
console.log(`    ${Math.round(result.rps).toLocaleString('en-US')} req/s under the profiler, p99 ${result.p99.toFixed(2)} ms; ${requests} requests in all (warm-up included)`);
const profile = readdirSync(OUT).find((name) => name.endsWith('.cpuprofile'));
if (profile === undefined) throw new Error('no .cpuprofile was written (did the server exit through process.exit?)');
console.log(`    profile: ${path.relative(path.resolve(HERE, '../..'), path.join(OUT, profile))}\n`);
execFileSync(process.execPath, [path.join(HERE, '../tools/cpuprofile-top.mjs'), path.join(OUT, profile), '25', String(requests)], { stdio: 'inherit' });
