/**
 * The connection gate of a listener (src/connections/connection-gate.ts): the PROXY protocol (v1 and v2, only from
 * trusted_proxies; its address is the client's for everything), and max_connections / max_connections_per_ip
 * (a 503 and a close over the limit; counts drop as connections close).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { configErrors } from '../helpers/config.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { statusOf, trackServerSockets } from './proxy-support.js';
import { testPki } from './tls-support.js';

const GET = 'GET /app/who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';

/** A v2 PROXY header for a TCP client: `command` 1 PROXY, 0 LOCAL. */
function v2Header(source: string, port: number, command = 1): Buffer {
  const six = net.isIPv6(source);
  const block = Buffer.alloc(six ? 36 : 12);
  if (six) {
    const groups = new URL(`http://[${source}]/`).hostname.slice(1, -1);
    // Expand `::` into the 8 groups of the address.
    const [left, right] = groups.split('::') as [string, string | undefined];
    const head = left === '' ? [] : left.split(':');
    const tail = right === undefined || right === '' ? [] : right.split(':');
    const all = [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail];
    all.forEach((group, i) => block.writeUInt16BE(parseInt(group, 16), i * 2));
    block.writeUInt16BE(port, 32);
    block.writeUInt16BE(443, 34);
  } else {
    Buffer.from(source.split('.').map(Number)).copy(block, 0);
    Buffer.from([127, 0, 0, 1]).copy(block, 4);
    block.writeUInt16BE(port, 8);
    block.writeUInt16BE(443, 10);
  }
  const head = Buffer.from([0x20 | command, six ? 0x21 : 0x11, 0, 0]);
  head.writeUInt16BE(block.length, 2);
  return Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a', 'hex'), head, block]);
}

