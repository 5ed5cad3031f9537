/**
 * A reload forgets nothing (issue 17 §3): the state of upstream servers (active-check verdicts, passive
 * ejections), a max_conns queue, rate-limit buckets, log.level and listeners bound under another spelling of
 * their address all carry over; a reload resolves at the swap, and what the previous config took (a long
 * stream, a download, a WebSocket) finishes there, logged. In-process Portico, real backends on port 0.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import type { Logger } from 'pino';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { capturingLogger } from '../helpers/pebble.js';
import { makeTree } from '../helpers/portico.js';
import { PorticoProcess } from '../helpers/process.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { appRequests, countConnections, waitFor } from './proxy-support.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
});

/** A Portico in this process whose config can be reloaded from new text. */
interface Served {
  server: Portico;
  port: number;
  url: string;
  dir: string;
  /** Reloads from YAML text (the `listen` and `log` defaults as at start). */
  reload(yaml: string): Promise<void>;
  stop(): Promise<void>;
}

function withDefaults(yaml: string): string {
  let text = yaml;
  if (!/^listen:/m.test(text)) text = `listen: ["127.0.0.1:0"]\n${text}`;
  if (!/^log:/m.test(text)) text = `log: { access: off }\n${text}`;
  return text;
}

async function serve(yaml: string, logger: Logger = pino({ level: 'silent' }), followLogLevel = false): Promise<Served> {
  const dir = makeTree();
  const file = path.join(dir, 'portico.yaml');
  const server = new Portico(parseConfig(withDefaults(yaml), file, dir), logger, { followLogLevel });
  await server.start();
  const port = server.addresses[0]!.port;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await server.stop(200);
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.push(stop);
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    dir,
    reload: (text) => server.reload(parseConfig(withDefaults(text), file, dir)),
    stop,
  };
}

async function backend(handler: Parameters<typeof startUpstream>[0]): Promise<TestUpstream> {
  const upstream = await startUpstream(handler);
  cleanups.push(() => upstream.stop());
  return upstream;
}

/** A keep-alive GET's status and body. */
async function get(url: string, agent?: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** The bodies of `n` GETs in a row. */
async function bodies(url: string, n: number): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < n; i++) seen.push((await get(url)).body);
  return seen;
}

/**
 * Resolves once Portico's HTTP server has taken a request for `url` and the turn that handles it has run (a
 * request that must wait for a server is in the queue by then).
 */
function arrival(url: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const channel = diagnostics.channel('http.server.request.start');
    const seen = (message: unknown) => {
      if ((message as { request: IncomingMessage }).request.url !== url) return;
      channel.unsubscribe(seen);
      setImmediate(resolve);
    };
    channel.subscribe(seen);
  });
}

const site = (extra = '') => `sites:\n  - routes:\n${extra}      - path: /\n        proxy: { upstream: app }\n`;
const newRoute = '      - path: /new\n        respond: { body: "new" }\n';

