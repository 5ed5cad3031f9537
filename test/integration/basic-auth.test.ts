/**
 * `basic_auth`: bcrypt users inline or from an htpasswd file, the 401 challenge, hashes checked off the event
 * loop, failed attempts limited per client before hashing, a bounded queue of checks, results cached under an
 * HMAC (a reload's new hash is checked anew), plain HTTP refused except from loopback, Authorization kept from
 * the app unless pass_authorization, and a 401 before any cache hit.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { availableParallelism, networkInterfaces } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { ConfigError } from '../../src/errors.js';
import { sharedHashPool } from '../../src/handlers/middleware/hash-pool.js';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { createCertificate } from '../../src/tls/self-signed.js';
import pino from 'pino';
import { rawRequest } from '../helpers/raw-client.js';
import { makeTree } from '../helpers/portico.js';
import { scopedServers } from './proxy-support.js';

const { portico, upstream, defer } = scopedServers();

// Cost 4: the lowest bcrypt allows, for tests about behaviour rather than cost.
const ALICE = bcrypt.hashSync('wonderland', 4);
const BOB = bcrypt.hashSync('builder', 4).replace(/^\$2b\$/, '$2y$');

/** Waits (at most 10 s) until `done` holds, looking once per event-loop turn. */
async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const as = (url: string, authorization?: string, headers: Record<string, string> = {}) =>
  fetch(url, { headers: authorization === undefined ? headers : { ...headers, authorization } });

const inline = (extra = '') => `sites:
  - routes:
      - path: /admin
        basic_auth:
          realm: "Admin area"
          users:
            - { user: alice, hash: "${ALICE}" }
            - { user: bob, hash: "${BOB}" }
          ${extra}
        respond: { body: "secret" }
      - path: /
        respond: { body: "public" }
`;

describe('basic_auth: answers', () => {
  test('no credentials: 401 with a Basic challenge naming the realm and UTF-8; the right ones pass; other routes are open', async () => {
    const server = await portico(inline());
    const none = await as(`${server.url}/admin`);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Basic realm="Admin area", charset="UTF-8"');
    assert.match(await none.text(), /401/);
    const ok = await as(`${server.url}/admin`, basic('alice', 'wonderland'));
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), 'secret');
    assert.equal((await as(`${server.url}/admin`, basic('bob', 'builder'))).status, 200, 'a $2y$ hash (htpasswd -B) is accepted');
    assert.equal((await as(`${server.url}/`)).status, 200);
  });

  test('a wrong password and an unknown user both get 401 with the challenge', async () => {
    const server = await portico(inline());
    for (const authorization of [basic('alice', 'wrong'), basic('mallory', 'wonderland'), basic('alice', '')]) {
      const res = await as(`${server.url}/admin`, authorization);
      assert.equal(res.status, 401, authorization);
      assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm="Admin area"/);
    }
  });

  test('malformed Authorization values get 401, never a crash, and the server goes on answering', async () => {
    const server = await portico(inline());
    const values = [
      'Basic',
      'Basic ',
      'Basic !!!!',
      'Basic YWxpY2U=', // "alice", no colon
      'Basic OndvbmRlcmxhbmQ=', // ":wonderland", empty user
      'Basic YWxpY2U6d29uZGVybGFuZA', // unpadded
      'Bearer abc',
      `Basic ${'A'.repeat(8000)}`,
      'Basic \u00ff\u00fe',
    ];
    for (const value of values) {
      const res = await rawRequest(server.port, `GET /admin HTTP/1.1\r\nHost: a\r\nAuthorization: ${value}\r\nConnection: close\r\n\r\n`);
      assert.equal(res.status, 401, JSON.stringify(value));
    }
    const scheme = await as(`${server.url}/admin`, `bAsIc ${Buffer.from('alice:wonderland').toString('base64')}`);
    assert.equal(scheme.status, 200, 'the scheme name is case-insensitive');
    assert.equal((await as(`${server.url}/`)).status, 200);
  });

  test('a password with a colon and non-ASCII characters (UTF-8) is checked whole', async () => {
    const hash = bcrypt.hashSync('pa:ss wörd', 4);
    const server = await portico(`sites:
  - basic_auth: { users: [ { user: "zoë", hash: "${hash}" } ] }
    routes: [ { path: /, respond: { body: "in" } } ]
`);
    assert.equal((await as(server.url, basic('zoë', 'pa:ss wörd'))).status, 200);
    assert.equal((await as(server.url, basic('zoë', 'pa:ss'))).status, 401);
  });

  test('a site setting applies to every route; a route setting replaces it', async () => {
    const server = await portico(`sites:
  - basic_auth: { users: [ { user: alice, hash: "${ALICE}" } ] }
    routes:
      - path: /bob
        basic_auth: { realm: Bob, users: [ { user: bob, hash: "${BOB}" } ] }
        respond: { body: "bob" }
      - path: /
        respond: { body: "site" }
`);
    assert.equal((await as(`${server.url}/x`, basic('alice', 'wonderland'))).status, 200);
    assert.equal((await as(`${server.url}/x`, basic('bob', 'builder'))).status, 401);
    assert.equal((await as(`${server.url}/bob`, basic('bob', 'builder'))).status, 200);
    const alice = await as(`${server.url}/bob`, basic('alice', 'wonderland'));
    assert.equal(alice.status, 401);
    assert.equal(alice.headers.get('www-authenticate'), 'Basic realm="Bob", charset="UTF-8"');
  });
});

