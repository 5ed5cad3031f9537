/**
 * Regression tests from the review of the HTTP/2 upstream transport (issue 20), against real Node http2 servers on
 * port 0: a slow client's backpressure is not an idle app (the read timeout).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import http2, { type Http2Server } from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { H2Dispatcher } from '../../src/upstream/h2-transport.js';
import { rawRequest } from '../helpers/raw-client.js';
import { within } from '../helpers/within.js';

const SIZE = 4 * 1024 * 1024;

describe('HTTP/2 upstream review regressions', () => {
  let app: Http2Server;
  let portico: RunningPortico;
  /** Streams of /refuse-* so far (the first of each call is refused with REFUSED_STREAM). */
  let refusals = 0;
  let onRefusal: () => void = () => undefined;
  let onHeldClose: (rstCode: number) => void = () => undefined;

  before(async () => {
    app = http2.createServer();
    app.on('stream', (stream, headers) => {
      // A refused stream emits its own close code as an error on the app's side.
      stream.on('error', () => undefined);
      const path = String(headers[':path']);
      if (path.startsWith('/refuse-')) {
        // The first stream of each call is refused unprocessed; the next is answered (or held, never answered).
        if (refusals++ % 2 === 0) {
          stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
          return void onRefusal();
        }
        if (path === '/refuse-hold') return void stream.once('close', () => onHeldClose(stream.rstCode ?? 0));
        let bytes = 0;
        stream.on('data', (chunk: Buffer) => (bytes += chunk.length));
        stream.on('end', () => {
          stream.respond({ ':status': 200, 'content-type': 'text/plain' });
          stream.end(`${headers['content-type']} ${bytes}`);
        });
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'content-length': String(SIZE) });
      stream.end(Buffer.alloc(SIZE, 'a'));
    });
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    portico = await startPortico(`
upstreams:
  h2:
    servers: ["h2c://127.0.0.1:${(app.address() as AddressInfo).port}"]
    timeouts: { read: 300ms }
sites:
  - routes:
      - { path: /, proxy: { upstream: h2, buffer_response: 0, request_buffering: false } }
`);
  });
  after(async () => {
    await portico?.stop();
    await new Promise((resolve) => app.close(resolve));
  });

  test('an answer paused by a slow client (not by the app) is not cut by the read timeout', async () => {
    // Stalled longer than the route's read timeout: Portico's send buffers fill and the app is paused by backpressure.
    const res = await rawRequest(portico.port, 'GET /big HTTP/1.0\r\nHost: x\r\n\r\n', { stallMs: 1200 });
    assert.equal(res.status, 200);
    assert.equal(Buffer.byteLength(res.body, 'latin1'), SIZE);
  });

  test('a streamed body whose stream the server refused unprocessed (mid-body) is sent again whole on another stream (a plain body and a gRPC call alike)', async () => {
    for (const type of ['application/octet-stream', 'application/grpc']) {
      const refused = new Promise<void>((resolve) => (onRefusal = resolve));
      const req = http.request({ port: portico.port, host: '127.0.0.1', method: 'POST', path: '/refuse-once', headers: { 'content-type': type, 'transfer-encoding': 'chunked' } });
      const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
        req.once('error', reject);
        req.once('response', (res) => {
          let text = '';
          res.setEncoding('latin1');
          res.on('data', (chunk: string) => (text += chunk));
          res.once('end', () => resolve({ status: res.statusCode!, text }));
        });
      });
      req.write(Buffer.alloc(20_000, 'a'));
      // The rest of the body comes after the refusal: the new stream gets the start again, then the rest.
      await within('the app to refuse the first stream', refused);
      req.end(Buffer.alloc(20_000, 'b'));
      const { status, text } = await within('the answer', answer);
      assert.equal(status, 200, type);
      assert.equal(text, `${type} 40000`);
    }
  });

  test('a request sent again after a refused stream is still cancelled on the app when its client leaves', async () => {
    const held = new Promise<number>((resolve) => (onHeldClose = resolve));
    const refused = new Promise<void>((resolve) => (onRefusal = resolve));
    const req = http.request({ port: portico.port, host: '127.0.0.1', method: 'GET', path: '/refuse-hold' });
    req.on('error', () => undefined);
    req.end();
    await within('the app to refuse the first stream', refused);
    // The second stream reaches the app and is held; the client then leaves.
    await within('the held stream to arrive', new Promise<void>((resolve) => app.once('stream', () => setImmediate(resolve))));
    req.destroy();
    assert.equal(await within('the app to see the held stream end', held, 3000), http2.constants.NGHTTP2_CANCEL);
  });

  test('destroy() cuts a connection still being made: its socket closes and its request fails at once', async () => {
    // A server that accepts and never speaks HTTP/2 (no SETTINGS): the connection stays "being made".
    const sockets: Socket[] = [];
    let accepted: (socket: Socket) => void = () => undefined;
    const arrived = new Promise<Socket>((resolve) => (accepted = resolve));
    const mute = net.createServer((socket) => {
      sockets.push(socket);
      accepted(socket);
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    const dispatcher = new H2Dispatcher({
      origin: `http://127.0.0.1:${(mute.address() as AddressInfo).port}`,
      tls: undefined,
      fallback: undefined,
      connectTimeout: 20_000,
      headersTimeout: 20_000,
      bodyTimeout: 20_000,
      idleTimeout: 20_000,
      connections: 1,
      maxConcurrentStreams: 10,
      pingInterval: 0,
      pingTimeout: 1000,
    });
    try {
      const outcome = dispatcher.request({ path: '/', method: 'GET' }).then(
        () => 'answered',
        (err: { code?: string }) => err.code,
      );
      const socket = await within('the connection to arrive', arrived);
      const closed = new Promise((resolve) => socket.once('close', resolve));
      await within('destroy() to resolve', dispatcher.destroy());
      assert.equal(await within('the request to fail', outcome, 2000), 'UND_ERR_DESTROYED');
      await within('the connection being made to be closed', closed, 2000);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => mute.close(resolve));
    }
  });
});
