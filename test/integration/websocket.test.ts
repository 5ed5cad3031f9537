/**
 * WebSocket tunnels as attempts like any other proxied request, over real sockets: the sticky cookie (followed
 * and set on the 101), max_conns with its queue, waiting for a server under try_duration, passive health, a
 * tunnel counted on its server while open (least_conn, max_conns), and Portico's own error page on the raw
 * socket when no tunnel could be made. The app servers are plain HTTP servers whose 'upgrade' handler answers
 * 101 and echoes bytes (no WebSocket framing is needed to prove any of this); the clients are raw sockets.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { after, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { RawConnection, appRequests, hasHead, httpRequest, statusOf, waitFor } from './proxy-support.js';

/** Generous: CI runs the tests two at a time on a loaded 2-core machine. */
const LONG = 15_000;

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) {
    try {
      await cleanup();
    } catch {
      // Already stopped by its test.
    }
  }
});

/** How a backend answers an upgrade. */
type UpgradeMode = 'accept' | 'hold' | 'silent' | 'reset';

/** A test app server that answers plain requests with its id and upgrades per `mode`. */
interface WsBackend extends TestUpstream {
  readonly id: string;
  mode: UpgradeMode;
  /** Upgrade requests seen, in order. */
  readonly upgrades: IncomingMessage[];
  /** Upgraded sockets still open on the app side. */
  readonly open: Set<Duplex>;
  /** Most upgraded sockets open at once. */
  peak: number;
  /** Upgraded sockets closed so far. */
  closed: number;
  /** Upgrades held (mode 'hold'): call one to answer its 101. */
  readonly held: Array<() => void>;
}

function answer101(id: string, socket: Duplex, head: Buffer): void {
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: ${id}\r\n\r\n`);
  if (head.length > 0) socket.write(head);
  socket.on('data', (chunk: Buffer) => socket.write(chunk));
}

async function wsBackend(id: string, mode: UpgradeMode = 'accept'): Promise<WsBackend> {
  const backend = (await startUpstream(id)) as WsBackend;
  Object.assign(backend, { id, mode, upgrades: [], open: new Set<Duplex>(), peak: 0, closed: 0, held: [] });
  backend.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    backend.upgrades.push(req);
    backend.open.add(socket);
    backend.peak = Math.max(backend.peak, backend.open.size);
    socket.on('close', () => {
      backend.open.delete(socket);
      backend.closed++;
    });
    socket.on('error', () => {});
    // Portico ended its side: the app closes (half-open is allowed on an upgraded socket, so say it).
    socket.on('end', () => socket.end());
    switch (backend.mode) {
      case 'accept':
        return answer101(id, socket, head);
      case 'hold':
        backend.held.push(() => answer101(id, socket, head));
        return;
      case 'reset':
        socket.destroy();
        return;
      case 'silent':
        return;
    }
  });
  cleanups.push(() => backend.stop());
  return backend;
}

/** A port nothing listens on (bound, then released). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** An upstream `app` of these servers with these options (YAML lines), behind the route `/`. */
function config(servers: ReadonlyArray<WsBackend | string>, options = ''): string {
  const list = servers.map((s) => (typeof s === 'string' ? s : `{ url: "${s.url}" }`)).join(', ');
  return `upstreams:\n  app:\n    servers: [${list}]\n${options.replace(/^/gm, '    ')}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
}

async function portico(yaml: string): Promise<RunningPortico> {
  const running = await startPortico(yaml);
  cleanups.push(() => running.stop());
  return running;
}

/** A client connection that has sent a WebSocket upgrade request. */
async function sendUpgrade(port: number, cookie?: string): Promise<RawConnection> {
  const conn = await RawConnection.open(port);
  cleanups.push(() => conn.close());
  conn.write(
    'GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
      (cookie === undefined ? '' : `Cookie: ${cookie}\r\n`) +
      '\r\n',
  );
  return conn;
}

/** A parsed response head (field names lower-cased, repeated fields kept). */
interface Head {
  status: number;
  text: string;
  fields: Map<string, string[]>;
  body: string;
}

