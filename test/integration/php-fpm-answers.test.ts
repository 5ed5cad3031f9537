/**
 * PHP answers that stress the CGI response parser, against Debian's real php-fpm (docs/php.md, "What PHP's answer
 * may say"): huge heads, many Set-Cookie, no Status, odd statuses, Location with and without Status, output before
 * the headers, a Content-Length that lies, bodies for HEAD/204/304, a body larger than the response buffer read
 * by a client that is slow. Each answer's framing is checked on the wire (raw sockets, requests pipelined), so a
 * byte too many shows as a broken next answer.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { PhpFpm } from '../helpers/php-fpm.js';
import { makeTree } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';
import { CapturedLog } from '../helpers/supervise.js';
import { haveTool } from '../helpers/tools.js';
import { within } from '../helpers/within.js';

const fpmInstalled = haveTool('php-fpm8.2') || process.env.CI === 'true';

/** 1 MB of a byte pattern that PHP and the test both make: chr(65 + i % 26) repeated, 64 KB per block. */
function pattern(blocks: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < blocks; i++) parts.push(Buffer.alloc(65536, 65 + (i % 26)));
  return Buffer.concat(parts);
}

const APP: Record<string, string> = {
  'ok.php': `<?php echo "ok";`,
  'sse.php': `<?php header('Content-Type: text/event-stream'); echo "data: first\\n\\n"; flush(); usleep(1500000); echo "data: second\\n\\n";`,
  'gone/ok.php': `<?php echo "never run";`,
  'bighead.php': `<?php header('X-Big: ' . str_repeat('a', (int)$_GET['n'])); echo "big head";`,
  'cookies.php': `<?php for ($i = 0; $i < 300; $i++) setcookie("c$i", "v$i"); echo "cookies";`,
  'status.php': `<?php header($_GET['h']); echo "status";`,
  'plain.php': `<?php echo "no status";`,
  'loc.php': `<?php header('Location: ' . $_GET['to']); if (isset($_GET['s'])) http_response_code((int)$_GET['s']); echo "moved";`,
  'ws.php': ` \n<?php header("X-After: 1"); echo "body";`,
  'nobody.php': `<?php http_response_code((int)$_GET['s']); echo "this body must not be sent";`,
  'length.php': `<?php header('Content-Length: ' . $_GET['cl']); echo "short";`,
  'lengths.php': `<?php header('Content-Length: 5'); header('Content-Length: 5', false); echo "fives";`,
  'head.php': `<?php header('X-Method: ' . $_SERVER['REQUEST_METHOD']); echo str_repeat("b", 200000);`,
  'huge.php': `<?php header('Content-Type: application/octet-stream'); $n = (int)$_GET['blocks']; for ($i = 0; $i < $n; $i++) echo str_repeat(chr(65 + $i % 26), 65536);`,
};

