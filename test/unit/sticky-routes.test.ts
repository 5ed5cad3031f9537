/**
 * Sticky sessions on the app's own cookie (`sticky.app_cookie`, Tomcat's jvmRoute): reading the route of a
 * request's session, choosing its server, and the config rules that keep operators from the two wrong attempts.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { upstreamSchema } from '../../src/config/schema.js';
import { parseConfig } from '../../src/server/config.js';
import { sessionRoute } from '../../src/upstream/session-route.js';
import { Upstream } from '../../src/upstream/upstream.js';
import type { UpstreamServer } from '../../src/upstream/server.js';
import { configErrors } from '../helpers/config.js';
import { makeTree } from '../helpers/portico.js';

const dir = makeTree();
const upstreams: Upstream[] = [];
after(async () => {
  for (const upstream of upstreams) await upstream.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('the route of a session', () => {
  test('is the suffix after the last "." of the app cookie, among other cookies, quoted or not', () => {
    assert.equal(sessionRoute('JSESSIONID=9A1FC2.tc1', '/', 'JSESSIONID'), 'tc1');
    assert.equal(sessionRoute('theme=dark; JSESSIONID=9A1FC2.tc2; lang=fr', '/', 'JSESSIONID'), 'tc2');
    assert.equal(sessionRoute('JSESSIONID="9A1FC2.tc3"', '/', 'JSESSIONID'), 'tc3');
    assert.equal(sessionRoute('JSESSIONID=a.b.tc4', '/', 'JSESSIONID'), 'tc4');
  });

  test('is none for a session id without a route, an empty one, or a cookie of another name (names are case-sensitive)', () => {
    assert.equal(sessionRoute('JSESSIONID=9A1FC2', '/', 'JSESSIONID'), undefined);
    assert.equal(sessionRoute('JSESSIONID=9A1FC2.', '/', 'JSESSIONID'), undefined);
    assert.equal(sessionRoute('JSESSIONID=', '/', 'JSESSIONID'), undefined);
    assert.equal(sessionRoute('jsessionid=9A1FC2.tc1; XJSESSIONID=1.tc2', '/', 'JSESSIONID'), undefined);
    assert.equal(sessionRoute(undefined, '/', 'JSESSIONID'), undefined);
  });

  test('several Cookie fields (joined by Node with "; ", as HTTP/2 sends them): the first cookie of the name counts', () => {
    assert.equal(sessionRoute('a=1; JSESSIONID=X.tc2; JSESSIONID=Y.tc1', '/', 'JSESSIONID'), 'tc2');
  });

  test('is read from a ;jsessionid= path parameter of the raw target, the name in any case, never from the query', () => {
    assert.equal(sessionRoute(undefined, '/shop/cart;jsessionid=9A1FC2.tc2?item=3', 'JSESSIONID'), 'tc2');
    assert.equal(sessionRoute(undefined, '/shop;JSESSIONID=9A1FC2.tc1/cart', 'JSESSIONID'), 'tc1');
    assert.equal(sessionRoute(undefined, '/shop/cart;v=2;jsessionid=9A1FC2.tc2;x=1', 'JSESSIONID'), 'tc2');
    assert.equal(sessionRoute(undefined, 'http://shop.example/cart;jsessionid=9A1FC2.tc2', 'JSESSIONID'), 'tc2');
    assert.equal(sessionRoute(undefined, '/shop/cart?x=1;jsessionid=9A1FC2.tc2', 'JSESSIONID'), undefined);
    assert.equal(sessionRoute(undefined, '/shop/cart#;jsessionid=9A1FC2.tc2', 'JSESSIONID'), undefined);
    assert.equal(sessionRoute('other=1', '/shop/cart;jsessionid=9A1FC2', 'JSESSIONID'), undefined);
  });

  test('with another separator (PHP\'s ids hold only A-Z a-z 0-9 , -), the route follows its last one', () => {
    assert.equal(sessionRoute('PHPSESSID=0ab9c-d3f-a', '/', 'PHPSESSID', '-'), 'a');
    assert.equal(sessionRoute('PHPSESSID=0ab9cd3f', '/', 'PHPSESSID', '-'), undefined);
    assert.equal(sessionRoute('PHPSESSID=0ab9cd3f.a', '/', 'PHPSESSID', '-'), undefined);
    assert.equal(sessionRoute('PHPSESSID=0ab9cd3f-', '/', 'PHPSESSID', '-'), undefined);
  });

  test('the cookie wins over the path parameter (Tomcat reads the cookie when both are sent)', () => {
    assert.equal(sessionRoute('JSESSIONID=NEW.tc1', '/cart;jsessionid=OLD.tc2', 'JSESSIONID'), 'tc1');
    // A cookie without a route says nothing of where the session is: the path parameter may still.
    assert.equal(sessionRoute('JSESSIONID=NEW', '/cart;jsessionid=OLD.tc2', 'JSESSIONID'), undefined);
  });
});

/** An upstream of `routes.length` servers (a route each, or none for `undefined`) on ports nobody listens on. */
function routed(routes: ReadonlyArray<string | undefined>, extra: Record<string, unknown> = {}, backups: readonly number[] = []): Upstream {
  const servers = routes.map((route, i) => ({ url: `http://127.0.0.1:${9 + i}`, ...(route === undefined ? {} : { route }), backup: backups.includes(i) }));
  const config = upstreamSchema.parse({ servers, sticky: { app_cookie: 'JSESSIONID' }, ...extra }) as Upstream['config'];
  const upstream = new Upstream('app', config, dir, pino({ level: 'silent' }));
  upstreams.push(upstream);
  return upstream;
}

