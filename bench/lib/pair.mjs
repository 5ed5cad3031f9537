// The concurrent pair, for every scenario (run by bench/pair/driver.mjs): two contenders measured AT THE SAME
// TIME, both pinned to SERVER_CPU (the scheduler shares it evenly), each loaded by its own wrk on CLIENT_CPU
// (with the app server, when there is one). The ratio of their request rates is the inverse ratio of their CPU
// cost per request, and the VM's drift (±10% between sequential rounds here) hits both alike, so a change of
// 2–3% shows. Two identical builds read 0.98–1.02. Absolute ratios still move between runs made an hour apart:
// compare within one run.
//
// Results (the rounds, the median, min and max ratio) go to stdout; progress goes to stderr. Other processes
// slow both contenders alike, so a round is not retried when they were busy (BENCH_NOISE, as elsewhere), only
// marked; a busy round reads further from 1 than a quiet one.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { bold, dim, fmtInt, has, pct, progress, red, settings, yellow } from './common.mjs';
import { foreignMeter } from './cpu.mjs';
import { freePort } from './servers.mjs';
import { median, runWrk } from './wrk.mjs';

export const SERVER_CPU = 0;
export const CLIENT_CPU = 1;

const quick = process.env.BENCH_QUICK === '1';
/** The pair's knobs: more, shorter rounds than the sequential scenarios (drift cancels within a round). */
export const pairSettings = {
  rounds: Number(process.env.BENCH_RUNS ?? (quick ? 2 : 5)),
  duration: process.env.BENCH_DURATION ?? (quick ? '2s' : '4s'),
  warmup: process.env.BENCH_WARMUP ?? (quick ? '1s' : '2s'),
  connections: Number(process.env.BENCH_CONNECTIONS ?? 50),
};

/** Below this median, B is slower than A by more than two identical builds ever read apart. */
export const NOISE_FLOOR = 0.98;


/**
 * Measures one pair and prints it. `spec`:
 *   name        the scenario (static, proxy, cache): folder under `out`, first word of the heading
 *   a, b        the contenders (id, label, start, optional `needs`); the ratio is b / a
 *   item        { label, path, method?, script? }: the one URL measured (`script`: wrk's Lua file, for a POST)
 *   startArgs   more for both `start()` calls (docroot, backend, files, items…)
 *   verify      async (contender, base) => throws when a contender answers wrongly; also warms a cache
 *   backend     optional app server handle with `stats()` (bench/proxy/harness.mjs startBackend)
 *   check       optional (appRequests, [resultA, resultB]) => a warning about a round (shown in red)
 *   out         the folder for the contenders' files
 * Resolves with { ratios, median, min, max, rounds: [{ a, b, ratio, noise, appRequests, warning }] }.
 */
export async function runPair(spec) {
  const { name, a, b, item, startArgs = {}, verify, backend, check, out } = spec;
  const { rounds, duration, warmup, connections } = pairSettings;
  const servers = [];
  try {
    for (const contender of [a, b]) {
      if (contender.needs !== undefined && !has(contender.needs)) throw new Error(`${contender.id} needs ${contender.needs}, which is not installed`);
      progress(`    ${name}: starting ${contender.id} on CPU ${SERVER_CPU}`);
      const port = await freePort();
      const base = `http://127.0.0.1:${port}`;
      const outDir = path.join(out, contender.id);
      mkdirSync(outDir, { recursive: true });
      const handle = await contender.start({ ...startArgs, port, backend, outDir, cpu: SERVER_CPU, readyUrl: `${base}${item.path}` });
      servers.push({ contender, base, handle, url: `${base}${item.path}` });
      await verify?.(contender, base);
    }
    console.log(
      bold(`==> pair ${name}: ${b.id} / ${a.id} on ${item.label} (${item.method ?? 'GET'} ${item.path})`) +
        dim(`\n    ${a.id}: ${a.label}\n    ${b.id}: ${b.label}`) +
        dim(`\n    both on CPU ${SERVER_CPU} at once, one wrk -t1 -c${connections} each on CPU ${CLIENT_CPU}${backend ? ' (with the app server)' : ''}; ${rounds} rounds of ${duration}`),
    );
    const load = (d, round) => {
      // Alternate which wrk starts first, so neither contender always gets the head start of a few ms.
      const order = round % 2 === 0 ? servers : [...servers].reverse();
      const runs = new Map(order.map((s) => [s, runWrk({ url: s.url, cpu: CLIENT_CPU, connections, duration: d, script: item.script })]));
      return Promise.all(servers.map((s) => runs.get(s)));
    };
    progress(`    ${name}: warming up both for ${warmup}`);
    await load(warmup, 0);

    const results = [];
    for (let round = 1; round <= rounds; round++) {
      progress(`    ${name}: round ${round}/${rounds} (${duration})…`);
      const before = backend ? (await backend.stats()).requests : 0;
      const stop = foreignMeter(process.pid);
      const [ra, rb] = await load(duration, round);
      const noise = stop();
      const appRequests = backend ? (await backend.stats()).requests - before : undefined;
      const ratio = rb.rps / ra.rps;
      const errors = ra.errors + rb.errors;
      const warning = [errors > 0 ? `${errors} socket errors or non-2xx answers` : undefined, check?.(appRequests, [ra, rb])].filter(Boolean).join('; ');
      results.push({ a: { rps: ra.rps, p99: ra.p99, errors: ra.errors }, b: { rps: rb.rps, p99: rb.p99, errors: rb.errors }, ratio, noise, appRequests, warning });
      console.log(
        `    [${round}/${rounds}] ${a.id} ${fmtInt(ra.rps)} req/s, ${b.id} ${fmtInt(rb.rps)} req/s: ${bold(ratio.toFixed(3))}` +
          (noise >= settings.noise ? yellow(`   others used ${pct(noise)} of the CPUs`) : dim(`   others ${pct(noise)}`)) +
          (appRequests === undefined ? '' : dim(`, app ${fmtInt(appRequests)} req`)) +
          (warning ? red(`  ${warning}`) : ''),
      );
    }
    const ratios = results.map((r) => r.ratio);
    const summary = { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) };
    const colour = summary.median >= NOISE_FLOOR ? (s) => s : yellow;
    console.log(
      `    ${bold(colour(`${b.id} / ${a.id}: ${summary.median.toFixed(3)}`))} ` +
        dim(`(median of ${rounds}; min ${summary.min.toFixed(3)}, max ${summary.max.toFixed(3)}; ±0.02 is noise)`) +
        '\n',
    );
    return { name, a: a.id, b: b.id, item: item.label, ratios, ...summary, rounds: results };
  } finally {
    for (const s of servers) await s.handle.stop();
  }
}
