/**
 * The reverse proxy over real sockets: what goes to the app server and what comes back. Forwarding of method,
 * path, query and bodies (streamed both ways), the rebuilt X-Forwarded-* / Forwarded headers, Host, Via, path
 * joining and prefix stripping, Location rewriting, hop-by-hop stripping, WebSocket tunnelling and hiding of
 * the app server's identity.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { RawConnection, decodeFrame, encodeFrame, hasHead, httpRequest, sha256, stallOrDone, statusOf, websocketAccept } from './proxy-support.js';

/** 5 MB of ASCII (so the test backend, which reads bodies as strings, sees exactly these bytes). */
const BIG_UPLOAD = randomBytes(2.5 * 1024 * 1024).toString('hex');
const BIG_DOWNLOAD = randomBytes(5 * 1024 * 1024);

interface Echo {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  bodySha: string;
  bodyLength: number;
}

let backend: TestUpstream;
let portico: RunningPortico;
let trustingPortico: RunningPortico;
const upgrades: IncomingMessage[] = [];

/** The app server: echoes the request as JSON, or plays one of a few parts chosen by path. */
function app(req: IncomingMessage, res: import('node:http').ServerResponse, body: string): void {
  const url = req.url!;
  if (url === '/big') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG_DOWNLOAD.length });
    res.end(BIG_DOWNLOAD);
    return;
  }
  if (url.endsWith('/redirect')) {
    res.writeHead(302, {
      location: `${backend.url}/base/x?y=1`,
      refresh: `0; url=${backend.url}/base/y`,
      'content-length': 0,
    });
    res.end();
    return;
  }
  if (url === '/elsewhere') {
    res.writeHead(302, { location: 'https://example.org/base/x', 'content-length': 0 });
    res.end();
    return;
  }
  if (url === '/identity') {
    res.writeHead(200, [
      ['Server', 'BackendServer/1.0'],
      ['X-Powered-By', 'Express'],
      ['X-Hop', 'secret'],
      ['Connection', 'X-Hop'],
      ['Keep-Alive', 'timeout=5, max=99'],
      ['Trailer', 'X-Checksum'],
      ['Proxy-Authenticate', 'Basic realm="app"'],
      ['X-Kept', 'yes'],
      ['Set-Cookie', 'a=1; Path=/'],
      ['Set-Cookie', 'b=2; Path=/'],
    ].flat());
    res.addTrailers({ 'X-Checksum': 'abc' });
    res.end('ok');
    return;
  }
  const echo: Echo = { method: req.method!, url, headers: req.headers, bodySha: sha256(body), bodyLength: Buffer.byteLength(body) };
  const json = JSON.stringify(echo);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

