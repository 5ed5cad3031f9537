/**
 * Claims of docs/proxy.md (the upstream settings) about how Portico talks to app servers: `timeouts.connect`,
 * `timeouts.read`, `timeouts.idle`, the `keepalive` pool (undici's Pool `connections`: a cap on the connections to
 * one server, not only on idle ones), `retry_buffer`, `tls.insecure_skip_verify`, and `Retry-After` on Portico's own
 * 503s.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import https from 'node:https';
import net, { type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import type { RunningPortico } from '../helpers/portico.js';
import { closeHttpServer, startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { requireTool } from '../helpers/tools.js';
import { RawConnection, hasHead, httpRequest, waitFor, scopedServers } from './proxy-support.js';
import { within } from '../helpers/within.js';

const scratch = mkdtempSync(path.join(tmpdir(), 'portico-claims-upstream-'));
const { portico, upstream, defer } = scopedServers();
defer(() => rmSync(scratch, { recursive: true, force: true }));

/** Config text: one upstream `app` with the given server URLs and options, proxied at `/`. */
function config(urls: readonly string[], options = '', proxyOptions = ''): string {
  const list = urls.map((url) => `{ url: "${url}" }`).join(', ');
  return `upstreams:\n  app:\n    servers: [${list}]\n${options.replace(/^/gm, '    ')}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app${proxyOptions} }\n`;
}

/** A TCP server that accepts connections and never sends a byte: the test decides everything it does. */
async function silentServer(): Promise<{ port: number; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    socket.resume(); // reads (and drops) what the peer sends, so its FIN is seen; writes nothing
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as AddressInfo).port, sockets };
}

describe('timeouts', () => {
  test('timeouts.connect: 500ms: an https app server that accepts TCP but never completes the TLS handshake gets 502 after about 500 ms', async () => {
    // A plain TCP connect cannot be made to hang on the loopback without root (a SYN to a listening port is
    // answered by the kernel at once; a full backlog is not reliable). undici's connect timeout covers the TLS
    // handshake too (it is cleared on 'secureConnect'), so an https upstream pointing at a server that accepts
    // and stays silent is a connect that never completes, under the test's control.
    const silent = await silentServer();
    const server = await portico(config([`https://127.0.0.1:${silent.port}`], 'retries: 0\ntimeouts: { connect: 500ms, response_header: 30s }'));
    const started = Date.now();
    const res = await within('the answer to a request whose connect hangs', httpRequest(server.port, '/'), 20_000);
    const elapsed = Date.now() - started;
    assert.equal(res.status, 502, 'a connect that never completes is "nothing reachable"');
    assert.ok(elapsed >= 400, `answered after ${elapsed} ms: before timeouts.connect`);
    assert.ok(elapsed < 8_000, `answered only after ${elapsed} ms (response_header is 30s)`);
    assert.equal(silent.sockets.length, 1, 'the app server saw the TCP connection');
    await waitFor('Portico to drop the half-made connection', () => silent.sockets[0]!.destroyed || silent.sockets[0]!.readableEnded, 5_000);
  });

  test('timeouts.connect: a POST whose connect timed out is retried on the next server (the request never left)', async () => {
    const silent = await silentServer();
    const good = await upstream((_req, res, body) => res.end(`good got ${body}`));
    const server = await portico(
      config([`https://127.0.0.1:${silent.port}`, good.url], 'policy: first\nretries: 1\ntimeouts: { connect: 500ms, response_header: 30s }'),
    );
    const res = await within('the retried POST', httpRequest(server.port, '/post', { method: 'POST', body: 'payload' }), 20_000);
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'good got payload');
    assert.equal(silent.sockets.length, 1, 'the silent server was tried first');
  });

  test('timeouts.read: 1s: an app server that sends the head and part of the body, then stalls, has the client connection cut after about 1 s', async () => {
    let stalled: ServerResponse | undefined;
    const backend = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' });
      res.write('hello');
      stalled = res; // never ended
    });
    const server = await portico(config([backend.url], 'retries: 0\ntimeouts: { read: 1s, response_header: 30s }'));
    const conn = await RawConnection.open(server.port);
    try {
      conn.write('GET /stall HTTP/1.1\r\nHost: x\r\n\r\n');
      await conn.until((r) => hasHead(r) && r.toString('latin1').endsWith('hello'), 10_000);
      const headAt = Date.now();
      assert.match(conn.received.toString('latin1'), /^HTTP\/1\.1 200 /, 'the head was passed on before the stall');
      assert.equal(await conn.waitClosed(10_000), true, 'the client connection is cut');
      const elapsed = Date.now() - headAt;
      // undici checks body timeouts on a ~0.5 s tick: the cut comes between 1 and about 2 s after the last byte.
      assert.ok(elapsed >= 700, `cut after ${elapsed} ms: before timeouts.read`);
      assert.ok(elapsed < 8_000, `cut only after ${elapsed} ms`);
      const body = conn.received.toString('latin1').split('\r\n\r\n')[1];
      assert.equal(body, 'hello', 'the response is visibly incomplete (5 of 100 bytes)');
    } finally {
      conn.close();
      stalled?.destroy();
    }
  });

  test('timeouts.read: 1s bounds the gap between body chunks, not the whole body: a 2 s body sent in 100 ms steps arrives complete', async () => {
    const backend = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '20' });
      let sent = 0;
      const timer = setInterval(() => {
        res.write('x');
        if (++sent === 20) {
          clearInterval(timer);
          res.end();
        }
      }, 100);
      res.on('close', () => clearInterval(timer));
    });
    const server = await portico(config([backend.url], 'retries: 0\ntimeouts: { read: 1s }'));
    const started = Date.now();
    const res = await within('the slow body', httpRequest(server.port, '/slow-body'), 20_000);
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'x'.repeat(20));
    assert.ok(Date.now() - started >= 1_500, 'the body took longer than timeouts.read in total');
  });

  test('timeouts.idle: 1s: a pooled connection left idle is closed by Portico (the app server keeps it for 60 s)', async () => {
    const backend = await upstream('pooled');
    backend.server.keepAliveTimeout = 60_000;
    const sockets: Socket[] = [];
    backend.server.on('connection', (socket: Socket) => sockets.push(socket));
    const server = await portico(config([backend.url], 'timeouts: { idle: 1s }'));
    const res = await httpRequest(server.port, '/');
    assert.equal(res.body.toString(), 'pooled');
    const answeredAt = Date.now();
    assert.equal(sockets.length, 1);
    const socket = sockets[0]!;
    const ended = await within(
      'Portico to close the idle pooled connection',
      new Promise<number>((resolve) => {
        if (socket.readableEnded) return resolve(Date.now());
        socket.once('end', () => resolve(Date.now())); // a FIN from Portico's side
      }),
      10_000,
    );
    const idle = ended - answeredAt;
    assert.ok(idle >= 600, `closed after ${idle} ms idle: before timeouts.idle`);
    assert.ok(idle < 8_000, `closed only after ${idle} ms idle`);
    // The next request opens a new connection and is answered.
    const again = await httpRequest(server.port, '/');
    assert.equal(again.body.toString(), 'pooled');
    assert.equal(sockets.length, 2);
  });
});