describe('basic_auth: htpasswd files and config errors', () => {
  test('users come from an htpasswd file relative to the config; a reload with a new hash refuses the old password', async () => {
    const server = await portico(
      `sites:
  - basic_auth: { htpasswd: ./users.htpasswd }
    routes: [ { path: /, respond: { body: "in" } } ]
`,
      { 'users.htpasswd': `# users\n\nalice:${ALICE}\r\nbob:${BOB}\n` },
    );
    assert.equal((await as(server.url, basic('alice', 'wonderland'))).status, 200);
    assert.equal((await as(server.url, basic('bob', 'builder'))).status, 200);
    // The old password's success is cached; the new hash must be checked anew.
    writeFileSync(path.join(server.dir, 'users.htpasswd'), `alice:${bcrypt.hashSync('looking-glass', 4)}\n`);
    const text = `sites:\n  - basic_auth: { htpasswd: ./users.htpasswd }\n    routes: [ { path: /, respond: { body: "in" } } ]\n`;
    await server.server.reload(parseConfig(`listen: ["127.0.0.1:${server.port}"]\nlog: { access: off }\n${text}`, path.join(server.dir, 'portico.yaml'), server.dir));
    assert.equal((await as(server.url, basic('alice', 'wonderland'))).status, 401, 'the old password no longer works');
    assert.equal((await as(server.url, basic('alice', 'looking-glass'))).status, 200);
    assert.equal((await as(server.url, basic('bob', 'builder'))).status, 401, 'a removed user no longer works');
  });

  test('an htpasswd line with another hash format is refused at load, naming the file, the line and the format', () => {
    const dir = makeTree({
      'users.htpasswd': `alice:${ALICE}\nbob:$apr1$x9Pq1b2c$abcdefghijklmnopqrstu/\ncarol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n`,
    });
    const text = 'sites:\n  - routes:\n      - path: /\n        basic_auth: { htpasswd: users.htpasswd }\n        respond: {}\n';
    assert.throws(
      () => parseConfig(text, path.join(dir, 'portico.yaml'), dir),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const issues = err.issues.filter((i) => i.keyPath === 'sites[0].routes[0].basic_auth.htpasswd');
        assert.equal(issues.length, 2, err.message);
        assert.match(issues[0]!.message, /users\.htpasswd line 2: user "bob" has an Apache MD5 \(\$apr1\$\) hash; only bcrypt/);
        assert.match(issues[1]!.message, /line 3: user "carol" has a SHA-1/);
        assert.equal(issues[0]!.line, 4);
        return true;
      },
    );
  });

  test('an inline hash that is not bcrypt, a missing file and both sources are config errors at their keys', () => {
    const dir = makeTree();
    const check = (options: string, keyPath: string, message: RegExp) =>
      assert.throws(
        () => parseConfig(`sites:\n  - basic_auth: ${options}\n    routes: [ { path: /, respond: {} } ]\n`, path.join(dir, 'portico.yaml'), dir),
        (err: unknown) => err instanceof ConfigError && err.issues.some((i) => i.keyPath === keyPath && message.test(i.message)),
      );
    check('{ users: [ { user: a, hash: "$1$abc$abcdefghijklmnopqrstuv" } ] }', 'sites[0].basic_auth.users[0].hash', /MD5-crypt.*only bcrypt/);
    check('{ htpasswd: ./nope }', 'sites[0].basic_auth.htpasswd', /cannot read \.\/nope: no such file/);
    check(`{ users: [ { user: a, hash: "${ALICE}" } ], htpasswd: ./x }`, 'sites[0].basic_auth', /either "users" or "htpasswd"/);
    check(`{ users: [ { user: a, hash: "${ALICE}" }, { user: a, hash: "${BOB}" } ] }`, 'sites[0].basic_auth.users[1].user', /listed twice/);
    check(`{ realm: 'a"b', users: [ { user: a, hash: "${ALICE}" } ] }`, 'sites[0].basic_auth.realm', /no "/);
  });
});

