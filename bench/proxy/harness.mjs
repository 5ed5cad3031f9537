// The measuring loop shared by the proxy and cache benchmarks (bench/proxy/driver.mjs, bench/cache/driver.mjs).
//
// It follows the static benchmark (bench/static/driver.mjs) and reuses its lib: wrk runner and medians
// (bench/lib/wrk.mjs), pinned start/stop (bench/lib/servers.mjs), quiet-machine wait and noise guard
// (bench/lib/cpu.mjs). What it adds for a proxy: an app server behind each contender, pinned with wrk, and
// per measurement the contender's CPU time per request and how much the app server was asked.
//
// For each round, every contender is started alone on SERVER_CPU with a fresh app server on CLIENT_CPU, checked,
// warmed up and measured with wrk on CLIENT_CPU for each item; then both are stopped. Rounds rotate the order of
// contenders, so none is always first. Tables show the median of each number over the rounds.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { foreignMeter, treeJiffies, waitForQuiet } from '../lib/cpu.mjs';

export { treeJiffies };
import { fetchOnce, freePort, startPinned } from '../lib/servers.mjs';
import { median, runWrk } from '../lib/wrk.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const BENCH_DIR = path.resolve(HERE, '..');
export const OUT_ROOT = path.join(BENCH_DIR, 'out');
export const SERVER_CPU = 0;
export const CLIENT_CPU = 1;
const HZ = 100; // USER_HZ: /proc times are in 1/100 s.
const require = createRequire(import.meta.url);

export { bold, dim, green, has, red, settings, versionOf, yellow } from '../lib/common.mjs';
import { bold, dim, green, has, red, settings, versionOf, yellow } from '../lib/common.mjs';

/**
 * The machine and tool versions, for the results. `tools` maps a name to the command printing its version;
 * `packages` names npm packages whose installed version is read from node_modules.
 */
