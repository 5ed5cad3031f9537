/**
 * HTTP correctness found from outside (issue 10): the authority that chose the site is the one forwarded and
 * cached; sticky cookies keyed with a secret; header names with underscores dropped; TRACE refused; the access
 * log and cache keys use the client address that trusted_proxies yields. Issue 16: autoindex answers carry Server;
 * error pages are titled with the reason phrase; an unknown method gets 501.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { STATUS_CODES } from 'node:http';
import { describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { errorPage } from '../../src/errors.js';
import { connectH2, h2Request, startPorticoH2 } from '../helpers/h2.js';
import { rawRequest } from '../helpers/raw-client.js';
import { scopedServers } from './proxy-support.js';

const { portico, upstream, defer } = scopedServers();

describe('absolute-form target with a different Host (cache poisoning, virtual-host bypass)', () => {
  test('the target authority replaces Host: forwarded Host, X-Forwarded-Host, Forwarded and a rewritten Location all say the site that was chosen', async () => {
    const app = await upstream((req, res) => {
      res.setHeader('Cache-Control', 'max-age=60');
      if (req.url === '/c/moved') {
        res.statusCode = 302;
        res.setHeader('Location', `http://127.0.0.1:${(req.socket.localPort ?? 0)}/c/page`);
      }
      res.end(`built for ${req.headers.host}`);
    });
    const server = await portico(`caches: { main: { memory: 1MB } }
sites:
  - hosts: [good.example]
    routes:
      - path: /c/
        proxy: { upstream: app, cache: { zone: main } }
  - hosts: [evil.example]
    routes:
      - path: /
        respond: { body: "evil site" }
upstreams:
  app:
    servers: [{ url: "${app.url}" }]
`);
    const poisoned = await rawRequest(server.port, 'GET http://good.example/c/page HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n');
    assert.equal(poisoned.status, 200);
    assert.equal(poisoned.body, 'built for good.example');
    const seen = app.requests.at(-1)!.headers;
    assert.equal(seen.host, 'good.example');
    assert.equal(seen['x-forwarded-host'], 'good.example');
    assert.match(String(seen.forwarded), /host="good\.example"/);
    // A later visitor of good.example gets the page built for good.example, from the cache.
    const visitor = await rawRequest(server.port, 'GET /c/page HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n');
    assert.equal(visitor.body, 'built for good.example');
    assert.match(visitor.headers['cache-status'] ?? '', /hit/);
    const moved = await rawRequest(server.port, 'GET http://good.example/c/moved HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n');
    assert.equal(moved.headers['location'], 'http://good.example/c/page');
  });
});

describe('sticky cookie keyed with a secret', () => {
  const site = (app: string, secret: string) => `upstreams:
  app:
    servers: [{ url: "${app}" }]
    sticky: { cookie: pin${secret === '' ? '' : `, secret: "${secret}"`} }
sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`;
  const valueOf = (res: Response) => /^pin=([0-9a-f]+);/.exec(res.headers.get('set-cookie') ?? '')?.[1];

  test('without a secret the value is not the unsalted hash of the server URL (which could be reversed by trying candidates)', async () => {
    const app = await upstream('ok');
    const server = await portico(site(app.url, ''));
    const value = valueOf(await fetch(server.url));
    assert.ok(value !== undefined && value.length === 16);
    assert.notEqual(value, createHash('sha256').update(`app\u0000${app.url}`).digest('hex').slice(0, 16));
    assert.notEqual(value, createHash('sha256').update(`app\u0000127.0.0.1:${app.port}`).digest('hex').slice(0, 16));
  });

  test('with sticky.secret the value is an HMAC under that secret: two Porticos with one secret agree, another secret differs', async () => {
    const app = await upstream('ok');
    const a = valueOf(await fetch((await portico(site(app.url, 'a-shared-secret-of-some-length'))).url));
    const b = valueOf(await fetch((await portico(site(app.url, 'a-shared-secret-of-some-length'))).url));
    const c = valueOf(await fetch((await portico(site(app.url, 'another-secret-of-some-length!'))).url));
    assert.ok(a !== undefined);
    assert.equal(a, b);
    assert.notEqual(a, c);
    const label = app.url.replace(/^http:\/\//, '');
    const candidates = [app.url, label].map((l) => createHmac('sha256', 'a-shared-secret-of-some-length').update(`app\u0000${l}`).digest('hex').slice(0, 16));
    assert.ok(candidates.includes(a!), 'the value is the HMAC of upstream name and server');
  });
});

describe('header names with underscores', () => {
  test('X_Forwarded_For and X-Real_IP are not forwarded by default; underscores_in_headers: true forwards them', async () => {
    const app = await upstream('ok');
    const config = (extra: string) => `${extra}upstreams:\n  app:\n    servers: [{ url: "${app.url}" }]\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
    const strict = await portico(config(''));
    await rawRequest(strict.port, 'GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nConnection: close\r\n\r\n');
    const dropped = app.requests.at(-1)!.headers;
    assert.equal(dropped['x_forwarded_for'], undefined);
    assert.equal(dropped['x-real_ip'], undefined);
    assert.equal(dropped['x-forwarded-for'], '127.0.0.1');
    const lenient = await portico(config('underscores_in_headers: true\n'));
    await rawRequest(lenient.port, 'GET / HTTP/1.1\r\nHost: x\r\nX_Custom: yes\r\nConnection: close\r\n\r\n');
    assert.equal(app.requests.at(-1)!.headers['x_custom'], 'yes');
  });
});

describe('TRACE', () => {
  test('TRACE on a proxy route is answered 405 with Allow and never reaches the app; allow_trace: true forwards it', async () => {
    const app = await upstream('traced');
    const config = (allow: boolean) => `upstreams:\n  app:\n    servers: [{ url: "${app.url}" }]\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app, allow_trace: ${allow} }\n`;
    const refused = await portico(config(false));
    const res = await rawRequest(refused.port, 'TRACE / HTTP/1.1\r\nHost: x\r\nCookie: secret=1\r\nConnection: close\r\n\r\n');
    assert.equal(res.status, 405);
    assert.match(String(res.headers['allow']), /GET/);
    assert.doesNotMatch(String(res.headers['allow']), /TRACE/);
    assert.equal(app.requests.length, 0);
    const allowed = await portico(config(true));
    const ok = await rawRequest(allowed.port, 'TRACE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(ok.status, 200);
    assert.equal(app.requests.at(-1)!.method, 'TRACE');
  });
});

describe('client address behind trusted proxies', () => {
  test('the access log and a cache key with $remote_addr use the client address trusted_proxies yields, as the proxy does', async () => {
    const app = await upstream((req, res) => {
      res.setHeader('Cache-Control', 'max-age=60');
      res.end(`for ${req.headers['x-real-ip']}`);
    });
    const server = await portico(`trusted_proxies: ["127.0.0.1"]
log: { access: ./access.log, format: json }
caches: { main: { memory: 1MB } }
upstreams:
  app:
    servers: [{ url: "${app.url}" }]
sites:
  - routes:
      - path: /
        proxy: { upstream: app, cache: { zone: main, key: "$remote_addr$request_uri" } }
`);
    const a = await fetch(`${server.url}/k`, { headers: { 'x-forwarded-for': '203.0.113.7' } });
    assert.equal(await a.text(), 'for 203.0.113.7');
    const b = await fetch(`${server.url}/k`, { headers: { 'x-forwarded-for': '198.51.100.9' } });
    assert.equal(await b.text(), 'for 198.51.100.9', 'another client address is another cache key');
    const again = await fetch(`${server.url}/k`, { headers: { 'x-forwarded-for': '203.0.113.7' } });
    assert.match(again.headers.get('cache-status') ?? '', /hit/);
    assert.equal(app.requests.length, 2);
    const dir = server.dir;
    await server.server.stop(100);
    const lines = readFileSync(path.join(dir, 'access.log'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { remote_addr: string });
    assert.deepEqual(lines.map((l) => l.remote_addr), ['203.0.113.7', '198.51.100.9', '203.0.113.7']);
  });
});

describe('active checks and passive ejection', () => {
  test('a server ejected by live traffic while its checks kept passing (a restart faster than fall) is back after the next passing check, not after fail_timeout', async () => {
    const a = await upstream('a');
    const b = await upstream('b');
    const server = await portico(`upstreams:
  app:
    policy: round_robin
    servers: [{ url: "${a.url}" }, { url: "${b.url}" }]
    health: { path: /, interval: 200ms, timeout: 1s, fall: 1000, rise: 1 }
    passive: { max_fails: 1, fail_timeout: 60s, max_ejection_percent: 50 }
    retries: 1
sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`);
    // Warm: both answer.
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(await (await fetch(server.url)).text());
    assert.deepEqual([...seen].sort(), ['a', 'b']);
    await a.stop();
    // Live traffic meets the refused connection and ejects a (the request itself is retried on b).
    for (let i = 0; i < 4; i++) assert.equal(await (await fetch(server.url)).text(), 'b');
    const traffic = () => a.requests.filter((r) => r.headers['user-agent'] !== 'Portico-health-check').length;
    await a.restart();
    const before = traffic();
    const started = Date.now();
    while (traffic() === before && Date.now() - started < 10_000) {
      await fetch(server.url).then((res) => res.text());
    }
    const back = Date.now() - started;
    assert.ok(back < 10_000, `a got no traffic for ${back} ms after its restart (fail_timeout is 60 s)`);
  });
});

describe("Portico's own targeted field", () => {
  test('Portico-Cache-Control from the app never reaches a client, on a proxy route without a cache too', async () => {
    const app = await upstream((_req, res) => {
      res.setHeader('Portico-Cache-Control', 'max-age=60');
      res.setHeader('CDN-Cache-Control', 'max-age=30');
      res.end('ok');
    });
    const server = await portico(`upstreams:\n  app:\n    servers: [{ url: "${app.url}" }]\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    const res = await fetch(server.url);
    assert.equal(res.headers.get('portico-cache-control'), null);
    assert.equal(res.headers.get('cdn-cache-control'), 'max-age=30');
  });
});

describe('HTTP versions on a plain HTTP/1 listener', () => {
  const site = 'sites:\n  - routes: [{ path: /, respond: { body: "hello" } }]\n';
  const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

  test('an HTTP/2.0 request line gets 505 and a closed connection, never the route answer (nginx: major version > 1 is 505)', async () => {
    const server = await portico(site);
    const res = await rawRequest(server.port, 'GET / HTTP/2.0\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 2 });
    assert.equal(res.status, 505, res.raw);
    assert.equal(res.headers.connection, 'close');
    assert.ok(res.closed);
    assert.doesNotMatch(res.raw, /hello/);
  });

  test('an HTTP/0.9-form request line (no version) and an explicit HTTP/0.9 get 400, never the route answer', async () => {
    const server = await portico(site);
    for (const request of ['GET /\r\n\r\n', 'GET /\r\nHost: a\r\n\r\n', 'GET / HTTP/0.9\r\nHost: a\r\n\r\n', 'POST /\r\nContent-Length: 3\r\n\r\nabc']) {
      const res = await rawRequest(server.port, request);
      assert.equal(res.status, 400, `${JSON.stringify(request)}: ${res.raw}`);
      assert.ok(res.closed);
      assert.doesNotMatch(res.raw, /hello/);
    }
  });

  test('HTTP/1.0 and HTTP/1.1 are answered as before; the h2c prior-knowledge preface is answered in HTTP/2 (SETTINGS, GOAWAY) and closed', async () => {
    const server = await portico(site);
    const old = await rawRequest(server.port, 'GET / HTTP/1.0\r\n\r\n');
    assert.equal(old.status, 200);
    assert.equal(old.body, 'hello');
    const kept = await rawRequest(server.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 2 });
    assert.equal((kept.raw.match(/HTTP\/1\.1 200 OK/g) ?? []).length, 2);
    const preface = await rawRequest(server.port, PREFACE);
    // Not an HTTP/1.1 400 the HTTP/2 client could not read: an empty SETTINGS frame, then GOAWAY HTTP_1_1_REQUIRED.
    assert.ok(preface.raw.startsWith('\x00\x00\x00\x04\x00\x00\x00\x00\x00'), JSON.stringify(preface.raw));
    assert.match(preface.raw, /set http2: true/);
    assert.doesNotMatch(preface.raw, /hello|HTTP\/1\.1/);
    assert.ok(preface.closed);
  });
});

describe('small HTTP inconsistencies (issue 16)', () => {
  test('an autoindex listing carries Server: Portico, as every other answer does', async () => {
    const server = await portico('sites:\n  - routes: [{ path: /, static: { root: ./www, autoindex: true } }]\n', { 'www/a.txt': 'a' });
    const listing = await rawRequest(server.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.equal(listing.status, 200);
    assert.match(listing.body, /a\.txt/);
    assert.equal(listing.headers.server, 'Portico');
    const head = await rawRequest(server.port, 'HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.equal(head.headers.server, 'Portico');
  });

  test('the 401 page is titled "401 Unauthorized", and every 4xx and 5xx page by its reason phrase, never "Error"', async () => {
    const server = await portico(`sites:
  - routes:
      - path: /
        basic_auth: { users: [{ user: a, hash: "${bcrypt.hashSync('b', 4)}" }] }
        respond: { body: "in" }
`);
    const denied = await rawRequest(server.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.equal(denied.status, 401);
    assert.match(denied.raw, /^HTTP\/1\.1 401 Unauthorized\r\n/);
    assert.match(denied.body, /<title>401 Unauthorized<\/title>/);
    for (const code of Object.keys(STATUS_CODES).map(Number).filter((status) => status >= 400)) {
      assert.doesNotMatch(errorPage(code).toString(), new RegExp(`<title>${code} Error<`), String(code));
    }
  });

  test('an unknown method with a valid token (FOO, QUERYX) on a well-formed line gets 501 Not Implemented; a token with a bad character, or a malformed line after it, stays 400', async () => {
    const server = await portico('sites:\n  - routes: [{ path: /, respond: { body: "hello" } }]\n');
    for (const method of ['FOO', 'QUERYX', 'M-SEARCHX']) {
      const res = await rawRequest(server.port, `${method} / HTTP/1.1\r\nHost: a\r\n\r\n`);
      assert.equal(res.status, 501, `${method}: ${res.raw}`);
      assert.ok(res.closed);
    }
    // After a good request on the same connection too.
    const pipelined = await rawRequest(server.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\nFOO / HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 2 });
    assert.match(pipelined.raw, /^HTTP\/1\.1 200 OK[\s\S]*hello[\s\S]*HTTP\/1\.1 501 Not Implemented\r\n/);
    for (const request of ['G@T / HTTP/1.1\r\nHost: a\r\n\r\n', 'GE\x01 / HTTP/1.1\r\nHost: a\r\n\r\n', 'NOT HTTP AT ALL\r\n\r\n', 'FOO /a b HTTP/1.1\r\n\r\n']) {
      const res = await rawRequest(server.port, request);
      assert.equal(res.status, 400, `${JSON.stringify(request)}: ${res.raw}`);
    }
  });

  test('over HTTP/2 an unknown method gets 501 too, on every kind of route, and never reaches the app', async () => {
    let reached = 0;
    const app = await upstream((_req, res) => {
      reached++;
      res.end('app');
    });
    const server = await startPorticoH2(`sites:
  - routes:
      - path: /app/
        proxy: { url: "${app.url}" }
      - path: /
        respond: { body: "hello" }
`);
    defer(() => server.stop());
    const client = await connectH2(server.origin);
    defer(() => void client.close());
    for (const path of ['/', '/app/x']) {
      const answer = await h2Request(client, { ':method': 'FOO', ':path': path, ':authority': 'localhost' });
      assert.equal(answer.status, 501, path);
    }
    assert.equal(reached, 0);
    const known = await h2Request(client, { ':method': 'PROPFIND', ':path': '/app/x', ':authority': 'localhost' });
    assert.equal(known.status, 200, 'a method HTTP/1 knows is passed on as before');
  });
});
