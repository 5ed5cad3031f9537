/**
 * `proxy.intercept_errors`: an app's own error pages (a Tomcat 404, a 500 with its exception and version) never
 * reach a client; the site's error page (or Portico's) answers with the app's status and only the fields that
 * carry the status's meaning. The app's body is read out when small (the connection is reused) or its connection
 * closed, and an intercepted answer is never stored in the cache.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import type { ConfigIssue } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { configIssues } from '../helpers/config.js';
import { connectH2, h2Request, startPorticoH2 } from '../helpers/h2.js';
import { makeTree, startPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { cacheStatus, get } from './cache-support.js';
import { countConnections, RawConnection, scopedServers, waitFor } from './proxy-support.js';

const servers = scopedServers();

const TOMCAT = 'Apache Tomcat/10.1.55 (Debian)';
const STACK = 'java.lang.NullPointerException: Cannot invoke "com.example.Cart.total()" at com.example.CartServlet.doGet(CartServlet.java:42)';
/** Connections on which the app sent a /held head and was then closed by Portico. */
let heldClosed = 0;
let trickleClosed = 0;
const SITE_404 = '<!doctype html><title>Not here</title><p>The site\'s own 404 page.</p>\n';

/** A Tomcat-like app: its error answers carry its version, its stack traces and fields of its own. */
function tomcat(req: IncomingMessage, res: ServerResponse): void {
  const url = req.url!;
  const page = (status: number, text: string, fields: Record<string, string | string[]> = {}): void => {
    const body = `<!doctype html><html><head><title>HTTP Status ${status}</title></head><body><h1>HTTP Status ${status}</h1><p>${text}</p><hr><h3>${TOMCAT}</h3></body></html>`;
    res.writeHead(status, {
      'content-type': 'text/html;charset=utf-8',
      'content-length': Buffer.byteLength(body),
      server: TOMCAT,
      'x-app-trace': 'node-7f3a',
      'set-cookie': 'JSESSIONID=ABC123; Path=/',
      ...fields,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (url.startsWith('/missing')) return page(404, `The requested resource [${url}] is not available`);
  if (url.startsWith('/boom')) return page(500, STACK);
  if (url.startsWith('/busy')) return page(503, 'Service Unavailable', { 'retry-after': '120' });
  if (url.startsWith('/login')) return page(401, 'Unauthorized', { 'www-authenticate': ['Basic realm="app"', 'Bearer realm="api"'] });
  if (url.startsWith('/method')) return page(405, 'Method Not Allowed', { allow: 'GET, HEAD' });
  if (url.startsWith('/range')) return page(416, 'Range Not Satisfiable', { 'content-range': 'bytes */1234' });
  if (url.startsWith('/invalid')) {
    res.writeHead(422, { 'content-type': 'application/json', server: TOMCAT });
    return void res.end('{"error":"quantity must be positive"}');
  }
  if (url.startsWith('/moved')) {
    res.writeHead(302, { location: '/elsewhere', 'content-type': 'text/html', server: TOMCAT });
    return void res.end(`<p>Moved, by ${TOMCAT}</p>`);
  }
  if (url.startsWith('/huge')) {
    // A 1 MB error body announced by its length: past the read-out limit.
    const body = Buffer.alloc(1024 * 1024, 'x');
    res.writeHead(500, { 'content-type': 'text/plain', 'content-length': body.length, server: TOMCAT });
    return void res.end(body);
  }
  if (url.startsWith('/held')) {
    // Only the head of a 1 MB answer, the body held back: the connection must be closed without waiting for it.
    res.writeHead(500, { 'content-type': 'text/plain', 'content-length': 1024 * 1024, server: TOMCAT });
    res.flushHeaders();
    req.socket.once('close', () => heldClosed++);
    return;
  }
  if (url.startsWith('/trickle')) {
    // A small chunked error page that stops after its first bytes: reading it out must not wait for the rest.
    res.writeHead(500, { 'content-type': 'text/plain', server: TOMCAT });
    res.write('Internal');
    req.socket.once('close', () => trickleClosed++);
    return;
  }
  if (url.startsWith('/stream')) {
    // A chunked error body that goes on past the read-out limit (written in pieces, as a streaming app does).
    res.writeHead(500, { 'content-type': 'text/plain', server: TOMCAT });
    const piece = Buffer.alloc(16 * 1024, 'y');
    let left = 32;
    const more = (): void => {
      while (left > 0 && !res.destroyed) {
        left--;
        if (!res.write(piece)) return void res.once('drain', more);
      }
      if (!res.destroyed) res.end();
    };
    res.on('error', () => undefined);
    return more();
  }
  res.writeHead(200, { 'content-type': 'text/plain', server: TOMCAT });
  res.end('fine');
}

/** Config: `/i/` intercepts per `intercept` (a YAML value), `/plain/` does not; the site has its own 404 page. */
function config(url: string, intercept: string | undefined, extra = ''): string {
  const option = intercept === undefined ? '' : `, intercept_errors: ${intercept}`;
  return `sites:
  - error_pages: { 404: ./404.html }
    routes:
      - path: /i/
        proxy: { url: "${url}", strip_prefix: true${option}${extra} }
      - path: /plain/
        proxy: { url: "${url}", strip_prefix: true }
`;
}

/** Asserts that nothing of the app's error answer reached the client. */
function assertNothingOfTheApp(res: { headers: Record<string, unknown>; body: Buffer }): void {
  const text = res.body.toString();
  assert.doesNotMatch(text, /Tomcat|NullPointerException|CartServlet|HTTP Status/);
  assert.doesNotMatch(JSON.stringify(res.headers), /Tomcat|JSESSIONID|node-7f3a/);
  assert.equal(res.headers['x-app-trace'], undefined);
  assert.equal(res.headers['set-cookie'], undefined);
}

let app: TestUpstream;
before(async () => {
  app = await servers.upstream(tomcat);
});

describe('intercept_errors', () => {
  test('an intercepted page carries Portico\'s sticky cookie for a client not yet pinned, never the app\'s cookie', async () => {
    const portico = await servers.portico(
      `upstreams:\n  app: { servers: ["${app.url}"], sticky: {} }\nsites:\n  - routes:\n      - path: /i/\n        proxy: { upstream: app, strip_prefix: true, intercept_errors: true }\n`,
    );
    const boom = await get(portico.port, '/i/boom');
    assert.equal(boom.status, 500);
    assert.match(String(boom.headers['set-cookie']), /^portico_route=[0-9a-f]{16}; Path=\/; HttpOnly; SameSite=Lax$/);
    assert.doesNotMatch(boom.body.toString(), /Tomcat|NullPointerException/);
  });

  test('off by default: the app\'s own 404 page passes through', async () => {
    const portico = await servers.portico(config(app.url, undefined), { '404.html': SITE_404 });
    const res = await get(portico.port, '/i/missing');
    assert.equal(res.status, 404);
    assert.match(res.body.toString(), /HTTP Status 404/);
  });

  test('true: the app\'s 404 becomes the site\'s 404 page and its 500 Portico\'s own page, statuses kept, nothing of the app shown', async () => {
    const portico = await servers.portico(config(app.url, 'true'), { '404.html': SITE_404 });
    const missing = await get(portico.port, '/i/missing');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.toString(), SITE_404);
    assert.equal(missing.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(missing.headers['cache-control'], 'no-store');
    assert.equal(missing.headers.server, 'Portico');
    assertNothingOfTheApp(missing);
    const boom = await get(portico.port, '/i/boom');
    assert.equal(boom.status, 500);
    assert.match(boom.body.toString(), /<h1>500 Internal Server Error<\/h1>/);
    assertNothingOfTheApp(boom);
    // The other route of the same site, without the option, still shows the app's page.
    const plain = await get(portico.port, '/plain/boom');
    assert.match(plain.body.toString(), /NullPointerException/);
  });

  test('the page keeps the app\'s Retry-After (503), every WWW-Authenticate field (401), Allow (405) and Content-Range (416)', async () => {
    const portico = await servers.portico(config(app.url, 'true'), { '404.html': SITE_404 });
    const busy = await get(portico.port, '/i/busy');
    assert.equal(busy.status, 503);
    assert.equal(busy.headers['retry-after'], '120');
    assertNothingOfTheApp(busy);
    const login = await get(portico.port, '/i/login');
    assert.equal(login.status, 401);
    const challenges = login.rawHeaders.filter((_v, i, list) => i % 2 === 1 && list[i - 1]!.toLowerCase() === 'www-authenticate');
    assert.deepEqual(challenges, ['Basic realm="app"', 'Bearer realm="api"']);
    assertNothingOfTheApp(login);
    const method = await get(portico.port, '/i/method');
    assert.equal(method.status, 405);
    assert.equal(method.headers.allow, 'GET, HEAD');
    assertNothingOfTheApp(method);
    const range = await get(portico.port, '/i/range');
    assert.equal(range.status, 416);
    assert.equal(range.headers['content-range'], 'bytes */1234');
    assertNothingOfTheApp(range);
  });

  test('a list intercepts only its statuses; true leaves 1xx-3xx alone and takes every 4xx/5xx', async () => {
    const listed = await servers.portico(config(app.url, '[500, 503]'), { '404.html': SITE_404 });
    assert.match((await get(listed.port, '/i/missing')).body.toString(), /HTTP Status 404/);
    assert.match((await get(listed.port, '/i/invalid')).body.toString(), /quantity must be positive/);
    const boom = await get(listed.port, '/i/boom');
    assert.equal(boom.status, 500);
    assertNothingOfTheApp(boom);
    const all = await servers.portico(config(app.url, 'true'), { '404.html': SITE_404 });
    const moved = await get(all.port, '/i/moved');
    assert.equal(moved.status, 302);
    assert.equal(moved.headers.location, '/elsewhere');
    assert.match(moved.body.toString(), /Moved/);
    const invalid = await get(all.port, '/i/invalid');
    assert.equal(invalid.status, 422);
    assert.match(invalid.body.toString(), /<h1>422 /);
    assert.equal((await get(all.port, '/i/ok')).body.toString(), 'fine');
  });

  test('HEAD gets the error page\'s head (its length, no body) with the app\'s status', async () => {
    const portico = await servers.portico(config(app.url, 'true'), { '404.html': SITE_404 });
    const res = await get(portico.port, '/i/missing', {}, 'HEAD');
    assert.equal(res.status, 404);
    assert.equal(res.headers['content-length'], String(Buffer.byteLength(SITE_404)));
    assert.equal(res.body.length, 0);
    assertNothingOfTheApp(res);
    // One announcing 1 MB: no body comes (undici closes a HEAD's upstream connection after it in any case).
    const huge = await get(portico.port, '/i/huge', {}, 'HEAD');
    assert.equal(huge.status, 500);
    assert.equal(huge.body.length, 0);
  });

  test('a small discarded body (by its length, or chunked) is read out: the upstream keep-alive connection serves the next requests', async () => {
    const own = await servers.upstream(tomcat);
    const connections = countConnections(own);
    const portico = await servers.portico(config(own.url, 'true'), { '404.html': SITE_404 });
    // /invalid's small 422 body is chunked (no length given): read out as well.
    for (const target of ['/i/missing', '/i/boom', '/i/invalid', '/i/busy', '/i/ok', '/i/missing']) assert.notEqual((await get(portico.port, target)).status, 0);
    assert.equal(own.requests.length, 6);
    assert.equal(connections.count, 1);
  });

  test('a body past 64 KB is not read: its connection is closed (at once for a Content-Length, past 64 KB for chunked)', async () => {
    const own = await servers.upstream(tomcat);
    const connections = countConnections(own);
    const portico = await servers.portico(config(own.url, 'true'), { '404.html': SITE_404 });
    const huge = await get(portico.port, '/i/huge');
    assert.equal(huge.status, 500);
    assertNothingOfTheApp(huge);
    const stream = await get(portico.port, '/i/stream');
    assert.equal(stream.status, 500);
    assertNothingOfTheApp(stream);
    const held = await get(portico.port, '/i/held');
    assert.equal(held.status, 500);
    await waitFor('Portico to close the connection of a 1 MB answer whose body has not come', () => heldClosed === 1);
    await get(portico.port, '/i/ok');
    assert.equal(connections.count, 4, 'each large error body cost its connection');
  });

  test('reading out a small body is bounded in time: an app that stops sending its error page has its connection closed within about a second', async () => {
    const portico = await servers.portico(config(app.url, 'true'), { '404.html': SITE_404 });
    const started = Date.now();
    const res = await get(portico.port, '/i/trickle');
    assert.equal(res.status, 500);
    assertNothingOfTheApp(res);
    await waitFor('Portico to close the connection of an error page that stopped coming', () => trickleClosed === 1, 5000);
    assert.ok(Date.now() - started < 5000);
  });

  test('a retryable status discarded for a retry is not intercepted: the next server answers; the last attempt\'s status is', async () => {
    const failing = await servers.upstream(tomcat);
    const alsoFailing = await servers.upstream(tomcat);
    const good = await servers.upstream('from the second server');
    const upstreams = (second: string) => `upstreams:
  app: { policy: first, servers: ["${failing.url}", "${second}"], retries: 1, retry_on: [503] }
sites:
  - routes:
      - path: /
        proxy: { upstream: app, intercept_errors: true }
`;
    const portico = await servers.portico(upstreams(good.url));
    const res = await get(portico.port, '/busy');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'from the second server');
    const both = await servers.portico(upstreams(alsoFailing.url));
    const last = await get(both.port, '/busy');
    assert.equal(last.status, 503);
    assert.equal(last.headers['retry-after'], '120');
    assertNothingOfTheApp(last);
  });

  test('a 103 Early Hints already passed on stays; the final 500 is still replaced', async () => {
    const hinting = await servers.upstream((_req, res) => {
      res.writeEarlyHints({ link: '</app.css>; rel=preload; as=style' }, () => {
        res.writeHead(500, { 'content-type': 'text/plain', server: TOMCAT });
        res.end(STACK);
      });
    });
    const portico = await servers.portico(config(hinting.url, 'true'), { '404.html': SITE_404 });
    const conn = await RawConnection.open(portico.port);
    try {
      conn.write('GET /i/x HTTP/1.1\r\nHost: hints.test\r\nConnection: close\r\n\r\n');
      assert.ok(await conn.waitClosed(5000));
      const text = conn.received.toString('latin1');
      assert.match(text, /^HTTP\/1\.1 103 Early Hints\r\n[^]*link: <\/app\.css>; rel=preload; as=style\r\n/i);
      assert.match(text, /\r\n\r\nHTTP\/1\.1 500 Internal Server Error\r\n/);
      assert.doesNotMatch(text, /NullPointerException|Tomcat/);
    } finally {
      conn.close();
    }
  });

  test('the access log records the status sent and, as upstream_status, the app\'s', async () => {
    const logDir = makeTree();
    const logFile = path.join(logDir, 'access.log');
    const portico = await startPortico(`log: { access: ${JSON.stringify(logFile)}, format: json }\n${config(app.url, 'true')}`, { '404.html': SITE_404 });
    try {
      await get(portico.port, '/i/boom');
    } finally {
      await portico.stop();
    }
    const line = JSON.parse(readFileSync(logFile, 'utf8').trim().split('\n').at(-1)!) as Record<string, unknown>;
    rmSync(logDir, { recursive: true, force: true });
    assert.equal(line.status, 500);
    assert.deepEqual(line.upstream_status, ['500']);
  });

  test('compress encodes the error page, never the app\'s body', async () => {
    const page = `<!doctype html><title>Oops</title>${'<p>Something went wrong on our side; please try again.</p>\n'.repeat(40)}`;
    const portico = await servers.portico(
      `sites:
  - error_pages: { 500: ./500.html }
    routes:
      - path: /i/
        proxy: { url: "${app.url}", strip_prefix: true, intercept_errors: [500] }
        compress: { min_size: 256 }
`,
      { '500.html': page },
    );
    const res = await get(portico.port, '/i/boom', { 'accept-encoding': 'gzip' });
    assert.equal(res.status, 500);
    assert.equal(res.headers['content-encoding'], 'gzip');
    assert.equal(zlib.gunzipSync(res.body).toString(), page);
  });

  test('over HTTP/2 the page replaces the app\'s, with its status and Retry-After', async () => {
    const portico = await startPorticoH2(config(app.url, 'true'), { '404.html': SITE_404 });
    servers.defer(() => portico.stop());
    const session = await connectH2(portico.origin);
    try {
      const busy = await h2Request(session, { ':path': '/i/busy' });
      assert.equal(busy.status, 503);
      assert.equal(busy.headers['retry-after'], '120');
      assertNothingOfTheApp(busy);
      const missing = await h2Request(session, { ':path': '/i/missing' });
      assert.equal(missing.status, 404);
      assert.equal(missing.body.toString(), SITE_404);
    } finally {
      session.close();
    }
  });
});

describe('intercept_errors with a cache', () => {
  const cached = (url: string, extra = '') => `caches:
  main: { memory: 4MB, max_object: 2MB }
sites:
  - error_pages: { 404: ./404.html }
    routes:
      - path: /i/
        proxy: { url: "${url}", strip_prefix: true, intercept_errors: true, cache: { zone: main${extra} } }
      - path: /plain/
        proxy: { url: "${url}", strip_prefix: true, cache: { zone: main } }
`;

  test('a cacheable app 404 is never stored: each request reaches the app and gets the site\'s page', async () => {
    let asked = 0;
    const origin = await servers.upstream((req, res) => {
      asked++;
      const body = `<h1>HTTP Status 404</h1><h3>${TOMCAT}</h3>`;
      res.writeHead(404, { 'cache-control': 'max-age=600', 'content-length': Buffer.byteLength(body), server: TOMCAT });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    const portico = await servers.portico(cached(origin.url), { '404.html': SITE_404 });
    // Without the option the same answer is stored: the second request is a hit.
    await get(portico.port, '/plain/gone');
    const hit = await get(portico.port, '/plain/gone');
    assert.match(cacheStatus(hit), /^Portico; hit/);
    assert.equal(asked, 1);
    for (let i = 0; i < 2; i++) {
      const res = await get(portico.port, '/i/gone');
      assert.equal(res.status, 404);
      assert.equal(res.body.toString(), SITE_404);
      assert.match(cacheStatus(res), /^Portico; fwd=(uri-)?miss; fwd-status=404$/);
      assertNothingOfTheApp(res);
    }
    assert.equal(asked, 3);
  });

  test('an intercepted 500 on revalidation lets stale-if-error serve the stored copy; an intercepted 404 does not', async () => {
    const failing = new Set<string>();
    const origin = await servers.upstream((req, res) => {
      if (failing.has(req.url!)) {
        const status = req.url!.endsWith('404') ? 404 : 500;
        res.writeHead(status, { 'content-type': 'text/html', server: TOMCAT });
        return void res.end(STACK);
      }
      // Stored, and already stale on arrival (Age past max-age).
      res.writeHead(200, { 'cache-control': 'max-age=10', age: '30', 'content-length': 5 });
      res.end('stale');
    });
    const portico = await servers.portico(cached(origin.url, ', stale_if_error: 1h'), { '404.html': SITE_404 });
    for (const target of ['/sie/500', '/sie/404']) {
      await get(portico.port, `/i${target}`);
      failing.add(target);
    }
    const stale = await get(portico.port, '/i/sie/500');
    assert.equal(stale.status, 200);
    assert.equal(stale.body.toString(), 'stale');
    assert.equal(cacheStatus(stale), 'Portico; fwd=stale; fwd-status=500; detail=stale-if-error');
    const gone = await get(portico.port, '/i/sie/404');
    assert.equal(gone.status, 404);
    assert.equal(gone.body.toString(), SITE_404);
    assertNothingOfTheApp(gone);
  });

  test('collapsed waiters behind an intercepted answer each get the page, none the app\'s body', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let asked = 0;
    const origin = await servers.upstream((_req, res) => {
      asked++;
      void held.then(() => {
        res.writeHead(500, { 'content-type': 'text/html', 'cache-control': 'max-age=60', server: TOMCAT });
        res.end(STACK);
      });
    });
    const portico = await servers.portico(cached(origin.url), { '404.html': SITE_404 });
    const answers = Promise.all([0, 1, 2].map(() => get(portico.port, '/i/slow')));
    await waitFor('the leader to reach the app', () => asked >= 1);
    release();
    for (const res of await answers) {
      assert.equal(res.status, 500);
      assertNothingOfTheApp(res);
    }
  });

  test('an app error page stored before intercept_errors was turned on (by a reload) is not served from the cache', async () => {
    const origin = await servers.upstream((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/html', 'cache-control': 'max-age=600', 'content-length': STACK.length, server: TOMCAT });
      res.end(STACK);
    });
    const without = cached(origin.url).replace('intercept_errors: true, ', '');
    const portico = await servers.portico(without, { '404.html': SITE_404 });
    await get(portico.port, '/i/old');
    assert.match(cacheStatus(await get(portico.port, '/i/old')), /^Portico; hit/);
    const listen = `listen: ["127.0.0.1:${portico.port}"]\nlog: { access: off }\n`;
    await portico.server.reload(parseConfig(listen + cached(origin.url), path.join(portico.dir, 'portico.yaml'), portico.dir));
    const res = await get(portico.port, '/i/old');
    assert.equal(res.status, 404);
    assert.equal(res.body.toString(), SITE_404);
    assert.match(cacheStatus(res), /^Portico; hit/);
    assertNothingOfTheApp(res);
  });
});

describe('intercept_errors config', () => {
  function issuesOf(text: string): readonly ConfigIssue[] {
    return configIssues(text, tmpdir());
  }

  test('a status outside 4xx/5xx is refused at its file:line:col with its key path', () => {
    const text = `sites:\n  - routes:\n      - path: /\n        proxy:\n          url: "http://127.0.0.1:9"\n          intercept_errors: [404, 302]\n`;
    const issues = issuesOf(text);
    assert.equal(issues.length, 1, JSON.stringify(issues));
    assert.equal(issues[0]!.keyPath, 'sites[0].routes[0].proxy.intercept_errors[1]');
    assert.match(issues[0]!.message, /4xx or 5xx/);
    assert.equal(issues[0]!.line, 6);
    assert.equal(issues[0]!.col, 35);
  });

  test('a value neither true/false nor a list is refused', () => {
    const issues = issuesOf(`sites:\n  - routes:\n      - path: /\n        proxy: { url: "http://127.0.0.1:9", intercept_errors: "yes" }\n`);
    assert.equal(issues.length, 1, JSON.stringify(issues));
    assert.equal(issues[0]!.keyPath, 'sites[0].routes[0].proxy.intercept_errors');
    assert.match(issues[0]!.message, /true, false or a list of 4xx\/5xx statuses/);
    assert.equal(issues[0]!.line, 4);
  });

  test('a lone status is refused with what to write instead (a list)', () => {
    const issues = issuesOf(`sites:\n  - routes:\n      - path: /\n        proxy: { url: "http://127.0.0.1:9", intercept_errors: 500 }\n`);
    assert.equal(issues.length, 1, JSON.stringify(issues));
    assert.equal(issues[0]!.keyPath, 'sites[0].routes[0].proxy.intercept_errors');
    assert.match(issues[0]!.message, /write \[500\]/);
  });
});