/** An upstream of `count` servers without stickiness. */
function plain(count: number, extra: Record<string, unknown> = {}): Upstream {
  const servers = Array.from({ length: count }, (_, i) => `http://127.0.0.1:${9 + i}`);
  const upstream = new Upstream('app', upstreamSchema.parse({ servers, ...extra }) as Upstream['config'], dir, pino({ level: 'silent' }));
  upstreams.push(upstream);
  return upstream;
}

const pick = { clientIp: '127.0.0.1', hashKey: '/x', random: () => 0.5 };

function chosen(upstream: Upstream, route: string | undefined, tried?: ReadonlySet<number>): number {
  const server = upstream.select(tried, pick, route);
  assert.ok(typeof server !== 'string', `a server was chosen (got ${String(server)})`);
  return (server as UpstreamServer).id;
}

describe('choosing the server of a session', () => {
  test('a route names its server whatever the policy would choose (round_robin, hash, first)', () => {
    for (const policy of ['round_robin', 'hash', 'first']) {
      const upstream = routed(['tc1', 'tc2', 'tc3'], { policy });
      for (let i = 0; i < 6; i++) assert.equal(chosen(upstream, 'tc2'), 1, policy);
      assert.equal(upstream.pinOf('JSESSIONID=A1.tc3', '/'), 'tc3');
    }
  });

  test('an unknown route, or none, leaves the choice to the policy', () => {
    const upstream = routed(['tc1', 'tc2']);
    assert.deepEqual(new Set([0, 1, 2, 3].map(() => chosen(upstream, 'tc9'))), new Set([0, 1]));
    assert.deepEqual(new Set([0, 1, 2, 3].map(() => chosen(upstream, undefined))), new Set([0, 1]));
  });

  test('a routed server that is down, ejected or already tried for this request leaves the choice to the policy', () => {
    const upstream = routed(['tc1', 'tc2']);
    const server = upstream.servers[0]!;
    server.healthy = false;
    for (let i = 0; i < 4; i++) assert.equal(chosen(upstream, 'tc1'), 1, 'down');
    server.healthy = true;
    server.eject(Date.now(), 60_000);
    for (let i = 0; i < 4; i++) assert.equal(chosen(upstream, 'tc1'), 1, 'ejected');
    server.clearEjection();
    assert.equal(chosen(upstream, 'tc1'), 0, 'back');
    assert.equal(chosen(upstream, 'tc1', new Set([0])), 1, 'a retry never re-picks the routed server that failed');

  });

  test('a routed server that is busy (at max_conns, or its pool full) is waited for, not replaced: its session lives there', async () => {
    const capped = routed(['tc1', 'tc2'], { max_conns: 1 });
    const busy = capped.servers[0]!;
    capped.acquire(busy);
    assert.equal(capped.select(undefined, pick, 'tc1'), 'full');
    assert.equal(chosen(capped, undefined), 1, 'a request without a session still goes to the free server');
    // Waiting for tc1: a turn freed on tc2 is not its own; one freed on tc1 is.
    const wait = capped.waitForCapacity({ until: 0 }, 'tc1');
    let woken: boolean | undefined;
    void wait.ready.then((ok) => (woken = ok));
    const other = capped.servers[1]!;
    capped.acquire(other);
    capped.release(other);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(woken, undefined, 'not woken by capacity freed on another server');
    capped.release(busy);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(woken, true, 'woken by its own server');
    assert.equal(chosen(capped, 'tc1'), 0);
  });

  test('a wait in the queue is bounded by its first deadline, and a request that waits again goes to the head of the queue', async () => {
    const capped = routed(['tc1'], { max_conns: 1 });
    capped.acquire(capped.servers[0]!);
    const past = capped.waitForCapacity({ until: Date.now() - 1 });
    assert.equal(await past.ready, false, 'a deadline already past ends the wait at once');
    const order: string[] = [];
    const first = capped.waitForCapacity({ until: 0 });
    const returning = capped.waitForCapacity({ until: Date.now() + 60_000 });
    // A woken request takes its server at once, as the proxy's does: the turn is used, not passed on.
    const take = (name: string) => () => {
      order.push(name);
      capped.acquire(capped.servers[0]!);
    };
    void first.ready.then(take('first'));
    void returning.ready.then(take('returning'));
    capped.release(capped.servers[0]!);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(order, ['returning']);
    first.cancel();
  });

  test('a turn goes to the first waiter that can use it: one that already tried the freed server is passed over', async () => {
    const capped = plain(2, { max_conns: 1 });
    const [x, y] = capped.servers as [UpstreamServer, UpstreamServer];
    capped.acquire(x);
    capped.acquire(y);
    const order: string[] = [];
    // The first waiter was refused by x (a retry): only y will do for it. The second can use either.
    const retrying = capped.waitForCapacity({ until: 0 }, undefined, new Set([x.id]));
    const fresh = capped.waitForCapacity({ until: 0 });
    void retrying.ready.then((ok) => order.push(`retrying ${ok}`));
    void fresh.ready.then((ok) => order.push(`fresh ${ok}`));
    capped.release(x);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(order, ['fresh true'], 'the turn on x went to the waiter that can use x');
    retrying.cancel();
  });

  test('a woken waiter that does not take its turn (its client left meanwhile) passes it on to the next one', async () => {
    const capped = plain(1, { max_conns: 1 });
    const server = capped.servers[0]!;
    capped.acquire(server);
    const order: string[] = [];
    const gone = capped.waitForCapacity({ until: 0 });
    const live = capped.waitForCapacity({ until: 0 });
    // The first is woken and does nothing with it; the second takes its server.
    void gone.ready.then((ok) => order.push(`gone ${ok}`));
    void live.ready.then((ok) => {
      order.push(`live ${ok}`);
      capped.acquire(server);
    });
    capped.release(server);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(order, ['gone true', 'live true']);
  });

  test('the work of a release does not grow with waiters that cannot use the freed turn (pinned to a busy server, or retries that tried it)', async () => {
    /** `select` calls made by one acquire and release on a free server, with `count` waiters of each kind queued. */
    const probesPerRelease = (count: number): number => {
      const capped = routed(['tc0', 'tc1', 'tc2', 'tc3'], { max_conns: 1, queue: { size: 2 * count, timeout: 60_000 } });
      const [busy, free] = capped.servers as [UpstreamServer, UpstreamServer];
      capped.acquire(busy);
      capped.acquire(capped.servers[2]!);
      capped.acquire(capped.servers[3]!);
      const waits = [];
      // Pinned to the busy server; and retries that already tried the free one (with a route on a server tried too).
      for (let i = 0; i < count; i++) waits.push(capped.waitForCapacity({ until: 0 }, 'tc0'));
      for (let i = 0; i < count; i++) waits.push(capped.waitForCapacity({ until: 0 }, i % 2 === 0 ? undefined : 'tc1', new Set([free.id])));
      let probes = 0;
      const select = capped.select.bind(capped);
      capped.select = (...args) => (probes++, select(...args));
      capped.acquire(free);
      capped.release(free);
      for (const wait of waits) wait.cancel();
      return probes;
    };
    const few = probesPerRelease(2);
    assert.ok(few >= 1, 'the queue was looked at');
    assert.equal(probesPerRelease(500), few, 'as many probes with 1000 waiters as with 4');
  });

  test('capacity freed in bulk goes to as many waiters in one pass, oldest first, each to a server it can use', async () => {
    const capped = routed(['tc0', 'tc1'], { max_conns: 3 });
    const [a, b] = capped.servers as [UpstreamServer, UpstreamServer];
    for (let i = 0; i < 3; i++) capped.acquire(a), capped.acquire(b);
    const woken: string[] = [];
    // A woken request takes the server its selection finds, as the proxy's does.
    const queue = (name: string, route?: string) =>
      void capped.waitForCapacity({ until: 0 }, route).ready.then((ok) => {
        woken.push(`${name} ${ok}`);
        if (!ok) return;
        const server = capped.select(undefined, pick, route);
        assert.ok(typeof server !== 'string', `${name} found a server`);
        capped.acquire(server as UpstreamServer);
      });
    queue('b1', 'tc1');
    queue('any1');
    queue('a1', 'tc0');
    queue('any2');
    queue('any3');
    queue('b2', 'tc1');
    // Three turns come free on a at once (say, it reloaded): b1 and b2 cannot use them, the next three can.
    a.active -= 2;
    a.pooled -= 2;
    capped.release(a);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(woken, ['any1 true', 'a1 true', 'any2 true'], 'all three in the first turn of the event loop');
    assert.equal(a.hasCapacity(), false);
    capped.release(b);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(woken.slice(3), ['b1 true'], 'the oldest waiter that can use b');
    await capped.stop();
  });

  test('a route naming a backup server is followed while primaries are up (the session lives there)', () => {
    const upstream = routed(['tc1', 'tc2', 'tc3'], {}, [2]);
    assert.equal(chosen(upstream, 'tc3'), 2);
    assert.notEqual(chosen(upstream, undefined), 2, 'new sessions still go to the primaries');
  });

  test('Portico sets no cookie of its own in this mode, on a forward or on a cache hit', () => {
    const upstream = routed(['tc1', 'tc2']);
    assert.equal(upstream.stickyCookie(upstream.servers[0]!, undefined), undefined);
    assert.equal(upstream.stickyCookieUnforwarded(pick, undefined), undefined);
  });
});