/** Connects from `localAddress` (another loopback address stands for another peer), writes `data`, waits for the end. */
function exchangeFrom(port: number, localAddress: string, data: Buffer | string, timeoutMs = 5000): Promise<{ received: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${timeoutMs} ms; received ${Buffer.concat(chunks).toString('latin1').slice(0, 200)}`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(data));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ received: Buffer.concat(chunks).toString('latin1'), closed: true });
    });
  });
}

describe('PROXY protocol on a listener', () => {
  let backend: TestUpstream;
  let portico: RunningPortico;
  const HEADER_TIMEOUT = 600;

  before(async () => {
    backend = await startUpstream((req, res) => res.end(`xff=${req.headers['x-forwarded-for']}`));
    portico = await startPortico(`listen:
  - { addr: "127.0.0.1:0", proxy_protocol: true, header_timeout: ${HEADER_TIMEOUT}ms }
trusted_proxies: ["127.0.0.1"]
sites:
  - routes:
      - path: /denied/
        access: [{ deny: 203.0.113.0/24 }]
        respond: { body: "not for you" }
      - path: /app/
        proxy: { url: "${backend.url}", strip_prefix: true }
`);
  });

  after(async () => {
    await portico.stop();
    await backend.stop();
  });

  test('a v1 header from a trusted peer makes its address the client: forwarded in X-Forwarded-For and logged', async () => {
    const answer = await rawRequest(portico.port, `PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n${GET}`);
    assert.equal(answer.status, 200);
    assert.equal(answer.body, 'xff=203.0.113.9');
    const logged = await startPortico(`listen:
  - { addr: "127.0.0.1:0", proxy_protocol: true }
log: { access: ./access.log, format: combined }
trusted_proxies: ["127.0.0.1/8"]
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
    const logFile = path.join(logged.dir, 'access.log');
    try {
      assert.equal((await rawRequest(logged.port, `PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n${GET}`)).status, 200);
    } finally {
      // Stopping flushes the log; the folder goes with it, so read it from the stopped server first.
      await logged.server.stop(100);
    }
    assert.match(readFileSync(logFile, 'utf8'), /^203\.0\.113\.9 - - \[/m);
    await logged.stop();
  });

  test('a v2 header for an IPv6 client, sent in one packet with the request, is read and the request after it served', async () => {
    const answer = await rawRequest(portico.port, Buffer.concat([v2Header('2001:db8::7', 5555), Buffer.from(GET)]));
    assert.equal(answer.status, 200);
    assert.equal(answer.body, 'xff=2001:db8::7');
  });

  test('access rules judge the PROXY address, not the balancer: a denied client gets 403, another is let through', async () => {
    const denied = await rawRequest(portico.port, `PROXY TCP4 203.0.113.9 127.0.0.1 1 443\r\nGET /denied/ HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(denied.status, 403);
    const allowed = await rawRequest(portico.port, `PROXY TCP4 198.51.100.2 127.0.0.1 1 443\r\nGET /denied/ HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(allowed.status, 200);
  });

  test('a v2 LOCAL header (the balancer’s own check) and a v1 UNKNOWN one keep the real peer as the client', async () => {
    const local = await rawRequest(portico.port, Buffer.concat([v2Header('192.0.2.1', 1, 0), Buffer.from(GET)]));
    assert.equal(local.body, 'xff=127.0.0.1');
    const unknown = await rawRequest(portico.port, `PROXY UNKNOWN\r\n${GET}`);
    assert.equal(unknown.body, 'xff=127.0.0.1');
  });

  test('the header arriving byte by byte, then keep-alive requests after it, are all served with the PROXY address', async () => {
    const socket = net.connect(portico.port, '127.0.0.1');
    socket.on('error', () => {});
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const header = 'PROXY TCP4 192.0.2.44 127.0.0.1 9 443\r\n';
    for (const byte of header) {
      socket.write(byte);
      await new Promise((resolve) => setImmediate(resolve));
    }
    socket.write('GET /app/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /app/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    assert.equal(received.match(/xff=192\.0\.2\.44/g)?.length, 2, received);
  });

  test('a header from a peer not in trusted_proxies: the connection is closed without an answer', async (t) => {
    // 127.0.0.2 is a loopback address too, but not the trusted 127.0.0.1.
    const result = await exchangeFrom(portico.port, '127.0.0.2', `PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n${GET}`).catch((err: Error) => {
      if (/EADDRNOTAVAIL|EINVAL/.test(err.message)) return undefined;
      throw err;
    });
    if (result === undefined) return t.skip('127.0.0.2 cannot be bound on this machine');
    assert.equal(result.received, '');
    assert.equal(backend.requests.some((r) => r.headers['x-forwarded-for'] === '203.0.113.9' && r.url === '/untrusted'), false);
  });

  test('no header, or a malformed one: closed without an answer, nothing reaches the app', async () => {
    const before = backend.requests.length;
    for (const bytes of [GET, `PROXY TCP4 203.0.113.9 nope 1 2\r\n${GET}`, `PROXY ${'x'.repeat(200)}`, Buffer.concat([v2Header('1.2.3.4', 1).subarray(0, 12), Buffer.from([0x31, 0x11, 0, 12])])]) {
      const answer = await rawRequest(portico.port, bytes, { timeoutMs: 5000 });
      assert.equal(answer.raw, '', `answered ${JSON.stringify(answer.raw.slice(0, 80))}`);
      assert.equal(answer.closed, true);
    }
    assert.equal(backend.requests.length, before);
  });

  test('a header that stops halfway is closed after header_timeout, not before', async () => {
    const socket = net.connect(portico.port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const sent = Date.now();
    socket.write('PROXY TCP4 203.0.113.9');
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const after = Date.now() - sent;
    assert.ok(after >= HEADER_TIMEOUT - 20, `closed after ${after} ms`);
    assert.ok(after < HEADER_TIMEOUT + 3000, `closed only after ${after} ms`);
  });
});

/** Opens a connection and waits until it is connected. */
async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  return socket;
}

/** Sends one keep-alive request on `socket` and resolves with the status of its answer. */
function ask(socket: net.Socket, prefix = ''): Promise<{ status: number; text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (/\r\n\r\n[\s\S]*ok$/.test(text) || /\r\n\r\n[\s\S]*<\/html>\s*$/.test(text)) done(false);
    };
    const onClose = () => done(true);
    const done = (closed: boolean) => {
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve({ status: statusOf(text), text, closed });
    };
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.write(`${prefix}GET / HTTP/1.1\r\nHost: x\r\n\r\n`);
  });
}

