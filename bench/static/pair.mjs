// Concurrent pair: two static contenders measured AT THE SAME TIME, both pinned to CPU 0 (the scheduler shares
// it evenly), each loaded by its own wrk on CPU 1. The ratio of their request rates is the inverse ratio of
// their CPU cost per request, and the VM's drift (±10% between sequential rounds here) hits both alike, so a
// change of 2–3% shows. Two identical builds read 0.98–1.02. Absolute ratios still move between runs made an hour
// apart: compare within one run. Run through bench/pair.sh:
//
//   BENCH_BASE=<commit> npm run bench -- pair                 # portico-base against portico (the working tree)
//   npm run bench -- pair floor portico [1k.txt|100k.txt]     # any two contenders of bench/static/contenders.mjs
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bold, dim } from '../lib/common.mjs';
import { freePort } from '../lib/servers.mjs';
import { runWrk } from '../lib/wrk.mjs';
import { CONTENDERS } from './contenders.mjs';
import { FILES, makeDocroot } from './docroot.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(HERE, '../out/pair');
const args = process.argv.slice(2);
const file = FILES.find((f) => args.includes(f.name)) ?? FILES[0];
const ids = args.filter((a) => a !== file.name);
const [idA, idB] = ids.length >= 2 ? ids : process.env.PORTICO_BASE_DIR ? ['portico-base', 'portico'] : ['floor', 'portico'];
const rounds = Number(process.env.BENCH_RUNS ?? 5);
const duration = process.env.BENCH_DURATION ?? '4s';

const pick = (id) => {
  const found = CONTENDERS.find((c) => c.id === id);
  if (found === undefined) throw new Error(`pair: unknown contender '${id}' (have: ${CONTENDERS.map((c) => c.id).join(', ')}; portico-base needs BENCH_BASE)`);
  return found;
};
const pair = [pick(idA), pick(idB)];
const { docroot } = makeDocroot(path.join(OUT, 'docroot'));
const servers = [];
try {
  for (const contender of pair) {
    const port = await freePort();
    const outDir = path.join(OUT, contender.id);
    mkdirSync(outDir, { recursive: true });
    const url = `http://127.0.0.1:${port}/${file.name}`;
    const files = FILES.map((f) => f.name);
    servers.push({ id: contender.id, url, handle: await contender.start({ port, docroot, outDir, files, cpu: 0, readyUrl: url }) });
  }
  console.log(bold(`==> pair: ${idB} / ${idA} on ${file.label}, both on CPU 0 at once, one wrk -t1 -c50 each on CPU 1, ${rounds} rounds of ${duration}`));
  await Promise.all(servers.map((s) => runWrk({ url: s.url, cpu: 1, duration: '2s' })));
  const ratios = [];
  for (let round = 1; round <= rounds; round++) {
    const [a, b] = await Promise.all(servers.map((s) => runWrk({ url: s.url, cpu: 1, duration })));
    ratios.push(b.rps / a.rps);
    console.log(`    [${round}/${rounds}] ${idA} ${Math.round(a.rps).toLocaleString('en-US')} req/s, ${idB} ${Math.round(b.rps).toLocaleString('en-US')} req/s: ${(b.rps / a.rps).toFixed(3)}`);
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  console.log(`\n${bold(`${idB} / ${idA}: ${median.toFixed(3)}`)} ${dim(`(median of ${rounds}; min ${sorted[0].toFixed(3)}, max ${sorted.at(-1).toFixed(3)}; ±0.02 is noise)`)}`);
} finally {
  for (const s of servers) await s.handle.stop();
}
