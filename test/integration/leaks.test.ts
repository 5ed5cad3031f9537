/**
 * What clients learn from Portico's errors: nothing of the inside. For every error Portico produces (400, 403,
 * 404, 405, 408, 413, 414, 417, 421, 429, 431, 500, 502, 503, 504), an upstream that refuses, resets mid-body,
 * answers a malformed head or never answers, a bad static path, a file Portico may not read, and a handler that
 * throws an error whose message names a path and an upstream address: the head and body the client receives
 * name no upstream host:port, carry no error text or stack frame, and no absolute path of the test tree. The app's
 * own `Server` and `X-Powered-By` never reach the client (Portico's `Server` replaces them, unlike nginx, which
 * passes the app's X-Powered-By on by default).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { chmodSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import { registerHandlerKind } from '../../src/handlers/index.js';
import { defineHandler } from '../../src/handlers/types.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest, type RawResponse } from '../helpers/raw-client.js';

/** A handler kind for this test only: fails the way a bug would, with an error naming the inside. */
registerHandlerKind(
  defineHandler({
    kind: 'test_fail',
    options: z.strictObject({ mode: z.enum(['throw', 'reject', 'after_head']) }),
    create(options) {
      const inside = new Error(`ENOENT: open '/srv/portico/secret/app.sock' via 127.0.0.1:6379 (UND_ERR_SOCKET)`);
      return {
        handle(ctx) {
          if (options.mode === 'throw') throw inside;
          if (options.mode === 'reject') return Promise.reject(inside);
          ctx.res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' });
          ctx.res.write('partial');
          return Promise.reject(inside);
        },
      };
    },
  }),
);

/**
 * A raw backend whose behaviour follows the request target: `/reset/` sends a head and part of the body and
 * resets; `/badhead/` answers a malformed status line; `/slow/` never answers; `/leaky/` answers with the app's
 * Server, X-Powered-By and its own address in a field.
 */