/** A Portico answering "ok" on every path, with these listener options (YAML flow form) and top-level lines. */
function startAnswering(listenOptions: string, topLevel = ''): Promise<RunningPortico> {
  return startPortico(`listen:
  - { addr: "127.0.0.1:0", ${listenOptions} }
${topLevel}sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
}

describe('max_connections and max_connections_per_ip', () => {
  test('past max_connections a new connection gets 503 and is closed; once one closes, a new one is served', async () => {
    const portico = await startAnswering('max_connections: 2');
    const tracker = trackServerSockets();
    try {
      const first = await connect(portico.port);
      const second = await connect(portico.port);
      assert.equal((await ask(first)).status, 200);
      assert.equal((await ask(second)).status, 200);
      const refused = await rawRequest(portico.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.connection, 'close');
      assert.equal(refused.closed, true);
      // The limit frees up as soon as Portico has seen a connection close.
      const clientPort = first.localPort!;
      first.destroy();
      await tracker.closed(clientPort, portico.port);
      const third = await connect(portico.port);
      assert.equal((await ask(third)).status, 200);
      // The turned-away connection counted nothing: still full with two.
      assert.equal((await rawRequest(portico.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')).status, 503);
      second.destroy();
      third.destroy();
    } finally {
      tracker.stop();
      await portico.stop();
    }
  });

  test('max_connections_per_ip counts per PROXY address: one client is turned away at its limit, another still served', async () => {
    const portico = await startAnswering('proxy_protocol: true, max_connections_per_ip: 2', 'trusted_proxies: ["127.0.0.1"]\n');
    const tracker = trackServerSockets();
    const from = (address: string) => `PROXY TCP4 ${address} 127.0.0.1 1000 443\r\n`;
    try {
      const a1 = await connect(portico.port);
      const a2 = await connect(portico.port);
      assert.equal((await ask(a1, from('192.0.2.1'))).status, 200);
      assert.equal((await ask(a2, from('192.0.2.1'))).status, 200);
      const a3 = await rawRequest(portico.port, `${from('192.0.2.1')}GET / HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.equal(a3.status, 503, 'a third connection from the same client');
      const b1 = await rawRequest(portico.port, `${from('192.0.2.2')}GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.equal(b1.status, 200, 'another client behind the same balancer');
      const clientPort = a1.localPort!;
      a1.destroy();
      await tracker.closed(clientPort, portico.port);
      const again = await rawRequest(portico.port, `${from('192.0.2.1')}GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.equal(again.status, 200, 'the client’s count dropped when its connection closed');
      a2.destroy();
    } finally {
      tracker.stop();
      await portico.stop();
    }
  });

  test('a reload changes max_connections for new connections', async () => {
    const portico = await startAnswering('max_connections: 1');
    try {
      const held = await connect(portico.port);
      assert.equal((await ask(held)).status, 200);
      assert.equal((await rawRequest(portico.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')).status, 503);
      const { parseConfig } = await import('../../src/server/config.js');
      const text = `log: { access: off }\nlisten: [{ addr: "127.0.0.1:${portico.port}", max_connections: 2 }]\nsites: [{ routes: [{ path: /, respond: { body: "ok" } }] }]\n`;
      await portico.server.reload(parseConfig(text, path.join(portico.dir, 'portico.yaml'), portico.dir));
      assert.equal((await rawRequest(portico.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).status, 200);
      held.destroy();
    } finally {
      await portico.stop();
    }
  });
});

describe('what the gate logs', () => {
  test('a refused PROXY header and a refused connection are logged, at most once a second per kind under a flood', async () => {
    const { parseConfig } = await import('../../src/server/config.js');
    const { Portico } = await import('../../src/server/portico.js');
    const pino = (await import('pino')).default;
    const { Writable } = await import('node:stream');
    const lines: Array<{ msg: string; reason?: string; unlogged?: number }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line));
        done();
      },
    });
    const text = `log: { access: off }
listen: [{ addr: "127.0.0.1:0", proxy_protocol: true, max_connections_per_ip: 1 }]
trusted_proxies: ["127.0.0.1"]
sites: [{ routes: [{ path: /, respond: { body: "ok" } }] }]
`;
    const server = new Portico(parseConfig(text, '/tmp/portico.yaml', '/tmp'), pino({ level: 'info' }, sink));
    await server.start();
    const port = server.addresses[0]!.port;
    try {
      for (let i = 0; i < 20; i++) assert.equal((await rawRequest(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n')).raw, '');
      const held = await connect(port);
      assert.equal((await ask(held, 'PROXY TCP4 192.0.2.9 127.0.0.1 1 443\r\n')).status, 200);
      for (let i = 0; i < 5; i++) assert.equal((await rawRequest(port, 'PROXY TCP4 192.0.2.9 127.0.0.1 1 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n')).status, 503);
      held.destroy();
      const refusedHeaders = lines.filter((line) => line.msg === 'PROXY protocol header refused; connection closed');
      const overLimit = lines.filter((line) => line.msg === 'connection refused: max_connections_per_ip reached');
      assert.ok(refusedHeaders.length >= 1 && refusedHeaders.length < 20, `${refusedHeaders.length} lines for 20 refused headers`);
      assert.equal(refusedHeaders[0]!.reason, 'not a PROXY protocol header');
      assert.ok(overLimit.length >= 1 && overLimit.length < 5, `${overLimit.length} lines for 5 refused connections`);
    } finally {
      await server.stop(100);
    }
  });
});

