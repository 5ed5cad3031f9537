/**
 * Spawned slots in the data plane, over real sockets: an upstream's `spawn` slots (app#1, app#2, ...) are down
 * until the Supervisor says which port serves them, follow its moves at once, and a move resolves only when the
 * requests and WebSocket tunnels on the port left have ended (or at its bound, when they are cut). The Supervisor
 * here is the test's own (`TestSupervisor`): its "instances" are real HTTP servers on port 0 in this process,
 * started and moved to as the real one does with processes.
 */
import assert from 'node:assert/strict';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { rmSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import type { Config } from '../../src/config/load.js';
import { slotName } from '../../src/config/schema.js';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import type { SlotSink, SupervisorLike } from '../../src/server/supervisor-seam.js';
import { makeTree } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { RawConnection, httpRequest, waitFor } from './proxy-support.js';
import { within } from '../helpers/within.js';

/** Generous: the tests share a loaded 2-core machine. */
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

/** One "instance" of a slot: a real HTTP server that answers `<slot> <port>`, holds /slow, and echoes upgrades. */
interface Instance {
  readonly upstream: string;
  readonly slot: string;
  readonly backend: TestUpstream;
  /** When each request arrived, and when its client sent it (`x-sent`, performance.now() of this process). */
  readonly sent: number[];
  /** Held /slow answers: call one to finish it. */
  readonly held: Array<() => void>;
  /** Upgraded sockets open on the app side. */
  readonly tunnels: Set<Duplex>;
}

async function startInstance(upstream: string, slot: string): Promise<Instance> {
  const sent: number[] = [];
  const held: Array<() => void> = [];
  const tunnels = new Set<Duplex>();
  const backend = await startUpstream((req: IncomingMessage, res: ServerResponse) => {
    const port = req.socket.localPort;
    if (req.headers['x-sent'] !== undefined) sent.push(Number(req.headers['x-sent']));
    // Only app#1 fails (as a broken instance does); the others answer /fail as any path.
    if (req.url === '/fail' && slot === 'app#1') {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`${slot} failed`);
      return;
    }
    if (req.url === '/redirect') {
      // An app knows its own address only as the port it was given.
      res.writeHead(302, { location: `http://127.0.0.1:${port}/there` });
      res.end();
      return;
    }
    if (req.url === '/slow') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '10' });
      res.write('slow-');
      held.push(() => res.end('done!'));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`${slot} ${port}`);
  });
  backend.server.on('upgrade', (_req: IncomingMessage, socket: Duplex, head: Buffer) => {
    tunnels.add(socket);
    socket.on('close', () => tunnels.delete(socket));
    socket.on('error', () => {});
    socket.on('end', () => socket.end());
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.on('data', (chunk: Buffer) => socket.write(chunk));
  });
  cleanups.push(() => backend.stop());
  return { upstream, slot, backend, sent, held, tunnels };
}

/** A move the test made: the instances left and joined, and the sink's promise. */
interface Move {
  readonly previous: Instance | undefined;
  readonly next: Instance | undefined;
  /** Resolves when Portico no longer uses the previous instance (the sink's `moved`). */
  readonly moved: Promise<void>;
  /** Whether `moved` has resolved. */
  readonly settled: () => boolean;
  /** When the move was made (performance.now()). */
  readonly at: number;
}

/** The test's Supervisor: instances are in-process HTTP servers; `start` runs each slot's unless `empty`. */
class TestSupervisor implements SupervisorLike {
  readonly instances = new Map<string, Instance>();
  /** Whether Portico's listener was bound when `start` ran, and accepted connections when `stop` ran. */
  listeningAtStart: boolean | undefined;
  listeningAtStop: boolean | undefined;
  /** Portico (set once built), and its port (once started), for the checks above. */
  portico: Portico | undefined;
  porticoPort = 0;
  stopped = false;

  constructor(
    readonly config: Config,
    readonly sink: SlotSink,
    readonly options: { empty: boolean; drainMs: number },
  ) {}

  async start(): Promise<void> {
    this.listeningAtStart = this.portico!.addresses.some((address) => address !== undefined);
    if (this.options.empty) return;
    for (const [name, upstream] of Object.entries(this.config.upstreams)) {
      for (let i = 0; i < (upstream.spawn?.instances ?? 0); i++) await (await this.replace(name, slotName(name, i))).moved;
    }
  }

  port(upstream: string, slot: string): number | undefined {
    return this.instances.get(`${upstream}\0${slot}`)?.backend.port;
  }

