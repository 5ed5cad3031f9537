/**
 * gRPC-Web: a browser-style call (`application/grpc-web+proto`, or `-text`: base64) over HTTP/1.1 goes to a
 * @grpc/grpc-js app as gRPC over HTTP/2, and its answer comes back as gRPC-Web, the status in a trailers frame.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startGrpcApp, type GrpcApp } from '../helpers/grpc.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';

/** One gRPC message frame (uncompressed). */
function frame(message: Buffer, flag = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** The frames of a gRPC-Web body: messages, and the trailers frame's fields. */
function frames(body: Buffer): { messages: string[]; trailers: Record<string, string> } {
  const messages: string[] = [];
  const trailers: Record<string, string> = {};
  for (let i = 0; i + 5 <= body.length; ) {
    const length = body.readUInt32BE(i + 1);
    const payload = body.subarray(i + 5, i + 5 + length);
    if ((body[i]! & 0x80) !== 0) {
      for (const line of payload.toString('latin1').split('\r\n')) {
        const colon = line.indexOf(':');
        if (colon > 0) trailers[line.slice(0, colon)] = line.slice(colon + 1).trim();
      }
    } else messages.push(payload.toString());
    i += 5 + length;
  }
  return { messages, trailers };
}

describe('gRPC-Web through Portico', () => {
  let app: GrpcApp;
  let portico: RunningPortico;

  before(async () => {
    app = await startGrpcApp('app');
    portico = await startPortico(`
caches: { main: { memory: 16MB } }
upstreams:
  grpc:
    servers: ["h2c://127.0.0.1:${app.port}"]
  down:
    servers: ["h2c://127.0.0.1:1"]
sites:
  - routes:
      - { path: /down/, proxy: { upstream: down } }
      - { path: /cached/, proxy: { upstream: grpc, strip_prefix: true, cache: { zone: main, default_ttl: 1m } } }
      - { path: /, proxy: { upstream: grpc } }
`);
  });

  after(async () => {
    await portico?.stop();
    await app?.stop();
  });

  test('a binary gRPC-Web call over HTTP/1.1 is answered as gRPC-Web: the message, then the trailers frame with grpc-status 0', async () => {
    const res = await fetch(`${portico.url}/portico.Test/Echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
      body: new Uint8Array(frame(Buffer.from('hi'))),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/grpc-web+proto');
    const { messages, trailers } = frames(Buffer.from(await res.arrayBuffer()));
    assert.deepEqual(messages, ['app:hi']);
    assert.equal(trailers['grpc-status'], '0');
    assert.equal(trailers['x-served-by'], 'app');
  });

  test('a gRPC-Web call on a cached route passes through with its trailers frame (the app status), never stored', async () => {
    for (const word of ['one', 'one']) {
      const res = await fetch(`${portico.url}/cached/portico.Test/Echo`, {
        method: 'POST',
        headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
        body: new Uint8Array(frame(Buffer.from(word))),
      });
      const { messages, trailers } = frames(Buffer.from(await res.arrayBuffer()));
      assert.deepEqual(messages, [`app:${word}`]);
      assert.equal(trailers['grpc-status'], '0');
      assert.equal(trailers['x-served-by'], 'app');
    }
  });

  test('a gRPC-Web text call (base64 both ways) is decoded for the app and its answer encoded back', async () => {
    const res = await fetch(`${portico.url}/portico.Test/Echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/grpc-web-text', accept: 'application/grpc-web-text' },
      body: frame(Buffer.from('text')).toString('base64'),
    });
    assert.equal(res.headers.get('content-type'), 'application/grpc-web-text+proto');
    const text = await res.text();
    // Each chunk is base64 on its own (padded): decode group by group.
    const bytes = Buffer.concat((text.match(/[A-Za-z0-9+/]+=*/g) ?? []).map((part) => Buffer.from(part, 'base64')));
    const { messages, trailers } = frames(bytes);
    assert.deepEqual(messages, ['app:text']);
    assert.equal(trailers['grpc-status'], '0');
  });

  test("an app's error status reaches a gRPC-Web client in the trailers frame, with its message", async () => {
    const res = await fetch(`${portico.url}/portico.Test/Echo`, { method: 'POST', headers: { 'content-type': 'application/grpc-web+proto' }, body: new Uint8Array(frame(Buffer.from('fail'))) });
    const body = Buffer.from(await res.arrayBuffer());
    const status = res.headers.get('grpc-status') ?? frames(body).trailers['grpc-status'];
    const message = res.headers.get('grpc-message') ?? frames(body).trailers['grpc-message'];
    assert.equal(status, '3');
    assert.equal(decodeURIComponent(message!), 'bad input: fail');
  });

  test("Portico's own error to a gRPC-Web client is a gRPC-Web status (14 UNAVAILABLE in the headers), not a page", async () => {
    const res = await fetch(`${portico.url}/down/x.Y/Z`, { method: 'POST', headers: { 'content-type': 'application/grpc-web+proto' }, body: new Uint8Array(frame(Buffer.alloc(0))) });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/grpc-web+proto');
    assert.equal(res.headers.get('grpc-status'), '14');
    assert.equal((await res.arrayBuffer()).byteLength, 0);
  });
});
