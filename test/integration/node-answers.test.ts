/**
 * Requests Node's HTTP server used to answer (or drop) on its own: too many header lines (silently dropped past
 * Node's count), an unmet `Expect`, a missing Host, CONNECT, an `Upgrade` Portico ignores, and a request line over
 * the head limit. Each is Portico's answer now: its error page, `Server` field and access-log line. Raw sockets
 * to 127.0.0.1 against a real Portico.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { makeTree, startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { RawConnection, statusOf } from './proxy-support.js';

/** `count` header lines in all, the last one `Host: a.example`. */
function manyHeaders(count: number, target = '/echo'): string {
  let fields = '';
  for (let i = 1; i < count; i++) fields += `X-F${i}: v\r\n`;
  return `GET ${target} HTTP/1.1\r\n${fields}Host: a.example\r\n\r\n`;
}

/** Asserts that an answer is Portico's own error page for `status`. */
function assertPorticoPage(res: { status: number; headers: Record<string, string>; body: string }, status: number): void {
  assert.equal(res.status, status);
  assert.equal(res.headers.server, 'Portico');
  assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
  assert.match(res.body, new RegExp(`<h1>${status} `));
}

/** The app's JSON echo from an answer's body (chunked or not). */
function echoOf(body: string): { method: string; host: string; upgrade: string | null; body: string } {
  return JSON.parse(/\{.*\}/s.exec(body)?.[0] ?? 'null') as { method: string; host: string; upgrade: string | null; body: string };
}

let backend: TestUpstream;
let portico: RunningPortico;

before(async () => {
  backend = await startUpstream((req, res, body) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ method: req.method, host: req.headers.host, upgrade: req.headers.upgrade ?? null, body }));
  });
  portico = await startPortico(`sites:
  - hosts: ["a.example"]
    routes:
      - path: /echo
        proxy: { url: "${backend.url}" }
      - path: /
        respond: { body: "site a" }
  - routes:
      - path: /
        respond: { body: "default site" }
`);
});

after(async () => {
  await portico.stop();
  await backend.stop();
});

describe('header count (max_header_count)', () => {
  test('a request with more header lines than max_header_count (default 100) gets 431; exactly 100 is served', async () => {
    const at = await rawRequest(portico.port, manyHeaders(100, '/'));
    assert.equal(at.status, 200);
    assert.equal(at.body, 'site a');
    const over = await rawRequest(portico.port, manyHeaders(101, '/'));
    assertPorticoPage(over, 431);
    assert.equal(over.headers.connection, 'close');
    assert.ok(over.closed);
  });

  test('a Host after 1,200 header lines is not silently dropped: it is read when max_header_count allows, 431 past the limit', async () => {
    const big = await startPortico(`listen:
  - { addr: "127.0.0.1:0", max_header_size: 64KB, max_header_count: 1500 }
sites:
  - hosts: ["a.example"]
    routes:
      - path: /
        respond: { body: "site a" }
  - routes:
      - path: /
        respond: { body: "default site" }
`);
    try {
      // Node's own count (2000 entries, 1000 lines) would drop the Host at the end: 400 or the default site.
      const served = await rawRequest(big.port, manyHeaders(1200, '/'));
      assert.equal(served.status, 200);
      assert.equal(served.body, 'site a');
      assertPorticoPage(await rawRequest(big.port, manyHeaders(1501, '/')), 431);
    } finally {
      await big.stop();
    }
  });
});

test('after a reload raises max_header_count, a connection opened before it never serves a cut header list', async () => {
  const yaml = (count: number) => `listen:
  - { addr: "127.0.0.1:0", max_header_count: ${count} }
sites:
  - hosts: ["a.example"]
    routes:
      - path: /
        respond: { body: "site a" }
  - routes:
      - path: /
        respond: { body: "default site" }
`;
  const own = await startPortico(yaml(10));
  const old = await RawConnection.open(own.port);
  try {
    old.write('GET / HTTP/1.1\r\nHost: a.example\r\n\r\n');
    await old.until((b) => b.toString('latin1').endsWith('site a'));
    const text = yaml(50).replace('127.0.0.1:0', `127.0.0.1:${own.port}`);
    await own.server.reload(parseConfig(text, path.join(own.dir, 'next.yaml'), own.dir));
    // A new connection has the new limit.
    const fresh = await rawRequest(own.port, manyHeaders(30, '/'));
    assert.equal(fresh.status, 200);
    assert.equal(fresh.body, 'site a');
    // The old connection's parser kept 11 lines: the Host at the end is gone, so the request is refused, not served.
    old.write(manyHeaders(30, '/'));
    assert.ok(await old.waitClosed(3000));
    const answers = old.received.toString('latin1');
    assert.equal(statusOf(answers.slice(answers.indexOf('HTTP/1.1', 10))), 431);
  } finally {
    old.close();
    await own.stop();
  }
});

