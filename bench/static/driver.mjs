// The static benchmark's measuring loop (run through bench/static.sh, which installs and builds first).
//
// For each round, every contender is started alone on CPU 0, checked to serve the exact bytes, warmed up, and
// measured with wrk on CPU 1 for each file; then stopped. Rounds rotate the order of contenders, so none is
// always first. The table shows the median req/s and the median p99 over the rounds.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bold, dim, fmtInt, fmtMs, fmtRatio, green, has, pct, red, settings, table, versionOf, yellow } from '../lib/common.mjs';
import { measureQuietly } from '../lib/cpu.mjs';
import { median, runWrk } from '../lib/wrk.mjs';
import { freePort } from '../lib/servers.mjs';
import { CONTENDERS, verify } from './contenders.mjs';
import { FILES, makeDocroot } from './docroot.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(HERE, '../out/static');
const SERVER_CPU = 0;
const CLIENT_CPU = 1;

function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    nproc: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    cpu: model,
    node: process.version,
    nginx: has('nginx') ? versionOf('nginx -v') : 'not installed',
    wrk: versionOf('wrk -v').replace(/ \[.*$/, '').replace(/ Copyright.*$/, ''),
    kernel: os.release(),
    portico: process.env.PORTICO_VERSION ?? 'unknown',
  };
}


/** Warms up, then measures once on a quiet machine (bench/lib/cpu.mjs `measureQuietly`). */
function measure(serverPid, wrk, what) {
  return measureQuietly(serverPid, (duration) => runWrk({ ...wrk, duration }), what, settings, (line) => console.log(yellow(line)));
}


function pad(text, width) {
  return String(text).padEnd(width);
}