export function machine(tools, packages = []) {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const info = {
    nproc: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    cpu: model,
    kernel: os.release(),
    node: process.version,
    wrk: versionOf('wrk -v').replace(/ \[.*$/, '').replace(/ Copyright.*$/, ''),
    portico: process.env.PORTICO_VERSION ?? 'unknown',
  };
  for (const [name, command] of Object.entries(tools)) info[name] = has(command.split(' ')[0]) ? versionOf(command) : 'not installed';
  for (const name of packages) {
    try {
      info[name] = `${name} ${require(`${name}/package.json`).version}`;
    } catch {
      info[name] = `${name} not installed`;
    }
  }
  return info;
}

/**
 * The app server (bench/proxy/backend.mjs) pinned to CLIENT_CPU, with wrk: the contender keeps SERVER_CPU to
 * itself. `stats()` reads its request and connection counters.
 */
export async function startBackend({ docroot, files = [] }) {
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const handle = await startPinned({
    name: 'backend',
    cpu: CLIENT_CPU,
    command: process.execPath,
    args: [path.join(HERE, 'backend.mjs'), String(port), ...(docroot === undefined ? [] : [docroot, ...files])],
    readyUrl: `${origin}/healthz`,
  });
  return {
    ...handle,
    port,
    origin,
    async stats() {
      const res = await fetchOnce(`${origin}/__stats`);
      return JSON.parse(res.body.toString());
    },
  };
}

const pct = (share) => `${(share * 100).toFixed(1)}%`;
export const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
export const fmtMs = (n) => `${n.toFixed(2)} ms`;
export const fmtUs = (n) => (n === undefined ? 'n/a' : `${n.toFixed(1)} µs`);
/** Ratios are cut, never rounded, so a missed target can never read as met. */
export const fmtRatio = (r) => (r === undefined ? 'n/a' : `${(Math.floor(r * 100) / 100).toFixed(2)}×`);

/** A Markdown table, padded so that it also reads well in a terminal. */
export function table(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
  return [line(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

/**
 * Waits for a quiet machine, warms up, then measures once while watching the rest of the machine; a sample
 * disturbed by other processes is taken again. The noise guard counts this driver's whole process tree as
 * ours (contender, app server, wrk), so it is given the driver's own pid. Besides wrk's numbers, each sample
 * has the contender's CPU time per request and share of its CPU, and what the app server saw meanwhile.
 */
async function measure(server, backend, wrk, what) {
  const quiet = () =>
    waitForQuiet(process.pid, {
      threshold: settings.noise,
      maxWaitMs: settings.quietWaitMs,
      onWait: (share) => console.log(yellow(`    waiting for a quiet machine (others use ${pct(share)} of the CPUs)…`)),
    });
  await quiet();
  await runWrk({ ...wrk, duration: settings.warmup });
  for (let attempt = 0; ; attempt++) {
    const before = await backend.stats();
    const stop = foreignMeter(process.pid);
    const cpu0 = treeJiffies(server.pid);
    const t0 = performance.now();
    const result = await runWrk({ ...wrk, duration: settings.duration });
    const seconds = (performance.now() - t0) / 1000;
    const jiffies = treeJiffies(server.pid) - cpu0;
    result.noise = stop();
    const after = await backend.stats();
    result.cpuUs = (jiffies * (1e6 / HZ)) / result.requests;
    result.cpuShare = jiffies / HZ / seconds;
    result.upstreamRequests = after.requests - before.requests;
    // The connection that asked for `after` is one of them.
    result.upstreamConns = after.connections - before.connections - 1;
    if (result.noise < settings.noise || attempt === settings.retries) return result;
    console.log(yellow(`    ${what}: others used ${pct(result.noise)} of the CPUs during the run; measuring again`));
    await quiet();
  }
}

/**
 * Runs a scenario and prints and writes its tables. A scenario names its `contenders` (id, label, start, and
 * optionally `needs`: a command), the `items` to measure (label, path), `verify(contender, base, item)` (throws
 * when a contender answers wrongly; run before measuring), `ratios` and `targets` over the median req/s, and
 * `backend` options (docroot, files), `startArgs` (more for every `start()`), and `check(contender, item,
 * sample)`, which may return a warning about a measurement (shown in red beside it).
 */
export async function runScenario(scenario) {
  const { name, contenders: all, items, verify, ratios, targets, backend: backendOptions = {} } = scenario;
  const out = path.join(OUT_ROOT, name);
  mkdirSync(out, { recursive: true });
  const info = machine(scenario.tools, scenario.packages);
  const only = process.env.BENCH_ONLY?.split(',').map((s) => s.trim());
  const contenders = all.filter((c) => only === undefined || only.includes(c.id)).filter((c) => {
    if (c.needs !== undefined && !has(c.needs)) {
      console.log(yellow(`    skipping ${c.id}: ${c.needs} is not installed (apt-get install -y ${c.package ?? c.needs}, as root)`));
      return false;
    }
    return true;
  });

  console.log(bold(`==> ${name}: measuring`));
  console.log(dim(`    Portico ${info.portico}; ${info.nproc} CPUs (${info.cpu}), node ${info.node}, ${info.wrk}`));
  console.log(dim(`    ${[...Object.keys(scenario.tools), ...(scenario.packages ?? [])].map((t) => info[t]).join('; ')}`));
  console.log(
    dim(
      `    contender alone on CPU ${SERVER_CPU}; app server and wrk on CPU ${CLIENT_CPU}: wrk -t${settings.threads} -c${settings.connections}` +
        ` -d${settings.duration} --latency (warm-up ${settings.warmup}), ${settings.runs} rounds, ${contenders.map((c) => c.id).join(', ')}`,
    ),
  );

  /** samples[contender][item] = [{ rps, p99, errors, noise, cpuUs, cpuShare, upstreamRequests, upstreamConns }, ...] */
  const samples = Object.fromEntries(contenders.map((c) => [c.id, Object.fromEntries(items.map((i) => [i.label, []]))]));
  for (let round = 0; round < settings.runs; round++) {
    const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]);
    for (const contender of order) {
      const backend = await startBackend(backendOptions);
      let server;
      try {
        const port = await freePort();
        const base = `http://127.0.0.1:${port}`;
        const outDir = path.join(out, contender.id);
        mkdirSync(outDir, { recursive: true });
        server = await contender.start({ ...scenario.startArgs, port, backend, outDir, cpu: SERVER_CPU, readyUrl: `${base}${items[0].path}`, items });
        for (const item of items) await verify(contender, base, item, backend);
        for (const item of items) {
          const wrk = { url: `${base}${item.path}`, cpu: CLIENT_CPU, threads: settings.threads, connections: settings.connections };
          const r = await measure(server, backend, wrk, `${contender.id} ${item.label}`);
          samples[contender.id][item.label].push(r);
          r.warning = scenario.check?.(contender, item, r);
          const errors = (r.errors > 0 ? red(`  ${r.errors} errors`) : '') + (r.warning === undefined ? '' : red(`  ${r.warning}`));
          const noise = r.noise >= settings.noise ? yellow(`  others used ${pct(r.noise)} of the CPUs`) : dim(`  others ${pct(r.noise)}`);
          console.log(
            `    [${round + 1}/${settings.runs}] ${contender.id.padEnd(14)} ${item.label.padEnd(8)}` +
              `${fmtInt(r.rps).padStart(9)} req/s   p99 ${fmtMs(r.p99).padStart(9)}   ${fmtUs(r.cpuUs).padStart(8)}/req (CPU ${pct(r.cpuShare)})` +
              dim(`   app: ${fmtInt(r.upstreamRequests)} req, ${r.upstreamConns} new conns`) +
              errors +
              noise,
          );
        }
      } finally {
        await server?.stop();
        await backend.stop();
      }
    }
  }

  // Medians per contender and item, over the clean samples (all of them if none was clean).
  const med = {};
  for (const c of contenders) {
    med[c.id] = {};
    for (const item of items) {
      const every = samples[c.id][item.label];
      const clean = every.filter((r) => r.noise < settings.noise);
      const runs = clean.length > 0 ? clean : every;
      const m = (key) => median(runs.map((r) => r[key]));
      med[c.id][item.label] = {
        rps: m('rps'),
        p99: m('p99'),
        cpuUs: m('cpuUs'),
        cpuShare: m('cpuShare'),
        upstreamRequests: Math.max(...every.map((r) => r.upstreamRequests)),
        errors: every.reduce((s, r) => s + r.errors, 0),
        clean: clean.length,
        of: every.length,
      };
    }
  }
  const ratio = (a, b, item) => (med[a] && med[b] ? med[a][item].rps / med[b][item].rps : undefined);
  // A median over fewer clean samples than rounds says so in the table.
  const mark = (m) => (m.clean === m.of ? '' : ` (${m.clean}/${m.of} clean)`);

  const resultsTable = table(
    ['server', ...items.flatMap((i) => [`${i.label} req/s`, `${i.label} p99`, `${i.label} CPU/req`, `${i.label} CPU`])],
    contenders.map((c) => [
      c.label,
      ...items.flatMap((i) => {
        const m = med[c.id][i.label];
        return [fmtInt(m.rps) + mark(m), fmtMs(m.p99), fmtUs(m.cpuUs), pct(m.cpuShare)];
      }),
    ]),
  );
  const ratioTable = table(
    ['ratio (req/s)', ...items.map((i) => i.label)],
    ratios.filter(({ a, b }) => med[a] !== undefined && med[b] !== undefined).map(({ label, a, b }) => [label, ...items.map((i) => fmtRatio(ratio(a, b, i.label)))]),
  );
  const targetResults = targets.map((t) => {
    const r = ratio(t.a, t.b, t.item);
    return { ...t, ratio: r, met: r === undefined ? undefined : r >= t.min };
  });
  const targetTable = table(
    ['target', 'measured', 'result'],
    targetResults.map((t) => [t.text, fmtRatio(t.ratio), t.met === undefined ? 'not measured' : t.met ? 'met' : 'MISSED']),
  );
  const runsTable = table(
    ['server', 'item', ...Array.from({ length: settings.runs }, (_, i) => `round ${i + 1}: req/s (p99, CPU/req, app req)`)],
    contenders.flatMap((c) =>
      items.map((i) => [
        c.id,
        i.label,
        ...samples[c.id][i.label].map(
          (r) =>
            `${fmtInt(r.rps)} (${fmtMs(r.p99)}, ${fmtUs(r.cpuUs)}, ${fmtInt(r.upstreamRequests)})` +
            `${r.errors ? ` ${r.errors} err` : ''}${r.warning === undefined ? '' : ` ${r.warning}`}${r.noise >= settings.noise ? ` noisy ${pct(r.noise)}` : ''}`,
        ),
      ]),
    ),
  );

  const colourTargets = targetTable.replace(/\| met( *)\|/g, (_, s) => `| ${green('met')}${s}|`).replace(/\| MISSED( *)\|/g, (_, s) => `| ${red('MISSED')}${s}|`);
  const legend =
    `CPU/req: the contender's CPU time (utime + stime of its processes, all threads, /proc/PID/stat) during the run ÷ requests;` +
    ` CPU: that time ÷ wall time (100% = the whole of CPU ${SERVER_CPU}).`;
  console.log(
    `\n${bold('Medians')} (${settings.runs} rounds; samples disturbed by other processes are left out when clean ones exist)\n` +
      `${resultsTable}\n${dim(legend)}\n\n${ratioTable}\n\n${bold('Targets')}\n${colourTargets}\n`,
  );
  const errorTotal = contenders.reduce((s, c) => s + items.reduce((t, i) => t + med[c.id][i.label].errors, 0), 0);
  if (errorTotal > 0) console.log(red(`wrk reported ${errorTotal} socket errors or non-2xx answers: see the rounds below.\n`));
  console.log(`${dim('All rounds')} (app req: requests the app server received during the measurement)\n${runsTable}\n`);

  const markdown =
    `## Medians\n\nMedian of ${settings.runs} rounds; a sample during which other processes used ≥ ${pct(settings.noise)} of the CPUs` +
    ` is marked noisy and left out when clean ones exist. ${legend}\n\n${resultsTable}\n\n${ratioTable}\n\n## Targets\n\n${targetTable}\n\n` +
    `## All rounds\n\napp req: requests the app server received during the measurement.\n\n${runsTable}\n`;
  writeFileSync(path.join(out, 'results.md'), markdown);
  writeFileSync(
    path.join(out, 'results.json'),
    JSON.stringify({ date: new Date().toISOString(), machine: info, settings, medians: med, samples, targets: targetResults }, (k, v) => (k === 'raw' ? undefined : v), 2),
  );
  console.log(dim(`    written: bench/out/${name}/results.md, bench/out/${name}/results.json`));
  return { med, samples, targets: targetResults, errors: errorTotal };
}

/** Runs `main` and turns a failure into a red one-line error and exit code 1. */
export function run(main) {
  main().catch((err) => {
    console.error(red(`error: ${err.message}`));
    process.exit(1);
  });
}
