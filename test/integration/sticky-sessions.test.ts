/**
 * Sticky sessions over real sockets. With `sticky.app_cookie`, two backends behave as Tomcat with a jvmRoute: the
 * first answer sets `JSESSIONID=<id>.<route>`, and a request whose session the instance does not know starts a
 * new one. With Portico's own sticky cookie and a cache, the cache judges the app's answer alone: a first-time
 * visitor's answer is stored, stored copies never carry a pin, and an answer from the cache pins its own client.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import { connectH2, h2Request, startPorticoH2 } from '../helpers/h2.js';
import type { TestUpstream } from '../helpers/upstream.js';
import { httpRequest, scopedServers, waitFor, type FullResponse } from './proxy-support.js';

const servers = scopedServers();

/** A backend that keeps sessions as Tomcat does with `jvmRoute`: ids end in `.<route>`. */
interface Tomcat extends TestUpstream {
  readonly route: string;
  readonly sessions: Set<string>;
}

/** The session id a request carries: JSESSIONID cookie first, then `;jsessionid=` (as Tomcat reads them). */
function sessionOf(req: IncomingMessage): string | undefined {
  return /(?:^|;\s*)JSESSIONID=([^;]+)/.exec(req.headers.cookie ?? '')?.[1] ?? /;jsessionid=([^;/?]+)/i.exec(req.url ?? '')?.[1];
}

async function tomcat(route: string, held?: ServerResponse[]): Promise<Tomcat> {
  const sessions = new Set<string>();
  const backend = await servers.upstream((req: IncomingMessage, res: ServerResponse) => {
    // `/hold`: answered only when the test ends it (the instance is busy meanwhile).
    if (held !== undefined && req.url!.startsWith('/hold')) return void held.push(res);
    const asked = sessionOf(req);
    if (asked !== undefined && sessions.has(asked)) {
      res.end(`${route} ${asked}`);
      return;
    }
    const id = `${randomBytes(8).toString('hex').toUpperCase()}.${route}`;
    sessions.add(id);
    res.writeHead(200, { 'Set-Cookie': `JSESSIONID=${id}; Path=/; HttpOnly` });
    res.end(`${route} new ${id}`);
  });
  return Object.assign(backend, { route, sessions });
}

/** One upstream of `backends` (each with its route) under `app_cookie`, plus `lines` of its own settings. */
function appConfig(backends: readonly Tomcat[], lines = 'policy: round_robin'): string {
  const list = backends.map((b) => `      - { url: "${b.url}", route: ${b.route} }`).join('\n');
  return (
    `upstreams:\n  app:\n    servers:\n${list}\n    sticky: { app_cookie: JSESSIONID }\n    passive: { max_fails: 0 }\n${lines.replace(/^/gm, '    ')}\n` +
    'sites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n'
  );
}

/** Every Set-Cookie of an answer. */
function setCookies(res: FullResponse): string[] {
  const values: string[] = [];
  for (let i = 0; i < res.rawHeaders.length; i += 2) if (res.rawHeaders[i]!.toLowerCase() === 'set-cookie') values.push(res.rawHeaders[i + 1]!);
  return values;
}

/** The session a first answer created, from its Set-Cookie. */
function newSession(res: FullResponse): string {
  const cookies = setCookies(res);
  assert.equal(cookies.length, 1, `one Set-Cookie, the app's: ${cookies.join(' | ')}`);
  const id = /^JSESSIONID=([^;]+)/.exec(cookies[0]!)?.[1];
  assert.ok(id !== undefined, cookies[0]);
  return id;
}