function parseHead(received: Buffer): Head {
  const raw = received.toString('latin1');
  const end = raw.indexOf('\r\n\r\n');
  const text = end === -1 ? raw : raw.slice(0, end);
  const fields = new Map<string, string[]>();
  for (const line of text.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).toLowerCase();
    fields.set(name, [...(fields.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  return { status: statusOf(text), text, fields, body: end === -1 ? '' : raw.slice(end + 4) };
}

/** Waits for the response head on a connection that sent an upgrade. */
async function headOf(conn: RawConnection, timeoutMs = LONG): Promise<Head> {
  return parseHead(await conn.until(hasHead, timeoutMs));
}

/** Opens a tunnel and checks it was opened (101). */
async function openTunnel(port: number, cookie?: string): Promise<{ conn: RawConnection; head: Head }> {
  const conn = await sendUpgrade(port, cookie);
  const head = await headOf(conn);
  assert.equal(head.status, 101, head.text);
  return { conn, head };
}

/** Which backend a 101 came from. */
function backendOf(head: Head): string {
  return head.fields.get('x-backend')?.[0] ?? '?';
}

/** Bytes written into an open tunnel come back (the app echoes). */
async function assertEchoes(conn: RawConnection, text: string): Promise<void> {
  const start = conn.received.indexOf('\r\n\r\n') + 4;
  conn.write(text);
  const received = await conn.until((buf) => buf.subarray(start).includes(text), LONG);
  assert.ok(received.subarray(start).includes(text), `no echo of ${text}`);
}

/** Closes a client connection and waits until the app side of its tunnel has closed too. */
async function closeTunnel(conn: RawConnection, backend: WsBackend): Promise<void> {
  const before = backend.closed;
  conn.close();
  await waitFor('the app side of the tunnel to close', () => backend.closed > before, LONG);
}

/** Asserts that `received` is Portico's own error page for `status`, on a connection Portico closed. */
function assertPorticoError(conn: RawConnection, status: number, hidden: readonly number[]): void {
  const head = parseHead(conn.received);
  assert.equal(head.status, status, head.text);
  assert.match(head.text, new RegExp(`^HTTP/1\\.1 ${status} [A-Z]`), 'status line with a reason phrase');
  assert.deepEqual(head.fields.get('server'), ['Portico']);
  assert.match(head.fields.get('content-type')?.[0] ?? '', /^text\/html/);
  assert.deepEqual(head.fields.get('connection'), ['close']);
  if (status === 503) assert.deepEqual(head.fields.get('retry-after'), ['1'], 'a 503 says when to retry, as every other 503 of Portico');
  assert.equal(Number(head.fields.get('content-length')?.[0]), Buffer.byteLength(head.body, 'latin1'), 'the whole page, as announced');
  assert.match(head.body, new RegExp(String(status)));
  assert.ok(!head.fields.has('upgrade') && !head.fields.has('x-backend'), 'nothing of the app server');
  for (const port of hidden) assert.ok(!conn.received.toString('latin1').includes(String(port)), 'no app server address');
  assert.ok(conn.closed, 'Portico closed the connection after its error page');
}

describe('sticky cookie', () => {
  test('an upgrade without the sticky cookie gets Set-Cookie on its 101, and upgrades sending it all reach that server', async () => {
    const a = await wsBackend('a');
    const b = await wsBackend('b');
    const server = await portico(config([a, b], 'sticky: { cookie: pin }\npassive: { max_fails: 0 }'));
    const first = await openTunnel(server.port);
    const owner = backendOf(first.head);
    const setCookie = first.head.fields.get('set-cookie') ?? [];
    assert.equal(setCookie.length, 1, first.head.text);
    const pin = /^pin=([^;]+)/.exec(setCookie[0]!)?.[1];
    assert.ok(pin !== undefined, `Set-Cookie: ${setCookie[0]}`);
    assert.ok(![a.port, b.port].some((p) => setCookie[0]!.includes(String(p))), 'the cookie does not reveal the server');
    await assertEchoes(first.conn, 'first-tunnel');
    first.conn.close();

    // Round robin alone would alternate between a and b: only the cookie keeps them on one server.
    for (let i = 0; i < 6; i++) {
      const { conn, head } = await openTunnel(server.port, `other=1; pin=${pin}`);
      assert.equal(backendOf(head), owner, `upgrade ${i} left the pinned server`);
      assert.equal(head.fields.get('set-cookie'), undefined, 'a cookie that already names the server is not set again');
      conn.close();
    }
    // The cookie a tunnel set pins ordinary requests too: one cookie for both kinds of traffic.
    for (let i = 0; i < 4; i++) {
      const res = await httpRequest(server.port, `/n${i}`, { headers: { Cookie: `pin=${pin}` } });
      assert.equal(res.body.toString(), owner);
    }
  });

  test('with app_cookie an upgrade follows its session\'s route (Tomcat\'s jvmRoute) and gets no cookie of Portico\'s', async () => {
    const a = await wsBackend('a');
    const b = await wsBackend('b');
    const servers = [`{ url: "${a.url}", route: tc1 }`, `{ url: "${b.url}", route: tc2 }`];
    const server = await portico(config(servers, 'sticky: { app_cookie: JSESSIONID }\npassive: { max_fails: 0 }'));
    // Round robin alone would alternate: the route keeps each session's upgrades on its instance.
    for (const [route, owner] of [['tc1', 'a'], ['tc2', 'b'], ['tc2', 'b'], ['tc1', 'a'], ['tc1', 'a'], ['tc2', 'b']] as const) {
      const { conn, head } = await openTunnel(server.port, `JSESSIONID=0A1B2C.${route}`);
      assert.equal(backendOf(head), owner, route);
      assert.equal(head.fields.get('set-cookie'), undefined);
      conn.close();
    }
  });

  test('an upgrade with a stale sticky cookie is tunnelled and re-pinned: Set-Cookie names the server it reached', async () => {
    const a = await wsBackend('a');
    const b = await wsBackend('b');
    const server = await portico(config([a, b], 'sticky: { cookie: pin }\npassive: { max_fails: 0 }'));
    const { conn, head } = await openTunnel(server.port, 'pin=0123456789abcdef');
    conn.close();
    const pin = /^pin=([^;]+)/.exec(head.fields.get('set-cookie')?.[0] ?? '')?.[1];
    assert.ok(pin !== undefined && pin !== '0123456789abcdef', head.text);
    const owner = backendOf(head);
    for (let i = 0; i < 4; i++) {
      const again = await openTunnel(server.port, `pin=${pin}`);
      again.conn.close();
      assert.equal(backendOf(again.head), owner);
    }
  });
});

describe('max_conns and the queue', () => {
  test('max_conns: 1: while a tunnel is open another upgrade waits in the queue without reaching the app, then is tunnelled when the first closes', async () => {
    const app = await wsBackend('app');
    const server = await portico(config([app], 'max_conns: 1\nqueue: { size: 1, timeout: 30s }'));
    const first = await openTunnel(server.port);
    // Two more upgrades race for the one place in the queue: whichever loses gets 503 at once, which proves the
    // winner is waiting in the queue (and not, say, still on its way to Portico).
    const contenders = [await sendUpgrade(server.port), await sendUpgrade(server.port)];
    const loser = await Promise.race(contenders.map((conn) => conn.until(hasHead, LONG).then(() => conn, () => undefined)));
    assert.ok(loser !== undefined, 'one of the two got an answer');
    assertPorticoError(await waitClosed(loser), 503, [app.port]);
    const waiting = contenders.find((conn) => conn !== loser)!;
    assert.equal(waiting.received.length, 0, 'the queued upgrade got no answer yet');
    assert.equal(app.upgrades.length, 1, 'the queued upgrade did not reach the app server');

    await closeTunnel(first.conn, app);
    const head = await headOf(waiting);
    assert.equal(head.status, 101, head.text);
    await assertEchoes(waiting, 'second-tunnel');
    assert.equal(app.upgrades.length, 2);
    assert.equal(app.peak, 1, 'never two tunnels at once on the app server');
    waiting.close();
  });

  test("a server's own max_conns: 1 with a short queue timeout: an upgrade finding it busy with an open tunnel gets Portico's 503", async () => {
    const app = await wsBackend('app');
    const server = await portico(config([`{ url: "${app.url}", max_conns: 1 }`], 'queue: { size: 10, timeout: 200ms }\nretries: 0'));
    const first = await openTunnel(server.port);
    const second = await sendUpgrade(server.port);
    assert.ok(await second.waitClosed(LONG), 'Portico answered and closed');
    assertPorticoError(second, 503, [app.port]);
    assert.equal(app.upgrades.length, 1, 'the refused upgrade never reached the app server');
    await assertEchoes(first.conn, 'still-open');
    first.conn.close();
  });
});

/** Waits until Portico closed the connection (its error page is then all there). */
async function waitClosed(conn: RawConnection): Promise<RawConnection> {
  assert.ok(await conn.waitClosed(LONG), 'Portico closed the connection');
  return conn;
}

describe('waiting for a server (try_duration)', () => {
  test('an upgrade while the only server is held down by its active checks waits, and is tunnelled once the checks pass again', async () => {
    const app = await wsBackend('app');
    let healthy = false;
    let checks = 0;
    app.server.removeAllListeners('request');
    app.server.on('request', (req: IncomingMessage, res: import('node:http').ServerResponse) => {
      if (req.url === '/health') {
        checks++;
        res.writeHead(healthy ? 200 : 500);
        res.end();
        return;
      }
      res.end('app');
    });
    const server = await portico(
      config([app], 'health: { path: /health, interval: 100ms, timeout: 2s, fall: 1, rise: 1 }\ntry_duration: 20s\ntry_interval: 50ms'),
    );
    // A check answered after the first failing one was judged: the server is held down now.
    await waitFor('two failing health checks', () => checks >= 2, LONG);
    const conn = await sendUpgrade(server.port);
    // Let a few more checks fail while the upgrade waits (a clock made of events, not a fixed sleep).
    const seen = checks;
    await waitFor('three more failing health checks', () => checks >= seen + 3, LONG);
    assert.equal(conn.received.length, 0, `the upgrade was answered while no server was up: ${conn.received.toString('latin1')}`);
    assert.equal(app.upgrades.length, 0);
    healthy = true;
    const head = await headOf(conn);
    assert.equal(head.status, 101, head.text);
    await assertEchoes(conn, 'after-the-wait');
    conn.close();
  });

  test('an upgrade to a server not listening yet keeps trying for try_duration (not just `retries` times) and is tunnelled once it listens', async () => {
    const late = socketPath('late');
    const server = await portico(config([`{ url: "unix:${late}" }`], 'retries: 0\ntry_duration: 20s\ntry_interval: 50ms\npassive: { max_fails: 0 }'));
    const conn = await sendUpgrade(server.port);
    // The client is left waiting across many refused attempts (try_interval is 50 ms); then the app comes up.
    const quiet = await conn.until(() => false, 1000).catch(() => conn.received);
    assert.equal(quiet.length, 0, `answered while the app server was down: ${quiet.toString('latin1')}`);
    const app = await wsBackendAt('late', late);
    const head = await headOf(conn);
    assert.equal(head.status, 101, head.text);
    assert.equal(backendOf(head), 'late');
    assert.equal(app.upgrades.length, 1);
    conn.close();
  });

  test("with try_duration: 0 an upgrade to a server that is down gets Portico's 502 page at once", async () => {
    const port = await freePort();
    const server = await portico(config([`{ url: "http://127.0.0.1:${port}" }`]));
    const conn = await waitClosed(await sendUpgrade(server.port));
    assertPorticoError(conn, 502, [port]);
  });
});

/**
 * A backend started late, on a unix socket path nothing listened on before (a path, not a released TCP port:
 * another test running meanwhile could be given that port).
 */
async function wsBackendAt(id: string, socketPath: string): Promise<WsBackend> {
  const backend = await wsBackend(id);
  await backend.stop();
  await new Promise<void>((resolve, reject) => {
    backend.server.once('error', reject);
    backend.server.listen(socketPath, () => resolve());
  });
  return backend;
}

/** A fresh path for a unix socket (removed with the test's other leftovers). */
function socketPath(name: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-ws-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, `${name}.sock`);
}

describe('passive health', () => {
  test('a refused upgrade counts as a failure (max_fails: 1): it is retried on the next server, and the refusing one is ejected for ordinary requests', async () => {
    const dead = socketPath('dead');
    const live = await wsBackend('live');
    // `first` would send everything to the first server: only its ejection can move traffic off it.
    const server = await portico(
      config([`{ url: "unix:${dead}" }`, live], 'policy: first\npassive: { max_fails: 1, fail_timeout: 60s }'),
    );
    const { conn, head } = await openTunnel(server.port);
    assert.equal(backendOf(head), 'live', 'the refused attempt was retried on the live server');
    conn.close();

    // The first server is back, but ejected: it gets nothing.
    const back = await wsBackendAt('back', dead);
    for (let i = 0; i < 5; i++) {
      const res = await httpRequest(server.port, `/n${i}`);
      assert.equal(res.body.toString(), 'live', `request ${i}`);
    }
    const again = await openTunnel(server.port);
    assert.equal(backendOf(again.head), 'live');
    again.conn.close();
    assert.equal(appRequests(back) + back.upgrades.length, 0, 'the ejected server got no traffic');
  });
});

describe('a tunnel is counted on its server while open', () => {
  test('least_conn: while a tunnel is open every ordinary request goes to the other server; once it closes they spread again', async () => {
    const a = await wsBackend('a');
    const b = await wsBackend('b');
    const server = await portico(config([a, b], 'policy: least_conn\npassive: { max_fails: 0 }'));
    const { conn, head } = await openTunnel(server.port);
    const busy = backendOf(head);
    const other = busy === 'a' ? 'b' : 'a';
    for (let i = 0; i < 8; i++) {
      const res = await httpRequest(server.port, `/n${i}`);
      assert.equal(res.body.toString(), other, `request ${i} went to the server holding the tunnel`);
    }
    await closeTunnel(conn, busy === 'a' ? a : b);
    // The release reaches Portico when it sees the close: poll (bounded) until the busy server gets traffic again.
    await waitFor(
      'a request on the server whose tunnel closed',
      async () => (await httpRequest(server.port, '/again')).body.toString() === busy,
      LONG,
    );
    const spread = new Set<string>();
    for (let i = 0; i < 4; i++) spread.add((await httpRequest(server.port, `/s${i}`)).body.toString());
    assert.deepEqual([...spread].sort(), ['a', 'b']);
  });

  test('a client that goes away while the app server is still answering the upgrade frees its place under max_conns and the app connection is closed', async () => {
    const app = await wsBackend('app', 'hold');
    const server = await portico(config([app], 'max_conns: 1\nqueue: { size: 10, timeout: 500ms }'));
    const gone = await sendUpgrade(server.port);
    await waitFor('the upgrade to reach the app server', () => app.held.length === 1, LONG);
    // A reset, so that Portico's side of the client connection is destroyed at once.
    gone.socket.resetAndDestroy();
    // Portico gives up the upgrade it no longer has a client for: the app connection closes, and the place under
    // max_conns is free again (else the next upgrade would wait its 500 ms in the queue and get 503).
    await waitFor('the app side of the abandoned upgrade to close', () => app.open.size === 0, LONG);
    app.mode = 'accept';
    const { conn } = await openTunnel(server.port);
    await assertEchoes(conn, 'next-client');
    conn.close();
  });
});

describe("Portico's error page on the raw socket", () => {
  test('an app server that resets the upgrade connection: 502, Server: Portico, text/html, Connection: close', async () => {
    const app = await wsBackend('app', 'reset');
    const server = await portico(config([app], 'retries: 0'));
    const conn = await waitClosed(await sendUpgrade(server.port));
    assertPorticoError(conn, 502, [app.port]);
    assert.equal(app.upgrades.length, 1);
  });

  test('an app server that never answers the upgrade: 504 after timeouts.response_header', async () => {
    const app = await wsBackend('app', 'silent');
    const server = await portico(config([app], 'retries: 0\ntimeouts: { response_header: 300ms }'));
    const conn = await waitClosed(await sendUpgrade(server.port));
    assertPorticoError(conn, 504, [app.port]);
  });

  test('no server available (the only one held down by active checks): 503', async () => {
    const app = await wsBackend('app');
    let checks = 0;
    app.server.removeAllListeners('request');
    app.server.on('request', (req: IncomingMessage, res: import('node:http').ServerResponse) => {
      if (req.url === '/health') checks++;
      res.writeHead(req.url === '/health' ? 500 : 200);
      res.end();
    });
    const server = await portico(config([app], 'health: { path: /health, interval: 100ms, fall: 1, rise: 1 }'));
    await waitFor('two failing health checks', () => checks >= 2, LONG);
    const conn = await waitClosed(await sendUpgrade(server.port));
    assertPorticoError(conn, 503, [app.port]);
    assert.equal(app.upgrades.length, 0);
  });
});