describe('basic_auth: cost', () => {
  test('the event loop keeps serving other requests while a slow hash is checked', async () => {
    // Cost 13: hundreds of milliseconds of CPU per check, long enough to see whether anything else waits.
    const slow = await bcrypt.hash('patience', 13);
    const server = await portico(`sites:
  - routes:
      - path: /slow
        basic_auth: { users: [ { user: u, hash: "${slow}" } ] }
        respond: { body: "slow" }
      - path: /
        respond: { body: "fast" }
`);
    const started = performance.now();
    let checkedAt = 0;
    const checking = as(`${server.url}/slow`, basic('u', 'patience')).then(async (res) => {
      checkedAt = performance.now();
      return res.status;
    });
    const fastTimes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      assert.equal(await (await as(`${server.url}/`)).text(), 'fast');
      fastTimes.push(performance.now() - t);
    }
    const fastDone = performance.now();
    assert.equal(await checking, 200);
    assert.ok(fastDone < checkedAt, `five other requests were answered (${fastTimes.map((t) => t.toFixed(0)).join(', ')} ms) before the check ended (${(checkedAt - started).toFixed(0)} ms)`);
  });

  test('a client past its failed attempts gets 429 with Retry-After before any hashing; another client is not affected; right answers give the token back', async () => {
    const server = await portico(`trusted_proxies: ["127.0.0.1"]
sites:
  - basic_auth:
      users: [ { user: alice, hash: "${ALICE}" } ]
      failure_limit: { rate: 1/h, burst: 3 }
    routes: [ { path: /, respond: { body: "in" } } ]
`);
    const from = (ip: string, authorization: string) => as(server.url, authorization, { 'x-forwarded-for': ip });
    for (let i = 0; i < 5; i++) assert.equal((await from('198.51.100.7', basic('alice', 'wonderland'))).status, 200, 'right answers cost nothing');
    for (let i = 0; i < 3; i++) assert.equal((await from('198.51.100.7', basic('alice', `guess${i}`))).status, 401);
    const pool = sharedHashPool();
    const hashed = pool.started;
    const limited = await from('198.51.100.7', basic('alice', 'guess-again'));
    assert.equal(limited.status, 429);
    const retry = Number(limited.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 3600, `Retry-After ${retry}`);
    assert.equal(pool.started, hashed, 'no hash was checked for the limited attempt');
    assert.equal((await from('198.51.100.7', basic('alice', 'wonderland'))).status, 200, 'a cached right answer still passes');
    assert.equal((await from('198.51.100.8', basic('alice', 'guess-x'))).status, 401, 'another client has its own bucket');
  });

  test('a checked result is cached: the same credentials again start no hash', async () => {
    const server = await portico(inline());
    const pool = sharedHashPool();
    assert.equal((await as(`${server.url}/admin`, basic('alice', 'wonderland'))).status, 200);
    assert.equal((await as(`${server.url}/admin`, basic('alice', 'wrong'))).status, 401);
    const hashed = pool.started;
    assert.equal((await as(`${server.url}/admin`, basic('alice', 'wonderland'))).status, 200);
    assert.equal((await as(`${server.url}/admin`, basic('alice', 'wrong'))).status, 401);
    assert.equal(pool.started, hashed);
    const uncached = await portico(inline('cache_ttl: 0'));
    assert.equal((await as(`${uncached.url}/admin`, basic('alice', 'wonderland'))).status, 200);
    assert.equal((await as(`${uncached.url}/admin`, basic('alice', 'wonderland'))).status, 200);
    assert.equal(pool.started, hashed + 2, 'cache_ttl: 0 checks every time');
  });

  test('parallel requests with the same credentials share one check (and one failed-attempt token)', async () => {
    const costly = bcrypt.hashSync('shared', 10);
    const server = await portico(`sites:
  - basic_auth: { users: [ { user: u, hash: "${costly}" } ], failure_limit: { rate: 1/h, burst: 1 } }
    routes: [ { path: /, respond: { body: "in" } } ]
`);
    const pool = sharedHashPool();
    const hashed = pool.started;
    const statuses = await Promise.all(Array.from({ length: 6 }, (_, i) => as(`${server.url}/asset${i}`, basic('u', 'shared')).then((res) => res.status)));
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200]);
    assert.equal(pool.started, hashed + 1, 'one hash for six requests');
  });

  test('a queued check whose client disconnects is never run: the pool skips it', async () => {
    // Two slow checks occupy the pool's workers (one or two on any machine): the third waits in the queue.
    const slow = bcrypt.hashSync('slow', 11);
    const server = await portico(`sites:
  - basic_auth: { users: [ { user: u, hash: "${slow}" }, { user: v, hash: "${slow}" } ] }
    routes: [ { path: /, respond: { body: "in" } } ]
`);
    const pool = sharedHashPool();
    const { started, withdrawn, pending } = { started: pool.started, withdrawn: pool.withdrawn, pending: pool.pending };
    const busy = [as(server.url, basic('u', 'slow')), as(server.url, basic('v', 'slow'))];
    const leaving = new AbortController();
    const gone = fetch(server.url, { headers: { authorization: basic('u', 'wrong') }, signal: leaving.signal }).catch((err: Error) => err.name);
    await until(() => pool.pending === pending + 3, 'the third check queued');
    leaving.abort();
    assert.equal(await gone, 'AbortError');
    assert.deepEqual(await Promise.all(busy.map(async (res) => (await res).status)), [200, 200]);
    await until(() => pool.pending === pending, 'every check ended or withdrawn');
    assert.equal(pool.started, started + 2, 'two checks ran, not three');
    assert.equal(pool.withdrawn, withdrawn + 1);
  });

  test('the queue of checks is bounded: past it 503 with Retry-After, and the server answers afterwards', async () => {
    const costly = bcrypt.hashSync('x', 10);
    const server = await portico(`trusted_proxies: ["127.0.0.1"]
sites:
  - basic_auth: { users: [ { user: u, hash: "${costly}" } ] }
    routes: [ { path: /, respond: { body: "in" } } ]
`);
    // Distinct clients, so that no failed-attempt bucket runs dry: only the queue can refuse.
    const statuses = await Promise.all(
      Array.from({ length: 44 }, (_, i) =>
        as(server.url, basic('u', `wrong${i}`), { 'x-forwarded-for': `203.0.113.${i + 1}` }).then((res) => [res.status, res.headers.get('retry-after')] as const),
      ),
    );
    const refused = statuses.filter(([status]) => status === 503);
    assert.ok(refused.length > 0, `some checks were refused: ${statuses.map(([s]) => s).join(',')}`);
    assert.ok(refused.every(([, retry]) => retry === '1'));
    assert.ok(statuses.every(([status]) => status === 401 || status === 503));
    assert.equal((await as(server.url, basic('u', 'x'))).status, 200);
  });
});

