// The compression benchmark (issue 11), run through bench/compress.sh. One origin (in this process, on CPU 1)
// serves a 20 KiB JSON answer, cacheable for an hour, on three paths:
//   /plain/   identity, a route without `compress`            → the floor: a plain cache hit
//   /api/     identity, a route with `compress: {}`           → the cache stores identity; each hit is encoded
//   /api1/    the same with `gzip_level: 1` (nginx's default)
//   /stored/  the origin encodes by Accept-Encoding and says Vary → the cache stores one variant per encoding
// Each is measured with wrk for no Accept-Encoding, gzip and br, in alternating rounds; the cache is warmed and
// every variant seen to hit first. Prints a table (median req/s, p99, bytes per answer, and Portico's CPU time
// per answer, which a busy shared machine disturbs much less than the rates) to stdout.
import http from 'node:http';
import { mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { settings, progress, bold } from '../lib/common.mjs';
import { freePort, startPortico } from '../lib/servers.mjs';
import { median, runWrk } from '../lib/wrk.mjs';

const OUT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../out/compress');
mkdirSync(OUT, { recursive: true });

const BODY = Buffer.from(
  JSON.stringify(
    Array.from({ length: 205 }, (_, i) => ({ id: i, name: `customer ${i}`, email: `user${i}@example.com`, plan: ['free', 'pro', 'team'][i % 3], active: i % 4 !== 0, score: (i * 37) % 101 })),
  ),
);
const STORED = {
  gzip: zlib.gzipSync(BODY, { level: 6 }),
  br: zlib.brotliCompressSync(BODY, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 4 } }),
};

function startOrigin() {
  const server = http.createServer((req, res) => {
    const headers = { 'content-type': 'application/json', 'cache-control': 'public, max-age=3600', etag: '"v1"' };
    if (req.url.startsWith('/stored/')) {
      const ae = req.headers['accept-encoding'] ?? '';
      const encoding = ae.includes('br') ? 'br' : ae.includes('gzip') ? 'gzip' : undefined;
      const body = encoding === undefined ? BODY : STORED[encoding];
      res.writeHead(200, { ...headers, vary: 'Accept-Encoding', ...(encoding ? { 'content-encoding': encoding } : {}), 'content-length': body.length });
      return res.end(body);
    }
    res.writeHead(200, { ...headers, 'content-length': BODY.length });
    res.end(BODY);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** CPU time (user + system, µs) a process has used so far, from /proc (clock ticks of 10 ms). */
function cpuMicros(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

function fetchBytes(port, urlPath, encoding) {
  return new Promise((resolve, reject) => {
    const headers = encoding === 'identity' ? {} : { 'accept-encoding': encoding };
    http
      .get({ host: '127.0.0.1', port, path: urlPath, headers }, (res) => {
        let n = 0;
        res.on('data', (c) => (n += c.length));
        res.on('end', () => resolve({ bytes: n, encoding: res.headers['content-encoding'] ?? 'identity', cache: String(res.headers['cache-status'] ?? '') }));
      })
      .on('error', reject);
  });
}

const origin = await startOrigin();
const originPort = origin.address().port;
const port = await freePort();
const config = `listen: ["127.0.0.1:${port}"]
log: { access: off }
caches:
  main: { memory: 64MB }
upstreams:
  app: { servers: [{ url: "http://127.0.0.1:${originPort}" }] }
sites:
  - routes:
      - path: /plain/
        proxy: { upstream: app, cache: { zone: main } }
      - path: /api/
        compress: {}
        proxy: { upstream: app, cache: { zone: main } }
      - path: /api1/
        compress: { gzip_level: 1 }
        proxy: { upstream: app, cache: { zone: main } }
      - path: /stored/
        proxy: { upstream: app, cache: { zone: main } }
`;
const portico = await startPortico({ config, outDir: OUT, cpu: 0, readyUrl: `http://127.0.0.1:${port}/plain/data.json` });
const CASES = [
  { path: '/plain/data.json', encoding: 'identity' },
  { path: '/api/data.json', encoding: 'identity' },
  { path: '/api/data.json', encoding: 'gzip' },
  { path: '/api1/data.json', encoding: 'gzip' },
  { path: '/api/data.json', encoding: 'br' },
  { path: '/stored/data.json', encoding: 'gzip' },
  { path: '/stored/data.json', encoding: 'br' },
];
try {
  const sizes = new Map();
  for (const c of CASES) {
    await fetchBytes(port, c.path, c.encoding);
    const seen = await fetchBytes(port, c.path, c.encoding);
    if (!seen.cache.includes('hit')) throw new Error(`${c.path} ${c.encoding} did not hit: ${seen.cache}`);
    if (seen.encoding !== c.encoding) throw new Error(`${c.path} asked ${c.encoding}, got ${seen.encoding}`);
    sizes.set(`${c.path} ${c.encoding}`, seen.bytes);
  }
  const samples = new Map(CASES.map((c) => [`${c.path} ${c.encoding}`, []]));
  for (let round = 1; round <= settings.runs; round++) {
    for (const c of CASES) {
      const key = `${c.path} ${c.encoding}`;
      const headers = c.encoding === 'identity' ? [] : [`Accept-Encoding: ${c.encoding}`];
      const url = `http://127.0.0.1:${port}${c.path}`;
      await runWrk({ url, cpu: 1, connections: settings.connections, duration: settings.warmup, headers });
      progress(`round ${round}/${settings.runs}: ${key} (load ${os.loadavg()[0].toFixed(2)})`);
      const cpu0 = cpuMicros(portico.pid);
      const result = await runWrk({ url, cpu: 1, connections: settings.connections, duration: settings.duration, headers });
      // Portico's own CPU per answer: what the encoding costs, whatever else the shared machine is doing.
      result.cpuPerRequest = (cpuMicros(portico.pid) - cpu0) / (result.requests ?? 1);
      // On a loaded machine wrk may time a request out: reported beside the figure, not fatal.
      if (result.errors > 0) progress(`  ${key}: wrk reported ${result.errors} errors (timeouts under load)`);
      samples.get(key).push(result);
    }
  }
  console.log(bold(`compress: 20 KiB JSON cache hit, wrk -t1 -c${settings.connections} -d${settings.duration}, ${settings.runs} rounds, median`));
  console.log('| route | encoding | bytes | req/s | p99 ms | vs plain hit | Portico CPU µs/answer |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  const floor = median(samples.get('/plain/data.json identity').map((s) => s.rps));
  for (const c of CASES) {
    const key = `${c.path} ${c.encoding}`;
    const rps = median(samples.get(key).map((s) => s.rps));
    const p99 = median(samples.get(key).map((s) => s.p99));
    const errors = samples.get(key).reduce((sum, s) => sum + s.errors, 0);
    console.log(`| ${c.path} | ${c.encoding} | ${sizes.get(key)} | ${Math.round(rps)} | ${p99.toFixed(2)} | ${(rps / floor).toFixed(3)} | ${Math.round(median(samples.get(key).map((s) => s.cpuPerRequest)))} |${errors > 0 ? ` ${errors} wrk errors` : ''}`);
  }
  console.log(`load average after: ${os.loadavg().map((n) => n.toFixed(2)).join(' ')}`);
} finally {
  await portico.stop();
  origin.close();
}
