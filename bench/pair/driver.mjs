// Concurrent pairs (run through bench/pair.sh): two contenders of one scenario measured at the same time on
// CPU 0, one wrk each on CPU 1, the ratio of their request rates round by round (the loop: bench/lib/pair.mjs).
//
//   BENCH_BASE=<commit> npm run bench -- pair [all]          # portico / portico-base: static, proxy, cache hits
//   BENCH_BASE=<commit> npm run bench -- pair static|proxy|cache [ITEM]
//   npm run bench -- pair SCENARIO ID_A ID_B [ITEM]          # any two contenders of bench/SCENARIO/contenders.mjs
//   npm run bench -- pair ID_A ID_B [ITEM]                   # the same for static (the older form)
//
// ITEM: 1k.txt (default) or 100k.txt for static and cache; proxy: GET / (13 bytes, default), post-1k or post-1m
// (a POST of 1 KB or 1 MB, answered once the app has read it; `pair proxy portico-stream portico post-1m` is what
// request buffering costs). Without BENCH_BASE
// and ids, each scenario pairs Portico with its floor (static and cache: the bare Node server; proxy: undici).
//
//   static  both serve bench/out/pair/docroot with the static scenario's config (bench/static/contenders.mjs)
//   proxy   both forward to one app server (bench/proxy/backend.mjs, on CPU 1 with the wrk), with the proxy
//           scenario's config: an upstream with health checks, the `upstream` access log to a file
//   cache   both proxy to one origin with a memory cache zone (bench/cache/contenders.mjs); each is warmed and
//           seen to hit before measuring, and a round during which the origin was asked is flagged
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bold, dim, green, progress, yellow } from '../lib/common.mjs';
import { NOISE_FLOOR, pairSettings, runPair } from '../lib/pair.mjs';
import { FILES, makeDocroot } from '../static/docroot.mjs';
import * as staticServers from '../static/contenders.mjs';
import * as proxyServers from '../proxy/contenders.mjs';
import * as cacheServers from '../cache/contenders.mjs';
import { run, startBackend, table } from '../proxy/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(HERE, '../out/pair');
const BASE = process.env.PORTICO_BASE_DIR ? ['portico-base', 'portico'] : undefined;
const FILE_ITEMS = FILES.map((f) => ({ label: f.label, path: `/${f.name}`, file: f.name, arg: f.name }));
/** proxy's POST items: what request buffering costs (`pair proxy portico-stream portico post-1k`, or against BENCH_BASE). */
const POST_ITEMS = [
  { label: 'POST 1 KB', path: '/', method: 'POST', arg: 'post-1k', bodySize: 1024 },
  { label: 'POST 1 MB', path: '/', method: 'POST', arg: 'post-1m', bodySize: 1024 * 1024 },
];

/** wrk's Lua file that makes every request a POST with a body of `size` bytes. */
function postScript(size) {
  mkdirSync(OUT, { recursive: true });
  const file = path.join(OUT, `post-${size}.lua`);
  writeFileSync(file, `wrk.method = "POST"\nwrk.body = string.rep("x", ${size})\nwrk.headers["Content-Type"] = "application/octet-stream"\n`);
  return file;
}

/**
 * The scenarios: their contenders, the items one may name, the default pair without BENCH_BASE, and `prepare`,
 * which starts what both contenders share and returns runPair's scenario-specific fields (and `stop`).
 */
const SCENARIOS = {
  static: {
    contenders: staticServers.CONTENDERS,
    items: FILE_ITEMS,
    floor: ['floor', 'portico'],
    async prepare({ docroot, bodies }) {
      return {
        startArgs: { docroot, files: FILES.map((f) => f.name) },
        verify: (contender, base) => staticServers.verify(contender, base, bodies),
      };
    },
  },
  proxy: {
    contenders: proxyServers.CONTENDERS,
    items: [{ label: '13 B', path: '/' }, ...POST_ITEMS],
    floor: ['undici', 'portico'],
    async prepare(_shared, item) {
      const backend = await startBackend({});
      const measured = item.bodySize === undefined ? item : { ...item, script: postScript(item.bodySize) };
      return { backend, item: measured, verify: (contender, base) => proxyServers.verify(contender, base, item), stop: () => backend.stop() };
    },
  },
  cache: {
    contenders: cacheServers.CONTENDERS,
    items: FILE_ITEMS,
    floor: ['floor', 'portico'],
    async prepare({ docroot, bodies }, item, pair) {
      const backend = await startBackend({ docroot, files: FILES.map((f) => f.name) });
      // Two caches never ask the origin once warm; Portico without a cache (portico-nocache) asks it every time.
      const hitsOnly = !pair.some((c) => c.origin);
      return {
        backend,
        startArgs: { docroot, items: [item] },
        verify: (contender, base) => cacheServers.verify(contender, base, item, bodies),
        check: (appRequests) => (hitsOnly && appRequests > 0 ? `${appRequests} requests reached the origin: not all hits` : undefined),
        stop: () => backend.stop(),
      };
    },
  },
};
const NAMES = Object.keys(SCENARIOS);