describe('sticky sessions on the app\'s cookie (Tomcat jvmRoute)', () => {
  test('a session whose instance is busy (max_conns) waits for it, 503 at queue.timeout, never a new session elsewhere', async () => {
    const held: ServerResponse[] = [];
    const tc1 = await tomcat('tc1', held);
    const tc2 = await tomcat('tc2');
    const server = await servers.portico(appConfig([tc1, tc2], 'policy: round_robin\nmax_conns: 1\nqueue: { timeout: 300ms }'));
    const id = newSession(await httpRequest(server.port, '/login', { headers: { Cookie: 'JSESSIONID=EXPIRED.tc1' } }));
    assert.match(id, /\.tc1$/);
    const holding = httpRequest(server.port, '/hold', { headers: { Cookie: `JSESSIONID=${id}` } });
    await waitFor('tc1 to be busy with the held request', () => held.length === 1, 5000);
    const busy = await httpRequest(server.port, '/cart', { headers: { Cookie: `JSESSIONID=${id}` } });
    assert.equal(busy.status, 503, `waited for tc1, did not go to tc2: ${busy.body.toString()}`);
    assert.ok(busy.headers['retry-after'] !== undefined);
    assert.equal(tc2.sessions.size, 0, 'no session was started on tc2');
    const fresh = await httpRequest(server.port, '/new');
    assert.match(fresh.body.toString(), /^tc2 new /, 'a request without a session still goes to the free instance');
    held[0]!.end('released');
    await holding;
    const after = await httpRequest(server.port, '/cart', { headers: { Cookie: `JSESSIONID=${id}` } });
    assert.equal(after.body.toString(), `tc1 ${id}`);
  });

  test('a session\'s later requests reach the instance that created it, and Portico sets no cookie of its own', async () => {
    const tc1 = await tomcat('tc1');
    const tc2 = await tomcat('tc2');
    const server = await servers.portico(appConfig([tc1, tc2]));
    const first = await httpRequest(server.port, '/cart');
    const id = newSession(first);
    const owner = id.endsWith('.tc1') ? 'tc1' : 'tc2';
    // Round robin alone alternates between the two: only the route keeps the session on its instance.
    for (let i = 0; i < 6; i++) {
      const res = await httpRequest(server.port, `/cart/${i}`, { headers: { Cookie: `theme=dark; JSESSIONID=${id}` } });
      assert.equal(res.body.toString(), `${owner} ${id}`, `request ${i}`);
      assert.deepEqual(setCookies(res), [], 'no Set-Cookie at all: the session is known and Portico adds none');
    }
  });

  test('a ;jsessionid= path parameter routes a cookieless client, and reaches the app unchanged', async () => {
    const tc1 = await tomcat('tc1');
    const tc2 = await tomcat('tc2');
    const server = await servers.portico(appConfig([tc1, tc2]));
    const id = newSession(await httpRequest(server.port, '/'));
    const owner = id.endsWith('.tc1') ? tc1 : tc2;
    for (let i = 0; i < 4; i++) {
      const target = `/shop/cart;jsessionid=${id}?item=${i}`;
      const res = await httpRequest(server.port, target);
      assert.equal(res.body.toString(), `${owner.route} ${id}`);
      assert.equal(owner.requests.at(-1)!.url, target, 'the target is forwarded as the client sent it');
    }
  });

  test('the route wins over the hash policy, and HTTP/2 cookies sent as several Cookie fields are read', async () => {
    const tc1 = await tomcat('tc1');
    const tc2 = await tomcat('tc2');
    // hash on the URI: every request for /same goes to one instance, whatever its session.
    const yaml = appConfig([tc1, tc2], 'policy: hash\nhash_key: "$uri"');
    const h2 = await startPorticoH2(yaml);
    servers.defer(() => h2.stop());
    const session = await connectH2(h2.origin);
    servers.defer(() => void session.close());
    const first = await h2Request(session, { ':path': '/same' });
    const hashed = first.body.toString().split(' ')[0]!;
    const other = hashed === 'tc1' ? tc2 : tc1;
    // A session made on the other instance (as if before a policy change): its route must win over the hash.
    const made = await httpRequest(Number(new URL(other.url).port), '/');
    const id = newSession(made);
    for (let i = 0; i < 4; i++) {
      const res = await h2Request(session, { ':path': '/same', cookie: ['theme=dark', `JSESSIONID=${id}`] });
      assert.equal(res.body.toString(), `${other.route} ${id}`, `request ${i}`);
    }
  });

  test('a session whose instance is down fails over to the other, which starts a new session that then sticks', async () => {
    const tc1 = await tomcat('tc1');
    const tc2 = await tomcat('tc2');
    const server = await servers.portico(appConfig([tc1, tc2]));
    // A session on tc1, made there directly, then tc1 goes away (connections refused: the retry goes elsewhere).
    const id = newSession(await httpRequest(tc1.port, '/'));
    await tc1.stop();
    const moved = await httpRequest(server.port, '/cart', { headers: { Cookie: `JSESSIONID=${id}` } });
    assert.equal(moved.status, 200);
    const fresh = newSession(moved);
    assert.ok(fresh.endsWith('.tc2'), fresh);
    for (let i = 0; i < 3; i++) {
      const res = await httpRequest(server.port, '/cart', { headers: { Cookie: `JSESSIONID=${fresh}` } });
      assert.equal(res.body.toString(), `tc2 ${fresh}`);
    }
    // Back up: the old session's route is followed again (its instance may still know it).
    await tc1.restart();
    const back = await httpRequest(server.port, '/', { headers: { Cookie: `JSESSIONID=${id}` } });
    assert.equal(back.body.toString(), `tc1 ${id}`);
  });
});

