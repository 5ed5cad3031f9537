// The app server behind every proxy and cache in these benchmarks: a bare Node `http` server with keep-alive.
//
//   GET /            "Hello, world!" (13 bytes, text/plain): what the proxy benchmark forwards
//   POST /           the same, once the request body has been read (pair proxy post-1k / post-1m)
//   GET /1k.txt …    each FILE given on the command line, from DOCROOT, with `Cache-Control: public, max-age=3600`
//   GET /healthz     "ok" (active health checks; not counted)
//   GET /__stats     {"requests": N, "connections": N} since start (not counted): lets the drivers check that a
//                    proxy reused its upstream connections and that a cache answered without asking the origin
//
// Usage: node backend.mjs PORT [DOCROOT FILE...]
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const [port, docroot, ...files] = process.argv.slice(2);
const HELLO = Buffer.from('Hello, world!');
const HELLO_HEADERS = ['Content-Type', 'text/plain', 'Content-Length', String(HELLO.length)];
const answers = new Map(
  files.map((name) => {
    const body = readFileSync(path.join(docroot, name));
    const headers = ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(body.length), 'Cache-Control', 'public, max-age=3600'];
    return ['/' + name, { body, headers }];
  }),
);
let requests = 0;
let connections = 0;

const server = http.createServer(function backend(req, res) {
  const url = req.url;
  if (url === '/' && req.method === 'POST') {
    // The POST items of `pair proxy`: the body is read whole, as an app would, before the answer.
    requests++;
    req.resume();
    req.once('end', () => res.writeHead(200, HELLO_HEADERS).end(HELLO));
    return;
  }
  if (url === '/') {
    requests++;
    res.writeHead(200, HELLO_HEADERS);
    res.end(HELLO);
    return;
  }
  if (url === '/healthz') return void res.writeHead(200, ['Content-Length', '2']).end('ok');
  if (url === '/__stats') return void res.writeHead(200, ['Content-Type', 'application/json']).end(JSON.stringify({ requests, connections }));
  requests++;
  const answer = answers.get(url);
  if (answer === undefined) return void res.writeHead(404, ['Content-Length', '0']).end();
  res.writeHead(200, answer.headers);
  res.end(answer.body);
});
// Longer than any proxy's idle timeout (Portico 4 s, nginx 60 s…), so the proxy is the one to close idle connections.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
server.on('connection', () => connections++);
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