describe('basic_auth: fairness between clients', () => {
  /** A site behind basic_auth with user u (password "right") at bcrypt `cost`, clients named by X-Forwarded-For. */
  const floodable = (cost: number) =>
    portico(`trusted_proxies: ["127.0.0.1"]
sites:
  - basic_auth: { users: [ { user: u, hash: "${bcrypt.hashSync('right', cost)}" } ], failure_limit: { rate: 1/h, burst: 20 } }
    routes: [ { path: /, respond: { body: "in" } } ]
`);

  test('a flood of wrong passwords from six addresses does not lock out another client: its right password gets 200 promptly, not 503', async () => {
    // Cost 10: about 100 ms per check, so sixty wrong passwords are seconds of work for the pool.
    const server = await floodable(10);
    const pool = sharedHashPool();
    const before = pool.pending;
    const flood = Array.from({ length: 60 }, (_, i) =>
      as(server.url, basic('u', `wrong${i}`), { 'x-forwarded-for': `198.51.100.${1 + (i % 6)}` }).then((res) => res.status),
    );
    const deadline = Date.now() + 5000;
    while (pool.pending < before + 24) {
      assert.ok(Date.now() < deadline, `the flood's checks to be queued (pending ${pool.pending})`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const started = performance.now();
    const res = await as(server.url, basic('u', 'right'), { 'x-forwarded-for': '203.0.113.9' });
    const ms = performance.now() - started;
    assert.equal(res.status, 200, 'the right password of another client is checked, not refused');
    assert.ok(ms < 3000, `answered in ${ms.toFixed(0)} ms`);
    const statuses = await Promise.all(flood);
    assert.ok(statuses.every((status) => status === 401 || status === 503), statuses.join(','));
  });

  test('clients whose wrong passwords failed cannot lock out another from forty addresses: a clean client\'s right password is served before their queued checks', async () => {
    // Cost 8: tens of ms per check, so a full queue is a second or two of work for the pool.
    const server = await floodable(8);
    const pool = sharedHashPool();
    const before = pool.pending;
    const from = (i: number) => ({ 'x-forwarded-for': `198.51.100.${1 + i}` });
    const wrong = (i: number, wave: number) => as(server.url, basic('u', `wrong${wave}-${i}`), from(i)).then((res) => res.status);
    // First wave, twenty at a time so that no check is refused: each of the forty addresses now has a failure.
    for (const batch of [0, 20]) {
      const statuses = await Promise.all(Array.from({ length: 20 }, (_, i) => wrong(batch + i, 1)));
      assert.ok(statuses.every((status) => status === 401), statuses.join(','));
    }
    // Second wave: forty at once fill the queue (32 and the checks running).
    const flood = Array.from({ length: 40 }, (_, i) => wrong(i, 2));
    const full = before + 32 + Math.min(2, Math.max(1, availableParallelism() - 1));
    await until(() => pool.pending >= full, `the queue to fill (pending ${pool.pending})`);
    const started = performance.now();
    const res = await as(server.url, basic('u', 'right'), { 'x-forwarded-for': '203.0.113.9' });
    const ms = performance.now() - started;
    const left = pool.pending - before;
    assert.equal(res.status, 200, 'the right password of a clean client is checked, not refused');
    assert.ok(left >= 20, `answered before the flood's queued checks (${left} still pending)`);
    assert.ok(ms < 2000, `answered in ${ms.toFixed(0)} ms`);
    const statuses = await Promise.all(flood);
    assert.ok(statuses.every((status) => status === 401 || status === 503), statuses.join(','));
  });
});

describe('basic_auth: transport', () => {
  test('over plain HTTP from a non-loopback peer: 403 without a check or a challenge; over TLS from that peer the credentials are checked and pass', async (t) => {
    const local = Object.values(networkInterfaces())
      .flat()
      .find((entry) => entry !== undefined && !entry.internal && entry.family === 'IPv4');
    if (local === undefined) return t.skip('this machine has no non-loopback IPv4 address to listen on');
    const pem = await createCertificate({ names: [local.address] });
    const dir = makeTree({ 'cert.pem': pem.cert, 'key.pem': pem.key });
    const config = parseConfig(
      `listen: ["${local.address}:0", "127.0.0.1:0", { addr: "${local.address}:0", tls: { cert: ./cert.pem, key: ./key.pem } }]\nlog: { access: off }\n${inline()}`,
      path.join(dir, 'portico.yaml'),
      dir,
    );
    const server = new Portico(config, pino({ level: 'silent' }));
    await server.start();
    defer(() => server.stop(100));
    const [outside, loopback, secure] = server.addresses;
    const pool = sharedHashPool();
    const hashed = pool.started;
    // Connect from the machine's own non-loopback address: the peer Portico sees is not loopback.
    const status = await new Promise<{ status: number; challenge: string | undefined }>((resolve, reject) => {
      const req = http.get(
        { host: local.address, port: outside!.port, path: '/admin', localAddress: local.address, headers: { authorization: basic('alice', 'wonderland') } },
        (res) => {
          res.resume();
          resolve({ status: res.statusCode!, challenge: res.headers['www-authenticate'] as string | undefined });
        },
      );
      req.on('error', reject);
    });
    assert.equal(status.status, 403);
    assert.equal(status.challenge, undefined);
    assert.equal(pool.started, hashed, 'the credentials were not checked');
    assert.ok(net.isIP(local.address));
    const viaLoopback = await as(`http://127.0.0.1:${loopback!.port}/admin`, basic('alice', 'wonderland'));
    assert.equal(viaLoopback.status, 200, 'the same route over loopback checks and passes');
    const overTls = await new Promise<number>((resolve, reject) => {
      const req = https.get(
        { host: local.address, port: secure!.port, path: '/admin', localAddress: local.address, ca: pem.cert, headers: { authorization: basic('alice', 'wonderland') } },
        (res) => {
          res.resume();
          resolve(res.statusCode!);
        },
      );
      req.on('error', reject);
    });
    assert.equal(overTls, 200, 'over TLS a non-loopback peer is checked and passes');
  });
});

describe('basic_auth: the app behind it', () => {
  test('Authorization is not forwarded to the app unless pass_authorization: true; without basic_auth it is', async () => {
    const backend = await upstream((req, res) => res.end(`auth=${req.headers.authorization ?? 'none'}`));
    const server = await portico(`sites:
  - routes:
      - path: /kept
        basic_auth: { users: [ { user: alice, hash: "${ALICE}" } ] }
        proxy: { url: "${backend.url}" }
      - path: /passed
        basic_auth: { users: [ { user: alice, hash: "${ALICE}" } ], pass_authorization: true }
        proxy: { url: "${backend.url}" }
      - path: /
        proxy: { url: "${backend.url}" }
`);
    const credentials = basic('alice', 'wonderland');
    assert.equal(await (await as(`${server.url}/kept`, credentials)).text(), 'auth=none');
    assert.equal(await (await as(`${server.url}/passed`, credentials)).text(), `auth=${credentials}`);
    assert.equal(await (await as(`${server.url}/open`, 'Bearer app-token')).text(), 'auth=Bearer app-token');
  });

  test('a cached response to an authenticated request is never given to an unauthenticated one: 401 comes first', async () => {
    let served = 0;
    const backend = await upstream((_req, res) => {
      served++;
      res.writeHead(200, { 'cache-control': 'public, max-age=300', 'content-type': 'text/plain' });
      res.end('members only');
    });
    const server = await portico(`caches: { main: { memory: 1MB } }
sites:
  - basic_auth: { users: [ { user: alice, hash: "${ALICE}" } ] }
    routes:
      - path: /
        proxy: { url: "${backend.url}", cache: { zone: main } }
`);
    const credentials = basic('alice', 'wonderland');
    const first = await as(`${server.url}/page`, credentials);
    assert.equal(await first.text(), 'members only');
    const second = await as(`${server.url}/page`, credentials);
    assert.equal(await second.text(), 'members only');
    assert.match(second.headers.get('cache-status') ?? '', /hit/, 'the public response was stored and is served to members');
    assert.equal(served, 1);
    for (const authorization of [undefined, basic('alice', 'wrong')]) {
      const outsider = await as(`${server.url}/page`, authorization);
      assert.equal(outsider.status, 401);
      assert.doesNotMatch(await outsider.text(), /members only/);
    }
    assert.equal(served, 1);
  });
});