describe('upstream state across a reload', () => {
  test('a server the active checks hold down stays down across a reload, whether its upstream is kept or changed', async () => {
    const a = await backend('a');
    // Its checks fail slowly: a new checker would need 300 ms to find it down again, time enough for traffic to reach it.
    const b = await backend((req, res) => {
      if (req.url === '/health') setTimeout(() => res.writeHead(500).end(), 300);
      else res.end('b');
    });
    const capture = capturingLogger();
    const upstream = (keepalive: number) =>
      `upstreams:\n  app:\n    servers: ["${a.url}", "${b.url}"]\n    keepalive: ${keepalive}\n    health: { path: /health, interval: 5s, timeout: 2s, fall: 1, rise: 1 }\n`;
    const portico = await serve(upstream(8) + site(), capture.logger);
    await capture.waitFor('server is down');
    assert.deepEqual(new Set(await bodies(portico.url, 6)), new Set(['a']));
    // Kept: only a route changed.
    await portico.reload(upstream(8) + site(newRoute));
    assert.deepEqual(new Set(await bodies(portico.url, 6)), new Set(['a']), 'the kept upstream still holds b down');
    // Changed: a new upstream takes the verdict over from the previous one.
    await portico.reload(upstream(16) + site(newRoute));
    assert.deepEqual(new Set(await bodies(portico.url, 6)), new Set(['a']), 'the changed upstream took over b being down');
    assert.equal(appRequests(b), 0, 'no request reached b');
    assert.equal((await get(`${portico.url}/new`)).body, 'new');
  });

  test('a server ejected by passive health stays ejected across a reload that changes its upstream', async () => {
    const a = await backend('a');
    const b = await backend((_req, res) => res.writeHead(503).end('b down'));
    const capture = capturingLogger();
    const upstream = (keepalive: number) =>
      `upstreams:\n  app:\n    servers: ["${a.url}", "${b.url}"]\n    keepalive: ${keepalive}\n    passive: { max_fails: 1, fail_timeout: 30s }\n`;
    const portico = await serve(upstream(8) + site(), capture.logger);
    for (let i = 0; i < 4 && capture.lines.every((line) => line.msg !== 'server ejected'); i++) await get(portico.url);
    await capture.waitFor('server ejected');
    const before = appRequests(b);
    await portico.reload(upstream(16) + site(newRoute));
    assert.deepEqual(new Set(await bodies(portico.url, 8)), new Set(['a']));
    assert.equal(appRequests(b), before, 'the ejected server got no request after the reload');
  });

  test('requests queued under max_conns at a reload are served once the slow request ends, not answered 503 (kept and changed upstream)', async () => {
    for (const change of [false, true]) {
      let release: (() => void) | undefined;
      let active = 0;
      let peak = 0;
      const app = await backend((req, res) => {
        peak = Math.max(peak, ++active);
        res.once('finish', () => active--);
        if (req.url === '/slow') release = () => res.end('slow');
        else res.end('fast');
      });
      const upstream = (keepalive: number) => `upstreams:\n  app:\n    servers: ["${app.url}"]\n    max_conns: 1\n    keepalive: ${keepalive}\n    queue: { size: 10, timeout: 10s }\n`;
      const portico = await serve(upstream(8) + site());
      const slow = get(`${portico.url}/slow`);
      await waitFor('the slow request at the app', () => release !== undefined, 5000);
      const queued = get(`${portico.url}/queued`);
      await arrival('/queued');
      await portico.reload(upstream(change ? 16 : 8) + site(newRoute));
      const after = get(`${portico.url}/after`);
      await arrival('/after');
      assert.equal((await get(`${portico.url}/new`)).body, 'new', 'the new config serves');
      // Nothing to wait for: a second request at the app would be the fault. A bounded look for it.
      await waitFor('a second request at the app', () => active > 1, 300).catch(() => undefined);
      assert.equal(peak, 1, 'max_conns 1 holds across both configs: only the slow request is at the app');
      release!();
      assert.deepEqual(await slow, { status: 200, body: 'slow' });
      assert.deepEqual(await queued, { status: 200, body: 'fast' }, `queued before the reload (${change ? 'changed' : 'kept'} upstream)`);
      assert.deepEqual(await after, { status: 200, body: 'fast' }, `queued after the reload (${change ? 'changed' : 'kept'} upstream)`);
      await portico.stop();
    }
  });
});

