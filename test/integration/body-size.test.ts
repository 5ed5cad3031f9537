/**
 * `max_body_size` on a site or route, for every handler kind: 413 on a Content-Length over the limit before
 * anything is read or sent on; chunked bodies cut at the limit; unread bodies of static/redirect/respond routes
 * discarded without desynchronising keep-alive; a proxy route's own `proxy.max_body_size` is the route's setting
 * (route > site > the proxy's 10MB default).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { rawRequest } from '../helpers/raw-client.js';
import { RawConnection, hasHead, scopedServers, statusOf } from './proxy-support.js';

const { portico, upstream } = scopedServers();

/** Number of response status lines in raw received text. */
function answers(text: string): number {
  return (text.match(/HTTP\/1\.1 \d{3} /g) ?? []).length;
}

const chunk = (data: string) => `${data.length.toString(16)}\r\n${data}\r\n`;

describe('max_body_size on respond, static and redirect routes', () => {
  const site = `sites:
  - max_body_size: 1KB
    routes:
      - path: /static/
        static: { root: ./www }
      - path: /go
        redirect: { to: /elsewhere }
      - path: /
        respond: { body: "hello" }
`;
  const files = { 'www/static/a.txt': 'file a' };

  test('a Content-Length over the site limit gets 413 and a closed connection before any body byte is sent', async () => {
    const server = await portico(site, files);
    for (const path of ['/', '/static/a.txt', '/go']) {
      const conn = await RawConnection.open(server.port);
      try {
        // The head only: the answer must come without the body ever being sent.
        conn.write(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n`);
        const text = (await conn.until(hasHead)).toString('latin1');
        assert.equal(statusOf(text), 413, `${path}: ${text}`);
        assert.match(text, /\r\nConnection: close\r\n/i);
        assert.ok(await conn.waitClosed(3000), `${path}: the connection is closed after the 413`);
      } finally {
        conn.close();
      }
    }
  });

  test('the refused body is never read as a request: its bytes get no answer of their own', async () => {
    const server = await portico(site, files);
    const smuggled = 'GET /static/a.txt HTTP/1.1\r\nHost: a\r\n\r\n';
    const body = smuggled + 'x'.repeat(2000 - smuggled.length);
    const res = await rawRequest(server.port, `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    assert.equal(res.status, 413);
    assert.ok(res.closed);
    assert.equal(answers(res.raw), 1, 'exactly one answer');
    assert.doesNotMatch(res.raw, /file a/);
  });

  test('a body within the limit is discarded and the next request on the same connection is answered', async () => {
    const server = await portico(site, files);
    const body = 'GET /go HTTP/1.1\r\nHost: a\r\n\r\n';
    const res = await rawRequest(
      server.port,
      `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}GET /static/a.txt HTTP/1.1\r\nHost: a\r\n\r\n`,
      { responses: 2 },
    );
    assert.equal(res.status, 200);
    assert.equal(answers(res.raw), 2, res.raw);
    assert.match(res.raw, /hello[^]*HTTP\/1\.1 200 OK[^]*file a$/);
    assert.doesNotMatch(res.raw, /302/, 'the body was not read as a request');
  });

  test('a chunked body within the limit is discarded and keep-alive goes on', async () => {
    const server = await portico(site, files);
    const res = await rawRequest(
      server.port,
      `POST /static/a.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunk('y'.repeat(500))}0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n`,
      { responses: 2 },
    );
    assert.equal(answers(res.raw), 2, res.raw);
    // Static files answer POST with 405; the body is discarded all the same.
    assert.match(res.raw, /^HTTP\/1\.1 405 [^]*HTTP\/1\.1 200 OK[^]*hello$/);
  });

  test('a chunked body past the limit on a respond, static or redirect route gets 413 and close, never a 200; a pipelined request is not answered', async () => {
    const server = await portico(site, files);
    for (const [path, method] of [['/', 'POST'], ['/static/a.txt', 'GET'], ['/go', 'POST']] as const) {
      const body = chunk('z'.repeat(512)).repeat(3) + '0\r\n\r\n';
      const res = await rawRequest(
        server.port,
        `${method} ${path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${body}GET /static/a.txt HTTP/1.1\r\nHost: a\r\n\r\n`,
        { responses: 2 },
      );
      assert.equal(res.status, 413, `${path}: ${res.raw}`);
      assert.equal(res.headers.connection, 'close', path);
      assert.ok(res.closed, `${path}: the connection is closed after the 413`);
      assert.equal(answers(res.raw), 1, `${path}: the pipelined request is not answered: ${res.raw}`);
    }
  });

  test('a chunked body past the limit sent after the head: 413 once the limit is passed, before the body ends', async () => {
    const server = await portico(site, files);
    const conn = await RawConnection.open(server.port);
    try {
      conn.write('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n');
      for (let i = 0; i < 3; i++) conn.write(chunk('z'.repeat(512)));
      const text = (await conn.until(hasHead)).toString('latin1');
      assert.equal(statusOf(text), 413, text);
      assert.match(text, /\r\nConnection: close\r\n/i);
      assert.ok(await conn.waitClosed(3000), 'the connection is closed after the 413');
      assert.equal(answers(conn.received.toString('latin1')), 1);
    } finally {
      conn.close();
    }
  });

  test('a chunked body within the limit on a respond route is read to its end before the answer, with Expect: 100-continue answered', async () => {
    const server = await portico(site, files);
    const conn = await RawConnection.open(server.port);
    try {
      conn.write('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n');
      const interim = (await conn.until(hasHead)).toString('latin1');
      assert.match(interim, /^HTTP\/1\.1 100 Continue\r\n/);
      conn.write(`${chunk('y'.repeat(100))}0\r\n\r\nGET /go HTTP/1.1\r\nHost: a\r\n\r\n`);
      const text = (await conn.until((received) => /HTTP\/1\.1 302 /.test(received.toString('latin1')))).toString('latin1');
      assert.match(text, /HTTP\/1\.1 200 OK[^]*helloHTTP\/1\.1 302 /);
    } finally {
      conn.close();
    }
  });

  test('a route setting replaces its site setting; 0 means no limit', async () => {
    const server = await portico(`sites:
  - max_body_size: 1KB
    routes:
      - path: /big
        max_body_size: 4KB
        respond: { body: "big" }
      - path: /any
        max_body_size: 0
        respond: { body: "any" }
      - path: /
        respond: { body: "small" }
`);
    const post = (path: string, size: number) =>
      rawRequest(server.port, `POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n${'b'.repeat(size)}`);
    assert.equal((await post('/', 2000)).status, 413);
    assert.equal((await post('/big', 2000)).status, 200);
    assert.equal((await post('/big', 5000)).status, 413);
    assert.equal((await post('/any', 50_000)).status, 200);
  });
});

describe('max_body_size on proxy routes', () => {
  test('the most specific setting wins: route max_body_size or proxy.max_body_size > site > the 10MB default', async () => {
    const backend = await upstream((_req, res, body) => res.end(`got ${body.length}`));
    const server = await portico(`sites:
  - hosts: [limited.test]
    max_body_size: 1KB
    routes:
      - path: /own
        proxy: { url: "${backend.url}", max_body_size: 4KB }
      - path: /route
        max_body_size: 8KB
        proxy: { url: "${backend.url}" }
      - path: /
        proxy: { url: "${backend.url}" }
  - routes:
      - path: /
        proxy: { url: "${backend.url}" }
`);
    const head = (host: string, path: string, size: number) =>
      `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${size}\r\nExpect: 100-continue\r\n\r\n`;
    const seen = backend.requests.length;
    const refused = await rawRequest(server.port, head('limited.test', '/', 2000));
    assert.equal(refused.status, 413, 'the site limit applies to a proxy route without its own');
    assert.doesNotMatch(refused.raw, /100 Continue/);
    assert.equal(backend.requests.length, seen, 'the app server saw nothing');
    const own = await rawRequest(server.port, head('limited.test', '/own', 2000) + 'o'.repeat(2000));
    assert.equal(own.status, 200, 'proxy.max_body_size is the route setting and beats the site');
    assert.match(own.body, /got 2000/);
    assert.equal((await rawRequest(server.port, head('limited.test', '/own', 5000))).status, 413);
    assert.equal((await rawRequest(server.port, head('limited.test', '/route', 6000) + 'r'.repeat(6000))).status, 200);
    // No setting anywhere: the proxy's default of 10MB.
    assert.equal((await rawRequest(server.port, head('other.test', '/', 11 * 1024 * 1024))).status, 413);
    const conn = await RawConnection.open(server.port);
    try {
      conn.write(head('other.test', '/', 9 * 1024 * 1024));
      const interim = (await conn.until(hasHead)).toString('latin1');
      assert.equal(statusOf(interim), 100, 'under the default limit: 100 Continue');
    } finally {
      conn.close();
    }
  });

  test('a chunked body past the site limit on a proxy route gets 413 and the app server never gets it whole', async () => {
    const backend = await upstream((_req, res, body) => res.end(`got ${body.length}`));
    const server = await portico(`sites:
  - max_body_size: 1KB
    routes:
      - path: /
        proxy: { url: "${backend.url}" }
`);
    // 2KB in four chunks, never finished: the site's 1KB (not the proxy's 10MB default) cuts it.
    const res = await rawRequest(server.port, `POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunk('x'.repeat(512)).repeat(4)}`);
    assert.equal(res.status, 413, res.raw);
    assert.ok(res.closed, 'the connection is closed after the 413');
    assert.ok(backend.requests.every((r) => r.body.length <= 1024));
  });

  test('max_body_size set both on the route and in its proxy options is a config error naming the key', () => {
    assert.throws(
      () =>
        parseConfig(
          `sites:
  - routes:
      - path: /
        max_body_size: 1KB
        proxy: { url: "http://127.0.0.1:1", max_body_size: 2KB }
`,
          '/tmp/portico.yaml',
          '/tmp',
        ),
      (err: unknown) =>
        err instanceof ConfigError && err.issues.some((i) => i.keyPath === 'sites[0].routes[0].proxy.max_body_size' && /twice/.test(i.message)),
    );
  });

  test('a size that is not one is a config error at its line', () => {
    assert.throws(
      () => parseConfig('sites:\n  - max_body_size: lots\n    routes: [{ path: /, respond: {} }]\n', '/tmp/portico.yaml', '/tmp'),
      (err: unknown) => err instanceof ConfigError && err.issues.some((i) => i.keyPath === 'sites[0].max_body_size' && i.line === 2),
    );
  });
});
