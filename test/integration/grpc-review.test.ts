/**
 * Regression tests from the review of gRPC through Portico (issue 20): @grpc/grpc-js clients over Portico's TLS
 * listener, @grpc/grpc-js app servers behind it on h2c://.
 */
import assert from 'node:assert/strict';
import http2, { type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { grpcClient, startGrpcApp, unary, type GrpcApp, type TestClient } from '../helpers/grpc.js';
import { startPorticoH2, type RunningH2 } from '../helpers/h2.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';

/** One gRPC message frame (uncompressed). */
function frame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** A chunked HTTP/1.1 body's bytes (chunk framing taken off; trailers, if any, dropped). */
function dechunk(text: string): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; ; ) {
    const lineEnd = text.indexOf('\r\n', at);
    const size = parseInt(text.slice(at, lineEnd), 16);
    if (!(size > 0)) break;
    parts.push(Buffer.from(text.slice(lineEnd + 2, lineEnd + 2 + size), 'latin1'));
    at = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

describe('gRPC review regressions', () => {
  let app: GrpcApp;
  let portico: RunningH2;
  let client: TestClient;
  /** A plain HTTP/1.1 listener, for gRPC-Web. */
  let plain: RunningPortico;
  /** A bare HTTP/2 gRPC app that answers a head and one message, then nothing (it ignores deadlines). */
  let mute: Http2Server;

  before(async () => {
    app = await startGrpcApp('app');
    portico = await startPorticoH2(`
upstreams:
  grpc:
    servers: ["h2c://127.0.0.1:${app.port}"]
sites:
  - routes:
      - { path: /, proxy: { upstream: grpc } }
`);
    client = await grpcClient(portico.port);
    mute = http2.createServer();
    mute.on('stream', (stream) => {
      stream.on('error', () => undefined);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      stream.write(frame(Buffer.from('started')));
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    plain = await startPortico(`
upstreams:
  mute:
    servers: ["h2c://127.0.0.1:${(mute.address() as AddressInfo).port}"]
sites:
  - routes:
      - { path: /, proxy: { upstream: mute } }
`);
  });

  after(async () => {
    client?.close();
    await portico?.stop();
    await plain?.stop();
    await app?.stop();
    await new Promise((resolve) => mute?.close(resolve));
  });

  test('a deadline 30 days away (past a timer\'s 24.8 days) is not taken as passed: the call succeeds', async () => {
    // (grpc-js's own server reads so long a deadline wrongly, as it does from a direct client: not checked here.)
    const { reply } = await unary(client, 'echo', Buffer.from('x'), { deadline: Date.now() + 30 * 24 * 3600 * 1000 });
    assert.equal(reply.toString(), 'app:x');
  });

  test('a deadline of 3 days is passed on as what is left of it (past 8 digits of ms, the most grpc-timeout holds: in seconds)', async () => {
    const days3 = 3 * 24 * 3600 * 1000;
    const { reply } = await unary(client, 'echo', Buffer.from('deadline'), { deadline: Date.now() + days3 });
    const left = Number(reply.toString());
    assert.ok(left > days3 - 120_000 && left <= days3, `the app saw ${left} ms left`);
  });

  test('a gRPC-Web call whose deadline passes after its answer began ends with DEADLINE_EXCEEDED in its trailers frame', async () => {
    // The app answers a head and a message, then nothing; the 300 ms deadline passes in Portico's hands.
    const message = frame(Buffer.from('one'));
    const res = await rawRequest(
      plain.port,
      `POST /portico.Test/Stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nGrpc-Timeout: 300m\r\nContent-Length: ${message.length}\r\n\r\n${message.toString('latin1')}`,
    );
    assert.equal(res.status, 200);
    const body = dechunk(res.body);
    const frames: Array<{ flag: number; payload: string }> = [];
    for (let i = 0; i + 5 <= body.length; i += 5 + body.readUInt32BE(i + 1)) frames.push({ flag: body[i]!, payload: body.subarray(i + 5, i + 5 + body.readUInt32BE(i + 1)).toString('latin1') });
    assert.deepEqual(frames[0], { flag: 0, payload: 'started' });
    assert.equal(frames.at(-1)?.flag, 0x80, 'the last frame is the trailers frame');
    assert.match(frames.at(-1)!.payload, /^grpc-status:4\r\n/m);
  });
});