describe('other state across a reload', () => {
  test('a proxy: { url } route keeps its upstream (its pooled connection) across a reload that leaves the route as it was', async () => {
    const app = await backend('app');
    const connections = countConnections(app);
    const routes = (extra: string) => `sites:\n  - routes:\n${extra}      - path: /\n        proxy: { url: "${app.url}" }\n`;
    const portico = await serve(routes(''));
    assert.equal((await get(portico.url)).body, 'app');
    await portico.reload(routes(newRoute));
    assert.equal((await get(`${portico.url}/new`)).body, 'new');
    assert.equal((await get(portico.url)).body, 'app');
    assert.equal(connections.count, 1, 'the request after the reload went over the connection pooled before it');
  });

  test('a rate-limited client stays limited across a reload that keeps its rule; a changed rule starts afresh', async () => {
    const rule = (burst: number) => `sites:\n  - rate_limit: { rate: "1/m", burst: ${burst} }\n    routes:\n`;
    const routes = '      - path: /\n        respond: { body: "ok" }\n';
    const portico = await serve(rule(2) + routes);
    assert.deepEqual((await bodies(portico.url, 2)), ['ok', 'ok']);
    assert.equal((await get(portico.url)).status, 429);
    await portico.reload(rule(2) + newRoute + routes);
    assert.equal((await get(`${portico.url}/new`)).body, 'new', 'the new config serves');
    assert.equal((await get(portico.url)).status, 429, 'the bucket survived the reload');
    await portico.reload(rule(3) + newRoute + routes);
    assert.equal((await get(portico.url)).status, 200, 'a changed rule has new buckets');
  });

  test('log.level applies on reload', async () => {
    const capture = capturingLogger();
    const routes = 'sites:\n  - routes:\n      - path: /\n        respond: { body: "ok" }\n';
    const portico = await serve(`log: { access: off, level: info }\n${routes}`, capture.logger, true);
    assert.equal(capture.logger.level, 'info');
    await portico.reload(`log: { access: off, level: warn }\n${routes}`);
    assert.equal(capture.logger.level, 'warn');
    await portico.reload(`log: { access: off, level: debug }\n${routes}`);
    assert.equal(capture.logger.level, 'debug');
  });

  test('portico run: a SIGHUP that sets log.level to debug makes debug lines appear, and one to localhost:PORT keeps serving', async () => {
    const dir = makeTree();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'portico.yaml');
    const config = (listen: string, level: string) =>
      `listen: ["${listen}"]\nlog: { access: off, level: ${level} }\nsites:\n  - routes:\n      - path: /\n        respond: { body: "ok" }\n`;
    writeFileSync(file, config('127.0.0.1:0', 'info'));
    const portico = await PorticoProcess.start(file, dir);
    cleanups.push(async () => void (await portico.stop()));
    /** Sends a request Node's parser refuses (Portico answers 400 and logs it at debug level). */
    const malformed = async () => {
      const mark = portico.stderr.length;
      const socket = net.connect(portico.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.resume();
      socket.write('NOT HTTP\r\n\r\n');
      await new Promise((resolve) => socket.once('close', resolve));
      return mark;
    };
    const before = await malformed();
    let reloaded = await portico.reload(config(`127.0.0.1:${portico.port}`, 'debug'));
    assert.equal(reloaded.line, 'portico: config reloaded', reloaded.log);
    assert.doesNotMatch(portico.stderr.slice(before), /client error 400/, 'at info level, no debug line');
    const mark = await malformed();
    await portico.waitForLine(/client error 400/, mark, 5000);
    reloaded = await portico.reload(config(`localhost:${portico.port}`, 'debug'));
    assert.equal(reloaded.line, 'portico: config reloaded', reloaded.log);
    assert.equal((await get(`http://127.0.0.1:${portico.port}/`)).body, 'ok');
    assert.equal(await portico.stop(), 0, portico.stderr);
  });

  test('a reload from 127.0.0.1:PORT to localhost:PORT (and [::1] to its long form) keeps the socket instead of failing with "address in use"', async () => {
    const routes = (body: string) => `sites:\n  - routes:\n      - path: /\n        respond: { body: "${body}" }\n`;
    const portico = await serve(routes('one'));
    await portico.reload(`listen: ["localhost:${portico.port}"]\n${routes('two')}`);
    assert.equal((await get(portico.url)).body, 'two');
    assert.equal(portico.server.addresses.length, 1);
    const six = await serve(`listen: ["[::1]:0"]\n${routes('one')}`);
    await six.reload(`listen: ["[0:0:0:0:0:0:0:1]:${six.port}"]\n${routes('two')}`);
    assert.equal((await get(`http://[::1]:${six.port}/`)).body, 'two');
  });
});

