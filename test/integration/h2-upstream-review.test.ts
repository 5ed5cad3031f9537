/**
 * Regression tests from the review of the HTTP/2 upstream transport (issue 20), against real Node http2 servers on
 * port 0: a slow client's backpressure is not an idle app (the read timeout).
 */
import assert from 'node:assert/strict';
import http2, { type Http2Server } from 'node:http2';
import { type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';

const SIZE = 4 * 1024 * 1024;

describe('HTTP/2 upstream review regressions', () => {
  let app: Http2Server;
  let portico: RunningPortico;

  before(async () => {
    app = http2.createServer();
    app.on('stream', (stream) => {
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
      - { path: /, proxy: { upstream: h2, buffer_response: 0 } }
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
});