describe('Portico\'s own sticky cookie for an answer from the cache', () => {
  test('pins a client without the cookie to the server the policy chooses now; a client already pinned to an available server (even one at max_conns) gets none', () => {
    const config = upstreamSchema.parse({ servers: ['http://127.0.0.1:9', 'http://127.0.0.1:10'], sticky: { cookie: 'pin' }, max_conns: 1 }) as Upstream['config'];
    const upstream = new Upstream('app', config, dir, pino({ level: 'silent' }));
    upstreams.push(upstream);
    const [a, b] = upstream.servers as [UpstreamServer, UpstreamServer];
    const first = upstream.stickyCookieUnforwarded(pick, undefined);
    const second = upstream.stickyCookieUnforwarded(pick, undefined);
    // round_robin: two first-time visitors of a cached page are spread, not all pinned to the server that filled it.
    assert.deepEqual(new Set([first, second]), new Set([`pin=${upstream.stickyId(a)}; Path=/; HttpOnly; SameSite=Lax`, `pin=${upstream.stickyId(b)}; Path=/; HttpOnly; SameSite=Lax`]));
    assert.equal(upstream.stickyCookieUnforwarded(pick, upstream.stickyId(a)), undefined);
    // A pinned server at max_conns keeps its clients: answering from the cache makes no request to it.
    upstream.acquire(a);
    assert.equal(upstream.stickyCookieUnforwarded(pick, upstream.stickyId(a)), undefined);
    upstream.release(a);
    a.healthy = false;
    assert.equal(upstream.stickyCookieUnforwarded(pick, upstream.stickyId(a)), `pin=${upstream.stickyId(b)}; Path=/; HttpOnly; SameSite=Lax`);
  });

  test('a cookie naming a backup counts only while no primary is available (unlike a route)', () => {
    const servers = ['http://127.0.0.1:9', { url: 'http://127.0.0.1:10', backup: true }, { url: 'http://127.0.0.1:11', backup: true }];
    const config = upstreamSchema.parse({ servers, sticky: { cookie: 'pin' } }) as Upstream['config'];
    const upstream = new Upstream('app', config, dir, pino({ level: 'silent' }));
    upstreams.push(upstream);
    const [primary, , second] = upstream.servers as [UpstreamServer, UpstreamServer, UpstreamServer];
    assert.equal(chosen(upstream, upstream.stickyId(second)), 0);
    primary.healthy = false;
    for (let i = 0; i < 4; i++) assert.equal(chosen(upstream, upstream.stickyId(second)), 2);
  });
});