async function startBackend(): Promise<{ port: number; received: string[]; arrived: EventEmitter; stop(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const received: string[] = [];
  const arrived = new EventEmitter();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const target = /^[A-Z]+ (\S+)/.exec(head)?.[1] ?? '';
      received.push(target);
      arrived.emit(target);
      head = '';
      const port = (server.address() as AddressInfo).port;
      if (target.startsWith('/reset/')) {
        socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nfirst part ');
        setImmediate(() => socket.resetAndDestroy());
      } else if (target.startsWith('/badhead/')) {
        socket.end(`HTTP/1.1 2OO Fine\r\nX-Upstream: 127.0.0.1:${port}\r\n\r\n`);
      } else if (target.startsWith('/leaky/')) {
        socket.write(`HTTP/1.1 200 OK\r\nServer: secret-app/1.2.3\r\nX-Powered-By: PHP/5.4.1\r\nContent-Length: 2\r\n\r\nok`);
      }
      // /slow/: no answer.
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    received,
    arrived,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

let backend: Awaited<ReturnType<typeof startBackend>>;
let refusedPort: number;
let portico: RunningPortico;
const outcomes: string[] = [];

/** The insides a client must never learn. */
function insides(): RegExp[] {
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return [
    new RegExp(`\\b(${backend.port}|${refusedPort}|6379)\\b`),
    /127\.0\.0\.1|localhost|\[::1\]/i,
    // Error text (`TypeError:`, `Error: …`) and stack frames; the generic page's "Internal Server Error" is fine.
    /\w*Error:|\bat \S+ \(|^\s+at |\.[cm]?js:\d+/m,
    /E[A-Z]{3,}|UND_ERR|PORTICO_[A-Z_]+/,
    new RegExp(escape(portico.dir)),
    new RegExp(escape(path.dirname(fileURLToPath(import.meta.url)))),
    /\/srv\/|\/work\/|\/tmp\/|node:internal|node_modules/,
    /secret-app|PHP\/5/,
  ];
}

/** Asserts that nothing of the inside is in what the client received (head and body). */
function assertNoLeak(res: RawResponse, what: string): void {
  for (const pattern of insides()) assert.doesNotMatch(res.raw, pattern, `${what}: the answer reveals ${pattern}`);
}

function record(what: string, res: RawResponse): void {
  outcomes.push(`${what}: ${res.status}${res.closed ? ' (closed)' : ''}, ${res.raw.length} bytes`);
}

before(async () => {
  backend = await startBackend();
  refusedPort = await closedPort();
  const app = `http://127.0.0.1:${backend.port}`;
  portico = await startPortico(
    `listen:
  - { addr: "127.0.0.1:0", header_timeout: 500ms, max_header_size: 4KB }
upstreams:
  refused: { servers: [{ url: "http://127.0.0.1:${refusedPort}" }], retries: 0, try_duration: 0s }
  app: { servers: [{ url: "${app}" }], retries: 0, timeouts: { response_header: 400ms } }
  busy: { servers: [{ url: "${app}" }], retries: 0, max_conns: 1, queue: { size: 0 }, timeouts: { response_header: 2s } }
sites:
  - hosts: ["a.test"]
    routes:
      - path: /static/
        static: { root: ./site }
      - path: /denied/
        access: [{ deny: all }]
        respond: { body: "never" }
      - path: /limited/
        rate_limit: { rate: 1/m, burst: 1 }
        respond: { body: "once" }
      - path: /refused/
        proxy: { upstream: refused }
      - path: /busy/
        proxy: { upstream: busy, strip_prefix: true }
      - path: /up/
        proxy: { upstream: app, strip_prefix: true, max_body_size: 1KB }
      - path: /throw/
        test_fail: { mode: throw }
      - path: /reject/
        test_fail: { mode: reject }
      - path: /after-head/
        test_fail: { mode: after_head }
`,
    // The static route's root holds its full paths (as nginx's root): /static/x is site/static/x.
    { 'site/static/index.html': 'home', 'site/static/dir/.keep': '' },
  );
});

after(async () => {
  await portico.stop();
  await backend.stop();
});

const H = 'Host: a.test\r\n';
const send = (request: string) => rawRequest(portico.port, request);

describe("Portico's own error answers reveal nothing of the inside", () => {
  const cases: Array<[number, string, string]> = [
    [400, 'a path with %00', `GET /static/a%00b HTTP/1.1\r\n${H}\r\n`],
    [400, 'a malformed request Node refuses (bare LF)', `GET /static/ HTTP/1.1\r\n${H}X: a\nb\r\n\r\n`],
    [403, 'an access rule', `GET /denied/ HTTP/1.1\r\n${H}\r\n`],
    [404, 'a file that does not exist', `GET /static/nothing/here.txt HTTP/1.1\r\n${H}\r\n`],
    [404, 'a path that climbs out of the root', `GET /static/..%2f..%2fetc%2fpasswd HTTP/1.1\r\n${H}\r\n`],
    [403, 'a folder without an index', `GET /static/dir/ HTTP/1.1\r\n${H}\r\n`],
    [404, 'no route', `GET /nowhere HTTP/1.1\r\n${H}\r\n`],
    [405, 'POST to a static route', `POST /static/index.html HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`],
    [405, 'CONNECT', `CONNECT 127.0.0.1:${0} HTTP/1.1\r\n${H}\r\n`],
    [408, 'a head that never ends (header_timeout)', `GET /static/ HTTP/1.1\r\n${H}X-Slow: 1\r\n`],
    [413, 'a body over max_body_size', `POST /up/x HTTP/1.1\r\n${H}Content-Length: 5000\r\n\r\n`],
    [414, 'a request line over max_header_size', `GET /${'a'.repeat(5000)} HTTP/1.1\r\n${H}\r\n`],
    [417, 'an unknown expectation', `GET /static/ HTTP/1.1\r\n${H}Expect: magic\r\n\r\n`],
    [421, 'a host no site serves', `GET /static/ HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n`],
    [431, 'a field over max_header_size', `GET /static/ HTTP/1.1\r\n${H}X-Big: ${'b'.repeat(5000)}\r\n\r\n`],
    [500, 'a handler that throws an error naming a path and an address', `GET /throw/ HTTP/1.1\r\n${H}\r\n`],
    [500, 'a handler whose promise rejects with such an error', `GET /reject/ HTTP/1.1\r\n${H}\r\n`],
    [502, 'an upstream that refuses the connection', `GET /refused/x HTTP/1.1\r\n${H}\r\n`],
    [502, 'an upstream that answers a malformed status line', `GET /up/badhead/ HTTP/1.1\r\n${H}\r\n`],
    [504, 'an upstream that never answers (response_header timeout)', `GET /up/slow/ HTTP/1.1\r\n${H}\r\n`],
  ];
  for (const [status, what, request] of cases) {
    test(`${status} for ${what}: no upstream address, error text, stack or path`, async () => {
      const res = await send(request);
      record(what, res);
      assert.equal(res.status, status);
      assert.match(res.body, new RegExp(`^<!doctype html>.*<h1>${status} `, 's'), "Portico's generic page");
      assertNoLeak(res, what);
    });
  }

  test('429 from a rate limit: no upstream address, error text, stack or path', async () => {
    const first = await send(`GET /limited/ HTTP/1.1\r\n${H}\r\n`);
    assert.equal(first.status, 200);
    const res = await send(`GET /limited/ HTTP/1.1\r\n${H}\r\n`);
    record('a rate limit', res);
    assert.equal(res.status, 429);
    assertNoLeak(res, '429');
  });

  test('503 when the only server is at max_conns with no queue: no upstream address, error text, stack or path', async () => {
    // The first request occupies the server: wait until the backend has it.
    const held = once(backend.arrived, '/slow/hold');
    const holding = net.connect(portico.port, '127.0.0.1');
    holding.on('error', () => {});
    holding.write(`GET /busy/slow/hold HTTP/1.1\r\n${H}\r\n`);
    try {
      await held;
      const res = await send(`GET /busy/slow/second HTTP/1.1\r\n${H}\r\n`);
      record('max_conns reached', res);
      assert.equal(res.status, 503);
      assertNoLeak(res, '503');
    } finally {
      holding.destroy();
    }
  });

  test('an upstream reset mid-body: the client sees the cut, and nothing of the inside', async () => {
    const res = await send(`GET /up/reset/ HTTP/1.1\r\n${H}\r\n`);
    record('an upstream reset mid-body', res);
    assert.equal(res.status, 200);
    assert.ok(res.closed, 'the connection is cut');
    assert.ok(res.body.length < 1000, 'the answer is visibly incomplete');
    assertNoLeak(res, 'reset mid-body');
  });

  test('a handler failing after its head was sent: the connection is cut, and nothing of the inside', async () => {
    const res = await send(`GET /after-head/ HTTP/1.1\r\n${H}\r\n`);
    record('a handler failing after the head', res);
    assert.ok(res.closed);
    assertNoLeak(res, 'after head');
  });

  test("the app's Server and X-Powered-By never reach the client; Portico's Server replaces them", async () => {
    const res = await send(`GET /up/leaky/ HTTP/1.1\r\n${H}\r\n`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.server, 'Portico');
    assert.equal(res.headers['x-powered-by'], undefined);
    assertNoLeak(res, 'leaky app');
  });

  test('the outcomes', (t) => {
    for (const outcome of outcomes) t.diagnostic(outcome);
    assert.ok(outcomes.length >= 24);
  });
});

/** `node dist/src/cli.js` as this test's build has it. */
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli.js');

describe('a file Portico may not read', () => {
  let child: ChildProcess | undefined;
  let dir: string;
  let port = 0;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'portico-leaks-'));
    mkdirSync(path.join(dir, 'site'));
    writeFileSync(path.join(dir, 'site/open.txt'), 'readable');
    writeFileSync(path.join(dir, 'site/locked.txt'), 'LOCKED-CONTENT');
    writeFileSync(path.join(dir, 'portico.yaml'), `listen: ["127.0.0.1:0"]\nlog: { access: off, level: error }\nsites:\n  - routes:\n      - path: /\n        static: { root: ./site }\n`);
    chmodSync(dir, 0o755);
    chmodSync(path.join(dir, 'site'), 0o755);
    chmodSync(path.join(dir, 'site/locked.txt'), 0o000);
    // root reads any file: Portico runs as nobody then, so the permission holds.
    const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    child = spawn(process.execPath, [CLI, 'run', '-c', path.join(dir, 'portico.yaml')], { ...asNobody, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    port = await new Promise<number>((resolve, reject) => {
      child!.stderr!.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const found = /serving .* on http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr);
        if (found !== null) resolve(Number(found[1]));
      });
      child!.once('exit', (code) => reject(new Error(`portico exited (${code}): ${stderr}`)));
    });
  });

  after(async () => {
    if (child !== undefined && child.exitCode === null) {
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test('a permission-denied file gets 403 with the generic page: no path, no error code, no content', async () => {
    const open = await rawRequest(port, 'GET /open.txt HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(open.status, 200, 'Portico serves the readable file beside it');
    const res = await rawRequest(port, 'GET /locked.txt HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(res.status, 403);
    assert.doesNotMatch(res.raw, /LOCKED-CONTENT|EACCES|EPERM|Error|\/tmp\/|portico-leaks|locked\.txt/);
  });
});
