// Balance of new connections over the workers: `node bench/workers/balance.mjs PORT` against a Portico whose route
// proxies to a backend echoing `X-Worker: $pid` (set_headers). Sends 200 requests on fresh connections one at a
// time, then 50 rounds of 8 at once, and counts the answering worker pids.
import http from 'node:http';
const port = Number(process.argv[2]);
const get = () => new Promise((resolve) => {
  http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => { let b = ''; res.on('data', (c) => (b += c)); res.on('end', () => resolve(b)); }).on('error', () => resolve('error'));
});
const count = (list) => Object.entries(list.reduce((m, k) => ((m[k] = (m[k] ?? 0) + 1), m), {})).map(([k, v]) => `${k}:${v}`).join(' ');
const seq = [];
for (let i = 0; i < 200; i++) seq.push(await get());
const par = [];
for (let i = 0; i < 50; i++) par.push(...(await Promise.all(Array.from({ length: 8 }, get))));
console.log(`sequential ${count(seq)} | 8 at a time ${count(par)}`);