/** The config of one upstream `app` with the given YAML lines (indented under it) and a proxy route to it. */
function appConfig(lines: string): string {
  return `upstreams:\n  app:\n${lines.replace(/^/gm, '    ')}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
}

describe('config', () => {
  test('sticky.cookie naming a common app session cookie, in any case, is an error that suggests app_cookie with the name as apps send it', () => {
    const written = [
      ['JSESSIONID', 'JSESSIONID'],
      ['PHPSESSID', 'PHPSESSID'],
      ['sessionid', 'sessionid'],
      ['connect.sid', 'connect.sid'],
      ['ASP.NET_SessionId', 'ASP.NET_SessionId'],
      ['laravel_session', 'laravel_session'],
      ['jsessionid', 'JSESSIONID'],
      ['PhpSessId', 'PHPSESSID'],
    ];
    for (const [name, canonical] of written) {
      const errors = configErrors(appConfig(`servers: ["http://127.0.0.1:3001"]\nsticky: { cookie: ${name} }`), dir);
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.match(errors[0]!, /^portico\.yaml:4:23 upstreams\.app\.sticky\.cookie: /);
      assert.ok(errors[0]!.includes(`${name} is the app's session cookie`), errors[0]);
      // PHP's session ids cannot hold a ".": the route follows a "-" there.
      assert.ok(errors[0]!.includes(`sticky: { app_cookie: ${canonical}${canonical === 'PHPSESSID' ? ', separator: "-"' : ''} }`), errors[0]);
      // A suggestion in the wrong case would pass `check` and still break every session (names are case-sensitive).
      assert.equal(errors[0]!.includes('case-sensitive'), name !== canonical, errors[0]);
    }
  });

  test('app_cookie with routes is accepted; Portico\'s cookie keeps its default name', () => {
    const config = parseConfig(
      appConfig('servers:\n  - { url: "http://127.0.0.1:3001", route: tc1 }\n  - { url: "http://127.0.0.1:3002", route: tc2, backup: true }\nsticky: { app_cookie: JSESSIONID }'),
      'portico.yaml',
      dir,
    );
    assert.deepEqual(config.upstreams.app!.sticky, { cookie: undefined, app_cookie: 'JSESSIONID', secret: undefined, separator: '.' });
    assert.deepEqual(config.upstreams.app!.servers.map((s) => s.route), ['tc1', 'tc2']);
    const own = parseConfig(appConfig('servers: ["http://127.0.0.1:3001"]\nsticky: {}'), 'portico.yaml', dir);
    assert.equal(own.upstreams.app!.sticky?.cookie, 'portico_route');
  });

  test('a route names one server: a duplicate is an error at the second', () => {
    const errors = configErrors(
      appConfig('servers:\n  - { url: "http://127.0.0.1:3001", route: tc1 }\n  - { url: "http://127.0.0.1:3002", route: tc1 }\nsticky: { app_cookie: JSESSIONID }'),
      dir,
    );
    assert.deepEqual(errors, ['portico.yaml:5:48 upstreams.app.servers[1].route: route "tc1" already names servers[0]: a route names one server']);
  });

  test('with spawn, app_cookie needs no fixed route (the slots have app1, app2), and a fixed route may not be a slot\'s', () => {
    const spawn = 'spawn: { command: ["node", "app.js"], instances: 2, ports: 3001-3010 }\nsticky: { app_cookie: JSESSIONID }';
    assert.deepEqual(parseConfig(appConfig(spawn), 'portico.yaml', dir).upstreams.app!.servers, []);
    const errors = configErrors(appConfig(`${spawn}\nservers:\n  - { url: "http://127.0.0.1:4001", route: app2 }`), dir);
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0]!, /^portico\.yaml:\d+:\d+ upstreams\.app\.servers\[0\]\.route: route "app2" is the route of the spawned slot app#2: a route names one server$/);
  });

  test('a route is a token without "."', () => {
    for (const bad of ['"tc.1"', '"tc 1"', '"tc;1"', '""']) {
      const errors = configErrors(appConfig(`servers:\n  - { url: "http://127.0.0.1:3001", route: ${bad} }\nsticky: { app_cookie: JSESSIONID }`), dir);
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.match(errors[0]!, /^portico\.yaml:4:\d+ upstreams\.app\.servers\[0\]\.route: a route is a token without "\."/);
    }
  });

  test('separator: routes follow it instead of "."; a route may not hold it; it goes with app_cookie only', () => {
    const config = parseConfig(appConfig('servers:\n  - { url: "http://127.0.0.1:3001", route: a }\nsticky: { app_cookie: PHPSESSID, separator: "-" }'), 'portico.yaml', dir);
    assert.equal(config.upstreams.app!.sticky?.separator, '-');
    assert.deepEqual(configErrors(appConfig('servers:\n  - { url: "http://127.0.0.1:3001", route: a-1 }\nsticky: { app_cookie: PHPSESSID, separator: "-" }'), dir), [
      'portico.yaml:4:48 upstreams.app.servers[0].route: a route is read after the last "-" of a session id (sticky.separator): it cannot hold one',
    ]);
    assert.deepEqual(configErrors(appConfig('servers: ["http://127.0.0.1:3001"]\nsticky: { separator: "-" }'), dir), [
      'portico.yaml:4:26 upstreams.app.sticky.separator: separator is where a route starts in the app\'s session id: it goes with app_cookie',
    ]);
    assert.equal(configErrors(appConfig('servers:\n  - { url: "http://127.0.0.1:3001", route: a }\nsticky: { app_cookie: PHPSESSID, separator: "ab" }'), dir).length, 1);
  });

  test('app_cookie without any route, a route without app_cookie, and app_cookie beside cookie or secret are errors', () => {
    assert.deepEqual(configErrors(appConfig('servers: ["http://127.0.0.1:3001"]\nsticky: { app_cookie: JSESSIONID }'), dir), [
      'portico.yaml:4:27 upstreams.app.sticky.app_cookie: app_cookie routes on the suffix of JSESSIONID ("ABC123.tc1"): give the servers their route (route: tc1, Tomcat\'s jvmRoute)',
    ]);
    const unused = configErrors(appConfig('servers:\n  - { url: "http://127.0.0.1:3001", route: tc1 }'), dir);
    assert.equal(unused.length, 1);
    assert.match(unused[0]!, /^portico\.yaml:4:48 upstreams\.app\.servers\[0\]\.route: a route is read from the app's session cookie: set sticky: \{ app_cookie: JSESSIONID \}/);
    const both = configErrors(appConfig('servers: [{ url: "http://127.0.0.1:3001", route: tc1 }]\nsticky: { cookie: pin, app_cookie: JSESSIONID, secret: "0123456789abcdef" }'), dir);
    assert.equal(both.length, 2, both.join('\n'));
    assert.match(both.join('\n'), /sticky\.app_cookie: sticky routes on Portico's own cookie or on the app's \(app_cookie\), not both/);
    assert.match(both.join('\n'), /sticky\.secret: secret keys Portico's own sticky cookie: with app_cookie Portico sets none/);
  });
});