describe('upgrades Portico ignores', () => {
  test('Upgrade: h2c on a POST with a body is answered as a plain request: the body reaches the app, the connection closes after', async () => {
    const res = await rawRequest(
      portico.port,
      'POST /echo HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n' +
        'Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world',
    );
    assert.equal(res.status, 200);
    assert.deepEqual(echoOf(res.body), { method: 'POST', host: 'a.example', upgrade: null, body: 'hello world' });
    assert.equal(res.headers.connection, 'close');
    assert.ok(res.closed);
  });

  test('Upgrade: h2c on a chunked POST: the whole body reaches the app', async () => {
    const res = await rawRequest(
      portico.port,
      'POST /echo HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
    );
    assert.equal(res.status, 200);
    assert.equal(echoOf(res.body).body, 'hello world');
  });
});

describe("Node's own answers are Portico's", () => {
  test("an expectation other than 100-continue gets Portico's 417 page, and the connection stays usable", async () => {
    const conn = await RawConnection.open(portico.port);
    try {
      conn.write('POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\nhi');
      const first = (await conn.until((b) => b.includes('</html>\n'))).toString('latin1');
      assert.equal(statusOf(first), 417);
      assert.match(first, /\r\nServer: Portico\r\n/);
      assert.match(first, /<h1>417 /);
      conn.write('GET / HTTP/1.1\r\nHost: a.example\r\n\r\n');
      const second = (await conn.until((b) => b.includes('site a'))).toString('latin1');
      assert.match(second, /site a$/);
    } finally {
      conn.close();
    }
  });

  test("an HTTP/1.1 request without Host gets Portico's 400 page; HTTP/1.0 without Host is served", async () => {
    const missing = await rawRequest(portico.port, 'GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n');
    assertPorticoPage(missing, 400);
    assert.ok(missing.closed);
    const old = await rawRequest(portico.port, 'GET / HTTP/1.0\r\n\r\n');
    assert.equal(old.status, 200);
    assert.equal(old.body, 'default site');
  });

  test("CONNECT gets Portico's 405 page (with an empty Allow) instead of a silent close", async () => {
    const res = await rawRequest(portico.port, 'CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n');
    assertPorticoPage(res, 405);
    assert.equal(res.headers.allow, '');
    assert.ok(res.closed);
  });
});

describe('head over max_header_size', () => {
  let small: RunningPortico;
  before(async () => {
    small = await startPortico(`listen:
  - { addr: "127.0.0.1:0", max_header_size: 2KB }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
  });
  after(() => small.stop());

  test('a request line over max_header_size gets 414, a long header field 431', async () => {
    const longUrl = await rawRequest(small.port, `GET /${'a'.repeat(4096)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assertPorticoPage(longUrl, 414);
    const longField = await rawRequest(small.port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`);
    assertPorticoPage(longField, 431);
    const manyFields = await rawRequest(small.port, `GET / HTTP/1.1\r\nHost: x\r\n${'X-F: aaaaaaaaaaaaaaaaaaaaaaaa\r\n'.repeat(100)}\r\n`);
    assertPorticoPage(manyFields, 431);
  });

  test('a request line over max_header_size on a kept-alive connection gets 414 too', async () => {
    const conn = await RawConnection.open(small.port);
    try {
      conn.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      await conn.until((b) => b.toString('latin1').endsWith('ok'));
      conn.write(`GET /${'a'.repeat(4096)} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.ok(await conn.waitClosed(3000));
      const text = conn.received.toString('latin1');
      const second = text.slice(text.indexOf('HTTP/1.1', 10));
      assert.equal(statusOf(second), 414);
    } finally {
      conn.close();
    }
  });
});

test("Portico's answers for too many header lines, 417, a missing Host and CONNECT each get an access-log line", async () => {
  const logDir = makeTree();
  const logFile = path.join(logDir, 'access.log');
  let stopped = false;
  const own = await startPortico(`log: { access: ${JSON.stringify(logFile)}, format: json }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
  try {
    assert.equal((await rawRequest(own.port, manyHeaders(101, '/many'))).status, 431);
    assert.equal((await rawRequest(own.port, 'POST /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: nope\r\nConnection: close\r\n\r\n')).status, 417);
    assert.equal((await rawRequest(own.port, 'GET /nohost HTTP/1.1\r\n\r\n')).status, 400);
    assert.equal((await rawRequest(own.port, 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n')).status, 405);
    stopped = true;
    await own.stop(); // flushes the log
    const lines = readFileSync(logFile, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { method: string; uri: string; status: number });
    assert.deepEqual(
      lines.map((l) => [l.method, l.uri, l.status]),
      [
        ['GET', '/many', 431],
        ['POST', '/expect', 417],
        ['GET', '/nohost', 400],
        ['CONNECT', 'a:443', 405],
      ],
    );
  } finally {
    if (!stopped) await own.stop();
    rmSync(logDir, { recursive: true, force: true });
  }
});
