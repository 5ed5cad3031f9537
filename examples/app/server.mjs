// A tiny example app server (the "WAS" behind Portico). Each instance reports its name so you can watch
// Portico spread requests across instances. Portico starts it itself (examples/portico.yaml, `spawn:`) and tells
// each instance its port, slot name and route in the environment: PORT, PORTICO_SLOT (app#1) and PORTICO_ROUTE
// (app1). By hand: PORT=3001 node examples/app/server.mjs, or node examples/app/server.mjs PORT [NAME] [ROUTE].
//
// /session keeps a per-session counter in this instance's memory, under a JSESSIONID cookie whose id ends in
// `.ROUTE`, as Tomcat does with a jvmRoute: Portico's `sticky: { app_cookie: JSESSIONID }` sends the session back
// to the instance that holds it. /boom fails as an app does (a 500 with a stack trace), which Portico hides.
import { randomBytes } from 'node:crypto';
import http from 'node:http';

const port = Number(process.env.PORT ?? process.argv[2] ?? 3001);
// The address to listen on (HOST=127.0.0.11 for the cluster showcase's app servers found through DNS).
const host = process.env.HOST ?? '127.0.0.1';
const name = process.env.PORTICO_SLOT ?? process.argv[3] ?? `app-${port}`;
const route = process.env.PORTICO_ROUTE ?? process.argv[4];
let served = 0;
/** Session id → visits, in this process only (scope: process), as an app server's in-memory sessions are. */
const sessions = new Map();

function sessionOf(req) {
  const match = /(?:^|;\s*)JSESSIONID=([^;]+)/.exec(req.headers.cookie ?? '');
  return match !== null && sessions.has(match[1]) ? match[1] : undefined;
}

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
  if (url.pathname === '/session') {
    let id = sessionOf(req);
    const headers = { 'content-type': 'application/json', 'cache-control': 'no-store' };
    if (id === undefined) {
      id = randomBytes(8).toString('hex').toUpperCase() + (route === undefined ? '' : `.${route}`);
      headers['set-cookie'] = `JSESSIONID=${id}; Path=/api/session; HttpOnly`;
    }
    const visits = (sessions.get(id) ?? 0) + 1;
    sessions.set(id, visits);
    res.writeHead(200, headers);
    return res.end(JSON.stringify({ session: id, visits, instance: name }) + '\n');
  }
  if (url.pathname === '/boom') {
    res.writeHead(500, { 'content-type': 'text/plain', server: 'ExampleApp/1.0' });
    return res.end(`java.lang.IllegalStateException: boom\n\tat com.example.Boom.doGet(Boom.java:42) on ${name}\n`);
  }
  if (url.pathname === '/time') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    return res.end(JSON.stringify({ now: new Date().toISOString(), instance: name, pid: process.pid }) + '\n');
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: 'not found', path: url.pathname }) + '\n');
});

server.listen(port, host, () => process.stderr.write(`${name} listening on ${host}:${port}\n`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
