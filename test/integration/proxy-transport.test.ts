/**
 * How Portico talks to app servers: keep-alive pooling, unix sockets, verified TLS; how it answers
 * `Expect`; request framing it refuses before anything reaches an app server; the `upstream` access-log format.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';
import { haveTool, requireTool } from '../helpers/tools.js';
import { closeHttpServer, startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { RawConnection, countConnections, hasHead, httpRequest, statusOf, waitFor } from './proxy-support.js';

const scratch = mkdtempSync(path.join(tmpdir(), 'portico-proxy-transport-'));
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

function oneRoute(proxy: string, extra = ''): string {
  return `${extra}sites:\n  - routes:\n      - path: /\n        proxy: ${proxy}\n`;
}

async function portico(yaml: string, files: Record<string, string | Buffer> = {}): Promise<RunningPortico> {
  const running = await startPortico(yaml, files);
  cleanups.push(() => running.stop());
  return running;
}

async function upstream(handler?: Parameters<typeof startUpstream>[0]): Promise<TestUpstream> {
  const started = await startUpstream(handler);
  cleanups.push(() => started.stop());
  return started;
}

describe('connections to app servers', () => {
  test('keep-alive: twenty sequential requests reuse the pooled connection (the app sees far fewer TCP connections)', async () => {
    const backend = await upstream('pooled');
    const connections = countConnections(backend);
    const server = await portico(oneRoute(`{ url: "${backend.url}" }`));
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${server.url}/n${i}`);
      assert.equal(await res.text(), 'pooled');
    }
    assert.equal(backend.requests.length, 20);
    assert.ok(connections.count <= 2, `the app server saw ${connections.count} connections for 20 requests`);
  });

  test('a unix-socket upstream (url: "unix:/path.sock") answers through Portico', async () => {
    const socketPath = path.join(scratch, 'app.sock');
    const seen: string[] = [];
    const app = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.host}`);
      res.end('over unix');
    });
    await new Promise<void>((resolve) => app.listen(socketPath, resolve));
    cleanups.push(() => new Promise<void>((resolve) => app.close(() => resolve())));
    const server = await portico(oneRoute(`{ url: "unix:${socketPath}" }`));
    const res = await fetch(`${server.url}/u?x=1`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'over unix');
    assert.deepEqual(seen, [`GET /u?x=1 127.0.0.1:${server.port}`]);
  });
});

describe('https upstreams', () => {
  let tls: { key: string; cert: string } | undefined;
  let backendUrl = '';

  before(async () => {
    // Without openssl each test below skips itself, or fails on CI (requireTool says why); with it, a failing
    // openssl is a real error.
    if (!haveTool('openssl')) return;
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-keyout', path.join(scratch, 'key.pem'), '-out', path.join(scratch, 'cert.pem'),
      '-subj', '/CN=backend.test', '-addext', 'subjectAltName=DNS:backend.test',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    tls = { key: readFileSync(path.join(scratch, 'key.pem'), 'utf8'), cert: readFileSync(path.join(scratch, 'cert.pem'), 'utf8') };
    const app = https.createServer(tls, (req, res) => {
      res.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2; Path=/']);
      res.end(`tls ok ${req.headers.host}`);
    });
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => {
      return closeHttpServer(app);
    });
    backendUrl = `https://127.0.0.1:${(app.address() as AddressInfo).port}`;
  });

  test('verified with tls: { ca, servername }, whatever Host the client sent', async (t) => {
    if (!requireTool(t, 'openssl') || tls === undefined) return;
    const server = await portico(
      `upstreams:\n  app:\n    servers: [{ url: "${backendUrl}", tls: { ca: ./ca.pem, servername: backend.test } }]\n` +
        oneRoute('{ upstream: app }'),
      { 'ca.pem': tls.cert },
    );
    const direct = await httpRequest(server.port, '/');
    assert.equal(direct.status, 200);
    assert.equal(direct.body.toString(), `tls ok 127.0.0.1:${server.port}`);
    // Regression: undici took the TLS server name from the Host header, so a client's Host replaced servername.
    const named = await httpRequest(server.port, '/', { headers: { Host: 'www.example.com' } });
    assert.equal(named.status, 200, named.body.toString());
    assert.equal(named.body.toString(), 'tls ok www.example.com');
    assert.deepEqual(named.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/'], 'repeated fields stay separate');
  });

  test('rejected (502) without the CA that signed the app server certificate', async (t) => {
    if (!requireTool(t, 'openssl') || tls === undefined) return;
    const server = await portico(
      `upstreams:\n  app:\n    servers: [{ url: "${backendUrl}", tls: { servername: backend.test } }]\n` + oneRoute('{ upstream: app }'),
    );
    const res = await httpRequest(server.port, '/');
    assert.equal(res.status, 502);
    assert.doesNotMatch(res.body.toString(), /tls ok/);
  });
});

describe('Expect', () => {
  let backend: TestUpstream;
  let server: RunningPortico;
  before(async () => {
    backend = await upstream((_req, res, body) => res.end(`got ${body.length} bytes: ${body.slice(0, 20)}`));
    server = await portico(oneRoute(`{ url: "${backend.url}", max_body_size: 1KB }`));
  });

  test('100-continue is answered by Portico: the client gets 100, sends the body, then gets the response', async () => {
    const conn = await RawConnection.open(server.port);
    try {
      conn.write('POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
      const interim = (await conn.until(hasHead)).toString('latin1');
      assert.match(interim, /^HTTP\/1\.1 100 Continue\r\n/);
      const mark = conn.received.length;
      conn.write('hello');
      const final = (await conn.until((buf) => buf.subarray(mark).includes('bytes: hello'))).subarray(mark).toString('latin1');
      assert.equal(statusOf(final), 200);
      assert.match(final, /got 5 bytes: hello/);
      assert.equal(backend.requests.at(-1)!.headers.expect, undefined, 'Expect is not forwarded: Portico answered it');
    } finally {
      conn.close();
    }
  });

  test('a body over max_body_size gets 413 before any 100, and the app server sees nothing', async () => {
    const before = backend.requests.length;
    const res = await rawRequest(server.port, 'POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 20000000\r\nExpect: 100-continue\r\n\r\n');
    assert.equal(res.status, 413);
    assert.doesNotMatch(res.raw, /100 Continue/);
    assert.equal(backend.requests.length, before);
  });

  test('a chunked body that grows past max_body_size gets 413 and never reaches the app server whole', async () => {
    const conn = await RawConnection.open(server.port);
    try {
      conn.write('POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n');
      for (let i = 0; i < 4; i++) conn.write(`200\r\n${'x'.repeat(512)}\r\n`);
      const received = (await conn.until(hasHead)).toString('latin1');
      assert.equal(statusOf(received), 413, received);
      assert.ok(await conn.waitClosed(1000), 'the connection is closed after the 413');
    } finally {
      conn.close();
    }
    assert.ok(backend.requests.every((r) => r.body.length <= 1024));
  });

  test('an unknown expectation gets 417', async () => {
    const res = await rawRequest(server.port, 'POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\nhi');
    assert.equal(res.status, 417);
  });
});

describe('request framing', () => {
  test('Content-Length together with Transfer-Encoding gets 400, the connection is closed and the app server sees nothing', async () => {
    const backend = await upstream('never');
    const server = await portico(oneRoute(`{ url: "${backend.url}" }`));
    const res = await rawRequest(
      server.port,
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
    );
    assert.equal(res.status, 400);
    assert.ok(res.closed);
    assert.equal((res.raw.match(/HTTP\/1\.1/g) ?? []).length, 1, 'exactly one response');
    assert.equal(backend.requests.length, 0);
  });
});

describe('access log', () => {
  test('format upstream: upstream_addr, _status and connect/header/response times, one value per attempt', async () => {
    const dead = await startUpstream('dead');
    await dead.stop();
    const live = await upstream('live');
    const logFile = path.join(scratch, 'access.log');
    const server = await portico(
      `log: { access: "${logFile}", format: upstream }\n` +
        `upstreams:\n  app:\n    policy: first\n    passive: { max_fails: 0 }\n    servers: [{ url: "${dead.url}" }, { url: "${live.url}" }]\n` +
        oneRoute('{ upstream: app }'),
    );
    assert.equal((await httpRequest(server.port, '/retried')).status, 200);
    let line = '';
    await waitFor('the access-log line', () => {
      try {
        line = readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('/retried')) ?? '';
      } catch {
        line = '';
      }
      return line !== '';
    });
    const field = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(line)?.[1]?.split(', ');
    assert.deepEqual(field('upstream_addr'), [dead.url, live.url]);
    assert.deepEqual(field('upstream_status'), ['502', '200']);
    const connect = field('upstream_connect_time')!;
    const header = field('upstream_header_time')!;
    const response = field('upstream_response_time')!;
    assert.equal(connect.length, 2);
    assert.equal(header[0], '-', 'the refused attempt never got a header');
    assert.match(header[1]!, /^\d+\.\d{3}$/);
    assert.match(response[0]!, /^\d+\.\d{3}$/);
    assert.match(response[1]!, /^\d+\.\d{3}$/);
    assert.match(line, / 200 /);
  });
});
