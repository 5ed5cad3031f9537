/**
 * send_timeout over HTTP/2 cuts a stream that makes no progress, never one whose client reads slowly but steadily:
 * such a reader leaves the same number of bytes waiting at every look (one chunk being sent, the next queued),
 * so progress has to be seen in what goes out, not in how much waits.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connectH2, startPorticoH2, type RunningH2 } from '../helpers/h2.js';

/** An answer that takes a slow reader several send_timeouts to read. */
const SIZE = 768 * 1024;
const BODY = randomBytes(SIZE);

describe('HTTP/2 send_timeout and a slow but steady reader', () => {
  let app: http.Server;
  let portico: RunningH2;

  before(async () => {
    app = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) });
      res.end(BODY);
    });
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
    portico = await startPorticoH2(
      `upstreams:\n  app: { servers: ["${origin}"] }\nsites:\n  - routes:\n` +
        `      - path: /\n        proxy: { upstream: app }\n`,
      {},
      'true, send_timeout: 1s',
    );
  });
  after(async () => {
    await portico?.stop();
    await new Promise<void>((resolve) => app.close(() => resolve()));
  });

  // The default config: the answer is held by Portico and sent in equal pieces, the case where the bytes waiting
  // look the same at every sweep.
  for (const path of ['/buffered']) {
    test(`a client reading ${path} steadily but slowly, for longer than send_timeout, gets the whole answer`, { timeout: 30_000 }, async (t) => {
      const session = await connectH2(portico.origin);
      try {
        const started = Date.now();
        const { status, received, reset } = await new Promise<{ status: number; received: number; reset: number | undefined }>((resolve, reject) => {
          const stream = session.request({ ':path': path });
          let status = 0;
          let received = 0;
          stream.on('response', (headers) => (status = Number(headers[':status'])));
          // Reads one DATA frame's worth, then nothing for 80 ms: about 200 KB/s, steadily. (A chunk taken from
          // the app is the unit of progress: a reader slower than about one chunk per send_timeout is cut.)
          stream.on('data', (chunk: Buffer) => {
            received += chunk.length;
            stream.pause();
            setTimeout(() => stream.resume(), 80);
          });
          stream.once('end', () => resolve({ status, received, reset: undefined }));
          stream.once('close', () => resolve({ status, received, reset: stream.rstCode }));
          stream.once('error', reject);
        });
        t.diagnostic(`read ${received} bytes in ${Date.now() - started} ms (send_timeout 1 s)`);
        assert.equal(reset, undefined, `the stream was reset (code ${reset}) after ${received} bytes`);
        assert.equal(status, 200);
        assert.equal(received, SIZE);
        assert.ok(Date.now() - started > 2000, 'the read lasted longer than send_timeout');
      } finally {
        session.close();
      }
    });
  }
});
