/**
 * Hardening: slowloris. Many connections send a request head a byte at a time, never finishing it; ordinary
 * clients must be served meanwhile, and each slow connection must be closed at header_timeout (Node answers
 * 408, see src/server/listeners.ts). Reports what it tried with t.diagnostic.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';

/** Slow connections: 500 (1,000 descriptors with both ends in this process, well under the usual limits). */
const SLOW = 500;
const HEADER_TIMEOUT = 2000;
/** How often each slow connection gets its next byte. */
const BYTE_EVERY = 100;
/** Node checks header timeouts once per checking interval (1 s here): a close comes up to that late, plus load. */
const CLOSE_MARGIN = 3000;
/** The slowest an ordinary request may be answered while the attack runs (a loaded CI machine included). */
const LATENCY_BOUND = 1500;

let portico: RunningPortico;

before(async () => {
  portico = await startPortico(`listen:
  - { addr: "127.0.0.1:0", header_timeout: ${HEADER_TIMEOUT}ms }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
});

after(() => portico.stop());

interface Slow {
  socket: net.Socket;
  /** When its first byte was sent (ms, Date.now()). */
  started: number;
  /** How long after that it was closed; -1 while open. */
  closedAfter: number;
  sent: number;
  received: string;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

describe('slowloris', () => {
  test(`${SLOW} connections sending a head a byte at a time are closed at header_timeout, while ordinary clients are served`, async (t) => {
    const head = 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(1000);
    const slow: Slow[] = [];
    // Connected in batches of 50, so that the listen backlog never overflows.
    for (let batch = 0; batch < SLOW; batch += 50) {
      const opened = Array.from({ length: Math.min(50, SLOW - batch) }, () =>
        new Promise<Slow>((resolve, reject) => {
          const socket = net.connect(portico.port, '127.0.0.1');
          socket.once('error', reject);
          socket.once('connect', () => {
            socket.removeListener('error', reject);
            socket.on('error', () => {});
            const entry: Slow = { socket, started: Date.now(), closedAfter: -1, sent: 1, received: '' };
            socket.write(head[0]!);
            socket.on('data', (chunk: Buffer) => (entry.received += chunk.toString('latin1')));
            socket.once('close', () => (entry.closedAfter = Date.now() - entry.started));
            resolve(entry);
          });
        }),
      );
      slow.push(...(await Promise.all(opened)));
    }
    // One byte more to every open slow connection each BYTE_EVERY ms: a bounded loop, stopped when all are closed.
    const feeder = setInterval(() => {
      for (const entry of slow) {
        if (entry.closedAfter === -1 && entry.sent < head.length && entry.socket.writable) entry.socket.write(head[entry.sent++]!);
      }
    }, BYTE_EVERY);
    // Ordinary clients meanwhile: one request at a time on a new connection, until the slow ones are all closed.
    const latencies: number[] = [];
    const deadline = Date.now() + HEADER_TIMEOUT + CLOSE_MARGIN + 5000;
    try {
      while (slow.some((entry) => entry.closedAfter === -1) && Date.now() < deadline) {
        const start = Date.now();
        const answer = await rawRequest(portico.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { timeoutMs: 5000 });
        latencies.push(Date.now() - start);
        assert.equal(answer.status, 200);
        assert.equal(answer.body, 'ok');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      clearInterval(feeder);
      for (const entry of slow) entry.socket.destroy();
    }
    const closes = slow.map((entry) => entry.closedAfter);
    const bytes = slow.reduce((sum, entry) => sum + entry.sent, 0);
    t.diagnostic(
      `tried: ${SLOW} connections, each sent a head one byte every ${BYTE_EVERY} ms (${bytes} bytes in all), header_timeout ${HEADER_TIMEOUT} ms`,
    );
    t.diagnostic(`slow connections closed after (ms): min ${Math.min(...closes)}, median ${percentile(closes, 50)}, max ${Math.max(...closes)}`);
    t.diagnostic(`answered 408: ${slow.filter((entry) => /^HTTP\/1\.1 408 /.test(entry.received)).length} of ${SLOW}`);
    t.diagnostic(`ordinary requests meanwhile: ${latencies.length}, latency (ms) median ${percentile(latencies, 50)}, max ${Math.max(...latencies)}`);
    assert.equal(closes.filter((after) => after === -1).length, 0, 'slow connections still open at the end');
    assert.ok(Math.min(...closes) >= HEADER_TIMEOUT - 50, `a slow connection was closed after only ${Math.min(...closes)} ms`);
    assert.ok(Math.max(...closes) <= HEADER_TIMEOUT + CLOSE_MARGIN, `a slow connection was closed only after ${Math.max(...closes)} ms`);
    assert.ok(slow.every((entry) => /^HTTP\/1\.1 408 /.test(entry.received)), 'every slow connection got 408');
    assert.ok(latencies.length >= 5, `only ${latencies.length} ordinary requests were made`);
    assert.ok(Math.max(...latencies) < LATENCY_BOUND, `an ordinary request took ${Math.max(...latencies)} ms`);
  });
});
