/**
 * keepalive_timeout: idle client connections are closed by Portico's sweeper (src/connections/keepalive.ts), not by
 * Node's per-response timer. Busy connections — a request waiting for a slow upstream, a WebSocket tunnel, a
 * client sending requests — must never be cut by it.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { RawConnection, hasHead, statusOf } from './proxy-support.js';
import { sweepInterval } from '../../src/connections/keepalive.js';

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

/** A Portico with these listener options and one route for every path (`handler` in YAML flow form). */
function startWith(listenOptions: string, handler: string): Promise<RunningPortico> {
  return startPortico(`listen:
  - { addr: "127.0.0.1:0", ${listenOptions} }
sites:
  - routes:
      - path: /
        ${handler}
`);
}
const startAnswering = (listenOptions: string) => startWith(listenOptions, 'respond: { body: "ok" }');
const startProxying = (listenOptions: string, appUrl: string) => startWith(listenOptions, `proxy: { url: "${appUrl}" }`);

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
        await new Promise((resolve) => setTimeout(resolve, TIMEOUT / 4));
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

describe('keepalive_timeout against the other limits', () => {
  test('a request head that stalls is left to header_timeout (408), even when keepalive_timeout is shorter', async () => {
    const short = await startAnswering('keepalive_timeout: 200ms, header_timeout: 800ms');
    try {
      const conn = await RawConnection.open(short.port);
      try {
        assert.equal(statusOf(await exchange(conn, '/')), 200);
        const start = conn.received.length;
        conn.write('GET / HTTP/1.1\r\nHo');
        assert.equal(await conn.waitClosed(3000), true);
        assert.equal(statusOf(conn.received.subarray(start).toString('latin1')), 408, 'cut without an answer');
      } finally {
        conn.close();
      }
    } finally {
      await short.stop();
    }
  });

  test('keepalive_timeout: 0 turns keep-alive off: every answer says Connection: close and closes', async () => {
    const off = await startAnswering('keepalive_timeout: 0s');
    try {
      const conn = await RawConnection.open(off.port);
      try {
        const answer = await exchange(conn, '/');
        assert.equal(statusOf(answer), 200);
        assert.match(answer, /\r\nConnection: close\r\n/i);
        assert.equal(await conn.waitClosed(2000), true);
      } finally {
        conn.close();
      }
      // A request pipelined behind the first is not run: its answer could never be sent.
      const app = await startUpstream('counted');
      const proxied = await startProxying('keepalive_timeout: 0s', app.url);
      const pipelined = await RawConnection.open(proxied.port);
      try {
        pipelined.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n');
        assert.equal(await pipelined.waitClosed(2000), true);
        assert.equal(pipelined.received.toString('latin1').match(/HTTP\/1\.1 200/g)?.length, 1);
        assert.deepEqual(app.requests.map((r) => r.url), ['/a']);
      } finally {
        pipelined.close();
        await proxied.stop();
        await app.stop();
      }
    } finally {
      await off.stop();
    }
  });

  test('the idle time starts when a large answer has been handed to a slow client, not when it was written', async () => {
    const size = 16 * 1024 * 1024;
    const server = await startPortico(
      `listen:
  - { addr: "127.0.0.1:0", keepalive_timeout: ${TIMEOUT}ms }
sites:
  - routes:
      - path: /
        static: { root: ./www, file_cache: { max_file_size: 32MB, max_size: 64MB } }
`,
      { 'www/big.bin': Buffer.alloc(size, 'x') },
    );
    // A plain socket that only counts bytes (RawConnection keeps them all, too slowly for 32 MiB).
    const socket = net.connect(server.port, '127.0.0.1');
    try {
      let received = 0;
      let wanted = 0;
      let reached: () => void = () => {};
      const receivedAll = (bytes: number) => {
        wanted = bytes;
        return new Promise<void>((resolve) => (reached = resolve));
      };
      let closedAt: number | undefined;
      socket.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received >= wanted) reached();
      });
      socket.on('close', () => {
        closedAt = Date.now();
        reached();
      });
      socket.on('error', () => {});
      const request = 'GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n';
      // The first answer (streamed from disk) puts the file in memory; the second is then one write of 16 MiB,
      // which the paused client holds up far longer than the timeout.
      let first = receivedAll(size);
      socket.write(request);
      await first;
      first = receivedAll(2 * size);
      socket.pause();
      socket.write(request);
      await new Promise((resolve) => setTimeout(resolve, 3 * TIMEOUT));
      socket.resume();
      await first;
      assert.ok(received >= 2 * size, `closed while the client was still reading: ${received} of ${2 * size} bytes`);
      const readAt = Date.now();
      // Half the timeout of margin: the last megabytes were in the kernel's buffers, out of the server's sight.
      await new Promise((resolve) => setTimeout(resolve, TIMEOUT / 2));
      assert.equal(closedAt, undefined, `closed ${closedAt! - readAt} ms after the client had read both answers`);
    } finally {
      socket.destroy();
      await server.stop();
    }
  });

  /**
   * Sends `request` from a client that keeps its half of the connection open after the server ends its own
   * (allowHalfOpen), checks the answer's status and that the server ended its side, then that stop() does not
   * wait for that half-open connection.
   */
  async function stopDespiteHalfOpenClient(request: string, status: number): Promise<void> {
    const server = await startAnswering('keepalive_timeout: 30s');
    const socket = net.connect({ port: server.port, host: '127.0.0.1', allowHalfOpen: true });
    try {
      let text = '';
      let ended = false;
      socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
      socket.on('end', () => (ended = true));
      socket.on('error', () => {});
      socket.write(request);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000);
        socket.once('end', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      assert.equal(statusOf(text), status, text);
      assert.equal(ended, true, 'the server did not end its side after its answer');
      const started = Date.now();
      await server.server.stop(5000);
      assert.ok(Date.now() - started < 2000, `stop waited ${Date.now() - started} ms for the half-open connection`);
    } finally {
      socket.destroy();
      await server.stop();
    }
  }

  test('a refused upgrade whose client keeps its half of the connection open does not hold up stop', () =>
    stopDespiteHalfOpenClient('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n', 200));

  test('a malformed request whose client keeps its half of the connection open does not hold up stop', () =>
    stopDespiteHalfOpenClient('NOT HTTP AT ALL\r\n\r\n', 400));

  test('on stop, a connection whose answer finishes during the grace period is closed at once', async () => {
    const slow = await startUpstream((_req, res) => setTimeout(() => res.end('late'), 300));
    const server = await startProxying('keepalive_timeout: 30s', slow.url);
    try {
      const conn = await RawConnection.open(server.port);
      conn.write('GET /x HTTP/1.1\r\nHost: x\r\n\r\n');
      // The request is in flight: the app server has it and answers 300 ms later.
      for (const limit = Date.now() + 5000; slow.requests.length === 0; ) {
        if (Date.now() > limit) throw new Error('the request never reached the app server');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const started = Date.now();
      await server.server.stop(10_000);
      const took = Date.now() - started;
      assert.equal(await conn.waitClosed(2000), true);
      assert.match(conn.received.toString('latin1'), /late/);
      assert.match(conn.received.toString('latin1'), /\r\nConnection: close\r\n/i, 'the answer invited another request');
      assert.ok(took < 3000, `stop took ${took} ms`);
      conn.close();
    } finally {
      await server.stop();
      await slow.stop();
    }
  });
});