describe('keepalive', () => {
  test('keepalive: 2 caps the connections to one app server at 2: eight concurrent requests all succeed over at most two sockets', async () => {
    const total = 8;
    const held: ServerResponse[] = [];
    let released = 0;
    let open = 0;
    let maxOpen = 0;
    let distinct = 0;
    // The app holds its answers until two requests are in flight at once (or none more can come), so the pool
    // must really run two at a time — and a pool allowed more would open more sockets meanwhile.
    const backend = await upstream((_req, res) => {
      held.push(res);
      if (held.length === 2 || held.length + released === total) {
        for (const r of held.splice(0)) {
          released++;
          r.end('ok');
        }
      }
    });
    backend.server.keepAliveTimeout = 60_000;
    backend.server.on('connection', (socket: Socket) => {
      distinct++;
      maxOpen = Math.max(maxOpen, ++open);
      socket.on('close', () => open--);
    });
    const server = await portico(config([backend.url], 'keepalive: 2\ntimeouts: { idle: 60s }'));
    const answers = await within(
      'eight concurrent requests through a pool of two',
      Promise.all(Array.from({ length: total }, (_, i) => httpRequest(server.port, `/c${i}`))),
      20_000,
    );
    for (const res of answers) assert.equal(res.status, 200);
    assert.equal(backend.requests.length, total);
    assert.ok(maxOpen <= 2, `the app server had ${maxOpen} connections open at once`);
    assert.equal(distinct, 2, `the app server saw ${distinct} connections for ${total} concurrent requests`);
  });
});