/** A hand-made WebSocket server: answers the handshake, then echoes every frame it gets (unmasked). */
function acceptWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer): void {
  upgrades.push(req);
  if (req.url === '/ws-refuse') {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno');
    return;
  }
  const accept = websocketAccept(String(req.headers['sec-websocket-key']));
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nServer: BackendServer/1.0\r\n\r\n`);
  let pending = head;
  const onData = (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    for (let frame = decodeFrame(pending); frame !== undefined; frame = decodeFrame(pending)) {
      pending = pending.subarray(frame.size);
      socket.write(encodeFrame(`echo:${frame.payload}`, false, frame.opcode));
    }
  };
  socket.on('data', onData);
  socket.on('error', () => {});
  if (head.length > 0) onData(Buffer.alloc(0));
}

async function echoOf(port: number, path: string, options: Parameters<typeof httpRequest>[2] = {}): Promise<Echo> {
  const res = await httpRequest(port, path, options);
  assert.equal(res.status, 200, `status for ${path}: ${res.body.toString()}`);
  return JSON.parse(res.body.toString()) as Echo;
}

before(async () => {
  backend = await startUpstream(app);
  backend.server.on('upgrade', acceptWebSocket);
  const routes = `sites:
  - routes:
      - path: /api/
        proxy: { url: "${backend.url}/base", strip_prefix: true }
      - path: /keep/
        proxy: { url: "${backend.url}/base/" }
      - path: /slash/
        proxy: { url: "${backend.url}/base/", strip_prefix: true }
      - path: /plain/
        proxy: { url: "${backend.url}", strip_prefix: true }
      - path: /hosted/
        proxy: { upstream: app, host: "backend.local" }
      - path: /nows/
        proxy: { upstream: app, websocket: false }
      - path: /
        proxy: { upstream: app }
`;
  const upstreams = `upstreams:
  app:
    servers: [{ url: "${backend.url}" }]
`;
  portico = await startPortico(upstreams + routes);
  trustingPortico = await startPortico(`trusted_proxies: ["127.0.0.1"]\n` + upstreams + routes);
});

after(async () => {
  await portico?.stop();
  await trustingPortico?.stop();
  await backend?.stop();
});

describe('forwarding', () => {
  test('method, canonical path, query and body reach the app server unchanged', async () => {
    const echo = await echoOf(portico.port, '/echo/%61b//c/./d/../e%2fx?q=1&r=%2F&s', { method: 'PATCH', body: 'hello body' });
    assert.equal(echo.method, 'PATCH');
    assert.equal(echo.url, '/echo/ab/c/e%2Fx?q=1&r=%2F&s');
    assert.equal(echo.bodySha, sha256('hello body'));
    assert.equal(echo.headers['content-length'], '10');
  });

  test('a 5 MB upload streams to the app server byte for byte', async () => {
    const res = await fetch(`${portico.url}/upload`, { method: 'POST', body: BIG_UPLOAD });
    assert.equal(res.status, 200);
    const echo = (await res.json()) as Echo;
    assert.equal(echo.bodyLength, BIG_UPLOAD.length);
    assert.equal(echo.bodySha, sha256(BIG_UPLOAD));
  });

  test('a 5 MB chunked upload (no Content-Length) reaches the app server byte for byte, sized (request buffering)', async () => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < BIG_UPLOAD.length; at += 256 * 1024) controller.enqueue(Buffer.from(BIG_UPLOAD.slice(at, at + 256 * 1024)));
        controller.close();
      },
    });
    const res = await fetch(`${portico.url}/upload`, { method: 'PUT', body, duplex: 'half' } as RequestInit);
    assert.equal(res.status, 200);
    const echo = (await res.json()) as Echo;
    assert.equal(echo.bodySha, sha256(BIG_UPLOAD));
    assert.equal(echo.headers['transfer-encoding'], undefined);
    assert.equal(echo.headers['content-length'], String(Buffer.byteLength(BIG_UPLOAD)));
  });

  test('HEAD is forwarded as HEAD: the head of the answer comes back with no body', async () => {
    const res = await rawRequest(portico.port, 'HEAD /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-length'], String(BIG_DOWNLOAD.length));
    assert.equal(res.body, '');
    assert.equal(backend.requests.at(-1)!.method, 'HEAD');
  });

  test('a 5 MB download streams to the client byte for byte', async () => {
    const res = await fetch(`${portico.url}/big`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(BIG_DOWNLOAD.length));
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(sha256(body), sha256(BIG_DOWNLOAD));
  });

  test('with buffer_response: 0, a client that does not read holds the app server back (backpressure) instead of Portico buffering the answer', async () => {
    const total = 64 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 120);
    let written = 0;
    const producer = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': total });
      const pump = () => {
        while (written < total) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    const own = await startPortico(`sites:\n  - routes:\n      - path: /\n        proxy: { url: "${producer.url}", buffer_response: 0 }\n`);
    const conn = await RawConnection.open(own.port);
    try {
      conn.socket.pause();
      conn.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
      const outcome = await stallOrDone('the app server', () => written, () => written >= total / 2);
      assert.equal(outcome, 'stalled', `the app server wrote ${(written / 1048576).toFixed(1)} MB to a client that read nothing`);
      assert.ok(written < total / 2, `the app server wrote ${(written / 1048576).toFixed(1)} MB to a client that read nothing`);
    } finally {
      conn.close();
      await own.stop();
      await producer.stop();
    }
  });

  test('an untrusted peer: its X-Forwarded-*, X-Real-IP and Forwarded are dropped and rebuilt from the real peer', async () => {
    const echo = await echoOf(portico.port, '/who', {
      headers: {
        'X-Forwarded-For': '6.6.6.6',
        'X-Forwarded-Proto': 'https',
        'X-Forwarded-Host': 'evil.example',
        'X-Real-IP': '6.6.6.6',
        Forwarded: 'for=6.6.6.6;proto=https',
      },
    });
    const host = `127.0.0.1:${portico.port}`;
    assert.equal(echo.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(echo.headers['x-real-ip'], '127.0.0.1');
    assert.equal(echo.headers['x-forwarded-proto'], 'http');
    assert.equal(echo.headers['x-forwarded-host'], host);
    assert.equal(echo.headers.forwarded, `for=127.0.0.1;proto=http;host="${host}"`);
  });

  test('a trusted peer: its X-Forwarded-For and Forwarded are appended to and X-Real-IP is the original client', async () => {
    const echo = await echoOf(trustingPortico.port, '/who', {
      headers: {
        'X-Forwarded-For': '203.0.113.7, 10.0.0.2',
        'X-Forwarded-Proto': 'https',
        'X-Forwarded-Host': 'www.example.com',
        'X-Real-IP': '6.6.6.6',
        Forwarded: 'for=203.0.113.7;proto=https',
      },
    });
    const host = `127.0.0.1:${trustingPortico.port}`;
    assert.equal(echo.headers['x-forwarded-for'], '203.0.113.7, 10.0.0.2, 127.0.0.1');
    // 10.0.0.2 is not trusted, so it is the client as far as Portico can tell.
    assert.equal(echo.headers['x-real-ip'], '10.0.0.2');
    assert.equal(echo.headers['x-forwarded-proto'], 'https');
    assert.equal(echo.headers['x-forwarded-host'], 'www.example.com');
    assert.equal(echo.headers.forwarded, `for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host="${host}"`);
  });

  test('the Host header is passed through by default', async () => {
    const echo = await echoOf(portico.port, '/who', { headers: { Host: 'www.example.com' } });
    assert.equal(echo.headers.host, 'www.example.com');
    assert.equal(echo.headers['x-forwarded-host'], 'www.example.com');
  });

  test('host: "backend.local" sets the Host header sent upstream', async () => {
    const echo = await echoOf(portico.port, '/hosted/who', { headers: { Host: 'www.example.com' } });
    assert.equal(echo.headers.host, 'backend.local');
    assert.equal(echo.headers['x-forwarded-host'], 'www.example.com');
  });

  test('Via is added, after any Via the client sent', async () => {
    assert.equal((await echoOf(portico.port, '/who')).headers.via, '1.1 portico');
    assert.equal((await echoOf(portico.port, '/who', { headers: { Via: '1.0 fred' } })).headers.via, '1.0 fred, 1.1 portico');
  });
});

describe('paths', () => {
  test('strip_prefix turns /api/x?q into /x?q (after the base path of the URL)', async () => {
    assert.equal((await echoOf(portico.port, '/api/x?q=1')).url, '/base/x?q=1');
    assert.equal((await echoOf(portico.port, '/plain/x?q=1')).url, '/x?q=1');
    assert.equal((await echoOf(portico.port, '/plain/')).url, '/');
  });

  test('/api without a slash on route /api/ is redirected (301) to /api/, query kept', async () => {
    const res = await httpRequest(portico.port, '/api?q=1');
    assert.equal(res.status, 301);
    assert.equal(res.headers.location, '/api/?q=1');
  });

  test('the base path of a proxy URL is joined to the path without doubling or losing slashes', async () => {
    assert.equal((await echoOf(portico.port, '/api/a/b')).url, '/base/a/b');
    assert.equal((await echoOf(portico.port, '/api/')).url, '/base/');
    assert.equal((await echoOf(portico.port, '/slash/a/b?z')).url, '/base/a/b?z');
    assert.equal((await echoOf(portico.port, '/slash/')).url, '/base/');
    assert.equal((await echoOf(portico.port, '/keep/a/b?z')).url, '/base/keep/a/b?z');
    assert.equal((await echoOf(portico.port, '/keep/')).url, '/base/keep/');
  });

  test("Location and Refresh naming the app server's own address are rewritten to the client-facing URL", async () => {
    const res = await httpRequest(portico.port, '/api/redirect', { headers: { Host: 'www.example.com' } });
    assert.equal(res.status, 302);
    assert.equal(res.headers.location, 'http://www.example.com/api/x?y=1');
    assert.equal(res.headers.refresh, '0; url=http://www.example.com/api/y');
    // Without strip_prefix the route prefix is part of what the app saw, so only the base path goes.
    const kept = await httpRequest(portico.port, '/keep/redirect');
    assert.equal(kept.headers.location, `http://127.0.0.1:${portico.port}/x?y=1`);
  });

  test('a Location naming another site is left alone', async () => {
    const res = await httpRequest(portico.port, '/elsewhere');
    assert.equal(res.headers.location, 'https://example.org/base/x');
  });
});