  slots(): readonly unknown[] {
    return [...this.instances.values()].map((i) => ({ upstream: i.upstream, slot: i.slot, port: i.backend.port }));
  }

  update(): string[] {
    return [];
  }

  async deploy(): Promise<unknown> {
    return {};
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.listeningAtStop = this.porticoPort === 0 ? undefined : await accepts(this.porticoPort);
    for (const instance of this.instances.values()) await instance.backend.stop();
  }

  /** A slot's instance now (throws when it has none). */
  instance(slot: string, upstream = 'app'): Instance {
    const found = this.instances.get(`${upstream}\0${slot}`);
    assert.ok(found, `${slot} has an instance`);
    return found;
  }

  /**
   * Starts a new instance for the slot (or none: `down`) and tells the sink; once the sink says nothing uses the
   * previous instance any more, it is stopped (as the real Supervisor does): a request still on it would fail.
   */
  async replace(upstream: string, slot: string, down = false, drainMs = this.options.drainMs): Promise<Move> {
    const key = `${upstream}\0${slot}`;
    const previous = this.instances.get(key);
    const next = down ? undefined : await startInstance(upstream, slot);
    if (next === undefined) this.instances.delete(key);
    else this.instances.set(key, next);
    let done = false;
    const at = performance.now();
    const moved = this.sink.moved(upstream, slot, next?.backend.port, drainMs).then(async () => {
      done = true;
      await previous?.backend.stop();
    });
    return { previous, next, moved, settled: () => done, at };
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

interface Running {
  readonly server: Portico;
  readonly port: number;
  readonly supervisor: TestSupervisor;
  readonly dir: string;
  reload(text: string): Promise<void>;
}

/** Starts Portico in this process from YAML text, with a TestSupervisor. */
async function portico(yaml: string, options: { empty?: boolean; drainMs?: number } = {}): Promise<Running> {
  const dir = makeTree();
  const file = path.join(dir, 'portico.yaml');
  const text = `listen: ["127.0.0.1:0"]\nlog: { access: off }\n${yaml}`;
  let supervisor!: TestSupervisor;
  const server = new Portico(parseConfig(text, file, dir), pino({ level: 'silent' }), {
    supervisor: (config, _logger, sink) => (supervisor = new TestSupervisor(config, sink, { empty: options.empty ?? false, drainMs: options.drainMs ?? 5000 })),
  });
  supervisor.portico = server;
  await server.start();
  const port = server.addresses[0]!.port;
  supervisor.porticoPort = port;
  cleanups.push(async () => {
    await server.stop(100);
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, port, supervisor, dir, reload: (yaml2) => server.reload(parseConfig(`listen: ["127.0.0.1:0"]\nlog: { access: off }\n${yaml2}`, file, dir)) };
}

/** An upstream `app` of `instances` spawned slots (plus `extra` YAML lines), behind the route `/`. */
function spawnConfig(instances: number, extra = '', servers = ''): string {
  return (
    `upstreams:\n  app:\n    spawn: { command: ["node", "app.js"], instances: ${instances}, ports: 3001-3010 }\n` +
    (servers === '' ? '' : `    servers: [${servers}]\n`) +
    extra.replace(/^/gm, '    ') +
    `\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`
  );
}

/** GET through Portico on a fresh connection: status, body and Set-Cookie. */
async function get(port: number, urlPath = '/', headers: Record<string, string> = {}): Promise<{ status: number; body: string; cookie: string | undefined }> {
  const res = await httpRequest(port, urlPath, { headers });
  const setCookie = res.headers['set-cookie']?.[0];
  return { status: res.status, body: res.body.toString(), cookie: setCookie === undefined ? undefined : setCookie.split(';')[0] };
}

/** A client connection that has sent a WebSocket upgrade to Portico and read its 101. */
async function openTunnel(port: number): Promise<RawConnection> {
  const conn = await RawConnection.open(port);
  cleanups.push(() => conn.close());
  conn.write(
    'GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  const head = await conn.until((r) => r.includes('\r\n\r\n'));
  assert.match(head.toString('latin1'), /^HTTP\/1\.1 101 /);
  return conn;
}

/** Sends `text` through a tunnel and waits for its echo. */
async function echoes(conn: RawConnection, text: string): Promise<boolean> {
  const before = conn.received.length;
  conn.write(text);
  const received = await conn.until((r) => r.subarray(before).includes(text)).catch(() => conn.received);
  return received.subarray(before).includes(text);
}

/** A GET of `/slow` through Portico whose answer the instance holds until released. */
function slowRequest(port: number): { done: Promise<{ status: number; body: string } | Error> } {
  const done = httpRequest(port, '/slow').then(
    (res) => ({ status: res.status, body: res.body.toString() }),
    (err: Error) => err,
  );
  return { done };
}

describe('spawned slots: down until moved, then served where they were moved', { timeout: 60_000 }, () => {
  test('a slot no instance serves is down: its upstream answers 503, and once moved to a port it serves there', async () => {
    const p = await portico(spawnConfig(1), { empty: true });
    assert.equal((await get(p.port)).status, 503, 'no instance yet: 503');
    const move = await p.supervisor.replace('app', 'app#1');
    await within('the first move', move.moved);
    const answer = await get(p.port);
    assert.equal(answer.status, 200);
    assert.equal(answer.body, `app#1 ${move.next!.backend.port}`);
    // Down again (its instance crashed): 503 again, and its instance gets nothing more.
    const down = await p.supervisor.replace('app', 'app#1', true);
    await within('the move to no instance', down.moved);
    assert.equal((await get(p.port)).status, 503, 'no instance any more: 503');
  });

  test('with fixed servers too, a slot is not used before its move, joins at once without waiting for a check (rise 3), and leaves when it has no instance', { timeout: LONG }, async () => {
    const fixed = await startUpstream('fixed');
    cleanups.push(() => fixed.stop());
    const p = await portico(spawnConfig(1, 'health: { path: /healthz, interval: 5s, rise: 3 }', `"${fixed.url}"`), { empty: true });
    const before = await Promise.all(Array.from({ length: 6 }, () => get(p.port)));
    assert.deepEqual(new Set(before.map((a) => `${a.status} ${a.body}`)), new Set(['200 fixed']), 'every request goes to the fixed server');
    const move = await p.supervisor.replace('app', 'app#1');
    await within('the move', move.moved);
    // Round robin over two available servers: of 4 requests, the slot gets 2 (no check had to pass: rise 3, 5 s).
    const during = [];
    for (let i = 0; i < 4; i++) during.push((await get(p.port)).body);
    assert.equal(during.filter((b) => b === `app#1 ${move.next!.backend.port}`).length, 2, `the slot serves its share: ${during.join(', ')}`);
    const down = await p.supervisor.replace('app', 'app#1', true);
    await within('the move to no instance', down.moved);
    const after = await Promise.all(Array.from({ length: 4 }, () => get(p.port)));
    assert.deepEqual(new Set(after.map((a) => `${a.status} ${a.body}`)), new Set(['200 fixed']), 'the fixed server takes everything again');
  });
});

describe('an instance\'s own address', { timeout: 60_000 }, () => {
  test('a Location naming the instance\'s port is rewritten to the client\'s origin, before and after a move', { timeout: LONG }, async () => {
    const p = await portico(spawnConfig(1));
    const location = async () => (await httpRequest(p.port, '/redirect')).headers.location;
    assert.equal(await location(), `http://127.0.0.1:${p.port}/there`);
    const move = await p.supervisor.replace('app', 'app#1');
    await within('the move', move.moved);
    assert.equal(await location(), `http://127.0.0.1:${p.port}/there`);
  });
});

describe('health on a move', { timeout: 60_000 }, () => {
  test('a move to a new instance clears the passive ejection the previous one earned', { timeout: LONG }, async () => {
    const p = await portico(spawnConfig(2, 'passive: { max_fails: 2, fail_timeout: 30s, max_ejection_percent: 100 }\nretries: 0'));
    // app#1 answers /fail with 502 (passive.on): two of them within fail_timeout eject it.
    const ejected = async (): Promise<boolean> => {
      const bodies = [];
      for (let i = 0; i < 4; i++) bodies.push((await get(p.port)).body.split(' ')[0]);
      return !bodies.includes('app#1');
    };
    for (let i = 0; i < 10 && !(await ejected()); i++) {
      for (let j = 0; j < 2; j++) await get(p.port, '/fail');
    }
    assert.ok(await ejected(), 'a slot was ejected (app#1 serves nothing)');
    const move = await p.supervisor.replace('app', 'app#1');
    await within('the move', move.moved);
    const bodies = [];
    for (let i = 0; i < 4; i++) bodies.push((await get(p.port)).body);
    assert.ok(bodies.includes(`app#1 ${move.next!.backend.port}`), `the new instance serves at once: ${bodies.join(', ')}`);
  });
});

describe('a move under load', { timeout: 60_000 }, () => {
  test('two moves under ~200 GET/s lose no request, and no request sent after a move reaches the instance left', { timeout: 30_000 }, async (t) => {
    const p = await portico(spawnConfig(2));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    cleanups.push(() => agent.destroy());
    let ok = 0;
    const failures: string[] = [];
    const inFlight = new Set<Promise<void>>();
    const one = (): void => {
      const request = new Promise<void>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: p.port, path: '/', agent, headers: { 'x-sent': String(performance.now()) } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => {
            if (res.statusCode === 200 && /^app#\d \d+$/.test(body)) ok++;
            else failures.push(`${res.statusCode} ${body.slice(0, 60)}`);
            resolve();
          });
          res.on('error', (err) => {
            failures.push(err.message);
            resolve();
          });
        });
        req.on('error', (err) => {
          failures.push(err.message);
          resolve();
        });
      });
      inFlight.add(request);
      void request.finally(() => inFlight.delete(request));
    };
    // 200 requests per second for 3 s: 5 every 25 ms; moves of app#1 at 1 s and 2 s.
    const started = Date.now();
    const moves: Move[] = [];
    let ticks = 0;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        ticks++;
        for (let i = 0; i < 5; i++) one();
        const elapsed = Date.now() - started;
        if ((moves.length === 0 && elapsed >= 1000) || (moves.length === 1 && elapsed >= 2000)) {
          void p.supervisor.replace('app', 'app#1').then((move) => moves.push(move));
        }
        if (elapsed >= 3000 || ticks >= 200) {
          clearInterval(timer);
          resolve();
        }
      }, 25);
    });
    await within('the last requests', Promise.all([...inFlight]), 10_000);
    assert.equal(moves.length, 2, 'both moves were made');
    await within('both moves to resolve', Promise.all(moves.map((m) => m.moved)));
    const total = ok + failures.length;
    const late = moves.map((m) => m.previous!.sent.filter((sent) => sent > m.at).length);
    t.diagnostic(`requests: ${total}, ok: ${ok}, failed: ${failures.length}; sent after a move and reaching the instance it left: ${late.join(', ')}`);
    t.diagnostic(`served by the 3 instances of app#1: ${[moves[0]!.previous!, moves[0]!.next!, moves[1]!.next!].map((i) => i.sent.length).join(', ')}; app#2: ${p.supervisor.instance('app#2').sent.length}`);
    assert.ok(total >= 450, `the load ran (${total} requests)`);
    assert.deepEqual(failures, [], 'no request failed');
    assert.deepEqual(late, [0, 0], 'no request sent after a move reached the instance it left');
    assert.ok(moves[1]!.next!.sent.length > 0, 'the last instance of app#1 served requests');
  });
});