describe('php answers that stress the CGI response parser', { skip: fpmInstalled ? false : 'php-fpm8.2 is not installed (on CI it is: .ci/run installs php8.2-fpm)' }, () => {
  let fpm: PhpFpm;
  let server: Portico;
  let port: number;
  const log = new CapturedLog();
  const logLines = log.lines;

  before(async () => {
    // One worker: an answer that pinned it would stall every test after it.
    fpm = await PhpFpm.start({ workers: 1, ini: { display_errors: '0', log_errors: '1' } });
    const dir = makeTree(Object.fromEntries(Object.entries(APP).map(([name, text]) => [`app/${name}`, text])));
    const yaml = `listen: ["127.0.0.1:0"]
log: { access: off }
upstreams:
  php:
    servers: ["${fpm.url}"]
    keepalive: 1
  gone:
    servers: ["unix:${path.join(dir, 'no-such-fpm.sock')}"]
sites:
  - routes:
      - path: /gone/
        php: { root: ./app, upstream: gone }
      - path: /
        php: { root: ./app, upstream: php, buffer_response: 4MB, response_buffer_memory: 64KB }
`;
    server = new Portico(parseConfig(yaml, path.join(dir, 'portico.yaml'), dir), log.logger);
    await server.start();
    port = server.addresses[0]!.port;
  });
  after(async () => {
    await server?.stop(100);
    await fpm?.close();
  });

  /** Two requests pipelined on one connection: the answer to `target`, then /ok.php's, which must arrive whole. */
  const thenOk = async (target: string, method = 'GET'): Promise<{ status: number; headers: Record<string, string>; raw: string }> => {
    const res = await rawRequest(port, `${method} ${target} HTTP/1.1\r\nHost: a\r\n\r\nGET /ok.php HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`, { responses: 2 });
    assert.match(res.raw, /\r\n\r\n2\r\nok\r\n0\r\n\r\n$/, `the next answer on the connection is whole: ${JSON.stringify(res.raw.slice(-300))}`);
    return { status: res.status, headers: res.headers, raw: res.raw };
  };

  test('a 304 or 204 whose script writes a body: the status goes out without a body, the process and the connection live on', async () => {
    // Writing that body after the answer's end was an uncaught error: the whole process went down (`portico run`).
    const uncaught: Error[] = [];
    const record = (err: Error): void => void uncaught.push(err);
    process.on('uncaughtException', record);
    try {
      for (const status of [304, 204]) {
        const res = await thenOk(`/nobody.php?s=${status}`);
        assert.equal(res.status, status);
        assert.ok(!res.raw.includes('must not be sent'), res.raw);
      }
    } finally {
      process.off('uncaughtException', record);
    }
    assert.deepEqual(uncaught.map(String), []);
    const again = await request(`http://127.0.0.1:${port}/ok.php`);
    assert.equal(await again.body.text(), 'ok');
  });

  test('HEAD: PHP sees REQUEST_METHOD HEAD, the client gets its head and no body, the connection stays in step', async () => {
    const res = await thenOk('/head.php', 'HEAD');
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-method'], 'HEAD');
    assert.ok(!res.raw.includes('bbbb'), 'no body bytes');
  });

  test('PHP-FPM not there (no socket file): a 502 page that names neither socket nor script; the error log says why', async () => {
    const res = await request(`http://127.0.0.1:${port}/gone/ok.php`);
    const page = await res.body.text();
    assert.equal(res.statusCode, 502);
    assert.doesNotMatch(page, /sock|\.php|fpm|tmp|ENOENT/i);
    const line = logLines.find((l) => l.msg === 'upstream attempt failed' && String(l.request).includes('/gone/ok.php'));
    assert.equal(line?.reason, 'socket file not found');
    assert.equal(line?.during, 'connecting');
    assert.match(String(line?.server), /^unix:\/.*no-such-fpm\.sock$/, 'the log (not the page) names the socket');
  });

  test('a Content-Length larger than what the script wrote after it: exactly that many bytes go out, never the rest', async () => {
    const res = await thenOk('/length.php?cl=2');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-length'], '2');
    assert.match(res.raw, /\r\n\r\nshHTTP\/1\.1 200 OK\r\n/);
  });

  test('a Content-Length larger than the body the script wrote: the client sees the answer cut, and the error log says why', async () => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.write('GET /length.php?cl=100 HTTP/1.1\r\nHost: a\r\n\r\n');
    await within('the client connection closed', once(socket, 'close'));
    // Cut before or after its head went out (the head and the first bytes may still sit in the socket's buffer):
    // never an answer that looks complete.
    if (received !== '') assert.match(received, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Content-Length: 100\r\n[\s\S]*\r\n\r\n(?:s|sh|sho|shor|short)?$/);
    const line = logLines.find((l) => l.msg === 'upstream attempt failed' && String(l.request).includes('cl=100'));
    assert.equal(line?.reason, 'response body shorter than its Content-Length');
    // The FastCGI request itself ended well: the next one is served.
    assert.equal(await (await request(`http://127.0.0.1:${port}/ok.php`)).body.text(), 'ok');
  });

  test('Content-Length sent twice with one value goes out once; a length that is not a number, or two that differ, is a 502', async () => {
    const twice = await thenOk('/lengths.php');
    assert.equal(twice.status, 200);
    assert.equal(twice.raw.match(/content-length/gi)?.length, 1, 'one field');
    assert.equal(twice.headers['content-length'], '5');
    assert.match(twice.raw, /\r\n\r\nfivesHTTP\/1\.1 200 OK/);
    for (const value of ['abc', '-1', '5,%206', '0x10']) {
      const res = await thenOk(`/length.php?cl=${value}`);
      assert.equal(res.status, 502, value);
      assert.ok(!res.raw.includes('short'), 'nothing of the script');
    }
    const line = logLines.find((l) => l.msg === 'upstream attempt failed' && String(l.request).includes('cl=abc'));
    assert.equal(line?.reason, 'invalid response head');
  });

  test('Status: an odd reason keeps its code; none is 200; a code outside 200-599 or not a number is a 502 that shows nothing of PHP', async () => {
    assert.equal((await thenOk('/plain.php')).status, 200);
    assert.equal((await thenOk('/status.php?h=HTTP/1.1%20299%20Very%20Odd')).status, 299);
    assert.equal((await thenOk('/status.php?h=Status:%20200')).status, 200);
    for (const h of ['Status:%20600%20Beyond', 'Status:%20100%20Continue', 'Status:%20abc', 'Status:%2099%20Low']) {
      const res = await thenOk(`/status.php?h=${h}`);
      assert.equal(res.status, 502, h);
      const page = res.raw.slice(res.raw.indexOf('\r\n\r\n') + 4, res.raw.indexOf('HTTP/1.1 200'));
      assert.match(page, /502 Bad Gateway/);
      assert.doesNotMatch(page, /status|php|fpm|sock|tmp/i, 'the page names nothing inside');
    }
  });

  test('a head past 64 KB is a 502 ("response head too large" in the error log); one of 32 KB passes', async () => {
    const fine = await thenOk('/bighead.php?n=32768');
    assert.equal(fine.status, 200);
    assert.equal(fine.headers['x-big']?.length, 32768);
    const res = await thenOk('/bighead.php?n=70000');
    assert.equal(res.status, 502);
    const line = logLines.find((l) => l.msg === 'upstream attempt failed' && String(l.request).includes('n=70000'));
    assert.equal(line?.reason, 'response head too large');
  });

  test('300 Set-Cookie fields reach the client one by one, in order', async () => {
    const res = await request(`http://127.0.0.1:${port}/cookies.php`);
    assert.equal(await res.body.text(), 'cookies');
    const cookies = res.headers['set-cookie'] as string[];
    assert.equal(cookies.length, 300);
    assert.deepEqual(cookies.slice(0, 2), ['c0=v0', 'c1=v1']);
    assert.equal(cookies[299], 'c299=v299');
  });

  test('Location: relative or absolute, it goes out as PHP wrote it, with 302 when PHP gave no status and PHP\'s own status otherwise', async () => {
    const cases: Array<[string, number, string]> = [
      ['/loc.php?to=relative/path', 302, 'relative/path'],
      ['/loc.php?to=/abs/path%3Fq=1', 302, '/abs/path?q=1'],
      ['/loc.php?to=https://elsewhere.example/x', 302, 'https://elsewhere.example/x'],
      ['/loc.php?to=/made&s=201', 201, '/made'],
      ['/loc.php?to=/moved&s=301', 301, '/moved'],
    ];
    for (const [target, status, location] of cases) {
      const res = await thenOk(target);
      assert.equal(res.status, status, target);
      assert.equal(res.headers.location, location, target);
    }
  });

  test("output before the headers (whitespace before <?php): a 200 with the whitespace, the late header not sent, PHP's warning in the error log", async () => {
    const res = await request(`http://127.0.0.1:${port}/ws.php`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['x-after'], undefined);
    assert.equal(await res.body.text(), ' \nbody');
    const line = logLines.find((l) => l.msg === 'FastCGI sent in stderr' && l.script === '/ws.php');
    assert.match(String(line?.stderr), /headers already sent/);
  });

  test('a body larger than the response buffer, to a client that reads nothing for a while: the PHP worker is free at once and every byte arrives', async () => {
    // 3 MB fits buffer_response (4MB, 64KB of it in memory): held for the client, the one FPM worker is freed.
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.pause();
    socket.write('GET /huge.php?blocks=48 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    const other = await within('another request served by the one worker while the first client reads nothing', request(`http://127.0.0.1:${port}/ok.php`));
    assert.equal(await other.body.text(), 'ok');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.resume();
    await within('the whole answer', once(socket, 'end'), 20_000);
    const raw = Buffer.concat(chunks);
    const body = raw.subarray(raw.indexOf('\r\n\r\n') + 4);
    const decoded = dechunk(body);
    assert.equal(decoded.length, 48 * 65536);
    assert.equal(createHash('md5').update(decoded).digest('hex'), createHash('md5').update(pattern(48)).digest('hex'));
  });

  test('an event stream (text/event-stream) reaches the client as PHP flushes it, not when the script ends', async () => {
    const started = Date.now();
    const res = await request(`http://127.0.0.1:${port}/sse.php`);
    const reader = res.body[Symbol.asyncIterator]();
    let text = '';
    while (!text.includes('data: first')) {
      const next = await within('the first event', reader.next(), 5000);
      assert.ok(next.done !== true, 'the stream ended before its first event');
      text += (next.value as Buffer).toString();
    }
    assert.ok(!text.includes('second'), 'the first event came alone');
    assert.ok(Date.now() - started < 1400, `first event after ${Date.now() - started} ms: held until the script's end`);
    for (;;) {
      const next = await within('the rest', reader.next(), 5000);
      if (next.done === true) break;
      text += (next.value as Buffer).toString();
    }
    assert.equal(text, 'data: first\n\ndata: second\n\n');
  });

  test('a body larger than buffer_response: the client still gets all of it, at its own pace', async () => {
    const res = await request(`http://127.0.0.1:${port}/huge.php?blocks=160`);
    const chunks: Buffer[] = [];
    for await (const chunk of res.body) {
      chunks.push(chunk as Buffer);
      // A slow reader: the spool fills past 4 MB and PHP is paused, then resumed.
      if (chunks.length % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    const body = Buffer.concat(chunks);
    assert.equal(body.length, 160 * 65536);
    assert.equal(createHash('md5').update(body).digest('hex'), createHash('md5').update(pattern(160)).digest('hex'));
  });
});

/** The payload of a chunked body (the test's own decoder: the answer is checked byte for byte). */
function dechunk(bytes: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (let guard = 0; guard < 1_000_000; guard++) {
    const lineEnd = bytes.indexOf('\r\n', at);
    assert.ok(lineEnd !== -1, 'a chunk size line');
    const size = parseInt(bytes.subarray(at, lineEnd).toString('latin1'), 16);
    if (size === 0) return Buffer.concat(out);
    out.push(bytes.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
  throw new Error('too many chunks');
}
