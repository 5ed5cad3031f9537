/**
 * Every handler over HTTP/2 (Node's compat API handing h2 streams to the app as a listener does): static
 * (conditional, ranges, HEAD), respond, redirect, error pages, proxy (forwarding fields from `:authority`,
 * connection-specific fields of the upstream never written, bodies without a length), the cache (hits,
 * revalidation, collapsing), access and rate_limit, and the access log's protocol.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { ClientHttp2Session } from 'node:http2';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { connectH2, h2Request, startPorticoH2, type RunningH2 } from '../helpers/h2.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

describe('handlers over HTTP/2', () => {
  let portico: RunningH2;
  let backend: TestUpstream;
  let client: ClientHttp2Session;
  let originCalls = 0;

  before(async () => {
    backend = await startUpstream((req, res, body) => {
      if (req.url === '/api/hop') {
        // Connection-specific fields an HTTP/1 app may send: none may reach an h2 client (they are errors there).
        res.setHeader('Keep-Alive', 'timeout=5');
        res.setHeader('Connection', 'keep-alive, X-Secret');
        res.setHeader('X-Secret', 'inner');
        res.setHeader('Upgrade', 'h2c');
        res.setHeader('Proxy-Connection', 'keep-alive');
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('chunked ');
        res.end('answer');
        return;
      }
      if (req.url === '/api/cookies') {
        // One flat list (with setHeader before it, Node's writeHead would let the last X-Twice win).
        res.writeHead(200, ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1; Path=/', 'Set-Cookie', 'b=2; Path=/', 'X-Twice', 'one', 'X-Twice', 'two']);
        res.end('cookies');
        return;
      }
      if (req.url === '/api/hints') {
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
        setTimeout(() => res.end('final'), 20);
        return;
      }
      if (req.url === '/api/echo') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ body, headers: req.headers, url: req.url }));
        return;
      }
      if (req.url?.startsWith('/cached/')) {
        originCalls++;
        // Slow enough that concurrent misses meet in one flight.
        setTimeout(() => {
          res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"v1"', 'content-type': 'text/plain' });
          res.end(`cached body of ${req.url}`);
        }, 150);
        return;
      }
      res.writeHead(500);
      res.end();
    });
    portico = await startPorticoH2(
      `log: { access: ./access.log, format: combined }
caches:
  main: { memory: 16MB, max_object: 1MB }
upstreams:
  app: { servers: [{ url: "${backend.url}" }], retries: 0 }
  down: { servers: [{ url: "http://127.0.0.1:1" }], retries: 0 }
sites:
  - hosts: [a.example]
    error_pages: { 404: ./404.html }
    routes:
      - path: /files/
        static: { root: ./public }
      - path: /hello
        respond: { status: 201, body: "hi", headers: { X-Kind: respond } }
      - path: /empty
        respond: { status: 204 }
      - path: /old
        redirect: { to: "$scheme://$host/new$request_uri", status: 308 }
      - path: /api/
        proxy: { upstream: app, max_body_size: 1KB }
      - path: /down/
        proxy: { upstream: down }
      - path: /cached/
        proxy: { upstream: app, cache: { zone: main } }
      - path: /private
        access: [{ deny: all }]
        respond: { body: "secret" }
      - path: /limited
        rate_limit: { rate: 1/h, burst: 2 }
        respond: { body: "ok" }
      - path: /small-form
        max_body_size: 1KB
        respond: { body: "taken" }
`,
      { 'public/files/hello.txt': 'hello over h2\n', 'public/files/big.txt': 'x'.repeat(100_000), '404.html': '<h1>our own 404</h1>' },
    );
    client = await connectH2(portico.origin);
  });

  after(async () => {
    client?.close();
    await portico?.stop();
    await backend?.stop();
  });

  const get = (urlPath: string, extra: Record<string, string> = {}) => h2Request(client, { ':path': urlPath, ':authority': 'a.example', ...extra });

  test('static: a file with its type and validators; HEAD has its length and no body; If-None-Match gives 304 without body', async () => {
    const full = await get('/files/hello.txt');
    assert.equal(full.status, 200);
    assert.equal(full.body.toString(), 'hello over h2\n');
    assert.match(String(full.headers['content-type']), /^text\/plain/);
    const etag = String(full.headers.etag);
    assert.ok(etag.length > 2);
    const head = await get('/files/hello.txt', { ':method': 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '14');
    assert.equal(head.body.length, 0);
    const notModified = await get('/files/hello.txt', { 'if-none-match': etag });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.body.length, 0);
  });

  test('static: a range is 206 with exactly its bytes; a streamed 100 kB file arrives whole', async () => {
    const part = await get('/files/hello.txt', { range: 'bytes=6-7' });
    assert.equal(part.status, 206);
    assert.equal(part.body.toString(), 'ov');
    assert.equal(part.headers['content-range'], 'bytes 6-7/14');
    const big = await get('/files/big.txt', { 'accept-encoding': 'identity' });
    assert.equal(big.status, 200);
    assert.equal(big.body.length, 100_000);
    const zipped = await get('/files/big.txt', { 'accept-encoding': 'gzip' });
    assert.equal(zipped.headers['content-encoding'], 'gzip');
    assert.equal(gunzipSync(zipped.body).toString(), 'x'.repeat(100_000));
  });

  test('a 204 has no body and no content-length', async () => {
    const empty = await get('/empty');
    assert.equal(empty.status, 204);
    assert.equal(empty.body.length, 0);
    assert.equal(empty.headers['content-length'], undefined);
  });

  test("proxy: the app's 103 Early Hints reach the h2 client before the final answer", async () => {
    const stream = client.request({ ':path': '/api/hints', ':authority': 'a.example' });
    const hints = new Promise<string>((resolve) => stream.once('headers', (h) => resolve(`${h[':status']} ${h.link}`)));
    const final = new Promise<number>((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))));
    stream.resume();
    assert.equal(await hints, '103 </style.css>; rel=preload; as=style');
    assert.equal(await final, 200);
    await new Promise((resolve) => stream.once('close', resolve));
  });

  test('respond and redirect: status, fields and body; the redirect is built from :authority and the scheme', async () => {
    const hello = await get('/hello');
    assert.equal(hello.status, 201);
    assert.equal(hello.headers['x-kind'], 'respond');
    assert.equal(hello.body.toString(), 'hi');
    const moved = await get('/old?x=1');
    assert.equal(moved.status, 308);
    assert.equal(moved.headers.location, 'https://a.example/new/old?x=1');
  });

  test("error pages: the site's own 404 (chosen by :authority), 421 for an unknown authority, 502 page when the upstream is down", async () => {
    const missing = await get('/nowhere');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.toString(), '<h1>our own 404</h1>');
    const other = await h2Request(client, { ':path': '/', ':authority': 'unknown.example' });
    assert.equal(other.status, 421);
    const down = await get('/down/x');
    assert.equal(down.status, 502);
    assert.doesNotMatch(down.body.toString(), /127\.0\.0\.1|ECONNREFUSED/);
  });

  test('a Host field that names another authority than :authority is refused with 400; the same one is accepted', async () => {
    const mismatch = await get('/hello', { host: 'b.example' });
    assert.equal(mismatch.status, 400);
    const same = await get('/hello', { host: 'A.example' });
    assert.equal(same.status, 201);
  });

  test('proxy: the app gets HTTP/1.1 with Host and X-Forwarded-Host from :authority, proto https, Via 2, no pseudo-fields', async () => {
    const answer = await get('/api/echo');
    assert.equal(answer.status, 200);
    const seen = JSON.parse(answer.body.toString()) as { headers: Record<string, string>; url: string };
    assert.equal(seen.url, '/api/echo');
    assert.equal(seen.headers.host, 'a.example');
    assert.equal(seen.headers['x-forwarded-host'], 'a.example');
    assert.equal(seen.headers['x-forwarded-proto'], 'https');
    assert.equal(seen.headers.via, '2 portico');
    assert.deepEqual(Object.keys(seen.headers).filter((name) => name.startsWith(':')), []);
  });

  test("proxy: the upstream's connection-specific fields (and those its Connection names) never reach the h2 client", async () => {
    const answer = await get('/api/hop');
    assert.equal(answer.status, 200);
    assert.equal(answer.body.toString(), 'chunked answer');
    for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'x-secret']) {
      assert.equal(answer.headers[name], undefined, name);
    }
  });

  test('proxy: repeated fields (two Set-Cookie, a field sent twice) reach the h2 client as separate values', async () => {
    const answer = await get('/api/cookies');
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/']);
    assert.equal(answer.headers['x-twice'], 'one, two');
  });

  test('proxy: an h2 request body without content-length reaches the app whole; one over max_body_size gets 413', async () => {
    const posted = await h2Request(client, { ':method': 'POST', ':path': '/api/echo', ':authority': 'a.example' }, 'x'.repeat(700));
    assert.equal(posted.status, 200);
    assert.equal((JSON.parse(posted.body.toString()) as { body: string }).body.length, 700);
    const tooBig = await h2Request(client, { ':method': 'POST', ':path': '/api/echo', ':authority': 'a.example' }, 'x'.repeat(5000));
    assert.equal(tooBig.status, 413);
    assert.equal(tooBig.headers.connection, undefined);
  });

  test('Expect: 100-continue is answered by Portico after its checks: 413 without a 100 for a body over the limit, 100 then 200 otherwise; another expectation gets 417', async () => {
    const ask = (length: number, expect = '100-continue') =>
      new Promise<{ continued: boolean; status: number; page: boolean }>((resolve, reject) => {
        const stream = client.request({ ':method': 'POST', ':path': '/api/echo', ':authority': 'a.example', 'content-length': String(length), expect }, { endStream: false });
        let continued = false;
        stream.once('continue', () => {
          continued = true;
          stream.end('x'.repeat(length));
        });
        stream.once('response', (h) => {
          // Portico's own error page says no-store; Node's bare answers carry no such field.
          resolve({ continued, status: Number(h[':status']), page: h['cache-control'] === 'no-store' });
          stream.close();
        });
        stream.once('error', reject);
      });
    assert.deepEqual(await ask(5000), { continued: false, status: 413, page: true });
    assert.deepEqual(await ask(10), { continued: true, status: 200, page: false });
    assert.deepEqual(await ask(10, 'something-else'), { continued: false, status: 417, page: true });
  });

  test('a 413 to a client still sending its body ends the stream with RST_STREAM NO_ERROR; the session serves on', async () => {
    const stream = client.request({ ':method': 'POST', ':path': '/api/echo', ':authority': 'a.example' }, { endStream: false });
    const status = new Promise<number>((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))));
    stream.resume();
    stream.on('error', () => undefined);
    // 4 KB in, the body is over max_body_size; the stream is never ended by the client.
    stream.write('x'.repeat(4096));
    assert.equal(await status, 413);
    const closed = await Promise.race([
      new Promise<number>((resolve) => stream.once('close', () => resolve(stream.rstCode ?? -1))),
      new Promise<string>((resolve) => setTimeout(() => resolve('still open after 5 s'), 5000).unref()),
    ]);
    assert.equal(closed, 0, 'closed by the server with NO_ERROR while the client was still sending');
    assert.equal((await get('/hello')).status, 201, 'the session goes on');
  });

  test('respond: an h2 body without content-length is read before the answer; one over max_body_size gets 413, not the 200', async () => {
    const post = (size: number) => h2Request(client, { ':method': 'POST', ':path': '/small-form', ':authority': 'a.example' }, 'x'.repeat(size));
    const within = await post(700);
    assert.equal(within.status, 200);
    assert.equal(within.body.toString(), 'taken');
    assert.equal((await post(5000)).status, 413);
    assert.equal((await get('/small-form')).status, 200, 'a request without a body is answered at once; the session goes on');
  });

  test('cache: concurrent misses on one session collapse into one upstream request; then hits and a 304 from the cache', async () => {
    const before = originCalls;
    const answers = await Promise.all(Array.from({ length: 5 }, () => get('/cached/one')));
    for (const answer of answers) {
      assert.equal(answer.status, 200);
      assert.equal(answer.body.toString(), 'cached body of /cached/one');
    }
    assert.equal(originCalls - before, 1, 'one upstream request for five concurrent streams');
    const hit = await get('/cached/one');
    assert.match(String(hit.headers['cache-status']), /^Portico; hit/);
    assert.equal(hit.body.toString(), 'cached body of /cached/one');
    const revalidated = await get('/cached/one', { 'if-none-match': '"v1"' });
    assert.equal(revalidated.status, 304);
    assert.equal(revalidated.body.length, 0);
    assert.equal(originCalls - before, 1);
  });

  test('access denies with 403 and rate_limit answers 429 with Retry-After, over h2 as over HTTP/1', async () => {
    assert.equal((await get('/private')).status, 403);
    assert.equal((await get('/limited')).status, 200);
    assert.equal((await get('/limited')).status, 200);
    const limited = await get('/limited');
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers['retry-after']) >= 1);
  });

  test('CONNECT is refused with 405 and extended CONNECT (WebSocket over h2, RFC 8441) is not offered', async () => {
    assert.notEqual(client.remoteSettings.enableConnectProtocol, true);
    const connect = await h2Request(client, { ':method': 'CONNECT', ':authority': 'a.example:443' });
    assert.equal(connect.status, 405);
  });

  test('the access log records the protocol as HTTP/2.0 and the client address (read while the stream is open)', async () => {
    await get('/hello?logged=1');
    const file = path.join(portico.dir, 'access.log');
    // Lines are written in batches at least once a second: look for it a bounded number of times.
    let line: string | undefined;
    for (let i = 0; i < 60 && line === undefined; i++) {
      line = readFileSync(file, 'utf8').split('\n').find((l) => l.includes('/hello?logged=1'));
      if (line === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(line !== undefined, 'a line for the request');
    assert.match(line, /"GET \/hello\?logged=1 HTTP\/2\.0" 201 2 /);
    assert.match(line, /^127\.0\.0\.1 - - \[/, 'the client address, not "-"');
  });
});
