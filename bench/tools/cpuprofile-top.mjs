// Summarises a V8 .cpuprofile (from `node --cpu-prof`): the share of samples by area (Portico's code,
// dependencies, Node's JS internals, native/GC/idle), then the functions with the most self time and the
// Portico functions with the most total time (self + what they call).
// With REQUESTS (how many the process answered), each line also shows its CPU time per request, which makes
// two servers' profiles comparable.
// Usage: node cpuprofile-top.mjs FILE.cpuprofile [TOP=25] [REQUESTS]
import { readFileSync } from 'node:fs';

const [file, topArg, requestsArg] = process.argv.slice(2);
const TOP = Number(topArg ?? 25);
const REQUESTS = requestsArg === undefined ? undefined : Number(requestsArg);
const profile = JSON.parse(readFileSync(file, 'utf8'));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Time per sample: timeDeltas[i] is the time before sample i.
const self = new Map();
let total = 0;
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i] ?? 0;
  self.set(id, (self.get(id) ?? 0) + dt);
  total += dt;
});

function area(n) {
  const url = n.callFrame.url;
  if (url.includes('/dist/src/')) return 'Portico (dist/src)';
  if (url.includes('/node_modules/')) return 'dependencies';
  if (url.startsWith('node:')) return 'Node internals (JS)';
  if (n.callFrame.functionName === '(idle)') return '(idle)';
  if (n.callFrame.functionName === '(garbage collector)') return '(garbage collector)';
  if (url === '') return 'native / (program)';
  return 'other';
}
const key = (n) => {
  const { functionName, url, lineNumber } = n.callFrame;
  const where = url === '' ? '' : ` ${url.replace(/^.*\/dist\/src\//, 'src/').replace(/^.*node_modules\//, '').replace(/^file:\/\//, '')}:${lineNumber + 1}`;
  return `${functionName || '(anonymous)'}${where}`;
};

const byArea = new Map();
const byFunction = new Map();
for (const [id, t] of self) {
  const n = nodes.get(id);
  byArea.set(area(n), (byArea.get(area(n)) ?? 0) + t);
  byFunction.set(key(n), (byFunction.get(key(n)) ?? 0) + t);
}

// Inclusive time of Portico functions: each sample counts once for every distinct Portico frame on its stack.
const inclusive = new Map();
for (const [id, t] of self) {
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const n = nodes.get(cur);
    if (area(n) !== 'Portico (dist/src)') continue;
    const k = key(n);
    if (!seen.has(k)) (seen.add(k), inclusive.set(k, (inclusive.get(k) ?? 0) + t));
  }
}

const busy = total - (byArea.get('(idle)') ?? 0);
const pct = (t, of = busy) => `${((100 * t) / of).toFixed(1).padStart(5)}%`;
// Profile times are in microseconds.
const perRequest = (t) => (REQUESTS === undefined ? '' : `${(t / REQUESTS).toFixed(3).padStart(7)} µs/req  `);
const print = (title, map, limit) => {
  console.log(title);
  for (const [k, t] of [...map].sort((a, b) => b[1] - a[1]).slice(0, limit)) console.log(`  ${pct(t)}  ${perRequest(t)}${k}`);
  console.log('');
};
console.log(`${(total / 1e6).toFixed(1)} s profiled, ${pct(busy, total).trim()} busy; shares below are of busy time`);
if (REQUESTS !== undefined) console.log(`${REQUESTS} requests: ${(busy / REQUESTS).toFixed(2)} µs of busy CPU per request`);
console.log('');
print('By area (self time)', new Map([...byArea].filter(([k]) => k !== '(idle)')), 10);
print(`Top ${TOP} functions by self time`, new Map([...byFunction].filter(([k]) => !k.startsWith('(idle)'))), TOP);
print('Portico functions by total time (self + callees)', inclusive, 15);