describe('the gate in front of TLS', () => {
  test('the PROXY header is read before the TLS handshake, and its address is the client of requests over TLS', async () => {
    const pki = await testPki();
    const certificate = await pki.issue(['localhost']);
    const backend = await startUpstream((req, res) => res.end(`xff=${req.headers['x-forwarded-for']}`));
    const portico = await startPortico(
      `listen:
  - { addr: "127.0.0.1:0", proxy_protocol: true, max_connections: 1, tls: { cert: ./server.pem, key: ./server.key } }
trusted_proxies: ["127.0.0.1"]
sites:
  - routes:
      - path: /
        proxy: { url: "${backend.url}" }
`,
      { 'server.pem': certificate.cert, 'server.key': certificate.key },
    );
    try {
      // A balancer's connection: the header in clear, then TLS on the same socket.
      const raw = await connect(portico.port);
      raw.write('PROXY TCP4 198.51.100.77 127.0.0.1 3333 443\r\n');
      const secure = tls.connect({ socket: raw, ca: pki.ca.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
      secure.on('error', () => {});
      let text = '';
      secure.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
      secure.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
      // The second connection is over max_connections while this one is open: on TLS, closed without a word.
      const until = Date.now() + 5000;
      while (!text.includes('xff=') && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
      const refused = await rawRequest(portico.port, 'PROXY TCP4 198.51.100.78 127.0.0.1 1 443\r\n', { timeoutMs: 5000 });
      assert.equal(refused.raw, '', 'a plaintext answer on a TLS listener');
      assert.equal(refused.closed, true);
      secure.destroy();
      assert.match(text, /^HTTP\/1\.1 200 /);
      assert.match(text, /xff=198\.51\.100\.77$/);
    } finally {
      await portico.stop();
      await backend.stop();
    }
  });
});

describe('proxy_protocol config', () => {
  test('proxy_protocol with no trusted_proxies is a config error at its key (every connection would be closed)', () => {
    const errors = configErrors('listen: [{ addr: "127.0.0.1:0", proxy_protocol: true }]\nsites: [{ routes: [{ path: /, respond: {} }] }]\n', process.cwd());
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0]!, /portico\.yaml:1:\d+ listen\[0\]\.proxy_protocol: .*trusted_proxies.*empty/);
  });
});