describe('a move waits for what runs on the port left', { timeout: 60_000 }, () => {
  test('it resolves only once a slow answer in flight there has ended, which completes whole', { timeout: LONG }, async () => {
    const p = await portico(spawnConfig(1));
    const first = p.supervisor.instance('app#1');
    const slow = slowRequest(p.port);
    await waitFor('the slow request to reach the instance', () => first.held.length === 1);
    const move = await p.supervisor.replace('app', 'app#1');
    // New requests go to the new instance at once, while the slow one goes on on the old.
    assert.equal((await get(p.port)).body, `app#1 ${move.next!.backend.port}`);
    assert.equal(move.settled(), false, 'the move waits for the slow answer');
    first.held[0]!();
    await within('the move once the slow answer ended', move.moved);
    assert.deepEqual(await slow.done, { status: 200, body: 'slow-done!' });
  });

  test('it resolves only once a WebSocket tunnel open there has closed, and the tunnel works meanwhile', { timeout: LONG }, async () => {
    const p = await portico(spawnConfig(1));
    const first = p.supervisor.instance('app#1');
    const conn = await openTunnel(p.port);
    assert.ok(await echoes(conn, 'before'), 'the tunnel echoes');
    const move = await p.supervisor.replace('app', 'app#1');
    assert.equal((await get(p.port)).body, `app#1 ${move.next!.backend.port}`, 'new requests go to the new instance');
    assert.ok(await echoes(conn, 'after the move'), 'the tunnel still echoes after the move');
    assert.equal(move.settled(), false, 'the move waits for the tunnel');
    assert.equal(first.tunnels.size, 1);
    conn.close();
    await within('the move once the tunnel closed', move.moved);
    await waitFor('the old instance to see the tunnel closed', () => first.tunnels.size === 0);
  });

  test('at its bound (drainMs) it cuts the slow answer and the tunnel still open, and resolves', { timeout: LONG }, async (t) => {
    const p = await portico(spawnConfig(1));
    const first = p.supervisor.instance('app#1');
    const slow = slowRequest(p.port);
    const conn = await openTunnel(p.port);
    await waitFor('the slow request to reach the instance', () => first.held.length === 1);
    const started = Date.now();
    const move = await p.supervisor.replace('app', 'app#1', false, 300);
    await within('the move at its bound', move.moved, 5000);
    const took = Date.now() - started;
    t.diagnostic(`the move resolved after ${took} ms (bound 300 ms)`);
    assert.ok(took >= 250, `it waited for its bound (${took} ms)`);
    const outcome = await within('the slow answer to end', slow.done);
    assert.ok(outcome instanceof Error, 'the slow answer was cut, never complete-looking');
    assert.ok(await conn.waitClosed(3000), 'the tunnel was cut');
    assert.equal((await get(p.port)).body, `app#1 ${move.next!.backend.port}`);
  });
});

