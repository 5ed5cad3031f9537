// A tiny example app server (the "WAS" behind Portico). Each instance reports its name so you can watch
// Portico spread requests across instances. Usage: node examples/app/server.mjs PORT [NAME]
import http from 'node:http';

const port = Number(process.argv[2] ?? 3001);
const name = process.argv[3] ?? `app-${port}`;
let served = 0;

const server = http.createServer((req, res) => {
  served++;
  const url = new URL(req.url ?? '/', 'http://app');
  if (url.pathname === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end('ok\n');
  }
  if (url.pathname === '/hello' || url.pathname === '/') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=5' });
    return res.end(JSON.stringify({ hello: 'world', instance: name, served, client: req.headers['x-real-ip'] }) + '\n');
  }
  if (url.pathname === '/time') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    return res.end(JSON.stringify({ now: new Date().toISOString(), instance: name }) + '\n');
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: 'not found', path: url.pathname }) + '\n');
});

server.listen(port, '127.0.0.1', () => process.stderr.write(`${name} listening on 127.0.0.1:${port}\n`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
