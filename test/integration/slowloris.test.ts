/**
 * Hardening: slowloris. Many connections send a request head a byte at a time, never finishing it; ordinary
 * clients must be served meanwhile, and each slow connection must be closed at header_timeout (Node answers
 * 408, see src/connections/listeners.ts). The same over TLS: connections silent before the handshake or trickling a
 * ClientHello are cut at the handshake timeout (header_timeout), and slow heads after a handshake get 408.
 * Reports what it tried with t.diagnostic.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';
import { httpsGet, testPki } from './tls-support.js';

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

/**
 * Ordinary requests, one at a time (`ask` makes one on a new connection), until every slow connection is
 * closed (or a bound); then the feeder stops and what is left is cut. Each answer must be 200 "ok". Resolves
 * with their latencies (ms).
 */
async function serveMeanwhile(slow: Slow[], feeder: NodeJS.Timeout, ask: () => Promise<{ status: number; body: string }>): Promise<number[]> {
  const latencies: number[] = [];
  const deadline = Date.now() + HEADER_TIMEOUT + CLOSE_MARGIN + 5000;
  try {
    while (slow.some((entry) => entry.closedAfter === -1) && Date.now() < deadline) {
      const start = Date.now();
      const answer = await ask();
      latencies.push(Date.now() - start);
      assert.equal(answer.status, 200);
      assert.equal(answer.body, 'ok');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    clearInterval(feeder);
    for (const entry of slow) entry.socket.destroy();
  }
  return latencies;
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
    const latencies = await serveMeanwhile(slow, feeder, () => rawRequest(portico.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { timeoutMs: 5000 }));
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

describe('slowloris over TLS', () => {
  const SILENT = 150;
  const PARTIAL_HELLO = 150;
  const SLOW_HEADS = 100;
  let secure: RunningPortico;
  let ca: string;

  before(async () => {
    const pki = await testPki();
    const certificate = await pki.issue(['localhost']);
    ca = pki.ca.cert;
    secure = await startPortico(
      `listen:
  - { addr: "127.0.0.1:0", header_timeout: ${HEADER_TIMEOUT}ms, tls: { cert: ./server.pem, key: ./server.key } }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`,
      { 'server.pem': certificate.cert, 'server.key': certificate.key },
    );
  });

  after(() => secure.stop());

  test(`slow handshakes (${SILENT} silent, ${PARTIAL_HELLO} trickling a ClientHello) and ${SLOW_HEADS} slow heads over TLS are closed at header_timeout, while HTTPS clients are served`, async (t) => {
    // A ClientHello's record header (handshake, TLS 1.0 record version, 512 bytes to come) and its first bytes.
    const hello = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), Buffer.alloc(500, 7)]);
    const head = 'GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ' + 'a'.repeat(1000);
    const silent: Slow[] = [];
    const partial: Slow[] = [];
    const heads: Slow[] = [];
    const open = (list: Slow[], count: number, connectOne: () => Promise<Slow>) =>
      (async () => {
        for (let batch = 0; batch < count; batch += 50) {
          list.push(...(await Promise.all(Array.from({ length: Math.min(50, count - batch) }, connectOne))));
        }
      })();
    const track = (socket: net.Socket, first: Buffer | string | undefined): Slow => {
      socket.on('error', () => {});
      const entry: Slow = { socket, started: Date.now(), closedAfter: -1, sent: 0, received: '' };
      if (first !== undefined) {
        socket.write(typeof first === 'string' ? first[0]! : first.subarray(0, 1));
        entry.sent = 1;
      }
      socket.on('data', (chunk: Buffer) => (entry.received += chunk.toString('latin1')));
      socket.once('close', () => (entry.closedAfter = Date.now() - entry.started));
      return entry;
    };
    const plainConnect = (first: Buffer | undefined) => () =>
      new Promise<Slow>((resolve, reject) => {
        const socket = net.connect(secure.port, '127.0.0.1');
        socket.once('error', reject);
        socket.once('connect', () => resolve(track(socket, first)));
      });
    // The slow heads start their clock when the handshake is done: that is when Node's header timer starts too.
    const tlsConnect = () =>
      new Promise<Slow>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port: secure.port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
        socket.once('error', reject);
        socket.once('secureConnect', () => resolve(track(socket, head)));
      });
    await Promise.all([open(silent, SILENT, plainConnect(undefined)), open(partial, PARTIAL_HELLO, plainConnect(hello))]);
    await open(heads, SLOW_HEADS, tlsConnect);
    const feeder = setInterval(() => {
      for (const entry of partial) {
        if (entry.closedAfter === -1 && entry.sent < hello.length && entry.socket.writable) entry.socket.write(hello.subarray(entry.sent, ++entry.sent));
      }
      for (const entry of heads) {
        if (entry.closedAfter === -1 && entry.sent < head.length && entry.socket.writable) entry.socket.write(head[entry.sent++]!);
      }
    }, BYTE_EVERY);
    const all = [...silent, ...partial, ...heads];
    const latencies = await serveMeanwhile(all, feeder, () => httpsGet({ port: secure.port, ca, servername: 'localhost' }));
    const report = (name: string, list: Slow[]) => {
      const closes = list.map((entry) => entry.closedAfter);
      t.diagnostic(`${name}: ${list.length}, closed after (ms) min ${Math.min(...closes)}, median ${percentile(closes, 50)}, max ${Math.max(...closes)}`);
      assert.equal(closes.filter((after) => after === -1).length, 0, `${name}: some still open at the end`);
      assert.ok(Math.min(...closes) >= HEADER_TIMEOUT - 50, `${name}: one was closed after only ${Math.min(...closes)} ms`);
      assert.ok(Math.max(...closes) <= HEADER_TIMEOUT + CLOSE_MARGIN, `${name}: one was closed only after ${Math.max(...closes)} ms`);
    };
    t.diagnostic(`tried over TLS: silent TCP connections, ClientHellos trickled one byte every ${BYTE_EVERY} ms, and heads a byte at a time after a handshake; header_timeout ${HEADER_TIMEOUT} ms (the handshake timeout too)`);
    report('silent connections', silent);
    report('trickled ClientHellos', partial);
    report('slow heads over TLS', heads);
    t.diagnostic(`slow heads answered 408: ${heads.filter((entry) => /^HTTP\/1\.1 408 /.test(entry.received)).length} of ${heads.length}`);
    t.diagnostic(`HTTPS requests meanwhile: ${latencies.length}, latency (ms) median ${percentile(latencies, 50)}, max ${Math.max(...latencies)}`);
    assert.ok(heads.every((entry) => /^HTTP\/1\.1 408 /.test(entry.received)), 'every slow head over TLS got 408');
    assert.ok(latencies.length >= 5, `only ${latencies.length} HTTPS requests were made`);
    assert.ok(Math.max(...latencies) < LATENCY_BOUND, `an HTTPS request took ${Math.max(...latencies)} ms`);
  });
});