function usage(message) {
  return new Error(`${message}\nusage: npm run bench -- pair [all|${NAMES.join('|')}] [ID_A ID_B] [ITEM]   (see bench/pair.sh)`);
}

/** [{ name, a, b, item }] from the command line. */
function plan(args) {
  let which = args.length === 0 ? 'all' : args[0];
  if (which === 'all' || NAMES.includes(which)) args = args.slice(1);
  else which = 'static'; // `pair floor portico 1k.txt`, as before there were other scenarios
  if (which === 'all' && args.length > 0) throw usage(`pair all takes no contenders or items (got ${args.join(' ')})`);
  return (which === 'all' ? NAMES : [which]).map((name) => {
    const scenario = SCENARIOS[name];
    const item = scenario.items.find((i) => i.arg !== undefined && args.includes(i.arg)) ?? scenario.items[0];
    const ids = args.filter((a) => a !== item.arg);
    if (ids.length !== 0 && ids.length !== 2) throw usage(`pair ${name}: name two contenders or none (got ${ids.join(' ')})`);
    const [idA, idB] = ids.length === 2 ? ids : (BASE ?? scenario.floor);
    const pick = (id) => {
      const found = scenario.contenders.find((c) => c.id === id);
      if (found === undefined) {
        throw usage(`pair ${name}: unknown contender '${id}' (have: ${scenario.contenders.map((c) => c.id).join(', ')}; portico-base needs BENCH_BASE)`);
      }
      return found;
    };
    return { name, a: pick(idA), b: pick(idB), item };
  });
}

run(async () => {
  const pairs = plan(process.argv.slice(2));
  const { rounds, duration, warmup, connections } = pairSettings;
  console.log(
    dim(`    portico: Portico ${process.env.PORTICO_VERSION ?? 'unknown'}`) +
      (process.env.PORTICO_BASE_DIR ? dim(`; portico-base: ${process.env.PORTICO_BASE_VERSION ?? 'base'} (BENCH_BASE)`) : '') +
      dim(`; ${pairs.map((p) => p.name).join(', ')}; ${rounds} rounds of ${duration} after ${warmup} of warm-up, wrk -c${connections}`) +
      '\n',
  );
  const shared = makeDocroot(path.join(OUT, 'docroot'));
  const results = [];
  for (const { name, a, b, item } of pairs) {
    const scenario = SCENARIOS[name];
    const prepared = await scenario.prepare(shared, item, [a, b]);
    try {
      results.push(await runPair({ name, a, b, item, out: path.join(OUT, name), ...prepared }));
    } finally {
      await prepared.stop?.();
    }
  }

  if (results.length > 1) {
    const rows = results.map((r) => [
      r.name,
      `${r.b} / ${r.a}`,
      r.item,
      r.median.toFixed(3),
      r.min.toFixed(3),
      r.max.toFixed(3),
      `${r.ratios.filter((x) => x >= NOISE_FLOOR).length} of ${r.ratios.length}`,
    ]);
    console.log(bold('==> pair: summary'));
    console.log(table(['scenario', 'ratio', 'item', 'median', 'min', 'max', `rounds ≥ ${NOISE_FLOOR}`], rows));
    const below = results.filter((r) => r.median < NOISE_FLOOR);
    console.log(
      below.length === 0
        ? green(`median ≥ ${NOISE_FLOOR} in ${results.map((r) => r.name).join(', ')}`)
        : yellow(`median < ${NOISE_FLOOR} in ${below.map((r) => `${r.name} (${r.median.toFixed(3)})`).join(', ')}`),
    );
  }
  const file = path.join(OUT, 'results.json');
  const info = { portico: process.env.PORTICO_VERSION, base: process.env.PORTICO_BASE_VERSION };
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), ...info, settings: pairSettings, results }, null, 2));
  progress(`    written: ${path.relative(path.resolve(HERE, '../..'), file)}`);
});