describe('hash_key: $cookie_JSESSIONID (documented as the wrong way)', () => {
  test('loses sessions: some new session\'s second request is hashed to the other instance, which starts another', async () => {
    const tc1 = await tomcat('tc1');
    const tc2 = await tomcat('tc2');
    const list = [tc1, tc2].map((b) => `"${b.url}"`).join(', ');
    const server = await servers.portico(
      `upstreams:\n  app:\n    policy: hash\n    hash_key: "$cookie_JSESSIONID"\n    servers: [${list}]\n` +
        'sites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n',
    );
    // Each session lands on one instance or the other by its hash (about half each): 16 make "none moved" ~2^-16.
    let lost = 0;
    for (let i = 0; i < 16; i++) {
      const id = newSession(await httpRequest(server.port, '/'));
      const second = await httpRequest(server.port, '/', { headers: { Cookie: `JSESSIONID=${id}` } });
      if (second.body.toString() !== `${id.slice(id.lastIndexOf('.') + 1)} ${id}`) lost++;
    }
    assert.ok(lost > 0, 'some session moved');
  });
});

describe('Portico\'s own sticky cookie with a cache', () => {
  /**
   * Two backends answering a cacheable page with their name; `/held` sends its head and first half, and the rest
   * only once `release` is called.
   */
  async function cached(): Promise<{ port: number; release: () => void }> {
    const backends: TestUpstream[] = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    for (const name of ['a', 'b']) {
      backends.push(
        await servers.upstream((req, res) => {
          res.writeHead(200, { 'Cache-Control': 'max-age=60', 'Content-Type': 'text/plain', 'Content-Length': name.length * 2, ETag: '"v1"' });
          if (req.url !== '/held') return void res.end(name + name);
          res.write(name);
          void released.then(() => res.end(name));
        }),
      );
    }
    const list = backends.map((b) => `"${b.url}"`).join(', ');
    const server = await servers.portico(
      `caches: { main: { memory: 1MB } }\nupstreams:\n  app:\n    servers: [${list}]\n    sticky: { cookie: pin }\n` +
        'sites:\n  - routes:\n      - path: /\n        proxy: { upstream: app, cache: { zone: main } }\n',
    );
    return { port: server.port, release };
  }

  function pinOf(res: FullResponse): string {
    const cookies = setCookies(res);
    assert.equal(cookies.length, 1, `one Set-Cookie, Portico's: ${cookies.join(' | ')}`);
    const pin = /^pin=([0-9a-f]{16}); Path=\/; HttpOnly; SameSite=Lax$/.exec(cookies[0]!)?.[1];
    assert.ok(pin !== undefined, cookies[0]);
    return pin;
  }

  test('a first-time visitor\'s answer is stored (its pin is not), and a hit pins a client without the cookie', async () => {
    const { port } = await cached();
    const first = await httpRequest(port, '/page');
    assert.match(String(first.headers['cache-status']), /fwd=uri-miss; fwd-status=200; stored/);
    const firstPin = pinOf(first);

    const hits = [await httpRequest(port, '/page'), await httpRequest(port, '/page')];
    const pins = hits.map((hit) => {
      assert.match(String(hit.headers['cache-status']), /^Portico; hit/);
      return pinOf(hit);
    });
    // round_robin spreads first-time visitors of a cached page: one of two hits is pinned to the other server.
    assert.equal(new Set([firstPin, ...pins]).size, 2, `pins ${firstPin} ${pins.join(' ')}`);

    // A client whose pin names an available server gets the stored copy with no Set-Cookie at all: the stored
    // copy holds no one's pin.
    for (const pin of [firstPin, ...pins]) {
      const hit = await httpRequest(port, '/page', { headers: { Cookie: `pin=${pin}` } });
      assert.match(String(hit.headers['cache-status']), /^Portico; hit/);
      assert.deepEqual(setCookies(hit), []);
    }
    // Conditional and ranged hits pin too.
    const ranged = await httpRequest(port, '/page', { headers: { Range: 'bytes=0-0' } });
    assert.equal(ranged.status, 206);
    pinOf(ranged);
    const notModified = await httpRequest(port, '/page', { headers: { 'If-None-Match': '"v1"' } });
    assert.equal(notModified.status, 304);
    pinOf(notModified);
  });

  test('a pinned client still reaches its server on a miss, and its hit answers carry no cookie', async () => {
    const { port } = await cached();
    const first = await httpRequest(port, '/one');
    const pin = pinOf(first);
    const owner = first.body.toString();
    for (let i = 0; i < 4; i++) {
      const res = await httpRequest(port, `/miss${i}`, { headers: { Cookie: `pin=${pin}` } });
      assert.match(String(res.headers['cache-status']), /stored/);
      assert.equal(res.body.toString(), owner, `miss ${i} left the pinned server`);
      assert.deepEqual(setCookies(res), []);
    }
  });

  test('a collapsed waiter gets its own pin, not the leader\'s', async () => {
    const { port, release } = await cached();
    const leader = headOf(port, '/held');
    const leaderHead = await leader.head;
    const waiter = headOf(port, '/held');
    const waiterHead = await waiter.head;
    release();
    assert.match(String(waiterHead.headers['cache-status']), /collapsed/);
    const leaderPin = /^pin=([0-9a-f]{16});/.exec(String(leaderHead.headers['set-cookie']))?.[1];
    const waiterPin = /^pin=([0-9a-f]{16});/.exec(String(waiterHead.headers['set-cookie']))?.[1];
    assert.ok(leaderPin !== undefined && waiterPin !== undefined, `${leaderHead.headers['set-cookie']} / ${waiterHead.headers['set-cookie']}`);
    // round_robin: the leader's forward took one server, the waiter is pinned to the next one.
    assert.notEqual(waiterPin, leaderPin);
    assert.equal(await leader.body, await waiter.body);
  });
});

/** A GET whose head is known before its body has arrived. */
function headOf(port: number, path: string): { head: Promise<http.IncomingMessage>; body: Promise<string> } {
  let resolveBody!: (body: string) => void;
  let rejectBody!: (err: Error) => void;
  const body = new Promise<string>((resolve, reject) => ((resolveBody = resolve), (rejectBody = reject)));
  const head = new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      resolve(res);
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolveBody(Buffer.concat(chunks).toString()));
      res.on('error', rejectBody);
    });
    req.on('error', (err) => (reject(err), rejectBody(err)));
  });
  return { head, body };
}
