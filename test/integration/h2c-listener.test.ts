/**
 * HTTP/2 without TLS on a plain listener (`http2: true`): a connection that opens with HTTP/2's preface (prior
 * knowledge, h2c: gRPC's insecure channels) speaks HTTP/2, any other HTTP/1.1, on the same port. A listener
 * without it tells an HTTP/2 client so in HTTP/2 (GOAWAY HTTP_1_1_REQUIRED).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { ERROR, FRAME, getFields, RawH2 } from '../helpers/h2-frames.js';
import { MAX_MESSAGE, startGrpcApp, testService, unary, type GrpcApp, type TestClient } from '../helpers/grpc.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { within } from '../helpers/within.js';

/** A GET over h2c (prior knowledge) to `port`: status, body and head. */
async function h2cGet(port: number, path: string): Promise<{ status: number; body: string; headers: http2.IncomingHttpHeaders }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  try {
    return await within(
      'an h2c answer',
      new Promise((resolve, reject) => {
        const stream = session.request({ ':path': path, ':authority': 'a.example' });
        let body = '';
        let headers: http2.IncomingHttpHeaders = {};
        stream.on('response', (h) => (headers = h));
        stream.on('data', (chunk: Buffer) => (body += chunk.toString()));
        stream.on('end', () => resolve({ status: Number(headers[':status']), body, headers }));
        stream.on('error', reject);
      }),
    );
  } finally {
    session.close();
  }
}

/** A GET over HTTP/1.1 to `port`. */
function http1Get(port: number, path: string): Promise<{ status: number; body: string; version: string }> {
  return within(
    'an HTTP/1.1 answer',
    new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path, headers: { host: 'a.example' }, agent: false }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, body, version: res.httpVersion }));
        })
        .on('error', reject);
    }),
  );
}

