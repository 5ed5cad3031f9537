// The cache benchmark (issue 4), run through bench/cache.sh: a cache hit of a 1 KiB and a 100 KiB answer in
// Portico's memory zone, against nginx proxy_cache, Varnish, the bare Node Buffer server (the floor) and
// Portico's own uncached proxy path. Every cache is warmed and seen to hit before it is measured, and a
// measurement during which a cache asked the origin is flagged. The loop is bench/proxy/harness.mjs.
import path from 'node:path';
import { FILES, makeDocroot } from '../static/docroot.mjs';
import { OUT_ROOT, run, runScenario } from '../proxy/harness.mjs';
import { CONTENDERS, ITEMS, verify } from './contenders.mjs';

run(async () => {
  const { docroot, bodies } = makeDocroot(path.join(OUT_ROOT, 'cache', 'docroot'));
  await runScenario({
    name: 'cache',
    contenders: CONTENDERS,
    items: ITEMS,
    tools: { nginx: 'nginx -v', varnish: 'varnishd -V' },
    backend: { docroot, files: FILES.map((f) => f.name) },
    startArgs: { docroot },
    verify: (contender, base, item) => verify(contender, base, item, bodies),
    /** A cache hit never reaches the origin; the uncached path reaches it once per request. */
    check(contender, _item, sample) {
      if (contender.hit !== undefined && sample.upstreamRequests > 0) return `${sample.upstreamRequests} requests reached the origin`;
      if (contender.origin && sample.upstreamRequests < sample.requests) return `only ${sample.upstreamRequests} of ${sample.requests} requests reached the origin`;
      return undefined;
    },
    ratios: [
      { label: 'Portico hit / Node floor', a: 'portico', b: 'floor' },
      { label: 'Portico hit / Portico uncached', a: 'portico', b: 'portico-nocache' },
      { label: 'Portico hit / nginx proxy_cache', a: 'portico', b: 'nginx' },
      { label: 'Portico hit / Varnish', a: 'portico', b: 'varnish' },
      { label: 'Portico hit / Portico base hit (BENCH_BASE)', a: 'portico', b: 'portico-base' },
    ],
    targets: ITEMS.flatMap((item) => [
      { text: `Portico hit ≥ 0.75× Node floor, ${item.label}`, a: 'portico', b: 'floor', item: item.label, min: 0.75 },
      { text: `Portico hit ≥ 3× Portico uncached, ${item.label}`, a: 'portico', b: 'portico-nocache', item: item.label, min: 3 },
    ]),
  });
});
