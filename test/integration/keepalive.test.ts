/**
 * keepalive_timeout: idle client connections are closed by Portico's sweeper (src/server/keepalive.ts), not by
 * Node's per-response timer. Busy connections — a request waiting for a slow upstream, a WebSocket tunnel, a
 * client sending requests — must never be cut by it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { RawConnection, hasHead, statusOf } from './proxy-support.js';
import { sweepInterval } from '../../src/server/keepalive.js';

const TIMEOUT = 400;
let portico: RunningPortico;
let backend: TestUpstream;

before(async () => {
  backend = await startUpstream((req, res) => {
    const delay = req.url === '/slow' ? 3 * TIMEOUT : 0;
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`done ${req.url}`);
    }, delay);
  });
  // A tunnel that echoes raw bytes after the handshake (no WebSocket framing is needed to test idleness).
  backend.server.on('upgrade', (_req: IncomingMessage, socket: Duplex) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.on('data', (chunk: Buffer) => socket.write(chunk));
    socket.on('error', () => {});
  });
  portico = await startPortico(`listen:
  - { addr: "127.0.0.1:0", keepalive_timeout: ${TIMEOUT}ms }
sites:
  - routes:
      - path: /app/
        proxy: { url: "${backend.url}", strip_prefix: true }
      - path: /
        respond: { body: "ok" }
`);
});

after(async () => {
  await portico.stop();
  await backend.stop();
});

/** Sends one request on `conn` and waits for its whole answer (Content-Length or chunked). */
async function exchange(conn: RawConnection, path: string): Promise<string> {
  const start = conn.received.length;
  conn.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  const received = await conn.until((buf) => {
    const text = buf.subarray(start).toString('latin1');
    const end = text.indexOf('\r\n\r\n');
    if (end === -1) return false;
    if (/\r\ntransfer-encoding: chunked\r\n/i.test(text.slice(0, end + 2))) return text.endsWith('\r\n0\r\n\r\n');
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(text)?.[1] ?? 0);
    return text.length >= end + 4 + length;
  }, 5000);
  return received.subarray(start).toString('latin1');
}

describe('keepalive_timeout', () => {
  test('an idle keep-alive connection is closed after keepalive_timeout, and not before it', async () => {
    const conn = await RawConnection.open(portico.port);
    try {
      assert.equal(statusOf(await exchange(conn, '/')), 200);
      const answered = Date.now();
      assert.equal(await conn.waitClosed(TIMEOUT - 100), false, 'closed before the timeout');
      assert.equal(await conn.waitClosed(4000), true, 'still open long after the timeout');
      const idle = Date.now() - answered;
      assert.ok(idle >= TIMEOUT - 10, `closed after ${idle} ms`);
      assert.ok(idle < TIMEOUT + sweepInterval(TIMEOUT) + 1500, `closed only after ${idle} ms`);
    } finally {
      conn.close();
    }
  });

  test('a connection that keeps sending requests more often than the timeout stays open', async () => {
    const conn = await RawConnection.open(portico.port);
    try {
      for (let i = 0; i < 8; i++) {
        assert.equal(statusOf(await exchange(conn, '/')), 200, `request ${i + 1}`);
        await new Promise((resolve) => setTimeout(resolve, TIMEOUT / 2));
      }
      assert.equal(conn.closed, false);
    } finally {
      conn.close();
    }
  });

  test('a request waiting longer than the timeout for a slow upstream is answered, not cut as idle', async () => {
    const conn = await RawConnection.open(portico.port);
    try {
      const answer = await exchange(conn, '/app/slow');
      assert.equal(statusOf(answer), 200);
      assert.match(answer, /\r\ndone \/slow\r\n/);
    } finally {
      conn.close();
    }
  });

  test('a WebSocket tunnel quiet for longer than the timeout stays open', async () => {
    const conn = await RawConnection.open(portico.port);
    try {
      conn.write(
        'GET /app/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      const head = (await conn.until(hasHead)).toString('latin1');
      assert.equal(statusOf(head), 101, head);
      assert.equal(await conn.waitClosed(3 * TIMEOUT), false, 'the quiet tunnel was closed');
      const start = conn.received.length;
      conn.write('ping');
      await conn.until((buf) => buf.subarray(start).toString() === 'ping');
    } finally {
      conn.close();
    }
  });
});