describe('HTTP/2 by prior knowledge (h2c) on a plain listener', () => {
  let app: GrpcApp;
  let portico: RunningPortico;
  let h2cPort: number;
  let plainPort: number;
  let client: TestClient;

  before(async () => {
    app = await startGrpcApp('app');
    portico = await startPortico(`
listen:
  - { addr: "127.0.0.1:0", http2: true, header_timeout: 1s }
  - "127.0.0.1:0"
upstreams:
  grpc: { servers: ["h2c://127.0.0.1:${app.port}"] }
sites:
  - routes:
      - { path: /hello, respond: { body: "hello" } }
      - { path: /scheme, redirect: { to: "$scheme://$host/x", status: 302 } }
      - { path: /, proxy: { upstream: grpc } }
`);
    h2cPort = portico.server.addresses[0]!.port;
    plainPort = portico.server.addresses[1]!.port;
    const Client = grpc.makeGenericClientConstructor(testService, 'Test');
    client = new Client(`127.0.0.1:${h2cPort}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX_MESSAGE,
      'grpc.max_send_message_length': MAX_MESSAGE,
    }) as unknown as TestClient;
  });

  after(async () => {
    client?.close();
    await portico?.stop();
    await app?.stop();
  });

  test('an insecure gRPC client (grpc-js) calls through a plain listener with http2: unary and server streaming, trailers intact', async () => {
    const { reply, trailers } = await unary(client, 'echo', Buffer.from('plain'));
    assert.equal(reply.toString(), 'app:plain');
    assert.deepEqual(trailers.get('x-served-by'), ['app']);
    const messages: string[] = [];
    for await (const message of client.count!(Buffer.from('3')) as AsyncIterable<Buffer>) messages.push(message.toString());
    assert.deepEqual(messages, ['app:0', 'app:1', 'app:2']);
    const err = (await unary(client, 'echo', Buffer.from('fail')).then(
      () => assert.fail('the call succeeded'),
      (e: unknown) => e,
    )) as grpc.ServiceError;
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  });

  test('the same port answers HTTP/2 with prior knowledge and HTTP/1.1, each as the scheme http', async () => {
    const h2 = await h2cGet(h2cPort, '/hello');
    assert.equal(h2.status, 200);
    assert.equal(h2.body, 'hello');
    assert.equal((await h2cGet(h2cPort, '/scheme')).headers.location, 'http://a.example/x');
    const h1 = await http1Get(h2cPort, '/hello');
    assert.deepEqual(h1, { status: 200, body: 'hello', version: '1.1' });
  });

  test('a client whose preface comes in two pieces is still spoken to in HTTP/2', async () => {
    const raw = await RawH2.openCleartext(h2cPort, 5);
    try {
      await raw.write(raw.headers(1, getFields('/hello')));
      assert.deepEqual(await raw.answer(1), { status: 200 });
    } finally {
      raw.close();
    }
  });

  test('a client that resets its connection while its first bytes are read (a preface begun) leaves Portico serving', async () => {
    const socket = net.connect({ host: '127.0.0.1', port: h2cPort });
    socket.on('error', () => undefined);
    await within('the connection', new Promise((resolve) => socket.once('connect', resolve)));
    await new Promise<void>((resolve) => socket.write('PRI * HTTP', () => resolve()));
    // A moment for the server to read those bytes on their own: the reset then comes while it waits for the rest.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.resetAndDestroy();
    await within('the reset', closed);
    // The server noticed the reset (a read error) and goes on.
    const { reply } = await unary(client, 'echo', Buffer.from('after reset'));
    assert.equal(reply.toString(), 'app:after reset');
    assert.equal((await http1Get(h2cPort, '/hello')).body, 'hello');
  });

  test('a connection that says nothing is closed at header_timeout, as a silent HTTP/1.1 one', async () => {
    const socket = net.connect({ host: '127.0.0.1', port: h2cPort });
    socket.on('error', () => undefined);
    const started = Date.now();
    await within('the silent connection to be closed', new Promise((resolve) => socket.once('close', resolve)), 5000);
    assert.ok(Date.now() - started >= 900, `closed after ${Date.now() - started} ms`);
  });

  test('a plain listener without http2 answers an HTTP/2 client in HTTP/2: GOAWAY HTTP_1_1_REQUIRED saying how to turn it on', async () => {
    const raw = await RawH2.openCleartext(plainPort);
    try {
      await raw.write(raw.headers(1, getFields('/hello')));
      assert.ok(await raw.until(() => raw.goaway !== undefined), 'a GOAWAY came');
      assert.equal(raw.goaway, ERROR.HTTP_1_1_REQUIRED);
      const goaway = raw.frames.find((f) => f.type === FRAME.GOAWAY)!;
      assert.match(goaway.payload.subarray(8).toString(), /set http2: true/);
      assert.ok(await raw.until(() => raw.closed), 'the connection closed');
    } finally {
      raw.close();
    }
    // HTTP/1.1 there as ever.
    assert.equal((await http1Get(plainPort, '/hello')).body, 'hello');
  });
});

describe('request_timeout and gRPC streams', () => {
  // Other requests whose body takes longer are still reset at request_timeout: tls-limits.test.ts.
  test("a bidirectional gRPC call lasts past the listener's request_timeout (its requests follow its answers)", async () => {
    const app = await startGrpcApp('app');
    const portico = await startPortico(`
listen: [{ addr: "127.0.0.1:0", http2: true, request_timeout: 600ms }]
upstreams:
  grpc: { servers: ["h2c://127.0.0.1:${app.port}"] }
sites:
  - routes:
      - { path: /, proxy: { upstream: grpc } }
`);
    const Client = grpc.makeGenericClientConstructor(testService, 'Test');
    const client = new Client(`127.0.0.1:${portico.port}`, grpc.credentials.createInsecure()) as unknown as TestClient;
    try {
      const chat = client.chat!() as unknown as grpc.ClientDuplexStream<Buffer, Buffer>;
      const ended = new Promise<grpc.StatusObject>((resolve) => chat.on('status', resolve));
      chat.on('error', () => undefined);
      const started = Date.now();
      // One message after each answer, until the call is well past request_timeout.
      for (let i = 0; Date.now() - started < 1200 && i < 100; i++) {
        const answer = within('an answer', new Promise<string>((resolve) => chat.once('data', (d: Buffer) => resolve(d.toString()))));
        chat.write(Buffer.from(`m${i}`));
        assert.equal(await answer, `app heard m${i}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      chat.end();
      assert.equal((await within('the call to end', ended)).code, grpc.status.OK);
      assert.ok(Date.now() - started > 1000, 'the call lasted past request_timeout');
    } finally {
      client.close();
      await portico.stop();
      await app.stop();
    }
  });
});

