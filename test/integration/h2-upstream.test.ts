/**
 * HTTP/2 app servers: `h2c://` (prior knowledge) and `https://` with `protocol: h2 | auto` (ALPN), against real
 * Node http2 servers on port 0. Requests share connections (streams), a GOAWAY drains a connection without
 * losing a request, a server that is down is retried on the other as over HTTP/1.1.
 */
import assert from 'node:assert/strict';
import http2, { type Http2Server, type Http2SecureServer, type ServerHttp2Session } from 'node:http2';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connectH2, selfSignedCert, startPorticoH2 } from '../helpers/h2.js';
import path from 'node:path';
import { parseConfig } from '../../src/server/config.js';
import { within } from '../helpers/within.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';

/** A Node http2 app: answers `/who` with its name and the protocol it was asked in; `/hold` waits for `release`. */
interface H2App {
  server: Http2Server | Http2SecureServer;
  port: number;
  sessions: Set<ServerHttp2Session>;
  held: Array<() => void>;
  heldIds: number[];
  /** The paths asked, in order. */
  paths: string[];
  /** The RST_STREAM code each held stream ended with (0: none). */
  resetCodes: number[];
  heldArrived: Promise<void>;
  /** `/refuse-once` was refused (REFUSED_STREAM) once already. */
  refusedOnce: boolean;
  close(): Promise<void>;
}

