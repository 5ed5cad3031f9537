/**
 * send_timeout (src/connections/keepalive.ts): a client that takes nothing of its answer for send_timeout is
 * disconnected — a large static file or a large proxied answer — and the upstream request behind it is let go.
 * A slow reader that keeps taking bytes, and an idle keep-alive connection, are not cut by it.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { sweepInterval } from '../../src/connections/keepalive.js';
import { trackServerSockets } from './proxy-support.js';
import { testPki } from './tls-support.js';

const SEND_TIMEOUT = 800;
/** Larger than what loopback socket buffers hold (a few MB), so a client that does not read stalls the writer. */
const SIZE = 32 * 1024 * 1024;
/** The upper bound: filling the socket buffers, then the timeout, then up to two sweeps; generous for loaded CI. */
const MARGIN = 6000;

let portico: RunningPortico;
let backend: TestUpstream;
const tracker = trackServerSockets();
/** Upstream answers the backend started, and whether each was cut (closed before finishing). */
const upstreamAnswers: Array<{ finished: boolean; closed: boolean }> = [];

before(async () => {
  backend = await startUpstream((_req, res) => {
    const state = { finished: false, closed: false };
    upstreamAnswers.push(state);
    res.on('finish', () => (state.finished = true));
    res.on('close', () => (state.closed = true));
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) });
    // Written with backpressure, as an app would.
    const chunk = Buffer.alloc(64 * 1024, 'p');
    let left = SIZE;
    const pump = () => {
      while (left > 0) {
        left -= chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  portico = await startPortico(
    `listen:
  - { addr: "127.0.0.1:0", send_timeout: ${SEND_TIMEOUT}ms, keepalive_timeout: 30s }
sites:
  - routes:
      - path: /app/   # unbuffered: the client's pace reaches the app, until send_timeout lets it go
        proxy: { url: "${backend.url}", strip_prefix: true, buffer_response: 0 }
      - path: /
        static: { root: ./public }
`,
    { 'public/big.bin': Buffer.alloc(SIZE, 's'), 'public/small.txt': 'small' },
  );
});

after(async () => {
  tracker.stop();
  await portico.stop();
  await backend.stop();
});

/** Connects, sends a request and never reads: resolves with how long after the request Portico closed its side. */
async function requestAndNeverRead(path: string): Promise<number> {
  const socket = net.connect(portico.port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.pause();
  const sent = Date.now();
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  try {
    // A client that never reads sees no FIN behind the data it left in its buffer: Portico's side is watched.
    await tracker.closed(socket.localPort!, portico.port, SEND_TIMEOUT + MARGIN + 5000);
    return Date.now() - sent;
  } finally {
    socket.destroy();
  }
}

describe('send_timeout', () => {
  test('a client that never reads a large static file is disconnected after send_timeout, not before', async () => {
    const elapsed = await requestAndNeverRead('/big.bin');
    assert.ok(elapsed >= SEND_TIMEOUT, `closed after ${elapsed} ms`);
    assert.ok(elapsed < SEND_TIMEOUT + MARGIN, `closed only after ${elapsed} ms`);
  });

  test('a client that never reads a large proxied answer is disconnected, and the upstream request is let go', async () => {
    const before = upstreamAnswers.length;
    const elapsed = await requestAndNeverRead('/app/big');
    assert.ok(elapsed >= SEND_TIMEOUT, `closed after ${elapsed} ms`);
    assert.ok(elapsed < SEND_TIMEOUT + MARGIN, `closed only after ${elapsed} ms`);
    assert.equal(upstreamAnswers.length, before + 1);
    const answer = upstreamAnswers[before]!;
    const until = Date.now() + 5000;
    while (!answer.closed && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(answer.closed, true, 'the upstream connection was released');
    assert.equal(answer.finished, false, 'the upstream answer was cut, not sent in full');
  });

  test('a slow reader that keeps taking bytes more often than send_timeout gets the whole answer', async () => {
    const socket = net.connect(portico.port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    let closed = false;
    socket.once('close', () => (closed = true));
    // A rate limit: a budget of bytes per tick of a quarter of send_timeout; paused once it is spent.
    const TICK = SEND_TIMEOUT / 4;
    const BUDGET = 1024 * 1024;
    let received = 0;
    let budget = BUDGET;
    let slow = true;
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      budget -= chunk.length;
      if (slow && budget <= 0) socket.pause();
    });
    socket.write('GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n');
    const slowUntil = Date.now() + 4 * SEND_TIMEOUT;
    while (Date.now() < slowUntil && !closed) {
      await new Promise((resolve) => setTimeout(resolve, TICK));
      budget = BUDGET;
      socket.resume();
    }
    assert.equal(closed, false, `cut while reading slowly, after ${received} bytes`);
    assert.ok(received < SIZE * 0.75, `the reader was slow: ${received} of ${SIZE} bytes after the slow phase`);
    // Then at full speed: the rest arrives.
    slow = false;
    socket.resume();
    const until = Date.now() + 20_000;
    while (received < SIZE && !closed && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(received > SIZE, `received ${received} of ${SIZE} body bytes plus head`);
    assert.equal(closed, false);
    socket.destroy();
  });

  test('an idle keep-alive connection outlives send_timeout (it has nothing waiting to be sent)', async () => {
    const socket = net.connect(portico.port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    let closed = false;
    socket.once('close', () => (closed = true));
    socket.write('GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n');
    const until = Date.now() + 5000;
    while (!text.endsWith('small') && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.match(text, /^HTTP\/1\.1 200/);
    await new Promise((resolve) => setTimeout(resolve, 3 * SEND_TIMEOUT + 2 * sweepInterval(SEND_TIMEOUT)));
    assert.equal(closed, false, 'an idle connection was closed by the send timeout');
    socket.destroy();
  });

  test('over TLS too: a client that never reads a large file after its handshake is disconnected after send_timeout', async () => {
    const pki = await testPki();
    const certificate = await pki.issue(['localhost']);
    const secure = await startPortico(
      `listen:
  - { addr: "127.0.0.1:0", send_timeout: ${SEND_TIMEOUT}ms, tls: { cert: ./server.pem, key: ./server.key } }
sites:
  - routes:
      - path: /
        static: { root: ./public }
`,
      { 'server.pem': certificate.cert, 'server.key': certificate.key, 'public/big.bin': Buffer.alloc(SIZE, 't') },
    );
    try {
      const socket = tls.connect({ host: '127.0.0.1', port: secure.port, ca: pki.ca.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
      socket.on('error', () => {});
      await once(socket, 'secureConnect');
      socket.pause();
      const sent = Date.now();
      socket.write('GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n');
      await tracker.closed(socket.localPort!, secure.port, SEND_TIMEOUT + MARGIN + 5000);
      const elapsed = Date.now() - sent;
      socket.destroy();
      assert.ok(elapsed >= SEND_TIMEOUT, `closed after ${elapsed} ms`);
      assert.ok(elapsed < SEND_TIMEOUT + MARGIN, `closed only after ${elapsed} ms`);
    } finally {
      await secure.stop();
    }
  });
});
