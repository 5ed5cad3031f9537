/**
 * Claims of docs/proxy.md ("Policies", `hash_key`) about load-balancing policies, through the real proxy and real
 * app servers: `hash` on each kind of `hash_key` variable ($cookie_NAME, $header_NAME, $arg_NAME, $remote_addr),
 * `ip_hash` on the client address, and `ewma` preferring a fast server over a slow one.
 *
 * Distinct client addresses are real: on Linux the whole 127.0.0.0/8 is the loopback, so a client socket can
 * be bound to 127.0.0.N. Where that is not possible (macOS), those tests skip and say so.
 */
import assert from 'node:assert/strict';
import { scopedServers } from './proxy-support.js';
import http from 'node:http';
import net from 'node:net';
import { before, describe, test, type TestContext } from 'node:test';
import type { TestUpstream } from '../helpers/upstream.js';

const { portico, upstream, defer } = scopedServers();

function config(servers: readonly TestUpstream[], options: string): string {
  const list = servers.map((s) => `{ url: "${s.url}" }`).join(', ');
  return `upstreams:\n  app:\n    servers: [${list}]\n${options.replace(/^/gm, '    ')}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
}

/** One GET on a fresh connection, optionally from a given local address; resolves to the body (the server's name). */
function get(port: number, path: string, headers: Record<string, string> = {}, localAddress?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent: false, localAddress }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}: ${body}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Whether a client socket can be bound to 127.0.0.2 (Linux: yes; macOS: only 127.0.0.1 by default). */
async function canUseLoopbackAliases(): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer((socket) => socket.destroy());
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      const socket = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
      const done = (ok: boolean) => {
        socket.destroy();
        server.close();
        resolve(ok);
      };
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
    });
  });
}

let a: TestUpstream;
let b: TestUpstream;
let c: TestUpstream;
let aliases = false;
before(async () => {
  a = await upstream('a');
  b = await upstream('b');
  c = await upstream('c');
  aliases = await canUseLoopbackAliases();
});

function skipWithoutAliases(t: TestContext): boolean {
  if (aliases) return false;
  t.skip('cannot bind client sockets to 127.0.0.N on this system (only 127.0.0.1 is configured)');
  return true;
}

/**
 * The two properties of a hash on a key: every request with the same key lands on the same server (whatever
 * else differs, such as the path), and 24 different keys do not all land on one server (with three servers,
 * chance 3 × 3⁻²⁴ if the hash were random).
 */
async function assertKeyed(send: (key: string, i: number) => Promise<string>): Promise<void> {
  const keys = Array.from({ length: 24 }, (_, i) => `user-${i}`);
  const owner = new Map<string, string>();
  for (let round = 0; round < 3; round++) {
    for (const [i, key] of keys.entries()) {
      const server = await send(key, round * 100 + i);
      const first = owner.get(key);
      if (first === undefined) owner.set(key, server);
      else assert.equal(server, first, `key ${key} moved from ${first} to ${server} on round ${round}`);
    }
  }
  const used = new Set(owner.values());
  assert.ok(used.size >= 2, `24 different keys all went to server ${[...used].join()}`);
}

describe('policy: hash, each kind of hash_key variable', () => {
  test('hash_key "$cookie_session": the same session cookie always reaches the same server, different ones spread', async () => {
    const server = await portico(config([a, b, c], 'policy: hash\nhash_key: "$cookie_session"'));
    await assertKeyed((key, i) => get(server.port, `/p${i}`, { cookie: `theme=dark; session=${key}; other=${i}` }));
  });

  test('hash_key "$header_x_user" (dashes written as underscores): the same X-User header always reaches the same server, different ones spread', async () => {
    const server = await portico(config([a, b, c], 'policy: hash\nhash_key: "$header_x_user"'));
    await assertKeyed((key, i) => get(server.port, `/p${i}`, { 'X-User': key, 'X-Other': String(i) }));
  });

  test('hash_key "$arg_user": the same ?user= argument always reaches the same server, different ones spread', async () => {
    const server = await portico(config([a, b, c], 'policy: hash\nhash_key: "$arg_user"'));
    await assertKeyed((key, i) => get(server.port, `/p${i}?x=${i}&user=${key}`));
  });

  test('hash_key "$remote_addr": one client address always reaches the same server, different addresses spread', async (t) => {
    if (skipWithoutAliases(t)) return;
    const server = await portico(config([a, b, c], 'policy: hash\nhash_key: "$remote_addr"'));
    // user-N → client address 127.0.0.(10+N)
    await assertKeyed((key, i) => get(server.port, `/p${i}`, {}, `127.0.0.${10 + Number(key.slice(5))}`));
  });
});

describe('policy: ip_hash', () => {
  test('ip_hash: every request from one client address reaches the same server, whatever its path', async () => {
    const server = await portico(config([a, b, c], 'policy: ip_hash'));
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) seen.add(await get(server.port, `/path-${i}?q=${i}`));
    assert.equal(seen.size, 1, `one client went to ${[...seen].join(', ')}`);
  });

  test('ip_hash: different client addresses are spread over the servers, each one staying on its own', async (t) => {
    if (skipWithoutAliases(t)) return;
    const server = await portico(config([a, b, c], 'policy: ip_hash'));
    await assertKeyed((key, i) => get(server.port, `/p${i}`, {}, `127.0.0.${10 + Number(key.slice(5))}`));
  });
});

describe('policy: ewma', () => {
  test('ewma: after warm-up, sequential requests go to the fast server and (almost) never to the one 300 ms slower', async () => {
    const fast = await upstream('fast');
    const slow = await upstream((_req, res) => {
      const timer = setTimeout(() => res.end('slow'), 300);
      res.on('close', () => clearTimeout(timer));
    });
    const server = await portico(config([fast, slow], 'policy: ewma'));
    // Warm-up: an unmeasured server costs nothing while idle, so both get measured within the first requests.
    for (let i = 0; i < 4; i++) await get(server.port, `/warm${i}`);
    assert.ok(slow.requests.length >= 1, 'the slow server was measured during warm-up');
    const counts = { fast: 0, slow: 0 };
    for (let i = 0; i < 30; i++) counts[(await get(server.port, `/n${i}`)) as 'fast' | 'slow']++;
    // round_robin or random would send about 15 of 30 to the slow server. A stall of the fast one on a loaded
    // machine may send one or two there (peak-EWMA reacts to a slow sample at once), hence the margin.
    assert.ok(counts.slow <= 3, `the slow server got ${counts.slow} of 30 requests after warm-up`);
  });
});