describe('what the previous config took goes on', () => {
  test('a second reload during a long SSE answer takes effect at once, and the stream finishes', async () => {
    const events = await backend((req, res) => {
      if (req.url !== '/events') return void res.end('app');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let n = 0;
      const timer = setInterval(() => {
        res.write(`data: ${++n}\n\n`);
        if (n === 30) {
          clearInterval(timer);
          res.end();
        }
      }, 100);
    });
    const routes = (body: string) => `upstreams:\n  app: { servers: ["${events.url}"] }\n${site(`      - path: /new\n        respond: { body: "${body}" }\n`)}`;
    const portico = await serve(routes('one'));
    let ended = false;
    const stream = new Promise<string>((resolve, reject) => {
      http.get(`${portico.url}/events`, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          ended = true;
          resolve(text);
        });
      }).on('error', reject);
    });
    await waitFor('the stream to begin', () => events.requests.length === 1, 5000);
    const started = Date.now();
    await portico.reload(routes('two'));
    await portico.reload(routes('three'));
    const took = Date.now() - started;
    assert.equal(ended, false, `the two reloads resolved (in ${took} ms) while the 3 s stream still ran`);
    assert.equal((await get(`${portico.url}/new`)).body, 'three');
    const text = await stream;
    assert.match(text, /data: 30\n\n$/, 'the stream ran to its end on the previous config');
  });

  test('a WebSocket opened before a reload still echoes after it (upstream kept or changed), and stop() cuts it', async () => {
    const app = await backend('app');
    app.server.on('upgrade', (_req: IncomingMessage, socket: net.Socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.on('data', (d) => socket.write(d));
      socket.on('error', () => socket.destroy());
    });
    const upstream = (keepalive: number) => `upstreams:\n  app: { servers: ["${app.url}"], keepalive: ${keepalive} }\n`;
    const routes = (extra: string) => `sites:\n  - routes:\n${extra}      - path: /\n        proxy: { upstream: app, websocket: true }\n`;
    const portico = await serve(upstream(8) + routes(''));
    const client = net.connect(portico.port, '127.0.0.1');
    client.on('error', () => undefined);
    let received = '';
    client.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    await new Promise((resolve) => client.once('connect', resolve));
    client.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    await waitFor('the 101', () => received.includes('\r\n\r\n'), 5000);
    assert.match(received, /^HTTP\/1\.1 101 /);
    const echo = async (word: string) => {
      client.write(word);
      await waitFor(`the echo of ${word}`, () => received.endsWith(word), 5000);
    };
    await echo('before');
    await portico.reload(upstream(8) + routes(newRoute));
    await echo('after-kept');
    await portico.reload(upstream(16) + routes(newRoute));
    assert.equal((await get(`${portico.url}/new`)).body, 'new');
    await echo('after-changed');
    assert.equal(client.destroyed, false);
    const closed = new Promise((resolve) => client.once('close', resolve));
    await portico.stop();
    await closed;
  });

  test('a 64 MiB download in flight across a reload completes, and the previous config logs its line', async () => {
    const size = 64 * 1024 * 1024;
    const chunk = Buffer.alloc(1024 * 1024, 'x');
    const app = await backend((_req, res) => {
      res.writeHead(200, { 'content-length': String(size) });
      let sent = 0;
      const more = () => {
        while (sent < size) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    });
    const config = (extra: string) => `log: { access: ./access.log }\nupstreams:\n  app: { servers: ["${app.url}"] }\n${site(extra)}`;
    const portico = await serve(config(''));
    let got = 0;
    let response: IncomingMessage | undefined;
    const done = new Promise<number>((resolve, reject) => {
      http.get(`${portico.url}/big`, (res) => {
        response = res;
        res.pause();
        res.on('data', (data: Buffer) => (got += data.length));
        res.on('end', () => resolve(res.statusCode!));
        res.on('error', reject);
      }).on('error', reject);
    });
    await waitFor('the answer to begin', () => response !== undefined, 5000);
    await portico.reload(config(newRoute));
    assert.equal((await get(`${portico.url}/new`)).body, 'new');
    response!.resume();
    assert.equal(await done, 200);
    assert.equal(got, size);
    const logFile = path.join(portico.dir, 'access.log');
    const logged = () => existsSync(logFile) && readFileSync(logFile, 'utf8').includes(`"GET /big HTTP/1.1" 200 ${size} `);
    await waitFor('the download\'s access-log line', logged, 5000);
  });

  test('reloads (a changed route, then a changed upstream) under ~200 req/s of keep-alive GETs: no failed request, no reset connection, the change live', async (t) => {
    const app = await backend('app');
    const config = (extra: string, keepalive = 8) => `upstreams:\n  app: { servers: ["${app.url}"], keepalive: ${keepalive} }\n${site(extra)}`;
    const portico = await serve(config(''));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    cleanups.push(() => agent.destroy());
    const counts = { ok: 0, failed: 0, errors: 0, newRoute: 0 };
    let running = true;
    const client = async (n: number) => {
      // Four clients, each a request every 20 ms: about 200 requests a second.
      for (let i = 0; running && i < 1000; i++) {
        const due = Date.now() + 20;
        const url = n === 0 && i % 5 === 0 ? `${portico.url}/new` : `${portico.url}/x${i}`;
        try {
          const answer = await get(url, agent);
          if (answer.status === 200 && (answer.body === 'app' || answer.body === 'new')) counts.ok++;
          else if (answer.status === 404 && url.endsWith('/new')) counts.ok++;
          else counts.failed++;
          if (answer.body === 'new') counts.newRoute++;
        } catch {
          counts.errors++;
        }
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
    };
    const clients = [0, 1, 2, 3].map(client);
    await new Promise((resolve) => setTimeout(resolve, 700));
    await portico.reload(config(newRoute));
    const seenBefore = counts.newRoute;
    await waitFor('the new route to answer under load', () => counts.newRoute > seenBefore, 3000);
    // A second reload changes the upstream too: the previous one's pool is closed under load once it drained.
    await new Promise((resolve) => setTimeout(resolve, 500));
    await portico.reload(config(newRoute, 16));
    await new Promise((resolve) => setTimeout(resolve, 700));
    running = false;
    await Promise.all(clients);
    t.diagnostic(`requests ok ${counts.ok}, failed ${counts.failed}, connection errors ${counts.errors}, answered by the new route ${counts.newRoute}`);
    assert.equal(counts.failed, 0);
    assert.equal(counts.errors, 0);
    assert.ok(counts.ok > 150, `${counts.ok} requests in about 2.5 s`);
  });

  test('a reload resolves at the swap while a request is in flight, and the previous config logs when it has drained', async () => {
    let finish: ((res: ServerResponse) => void) | undefined;
    let held: ServerResponse | undefined;
    const app = await backend((_req, res) => {
      held = res;
      finish = (r) => r.end('late');
    });
    const capture = capturingLogger();
    const config = (extra: string) => `upstreams:\n  app: { servers: ["${app.url}"] }\n${site(extra)}`;
    const portico = await serve(config(''), capture.logger);
    const pending = get(`${portico.url}/hold`);
    await waitFor('the request at the app', () => held !== undefined, 5000);
    await portico.reload(config(newRoute));
    assert.equal(capture.lines.some((line) => line.msg === 'previous config drained'), false, 'the reload did not wait for the request');
    finish!(held!);
    assert.deepEqual(await pending, { status: 200, body: 'late' });
    const [line] = await capture.waitFor('previous config drained');
    assert.equal(line!.open, 1);
    assert.equal(line!.cut, 0);
  });

  test('what the previous config still holds at the grace period is cut, and the log line says how many', async () => {
    const app = await backend(() => undefined);
    const capture = capturingLogger();
    const dir = makeTree();
    const file = path.join(dir, 'portico.yaml');
    const config = (extra: string) => withDefaults(`upstreams:\n  app: { servers: ["${app.url}"] }\n${site(extra)}`);
    const server = new Portico(parseConfig(config(''), file, dir), capture.logger, { reloadGraceMs: 300 });
    await server.start();
    cleanups.push(() => server.stop(100));
    const port = server.addresses[0]!.port;
    const failed = get(`http://127.0.0.1:${port}/never`).then(
      () => 'answered',
      () => 'cut',
    );
    await waitFor('the request at the app', () => app.requests.length === 1, 5000);
    await server.reload(parseConfig(config(newRoute), file, dir));
    const [line] = await capture.waitFor('previous config drained: 1 of 1 requests and tunnels cut at the grace period');
    assert.equal(line!.cut, 1);
    assert.equal(await failed, 'cut');
  });
});