describe('sticky pins name the slot, not its port', { timeout: 60_000 }, () => {
  const yaml = spawnConfig(2, 'sticky: {}');

  test('the cookie value of a slot is the same before and after its move, and after a reload of the same config', { timeout: LONG }, async () => {
    const p = await portico(yaml);
    /** Fresh clients until both slots have pinned one: slot → cookie. */
    const pins = async (): Promise<Map<string, string>> => {
      const found = new Map<string, string>();
      for (let i = 0; i < 20 && found.size < 2; i++) {
        const answer = await get(p.port);
        assert.equal(answer.status, 200);
        assert.ok(answer.cookie, 'a fresh client is pinned');
        found.set(answer.body.split(' ')[0]!, answer.cookie);
      }
      assert.equal(found.size, 2, 'both slots pinned clients');
      return found;
    };
    const before = await pins();
    const cookie = before.get('app#1')!;
    const move = await p.supervisor.replace('app', 'app#1');
    await within('the move', move.moved);
    for (let i = 0; i < 3; i++) {
      const answer = await get(p.port, '/', { cookie });
      assert.equal(answer.body, `app#1 ${move.next!.backend.port}`, 'the pinned client follows its slot to the new port');
      assert.equal(answer.cookie, undefined, 'its cookie still names its server: no new one');
    }
    assert.deepEqual(await pins(), before, 'fresh clients get the same value per slot after the move');
    await p.reload(yaml);
    for (let i = 0; i < 3; i++) {
      const answer = await get(p.port, '/', { cookie });
      assert.equal(answer.body, `app#1 ${move.next!.backend.port}`, 'after the reload the new app starts the slot where it is served');
      assert.equal(answer.cookie, undefined);
    }
    assert.deepEqual(await pins(), before, 'fresh clients get the same value per slot after the reload');
  });

  test('with app_cookie a session routed to a slot (JSESSIONID=….app2) goes to that slot, before and after its move', { timeout: LONG }, async () => {
    const p = await portico(spawnConfig(2, 'sticky: { app_cookie: JSESSIONID }'));
    const session = { cookie: 'JSESSIONID=ABC123.app2' };
    for (let i = 0; i < 4; i++) assert.equal((await get(p.port, '/', session)).body.split(' ')[0], 'app#2');
    const move = await p.supervisor.replace('app', 'app#2');
    await within('the move', move.moved);
    for (let i = 0; i < 4; i++) assert.equal((await get(p.port, '/', session)).body, `app#2 ${move.next!.backend.port}`);
  });
});

describe('Portico and its Supervisor', { timeout: 60_000 }, () => {
  test('the Supervisor starts before the listeners open and stops after they closed; a config without spawn has none', { timeout: LONG }, async () => {
    const p = await portico(spawnConfig(1));
    assert.equal(p.supervisor.listeningAtStart, false, 'nothing listened while the instances started');
    assert.equal(p.server.supervisor, p.supervisor);
    await p.server.stop(100);
    assert.equal(p.supervisor.stopped, true);
    assert.equal(p.supervisor.listeningAtStop, false, 'the listeners were closed when the instances were stopped');
    const dir = makeTree();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    let made = 0;
    const plain = new Portico(
      parseConfig('listen: ["127.0.0.1:0"]\nlog: { access: off }\nsites:\n  - routes:\n      - path: /\n        respond: { status: 204 }\n', path.join(dir, 'p.yaml'), dir),
      pino({ level: 'silent' }),
      { supervisor: () => { made++; throw new Error('not wanted'); } },
    );
    await plain.start();
    await plain.stop(100);
    assert.equal(made, 0, 'no Supervisor without spawn');
    assert.equal(plain.supervisor, undefined);
  });
});
