/**
 * Regression tests from the review of the FastCGI transport and the php route (issue 20), against Debian's real
 * php-fpm: PARAMS past one record, header values Node cannot send, slow clients, 204/304 with a body, a gRPC
 * content-type on a php route, a late abort on a reused connection, and a pool closing with requests queued.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { FastCgiPool } from '../../src/upstream/fastcgi/pool.js';
import { PhpFpm } from '../helpers/php-fpm.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { haveTool } from '../helpers/tools.js';
import { rawRequest } from '../helpers/raw-client.js';
import { within } from '../helpers/within.js';

const fpmInstalled = haveTool('php-fpm8.2') || process.env.CI === 'true';

const APP: Record<string, string> = {
  'app/cookie.php': `<?php echo strlen($_SERVER['HTTP_COOKIE'] ?? ''), "|", strlen($_SERVER['HTTP_X_BIG'] ?? ''), "|", $_SERVER['HTTP_X_AFTER'] ?? 'none';`,
  'app/ctl.php': `<?php header("X-Bad: a\\x01b"); echo "body";`,
  'app/ok.php': `<?php echo "ok";`,
  'app/length.php': `<?php header('Content-Length: ' . $_GET['n']); echo "0123456789";`,
  'app/one/huge.php': `<?php for ($i = 0; $i < 256; $i++) echo str_repeat('h', 65536); flush(); touch(__DIR__ . '/huge-done');`,
  'app/one/nap.php': `<?php touch(__DIR__ . '/napping'); usleep(800000); echo "rested";`,
  'app/empty.php': `<?php http_response_code((int) $_GET['s']); echo str_repeat("body that must not be sent\n", 2000);`,
  'app/input.php': `<?php echo $_SERVER['CONTENT_LENGTH'] ?? 'none', "|", strlen(file_get_contents('php://input'));`,
  'app/slow.php': `<?php sleep(5); echo "slow";`,
  'app/big.php': `<?php header('Content-Type: application/octet-stream'); for ($i = 0; $i < 64; $i++) echo str_repeat('a', 65536);`,
};

describe('php route review regressions', { skip: fpmInstalled ? false : 'php-fpm8.2 is not installed (on CI it is: .ci/run installs php8.2-fpm)' }, () => {
  let fpm: PhpFpm;
  let portico: RunningPortico;

  before(async () => {
    fpm = await PhpFpm.start({ workers: 4 });
    portico = await startPortico(
      `listen: [{ addr: "127.0.0.1:0", max_header_size: 256KB }]
upstreams:
  php:
    servers: ["${fpm.url}"]
    keepalive: 2
    timeouts: { read: 300ms }
  one:
    servers: ["${fpm.url}"]
    keepalive: 1
    fastcgi: { keep_conn: true }
sites:
  - routes:
      - path: /one/
        php: { root: ./app, upstream: one }
      - path: = /big.php
        php: { root: ./app, upstream: php, buffer_response: 0 }
      - path: /
        php: { root: ./app, upstream: php }
`,
      APP,
    );
  });
  after(async () => {
    await portico?.stop();
    await fpm?.close();
  });

  test('CGI variables past 64 KB (one PARAMS record) reach PHP whole: each record holds whole name-value pairs', async () => {
    const cookie = 'c=' + 'x'.repeat(40_000);
    const big = 'y'.repeat(40_000);
    const res = await request(`${portico.url}/cookie.php`, { headers: { cookie, 'x-big': big, 'x-after': 'seen' } });
    assert.equal(res.statusCode, 200);
    assert.equal(await res.body.text(), `${cookie.length}|${big.length}|seen`);
  });

  test('a script header value with a control character is a 502, and the next request is served', async () => {
    const res = await request(`${portico.url}/ctl.php`);
    assert.equal(res.statusCode, 502);
    await res.body.text();
    const ok = await request(`${portico.url}/ok.php`);
    assert.equal(await ok.body.text(), 'ok');
  });

  test('an answer paused by a slow client (not by PHP) is not cut by the read timeout', async () => {
    // Stalled longer than the route's read timeout: Portico's send buffers fill and the app is paused by backpressure.
    const res = await rawRequest(portico.port, 'GET /big.php HTTP/1.0\r\nHost: x\r\n\r\n', { stallMs: 1200 });
    assert.equal(res.status, 200);
    assert.equal(Buffer.byteLength(res.body, 'latin1'), 64 * 65536);
  });

  test('a body with a gRPC content-type is read whole for PHP too: PHP gets its CONTENT_LENGTH and every byte', async () => {
    for (const type of ['application/grpc', 'application/grpc-web-text']) {
      const res = await request(`${portico.url}/input.php`, { method: 'POST', headers: { 'content-type': type }, body: Buffer.alloc(100_000, 'A') });
      assert.equal(res.statusCode, 200);
      assert.equal(await res.body.text(), '100000|100000', type);
    }
  });

  test('a 204 or 304 from a script that still writes a body ends at its head, and the next request on the connection is served', async () => {
    for (const status of [204, 304]) {
      const res = await rawRequest(portico.port, `GET /empty.php?s=${status} HTTP/1.1\r\nHost: x\r\n\r\nGET /ok.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { responses: 2 });
      assert.equal(res.status, status);
      assert.match(res.body, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n(?:2\r\n)?ok/);
      assert.doesNotMatch(res.raw, /must not be sent/);
    }
  });

  test('a slow client that leaves after PHP finished its answer does not cut the next request on that kept connection', async () => {
    // A: 16 MB, never read: Portico holds it (buffer_response) and PHP's connection is free again at once.
    const a = net.connect(portico.port, '127.0.0.1');
    a.pause();
    a.write('GET /one/huge.php HTTP/1.1\r\nHost: x\r\n\r\n');
    const appFile = (name: string): string => path.join(portico.dir, 'app', 'one', name);
    const reached = async (name: string): Promise<void> => {
      for (let i = 0; i < 250 && !existsSync(appFile(name)); i++) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.ok(existsSync(appFile(name)), `${name} written by PHP`);
    };
    await reached('huge-done');
    // B: on the same (only) kept connection, now that A's request has ended there.
    const b = request(`${portico.url}/one/nap.php`).then(async (res) => `${res.statusCode} ${await res.body.text()}`);
    await reached('napping');
    a.destroy();
    assert.equal(await within('B to be answered', b), '200 rested');
  });

  test('a script whose Content-Length is shorter than its output: the client gets exactly Content-Length bytes, and its next answer intact', async () => {
    const res = await rawRequest(portico.port, 'GET /length.php?n=5 HTTP/1.1\r\nHost: x\r\n\r\nGET /ok.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { responses: 2 });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-length'], '5');
    assert.match(res.body, /^01234HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n(?:2\r\n)?ok/);
  });

  test('a script whose Content-Length is longer than its output: the answer ends visibly broken, never taken as complete', async () => {
    const res = await rawRequest(portico.port, 'GET /length.php?n=50 HTTP/1.1\r\nHost: x\r\n\r\nGET /ok.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { responses: 2 });
    assert.equal(res.closed, true, 'the connection is closed');
    assert.doesNotMatch(res.raw, /\r\n\r\nok/, 'no second answer is taken as the body');
  });

  test('a pool closing (a reload) still answers a queued request when the request before it is aborted', async () => {
    const pool = new FastCgiPool({ socketPath: fpm.socket, connections: 1, keepConn: true, connectTimeout: 2000, idleTimeout: 10_000, headersTimeout: 10_000, bodyTimeout: 10_000 });
    const cgi = (file: string): string[] => {
      const filename = path.join(portico.dir, 'app', file);
      return ['REQUEST_METHOD', 'GET', 'SCRIPT_FILENAME', filename, 'SCRIPT_NAME', `/${file}`, 'REQUEST_URI', `/${file}`, 'QUERY_STRING', ''];
    };
    try {
      const abort = new AbortController();
      const first = pool.request({ path: '/slow.php', method: 'GET', headers: cgi('slow.php'), signal: abort.signal }).then(
        () => 'answered',
        (err: Error) => err.name,
      );
      const queued = pool.request({ path: '/ok.php', method: 'GET', headers: cgi('ok.php') }).then(
        async (res) => res.body.text(),
        (err: Error) => `failed: ${err.message}`,
      );
      const closed = pool.close();
      abort.abort();
      assert.equal(await first, 'AbortError');
      assert.equal(await within('the queued request to be answered', queued, 4000), 'ok');
      await within('the pool to close', closed);
      assert.equal(pool.size, 0);
    } finally {
      await pool.destroy();
    }
  });
});