describe('h2c behind the PROXY protocol', () => {
  test("a PROXY header, then HTTP/2's preface: the connection speaks HTTP/2 with the PROXY header's client address", async () => {
    const portico = await startPortico(`
listen: [{ addr: "127.0.0.1:0", http2: true, proxy_protocol: true }]
trusted_proxies: ["127.0.0.1"]
sites:
  - routes: [{ path: /, redirect: { to: "http://a.example/$remote_addr", status: 302 } }]
`);
    // Node's client writes its preface after the PROXY header on the same socket.
    const session = http2.connect(`http://127.0.0.1:${portico.port}`, {
      createConnection: () => {
        const socket = net.connect({ host: '127.0.0.1', port: portico.port });
        socket.write('PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n');
        return socket;
      },
    });
    session.on('error', () => undefined);
    try {
      const head = await within(
        'the answer',
        new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
          const stream = session.request({ ':path': '/' });
          stream.on('response', resolve);
          stream.on('error', reject);
          stream.resume();
        }),
      );
      assert.equal(head[':status'], 302);
      assert.equal(head.location, 'http://a.example/203.0.113.7');
    } finally {
      session.close();
      await portico.stop();
    }
  });
});

describe('a reload that turns http2 on and off on a plain listener', () => {
  test('new connections follow the reloaded setting; an HTTP/2 session opened before turning it off serves on', async () => {
    const yaml = (http2: boolean): string => `listen: [{ addr: "127.0.0.1:PORT", http2: ${http2} }]\nlog: { access: off }\nsites:\n  - routes: [{ path: /, respond: { body: "ok" } }]\n`;
    const portico = await startPortico(yaml(false).replace('PORT', '0'));
    const reload = (http2: boolean) => portico.server.reload(parseConfig(yaml(http2).replace('PORT', String(portico.port)), path.join(portico.dir, 'portico.yaml'), portico.dir));
    try {
      const refused = await RawH2.openCleartext(portico.port);
      assert.ok(await refused.until(() => refused.goaway !== undefined), 'HTTP/2 refused before');
      refused.close();
      await reload(true);
      assert.equal((await h2cGet(portico.port, '/')).body, 'ok');
      const session = http2.connect(`http://127.0.0.1:${portico.port}`);
      session.on('error', () => undefined);
      await within('the session', new Promise((resolve) => session.once('remoteSettings', resolve)));
      await reload(false);
      const stream = session.request({ ':path': '/' });
      let body = '';
      stream.on('data', (chunk: Buffer) => (body += chunk.toString()));
      await within('the answer on the open session', new Promise((resolve) => stream.once('end', resolve)));
      assert.equal(body, 'ok');
      session.close();
      const again = await RawH2.openCleartext(portico.port);
      assert.ok(await again.until(() => again.goaway !== undefined), 'HTTP/2 refused again on a new connection');
      again.close();
      assert.equal((await http1Get(portico.port, '/')).body, 'ok');
    } finally {
      await portico.stop();
    }
  });
});

describe('stopping a plain listener with HTTP/2 sessions', () => {
  test('a connection that has sent nothing yet is closed at once by a graceful stop, as an idle HTTP/1.1 one is', async () => {
    const portico = await startPortico(`
listen: [{ addr: "127.0.0.1:0", http2: true }]
sites:
  - routes: [{ path: /, respond: { body: "ok" } }]
`);
    const socket = net.connect({ host: '127.0.0.1', port: portico.port });
    socket.on('error', () => undefined);
    await within('the connection', new Promise((resolve) => socket.once('connect', resolve)));
    const closed = new Promise((resolve) => socket.once('close', resolve));
    const started = Date.now();
    // A grace period far longer than the test: only closing the silent connection at once ends the stop early.
    await within('the stop', portico.server.stop(20_000), 5000);
    await within('the silent connection to close', closed);
    assert.ok(Date.now() - started < 3000, `stopped after ${Date.now() - started} ms`);
    await portico.stop();
  });

  test('an open h2c session gets GOAWAY and the stop completes (nothing left behind)', async () => {
    const portico = await startPortico(`
listen: [{ addr: "127.0.0.1:0", http2: true }]
sites:
  - routes: [{ path: /, respond: { body: "ok" } }]
`);
    const session = http2.connect(`http://127.0.0.1:${portico.port}`);
    session.on('error', () => undefined);
    await within('the session to be up', new Promise((resolve) => session.once('remoteSettings', resolve)));
    const goaway = new Promise((resolve) => session.once('goaway', resolve));
    const closed = new Promise((resolve) => session.once('close', resolve));
    await within('Portico to stop', portico.stop());
    await within('the GOAWAY', goaway);
    await within('the session to close', closed);
  });
});