describe('retry_buffer', () => {
  let resetting: TestUpstream;
  let good: TestUpstream;
  let server: RunningPortico;
  before(async () => {
    // The first server reads the whole body, then drops the connection without answering (a "reset").
    resetting = await upstream((req) => req.socket.destroy());
    good = await upstream((req, res, body) => res.end(`good got ${req.method} ${body.length}`));
    server = await portico(
      // retry_buffer matters when bodies are streamed (request_buffering reads every body whole, hence replayable).
      config([resetting.url, good.url], 'policy: first\nretries: 1\nretry_buffer: 1KB\npassive: { max_fails: 0 }', ', request_buffering: false'),
    );
  });

  test('retry_buffer: 1KB: a PUT with a body of exactly 1 KB is replayed on the next server after a reset', async () => {
    const before = resetting.requests.length;
    const res = await httpRequest(server.port, '/put', { method: 'PUT', body: 'p'.repeat(1024) });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'good got PUT 1024');
    assert.equal(resetting.requests.length, before + 1);
    assert.equal(resetting.requests.at(-1)!.body.length, 1024, 'the first server had received the whole body');
  });

  test('retry_buffer: 1KB: a PUT with a body of 1 KB + 1 byte is streamed, so it is not retried (502) and the next server sees nothing', async () => {
    const before = good.requests.length;
    const res = await httpRequest(server.port, '/put', { method: 'PUT', body: 'p'.repeat(1025) });
    assert.equal(res.status, 502);
    assert.equal(good.requests.length, before, 'the second server never saw the request');
    assert.equal(resetting.requests.at(-1)!.body.length, 1025);
  });

  test('retry_buffer: a POST (within retry_buffer) whose server refused the connection is replayed on the next server with its body', async () => {
    const refused = await startUpstream('never');
    await refused.stop();
    const front = await portico(config([refused.url, good.url], 'policy: first\nretries: 1\nretry_buffer: 1KB'));
    const res = await httpRequest(front.port, '/post', { method: 'POST', body: 'q'.repeat(1000) });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'good got POST 1000');
    assert.equal(good.requests.at(-1)!.body, 'q'.repeat(1000));
  });
});

describe('tls', () => {
  test('tls.insecure_skip_verify: true accepts a self-signed app server certificate that is otherwise refused (502)', async (t) => {
    if (!requireTool(t, 'openssl')) return;
    const key = path.join(scratch, 'self-key.pem');
    const cert = path.join(scratch, 'self-cert.pem');
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-keyout', key, '-out', cert, '-subj', '/CN=self.test'],
      { stdio: 'ignore' },
    );
    const app = https.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) => res.end('self-signed ok'));
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    defer(() => {
      return closeHttpServer(app);
    });
    const url = `https://127.0.0.1:${(app.address() as AddressInfo).port}`;
    const route = 'sites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n';

    const skipping = await portico(`upstreams:\n  app:\n    servers: [{ url: "${url}", tls: { insecure_skip_verify: true } }]\n${route}`);
    const accepted = await httpRequest(skipping.port, '/');
    assert.equal(accepted.status, 200);
    assert.equal(accepted.body.toString(), 'self-signed ok');

    const verifying = await portico(`upstreams:\n  app:\n    servers: [{ url: "${url}" }]\n    retries: 0\n${route}`);
    const refused = await httpRequest(verifying.port, '/');
    assert.equal(refused.status, 502, 'without insecure_skip_verify the certificate is verified and refused');
  });
});

describe('Retry-After', () => {
  test('every server held down by active checks: 503 with a Retry-After of whole seconds', async () => {
    const backend = await upstream((req, res) => {
      res.statusCode = req.url === '/healthz' ? 500 : 200;
      res.end('app');
    });
    const server = await portico(config([backend.url], 'health: { path: /healthz, interval: 100ms, timeout: 1s, fall: 1, rise: 1 }'));
    let last: Awaited<ReturnType<typeof httpRequest>> | undefined;
    await waitFor(
      'the only server to be marked down',
      async () => {
        last = await httpRequest(server.port, '/x');
        return last.status === 503;
      },
      10_000,
      50,
    );
    assert.match(String(last!.headers['retry-after']), /^\d+$/, `Retry-After: ${last!.headers['retry-after']}`);
  });

  test('max_conns reached and no room in the queue: 503 with a Retry-After of whole seconds', async () => {
    const held: ServerResponse[] = [];
    const backend = await upstream((_req, res) => held.push(res));
    const server = await portico(config([backend.url], 'max_conns: 1\nqueue: { size: 0 }'));
    const first = httpRequest(server.port, '/busy');
    try {
      await waitFor('the first request to reach the app server', () => held.length === 1, 10_000);
      const res = await httpRequest(server.port, '/more');
      assert.equal(res.status, 503);
      assert.match(String(res.headers['retry-after']), /^\d+$/, `Retry-After: ${res.headers['retry-after']}`);
    } finally {
      for (const r of held) r.end('done');
      await first;
    }
  });
});
