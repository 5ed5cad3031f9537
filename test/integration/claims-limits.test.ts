/**
 * Claims of docs/configuration.md (the listener settings of the reference config) about listener limits:
 * `max_requests_per_conn` (the connection is closed after N requests) and `request_timeout` (time to receive the
 * whole request, body included; Node's requestTimeout, answered 408 by the listener's clientError handler, which
 * then closes the connection).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RawConnection, httpRequest, scopedServers } from './proxy-support.js';

const { portico, upstream, defer } = scopedServers();

/** Number of complete "ok" answers (Content-Length: 2) in what a connection received. */
function answers(received: Buffer): number {
  return received.toString('latin1').split('\r\n\r\nok').length - 1;
}

/** The head of the `n`-th answer (1-based) in what a connection received. */
function headOf(received: Buffer, n: number): string {
  const text = received.toString('latin1');
  const heads = text.split(/(?=HTTP\/1\.1 )/);
  return heads[n - 1]!.split('\r\n\r\n')[0]!;
}

const LIMITED = `listen:
  - { addr: "127.0.0.1:0", max_requests_per_conn: 3 }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`;

/** Sends three requests one after the other on `conn`, checking each answer's Connection field. */
async function threeRequests(conn: RawConnection): Promise<void> {
  for (let n = 1; n <= 3; n++) {
    conn.write(`GET /r${n} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const received = await conn.until((r) => answers(r) >= n, 10_000);
    assert.equal(answers(received), n, `answer ${n} arrived`);
    const head = headOf(received, n);
    assert.match(head, /^HTTP\/1\.1 200 /);
    if (n < 3) {
      assert.doesNotMatch(head, /\r\nconnection: close/i, `answer ${n} must keep the connection`);
      assert.equal(conn.closed, false, `the connection is still open after answer ${n}`);
    } else {
      assert.match(head, /\r\nconnection: close/i, 'the third answer says Connection: close');
    }
  }
}

test('max_requests_per_conn: 3: the first two answers keep the connection, the third says Connection: close', async () => {
  const server = await portico(LIMITED);
  const conn = await RawConnection.open(server.port);
  try {
    await threeRequests(conn);
  } finally {
    conn.close();
  }
});

test(
  'max_requests_per_conn: 3: the socket is closed by the server after the third answer',
  async () => {
    const server = await portico(LIMITED);
    const conn = await RawConnection.open(server.port);
    try {
      await threeRequests(conn);
      assert.equal(await conn.waitClosed(5_000), true, 'the socket ends after the third answer');
    } finally {
      conn.close();
    }
  },
);

test('max_requests_per_conn: 0 (the default) is unlimited: ten requests on one connection, none says Connection: close', async () => {
  const server = await portico(`sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
  const conn = await RawConnection.open(server.port);
  try {
    for (let n = 1; n <= 10; n++) {
      conn.write(`GET /r${n} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await conn.until((r) => answers(r) >= n, 10_000);
    }
    assert.doesNotMatch(conn.received.toString('latin1'), /\r\nconnection: close/i);
    assert.equal(conn.closed, false);
  } finally {
    conn.close();
  }
});

test('request_timeout: 1s: a request body that trickles in past it gets 408, the connection is closed and the app server sees nothing', async () => {
  const backend = await upstream((_req, res, body) => res.end(`got ${body.length}`));
  const server = await portico(`listen:
  - { addr: "127.0.0.1:0", request_timeout: 1s, header_timeout: 1s }
upstreams:
  app:
    servers: [{ url: "${backend.url}" }]
sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`);
  // The same route answers a body that arrives in time.
  const quick = await httpRequest(server.port, '/in-time', { method: 'POST', body: 'x'.repeat(100) });
  assert.equal(quick.status, 200);
  assert.equal(quick.body.toString(), 'got 100');
  assert.equal(backend.requests.length, 1);

  const conn = await RawConnection.open(server.port);
  const started = Date.now();
  // One byte every 100 ms of a 100-byte body: it would take 10 s to arrive in full.
  conn.write('POST /slow HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nx');
  const trickle = setInterval(() => {
    if (!conn.closed) conn.write('x');
  }, 100);
  try {
    const received = await conn.until((r) => r.includes('\r\n\r\n'), 8_000);
    const elapsed = Date.now() - started;
    assert.match(received.toString('latin1'), /^HTTP\/1\.1 408 /);
    assert.ok(elapsed >= 900, `408 after ${elapsed} ms: before request_timeout`);
    assert.ok(elapsed < 6_000, `408 only after ${elapsed} ms`);
    assert.equal(await conn.waitClosed(5_000), true, 'the connection is closed after the 408');
    assert.equal(backend.requests.length, 1, 'the slow request never reached the app server');
  } finally {
    clearInterval(trickle);
    conn.close();
  }
});

test(
  'request_timeout: 1s on its own (header_timeout left at its default) is accepted by check and the server starts',
  async () => {
    const server = await portico(`listen:
  - { addr: "127.0.0.1:0", request_timeout: 1s }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
    const res = await fetch(server.url);
    assert.equal(res.status, 200);
  },
);