async function main() {
  mkdirSync(OUT, { recursive: true });
  const info = machine();
  const only = process.env.BENCH_ONLY?.split(',').map((s) => s.trim());
  const contenders = CONTENDERS.filter((c) => only === undefined || only.includes(c.id)).filter((c) => {
    if (c.needs !== undefined && !has(c.needs)) {
      console.log(yellow(`    skipping ${c.id}: ${c.needs} is not installed`));
      return false;
    }
    return true;
  });
  const { docroot, bodies } = makeDocroot(path.join(OUT, 'docroot'));

  console.log(bold('==> static: measuring'));
  console.log(dim(`    Portico ${info.portico}; ${info.nproc} CPUs (${info.cpu}), node ${info.node}, ${info.nginx}, ${info.wrk}`));
  console.log(
    dim(
      `    server on CPU ${SERVER_CPU}, wrk on CPU ${CLIENT_CPU}: wrk -t${settings.threads} -c${settings.connections} -d${settings.duration} --latency` +
        ` (warm-up ${settings.warmup}), ${settings.runs} rounds, ${contenders.map((c) => c.id).join(', ')}`,
    ),
  );

  /** samples[contender][file] = [{ rps, p99, errors }, ...] */
  const samples = Object.fromEntries(contenders.map((c) => [c.id, Object.fromEntries(FILES.map((f) => [f.name, []]))]));
  for (let round = 0; round < settings.runs; round++) {
    const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]);
    for (const contender of order) {
      const port = await freePort();
      const base = `http://127.0.0.1:${port}`;
      const outDir = path.join(OUT, contender.id);
      mkdirSync(outDir, { recursive: true });
      const server = await contender.start({
        port,
        docroot,
        outDir,
        files: FILES.map((f) => f.name),
        cpu: SERVER_CPU,
        readyUrl: `${base}/${FILES[0].name}`,
      });
      try {
        await verify(contender, base, bodies);
        for (const file of FILES) {
          const wrk = { url: `${base}/${file.name}`, cpu: CLIENT_CPU, threads: settings.threads, connections: settings.connections };
          const result = await measure(server.pid, wrk, `${contender.id} ${file.label}`);
          samples[contender.id][file.name].push(result);
          const errors = result.errors > 0 ? red(`  ${result.errors} errors`) : '';
          const noise = result.noise >= settings.noise ? yellow(`  others used ${pct(result.noise)} of the CPUs`) : dim(`  others ${pct(result.noise)}`);
          console.log(
            `    [${round + 1}/${settings.runs}] ${pad(contender.id, 8)} ${pad(file.label, 8)}` +
              `${fmtInt(result.rps).padStart(9)} req/s   p99 ${fmtMs(result.p99).padStart(10)}${errors}${noise}`,
          );
        }
      } finally {
        await server.stop();
      }
    }
  }

  // Medians per contender and file, over the clean samples (all of them if none was clean).
  const med = {};
  for (const c of contenders) {
    med[c.id] = {};
    for (const f of FILES) {
      const all = samples[c.id][f.name];
      const clean = all.filter((r) => r.noise < settings.noise);
      const runs = clean.length > 0 ? clean : all;
      med[c.id][f.name] = {
        rps: median(runs.map((r) => r.rps)),
        p99: median(runs.map((r) => r.p99)),
        errors: all.reduce((s, r) => s + r.errors, 0),
        clean: clean.length,
        of: all.length,
      };
    }
  }
  // A median over fewer clean samples than rounds says so in the table.
  const mark = (m) => (m.clean === m.of ? '' : ` (${m.clean}/${m.of} clean)`);
  const ratio = (other, file) => (med.portico && med[other] ? med.portico[file].rps / med[other][file].rps : undefined);

  const results = table(
    ['server', ...FILES.flatMap((f) => [`${f.label} req/s`, `${f.label} p99`])],
    contenders.map((c) => [c.label, ...FILES.flatMap((f) => [fmtInt(med[c.id][f.name].rps) + mark(med[c.id][f.name]), fmtMs(med[c.id][f.name].p99)])]),
  );
  const ratios = table(
    ['ratio (req/s)', ...FILES.map((f) => f.label)],
    [
      ['Portico / Node floor', 'floor'],
      ['Portico / Node floor with its header fields', 'floor-headers'],
      ['Portico / sirv', 'sirv'],
      ['Portico / nginx', 'nginx'],
      ['Portico / Portico base (BENCH_BASE)', 'portico-base'],
    ].filter(([, id]) => med[id] !== undefined).map(([label, id]) => [label, ...FILES.map((f) => fmtRatio(ratio(id, f.name)))]),
  );
  const targets = [
    { text: 'Portico ≥ 0.85× Node floor, 1 KiB', other: 'floor', file: '1k.txt', min: 0.85 },
    { text: 'Portico ≥ 3× sirv, 1 KiB', other: 'sirv', file: '1k.txt', min: 3 },
    { text: 'Portico ≥ 3× sirv, 100 KiB', other: 'sirv', file: '100k.txt', min: 3 },
    { text: 'Portico ≥ 0.5× nginx, 100 KiB', other: 'nginx', file: '100k.txt', min: 0.5 },
  ].map((t) => {
    const r = ratio(t.other, t.file);
    return { ...t, ratio: r, met: r === undefined ? undefined : r >= t.min };
  });
  const targetTable = table(
    ['target', 'measured', 'result'],
    targets.map((t) => [t.text, fmtRatio(t.ratio), t.met === undefined ? 'not measured' : t.met ? 'met' : 'MISSED']),
  );
  const runsTable = table(
    ['server', 'file', ...Array.from({ length: settings.runs }, (_, i) => `round ${i + 1} req/s (p99)`)],
    contenders.flatMap((c) =>
      FILES.map((f) => [c.id, f.label, ...samples[c.id][f.name].map((r) => `${fmtInt(r.rps)} (${fmtMs(r.p99)})${r.errors ? ` ${r.errors} err` : ''}${r.noise >= settings.noise ? ` noisy ${pct(r.noise)}` : ''}`)]),
    ),
  );

  const colourTargets = targetTable.replace(/\| met( *)\|/g, (_, s) => `| ${green('met')}${s}|`).replace(/\| MISSED( *)\|/g, (_, s) => `| ${red('MISSED')}${s}|`);
  console.log(`\n${bold('Medians')} (${settings.runs} rounds; samples disturbed by other processes are left out when clean ones exist)\n${results}\n\n${ratios}\n\n${bold('Targets')}\n${colourTargets}\n`);
  const errorTotal = contenders.reduce((s, c) => s + FILES.reduce((t, f) => t + med[c.id][f.name].errors, 0), 0);
  if (errorTotal > 0) console.log(red(`wrk reported ${errorTotal} socket errors or non-2xx answers: see the rounds below.\n`));
  console.log(`${dim('All rounds')}\n${runsTable}\n`);

  const markdown = `## Medians\n\nMedian of ${settings.runs} rounds; a sample during which other processes used ≥ ${pct(settings.noise)} of the CPUs is marked noisy and left out when clean ones exist.\n\n${results}\n\n${ratios}\n\n## Targets\n\n${targetTable}\n\n## All rounds\n\n${runsTable}\n`;
  writeFileSync(path.join(OUT, 'results.md'), markdown);
  writeFileSync(
    path.join(OUT, 'results.json'),
    JSON.stringify({ date: new Date().toISOString(), machine: info, settings, medians: med, samples, targets }, (k, v) => (k === 'raw' ? undefined : v), 2),
  );
  console.log(dim(`    written: bench/out/static/results.md, bench/out/static/results.json`));
}

main().catch((err) => {
  console.error(red(`error: ${err.message}`));
  process.exit(1);
});