async function startH2App(name: string, secure: boolean): Promise<H2App> {
  const { cert, key } = await selfSignedCert();
  const server = secure ? http2.createSecureServer({ cert, key }) : http2.createServer();
  const sessions = new Set<ServerHttp2Session>();
  const held: Array<() => void> = [];
  let arrived: () => void = () => undefined;
  const app: H2App = {
    server,
    port: 0,
    sessions,
    held,
    heldIds: [],
    paths: [],
    resetCodes: [],
    heldArrived: new Promise<void>((resolve) => (arrived = resolve)),
    refusedOnce: false,
    async close() {
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  server.on('stream', (stream, headers) => {
    const path = headers[':path'];
    app.paths.push(String(path));
    if (path === '/reset') {
      // An answer begun, then the stream reset by the app (Node resets a destroyed stream with INTERNAL_ERROR; its
      // close(code) would end the answer first).
      stream.on('error', () => undefined);
      stream.respond({ ':status': 200 });
      stream.write('part', () => setTimeout(() => stream.destroy(new Error('app failed')), 20));
      return;
    }
    if (path === '/refuse-once' && !app.refusedOnce) {
      // REFUSED_STREAM before reading anything: the request was not processed (RFC 9113 §8.7).
      app.refusedOnce = true;
      stream.on('error', () => undefined);
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    if (path === '/silent') {
      // Never answers (the response-header timeout's case).
      stream.on('error', () => undefined);
      return;
    }
    if (path === '/trickle') {
      // The head and a chunk at once, another 400 ms later, then nothing (the read timeout's case).
      stream.on('error', () => undefined);
      stream.respond({ ':status': 200 });
      stream.write('a');
      const timer = setTimeout(() => stream.write('b'), 400);
      stream.once('close', () => clearTimeout(timer));
      return;
    }
    if (path === '/hold') {
      stream.once('close', () => app.resetCodes.push(stream.rstCode));
      app.heldIds.push(stream.id!);
      held.push(() => {
        stream.respond({ ':status': 200 });
        stream.end('released');
      });
      arrived();
      return;
    }
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-app': name });
      stream.end(`${name} ${headers[':method']} ${path} ${headers[':authority']} body=${Buffer.concat(chunks).length}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  app.port = (server.address() as AddressInfo).port;
  return app;
}

describe('HTTP/2 upstream servers', () => {
  let plain: H2App;
  let secure: H2App;
  let limited: H2App;
  let http1: https.Server;
  let http1Port = 0;
  let portico: RunningPortico;

  before(async () => {
    plain = await startH2App('plain', false);
    secure = await startH2App('secure', true);
    limited = await startH2App('limited', false);
    const { cert, key } = await selfSignedCert();
    http1 = https.createServer({ cert, key }, (req, res) => res.end(`http1 ${req.httpVersion}`));
    await new Promise<void>((resolve) => http1.listen(0, '127.0.0.1', resolve));
    http1Port = (http1.address() as AddressInfo).port;
    portico = await startPortico(
      `
upstreams:
  plain:
    servers: ["h2c://127.0.0.1:${plain.port}"]
    http2: { max_concurrent_streams: 50, ping_interval: 200ms }
  secure:
    servers: [{ url: "https://127.0.0.1:${secure.port}", protocol: h2, tls: { ca: ./cert.pem, servername: localhost } }]
  auto1:
    servers: [{ url: "https://127.0.0.1:${http1Port}", protocol: auto, tls: { ca: ./cert.pem, servername: localhost } }]
  auto2:
    servers: [{ url: "https://127.0.0.1:${secure.port}", protocol: auto, tls: { ca: ./cert.pem, servername: localhost } }]
  limited:
    servers: ["h2c://127.0.0.1:${limited.port}"]
    http2: { connections: 2, max_concurrent_streams: 2, ping_interval: 0 }
  failover:
    servers: ["h2c://127.0.0.1:1", "h2c://127.0.0.1:${plain.port}"]
    policy: first
  slow:
    servers: ["h2c://127.0.0.1:${plain.port}"]
    timeouts: { response_header: 300ms, read: 600ms }
    retries: 0
sites:
  - routes:
      - { path: /plain/, proxy: { upstream: plain, strip_prefix: true } }
      - { path: /secure/, proxy: { upstream: secure, strip_prefix: true } }
      - { path: /auto1/, proxy: { upstream: auto1, strip_prefix: true } }
      - { path: /auto2/, proxy: { upstream: auto2, strip_prefix: true } }
      - { path: /failover/, proxy: { upstream: failover, strip_prefix: true } }
      - { path: /limited/, proxy: { upstream: limited, strip_prefix: true } }
      - { path: /slow/, proxy: { upstream: slow, strip_prefix: true, buffer_response: 0 } }
`,
      { 'cert.pem': cert },
    );
  });

  after(async () => {
    await portico?.stop();
    await plain?.close();
    await secure?.close();
    await limited?.close();
    await new Promise<void>((resolve) => (http1 === undefined ? resolve() : http1.close(() => resolve())));
  });

  test('an h2c:// server is spoken to in HTTP/2 by prior knowledge, the client Host as :authority, a body as DATA', async () => {
    const res = await fetch(`${portico.url}/plain/who`, { method: 'POST', body: 'x'.repeat(100_000) });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-app'), 'plain');
    assert.equal(await res.text(), `plain POST /who 127.0.0.1:${portico.port} body=100000`);
  });

  test('concurrent requests to an h2c server share one connection as streams', async () => {
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => fetch(`${portico.url}/plain/n${i}`).then((r) => r.text())));
    answers.forEach((text, i) => assert.match(text, new RegExp(`^plain GET /n${i} `)));
    assert.equal(plain.sessions.size, 1);
  });

  test('https:// with protocol h2 negotiates h2 by ALPN and verifies the server as tls.servername', async () => {
    const res = await fetch(`${portico.url}/secure/who`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /^secure GET \/who /);
    assert.equal(secure.sessions.size, 1);
  });

  test('protocol auto speaks HTTP/1.1 to a server that offers only http/1.1, and HTTP/2 to one that offers h2', async () => {
    assert.equal(await (await fetch(`${portico.url}/auto1/x`)).text(), 'http1 1.1');
    assert.match(await (await fetch(`${portico.url}/auto2/x`)).text(), /^secure GET \/x /);
  });

  test('a refused h2c server is retried on the next one, as over HTTP/1.1', async () => {
    const res = await fetch(`${portico.url}/failover/x`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /^plain GET \/x /);
  });

  test('a gRPC call whose stream the app refuses (REFUSED_STREAM) is sent again on another stream with its whole body', async () => {
    const body = 'g'.repeat(30_000);
    const res = await fetch(`${portico.url}/plain/refuse-once`, { method: 'POST', body, headers: { 'content-type': 'application/grpc' } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), `plain POST /refuse-once 127.0.0.1:${portico.port} body=30000`);
    assert.equal(plain.refusedOnce, true);
    assert.deepEqual(plain.paths.filter((p) => p === '/refuse-once').length, 2);
  });

  test('an HTTP/2 app that sends no response head within response_header is answered 504, at that timeout', async () => {
    const started = Date.now();
    const res = await within('the answer', fetch(`${portico.url}/slow/silent`));
    const elapsed = Date.now() - started;
    assert.equal(res.status, 504);
    assert.ok(elapsed >= 280 && elapsed < 3000, `answered after ${elapsed} ms`);
  });

  test('the read timeout of an HTTP/2 app runs from its last DATA, not from its head: an answer that stops is cut that long after its last chunk', async () => {
    const started = Date.now();
    const res = await within('the head', fetch(`${portico.url}/slow/trickle`));
    assert.equal(res.status, 200);
    let body = '';
    const cut = await within(
      'the cut',
      (async () => {
        try {
          for await (const chunk of res.body!) body += Buffer.from(chunk).toString();
          return false;
        } catch {
          return true;
        }
      })(),
    );
    const elapsed = Date.now() - started;
    assert.equal(cut, true, 'the answer must end broken, not complete');
    assert.equal(body, 'ab');
    // 'b' came at 400 ms, so the 600 ms read timeout ends it at about 1000 ms (not 600 ms after the head).
    assert.ok(elapsed >= 950 && elapsed < 4000, `cut after ${elapsed} ms`);
  });

  test('a GOAWAY drains the connection: the request in flight finishes, new ones go to a new connection', async () => {
    const holding = fetch(`${portico.url}/plain/hold`).then(async (r) => ({ status: r.status, text: await r.text() }));
    await plain.heldArrived;
    const [session] = [...plain.sessions];
    // A graceful GOAWAY (NO_ERROR, last stream id: the held one's), then close: the held stream may finish.
    session!.goaway(http2.constants.NGHTTP2_NO_ERROR, plain.heldIds[0]!);
    session!.close();
    const during = await Promise.all(Array.from({ length: 5 }, (_, i) => fetch(`${portico.url}/plain/after${i}`).then((r) => r.text())));
    during.forEach((text, i) => assert.match(text, new RegExp(`^plain GET /after${i} `)));
    plain.held.shift()!();
    const held = await holding;
    assert.equal(held.status, 200);
    assert.equal(held.text, 'released');
    // The drained connection closed once its stream ended; the new one stays.
    if (plain.sessions.has(session!)) await within('the drained session to close', new Promise((resolve) => session!.once('close', resolve)));
    assert.equal(plain.sessions.has(session!), false);
    assert.ok(plain.sessions.size >= 1);
  });

  test('max_concurrent_streams and connections bound the streams: 2 x 2 in flight on 2 connections, the 5th waits for one', async () => {
    const answers: Array<Promise<string>> = [];
    for (let i = 0; i < 5; i++) answers.push(fetch(`${portico.url}/limited/hold`).then((r) => r.text()));
    for (let i = 0; i < 200 && limited.held.length < 4; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(limited.held.length, 4);
    assert.equal(limited.sessions.size, 2);
    // The fifth is held by Portico (its queue), not sent: releasing one lets it through.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(limited.held.length, 4);
    limited.held.shift()!();
    for (let i = 0; i < 200 && limited.held.length < 4; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(limited.held.length, 4);
    while (limited.held.length > 0) limited.held.shift()!();
    assert.deepEqual(await Promise.all(answers), Array(5).fill('released'));
    assert.equal(limited.sessions.size, 2);
  });

  test('each HTTP/2 connection is sent a PING every ping_interval (liveness)', async () => {
    await fetch(`${portico.url}/plain/ping`).then((r) => r.text());
    const session = [...plain.sessions].at(-1)!;
    const pings = await within(
      'two PINGs from Portico',
      new Promise<number>((resolve) => {
        let n = 0;
        session.on('ping', () => {
          if (++n === 2) resolve(n);
        });
      }),
    );
    assert.equal(pings, 2);
  });

  test('a connection whose server stops answering PINGs is closed at ping_timeout: its request fails at once (502), not at response_header', async () => {
    // An HTTP/2 server that sends its SETTINGS and then nothing: no answer, no PING ACK.
    const silent = net.createServer((socket) => {
      socket.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]));
      socket.on('data', () => undefined);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as AddressInfo).port;
    const mute = await startPortico(`
upstreams:
  mute:
    servers: ["h2c://127.0.0.1:${port}"]
    http2: { ping_interval: 100ms, ping_timeout: 100ms }
    timeouts: { response_header: 30s }
    retries: 0
sites:
  - routes: [{ path: /, proxy: { upstream: mute } }]
`);
    try {
      const started = Date.now();
      const res = await within('the answer', fetch(`${mute.url}/x`));
      assert.equal(res.status, 502);
      assert.ok(Date.now() - started < 5000, `answered after ${Date.now() - started} ms`);
    } finally {
      await mute.stop();
      silent.close();
    }
  });

  test("stopping Portico closes its HTTP/2 connections to the app (nothing left behind)", async () => {
    const app = await startH2App('stopped', false);
    const own = await startPortico(`
upstreams:
  app:
    servers: ["h2c://127.0.0.1:${app.port}"]
    health: { interval: 50ms }
sites:
  - routes: [{ path: /, proxy: { upstream: app } }]
`);
    try {
      assert.equal(await (await fetch(`${own.url}/x`)).status, 200);
      assert.ok(app.sessions.size >= 1);
      await own.stop();
      for (let i = 0; i < 200 && app.sessions.size > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(app.sessions.size, 0);
    } finally {
      await app.close();
    }
  });

  test('stream resets pass both ways: an HTTP/2 client cancel reaches the app as CANCEL, an app reset after its head reaches the client with its code', async () => {
    const app = await startH2App('resets', false);
    const own = await startPorticoH2(`
upstreams:
  app: { servers: ["h2c://127.0.0.1:${app.port}"] }
sites:
  - routes: [{ path: /, proxy: { upstream: app, buffer_response: 0 } }]
`);
    const client = await connectH2(own.origin);
    try {
      const held = client.request({ ':method': 'GET', ':path': '/hold' });
      held.on('error', () => undefined);
      await within('the held request to reach the app', app.heldArrived);
      held.close(http2.constants.NGHTTP2_CANCEL);
      for (let i = 0; i < 200 && app.resetCodes.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(app.resetCodes, [http2.constants.NGHTTP2_CANCEL]);

      const reset = client.request({ ':method': 'GET', ':path': '/reset' });
      reset.on('error', () => undefined);
      reset.on('data', () => undefined);
      const status = await within('the answer head', new Promise<number>((resolve) => reset.once('response', (h) => resolve(Number(h[':status'])))));
      assert.equal(status, 200);
      await within('the reset', new Promise((resolve) => reset.once('close', resolve)));
      assert.equal(reset.rstCode, http2.constants.NGHTTP2_INTERNAL_ERROR);
    } finally {
      client.close();
      await own.stop();
      await app.close();
    }
  });

  test('a WebSocket upgrade to an HTTP/2 app server is answered 502 (no extended CONNECT to apps), never sent as a plain GET', async () => {
    const socket = net.connect(portico.port, '127.0.0.1');
    socket.write('GET /plain/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    const head = await within(
      'the answer',
      new Promise<string>((resolve) => {
        let text = '';
        socket.on('data', (chunk) => {
          text += String(chunk);
          if (text.includes('\r\n\r\n')) resolve(text);
        });
      }),
    );
    socket.destroy();
    assert.match(head, /^HTTP\/1\.1 502 /);
    assert.equal(plain.paths.includes('/ws'), false);
  });

  test('a reload drains the previous config\'s HTTP/2 connections: a request in flight finishes, the old connection then closes', async () => {
    const app = await startH2App('reloaded', false);
    const yaml = (streams: number): string => `
upstreams:
  app:
    servers: ["h2c://127.0.0.1:${app.port}"]
    http2: { max_concurrent_streams: ${streams} }
sites:
  - routes: [{ path: /, proxy: { upstream: app } }]
`;
    const own = await startPortico(yaml(10));
    try {
      const holding = fetch(`${own.url}/hold`).then((r) => r.text());
      await within('the held request to reach the app', app.heldArrived);
      const [old] = [...app.sessions];
      await own.server.reload(parseConfig(`listen: ["127.0.0.1:${own.port}"]\nlog: { access: off }\n${yaml(20)}`, path.join(own.dir, 'portico.yaml'), own.dir));
      assert.match(await (await fetch(`${own.url}/after`)).text(), /^reloaded GET \/after /);
      assert.equal(app.sessions.has(old!), true);
      app.held.shift()!();
      assert.equal(await holding, 'released');
      for (let i = 0; i < 300 && app.sessions.has(old!); i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(app.sessions.has(old!), false);
    } finally {
      await own.stop();
      await app.close();
    }
  });
});