describe('hop-by-hop headers', () => {
  test('Connection, the fields it names, Keep-Alive, TE, Trailer and Proxy-* never reach the app server', async () => {
    const res = await rawRequest(
      portico.port,
      'GET /who HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n' +
        'TE: trailers\r\nTrailer: X-T\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n',
    );
    assert.equal(res.status, 200);
    const echo = JSON.parse(res.body) as Echo;
    for (const name of ['x-secret', 'te', 'trailer', 'proxy-authorization', 'proxy-connection', 'upgrade']) {
      assert.equal(echo.headers[name], undefined, `${name} reached the app server`);
    }
    assert.notEqual(echo.headers['keep-alive'], 'timeout=5');
    assert.equal(echo.headers['x-kept'], 'yes');
  });

  test('hop-by-hop fields of the response (and those its Connection names) never reach the client', async () => {
    const res = await rawRequest(portico.port, 'GET /identity HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-hop'], undefined);
    assert.equal(res.headers['trailer'], undefined);
    assert.equal(res.headers['proxy-authenticate'], undefined);
    assert.equal(res.headers['keep-alive'], undefined);
    assert.equal(res.headers['x-kept'], 'yes');
    assert.match(res.body, /\r\nok\r\n0\r\n\r\n$/);
  });
});

describe('hiding the app server', () => {
  test("the app's Server and X-Powered-By are replaced by Portico's own Server", async () => {
    const res = await httpRequest(portico.port, '/identity');
    assert.equal(res.headers.server, 'Portico');
    assert.equal(res.headers['x-powered-by'], undefined);
    assert.ok(!res.rawHeaders.includes('BackendServer/1.0'));
    assert.deepEqual(res.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/'], 'repeated fields stay separate');
  });
});

describe('WebSocket and other upgrades', () => {
  async function openWebSocket(path: string): Promise<{ conn: RawConnection; head: string }> {
    const conn = await RawConnection.open(portico.port);
    conn.write(
      `GET ${path} HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    const received = await conn.until(hasHead);
    return { conn, head: received.subarray(0, received.indexOf('\r\n\r\n') + 4).toString('latin1') };
  }

  test('a WebSocket is tunnelled: 101 after the app server accepted, and a masked text frame comes back echoed', async () => {
    const { conn, head } = await openWebSocket('/ws');
    try {
      assert.equal(statusOf(head), 101, head);
      assert.match(head, /\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i);
      assert.doesNotMatch(head, /BackendServer/);
      const upstreamReq = upgrades.at(-1)!;
      assert.equal(upstreamReq.headers.upgrade, 'websocket');
      assert.equal(upstreamReq.headers['x-forwarded-for'], '127.0.0.1');
      const start = conn.received.length;
      conn.write(encodeFrame('hello', true));
      await conn.until((buf) => decodeFrame(buf.subarray(start)) !== undefined);
      const frame = decodeFrame(conn.received.subarray(start))!;
      assert.deepEqual([frame.opcode, frame.payload], [1, 'echo:hello']);
    } finally {
      conn.close();
    }
  });

  test('a client that half-closes its side of a WebSocket sees the tunnel torn down (regression: tunnel left half-open)', async () => {
    const { conn, head } = await openWebSocket('/ws');
    assert.equal(statusOf(head), 101);
    conn.socket.end();
    assert.ok(await conn.waitClosed(2000), 'the tunnel stayed open after the client ended its side');
  });

  test('stop() cuts an open WebSocket tunnel after the grace period instead of waiting for it forever', async () => {
    const own = await startPortico(`upstreams:\n  app:\n    servers: [{ url: "${backend.url}" }]\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    const conn = await RawConnection.open(own.port);
    conn.write('GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    assert.equal(statusOf((await conn.until(hasHead)).toString('latin1')), 101);
    const started = Date.now();
    await own.stop();
    assert.ok(Date.now() - started < 2000, `stop() took ${Date.now() - started} ms`);
    assert.ok(await conn.waitClosed(1000));
  });

  test('an app server refusing the upgrade (400) gives the client an error, never a 101', async () => {
    const { conn, head } = await openWebSocket('/ws-refuse');
    conn.close();
    const status = statusOf(head);
    assert.ok(status >= 400, `expected an error status, got ${head}`);
    assert.doesNotMatch(head, new RegExp(String(backend.port)));
  });

  test('a WebSocket to an app server that is down gets 502, naming no app server', async () => {
    const dead = await startUpstream('dead');
    await dead.stop();
    const own = await startPortico(`sites:\n  - routes:\n      - path: /\n        proxy: { url: "${dead.url}" }\n`);
    try {
      const conn = await RawConnection.open(own.port);
      conn.write('GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
      assert.ok(await conn.waitClosed(2000));
      const text = conn.received.toString('latin1');
      assert.equal(statusOf(text), 502);
      assert.ok(!text.includes(String(dead.port)), text);
    } finally {
      await own.stop();
    }
  });

  test('h2c is not tunnelled: the app server sees no Upgrade and the client gets a normal response', async () => {
    const before = upgrades.length;
    const res = await rawRequest(
      portico.port,
      'GET /who HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
    );
    assert.equal(res.status, 200);
    const echo = JSON.parse(res.body) as Echo;
    assert.equal(echo.headers.upgrade, undefined);
    assert.equal(echo.headers['http2-settings'], undefined);
    assert.equal(upgrades.length, before);
  });

  test('an unknown upgrade, or WebSocket on a route with websocket: false, gets a normal response', async () => {
    const before = upgrades.length;
    const unknown = await rawRequest(portico.port, 'GET /who HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: foo/2\r\n\r\n');
    assert.equal(unknown.status, 200);
    assert.equal((JSON.parse(unknown.body) as Echo).headers.upgrade, undefined);
    const disabled = await rawRequest(
      portico.port,
      'GET /nows/who HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    assert.equal(disabled.status, 200);
    assert.equal((JSON.parse(disabled.body) as Echo).headers.upgrade, undefined);
    assert.equal(upgrades.length, before);
  });
});
