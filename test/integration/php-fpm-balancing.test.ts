/**
 * A `php` route balanced across two real php-fpm pools (docs/php.md, "FastCGI upstreams"): Portico's sticky cookie,
 * the app's own session cookie with routes (`app_cookie: PHPSESSID`), `policy: hash`, and FastCGI servers found
 * through DNS (`discover`, against a real dnsmasq). Each pool tells who it is by its `env[POOL]`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { DnsServer } from '../helpers/dnsmasq.js';
import { freePort } from '../helpers/pebble.js';
import { PhpFpm, phpConfig } from '../helpers/php-fpm.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { eventually } from '../helpers/supervise.js';
import { haveTool } from '../helpers/tools.js';

const fpmInstalled = haveTool('php-fpm8.2') || process.env.CI === 'true';
const dnsInstalled = haveTool('dnsmasq') || process.env.CI === 'true';

const APP = {
  'app/who.php': `<?php echo getenv('POOL');`,
  'app/index.php': `<?php echo getenv('POOL'), ' front ', $_SERVER['REQUEST_URI'];`,
  // PHP's own session ids allow only A-Z a-z 0-9 , - : the route follows a `-` (sticky.separator).
  'app/login.php': `<?php
ini_set('session.save_path', sys_get_temp_dir());
if (!isset($_COOKIE['PHPSESSID'])) session_id(session_create_id() . '-' . getenv('POOL'));
$started = session_start();
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
echo json_encode(['pool' => getenv('POOL'), 'started' => $started, 'visits' => $_SESSION['visits'], 'id' => session_id()]);`,
};

/** GET `path` with `headers`: the pool that answered, and the answer's Set-Cookie fields. */
async function visit(base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string; cookies: string[] }> {
  const res = await request(base + path, { headers });
  const text = await res.body.text();
  const setCookie = res.headers['set-cookie'];
  return { status: res.statusCode, text, cookies: setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie] };
}

describe('php route across two FPM pools', { skip: fpmInstalled ? false : 'php-fpm8.2 is not installed (on CI it is: .ci/run installs php8.2-fpm)' }, () => {
  let a: PhpFpm;
  let b: PhpFpm;
  before(async () => {
    a = await PhpFpm.start({ workers: 2, pool: { 'env[POOL]': 'a' } });
    b = await PhpFpm.start({ workers: 2, pool: { 'env[POOL]': 'b' } });
  });
  after(async () => {
    await a?.close();
    await b?.close();
  });

  const upstream = (extra: string, servers = `["${a.url}", "${b.url}"]`): string => phpConfig(`servers: ${servers}\nkeepalive: 2\n${extra}`);

  test("sticky: { cookie }: a client's first answer pins it to a pool with Portico's cookie beside PHP's own; it stays there", async () => {
    const portico = await startPortico(upstream('sticky: { cookie: portico_route }'), APP);
    try {
      const seen = new Set<string>();
      for (let client = 0; client < 4; client++) {
        const first = await visit(portico.url, '/login.php');
        const pin = first.cookies.find((c) => c.startsWith('portico_route='));
        const session = first.cookies.find((c) => c.startsWith('PHPSESSID='));
        assert.ok(pin !== undefined && session !== undefined, `both cookies, apart: ${JSON.stringify(first.cookies)}`);
        const pool = (JSON.parse(first.text) as { pool: string }).pool;
        seen.add(pool);
        const cookie = `${pin.split(';')[0]}; ${session.split(';')[0]}`;
        for (let i = 0; i < 6; i++) {
          const next = await visit(portico.url, i % 2 === 0 ? '/login.php' : '/who.php', { cookie });
          assert.equal(next.status, 200);
          assert.equal(i % 2 === 0 ? (JSON.parse(next.text) as { pool: string }).pool : next.text, pool, `client ${client} stays on pool ${pool}`);
          if (i % 2 === 0) assert.equal((JSON.parse(next.text) as { visits: number }).visits, i / 2 + 2, 'its PHP session goes on');
        }
      }
      assert.deepEqual([...seen].sort(), ['a', 'b'], 'new clients are spread by the policy');
    } finally {
      await portico.stop();
    }
  });

  test('sticky: { app_cookie: PHPSESSID, separator: "-" }: a session id ending in -ROUTE goes to that pool; PHP accepts such ids', async () => {
    const servers = `\n  - { url: "${a.url}", route: a }\n  - { url: "${b.url}", route: b }`;
    const portico = await startPortico(upstream('sticky: { app_cookie: PHPSESSID, separator: "-" }', servers), APP);
    try {
      for (const want of ['a', 'b']) {
        // A first visit lands where the policy says; PHP mints an id that names its own pool.
        let first = await visit(portico.url, '/login.php');
        for (let i = 0; i < 4 && (JSON.parse(first.text) as { pool: string }).pool !== want; i++) first = await visit(portico.url, '/login.php');
        const login = JSON.parse(first.text) as { pool: string; started: boolean; id: string };
        assert.equal(login.pool, want);
        assert.equal(login.started, true, 'PHP took the id');
        assert.match(login.id, new RegExp(`-${want}$`));
        const cookie = first.cookies.find((c) => c.startsWith('PHPSESSID='))!.split(';')[0]!;
        for (let i = 0; i < 6; i++) {
          const next = JSON.parse((await visit(portico.url, '/login.php', { cookie })).text) as { pool: string; visits: number };
          assert.equal(next.pool, want, `session ${cookie} stays on its pool`);
          assert.equal(next.visits, i + 2);
        }
      }
      // Portico sets no cookie of its own in this mode.
      assert.deepEqual((await visit(portico.url, '/who.php')).cookies, []);
    } finally {
      await portico.stop();
    }
  });

  test('policy: hash on the URI: each path always goes to the same pool, and the paths are spread over both', async () => {
    const portico = await startPortico(upstream('policy: hash\nhash_key: "$request_uri"'), APP);
    try {
      const pools = new Set<string>();
      for (let n = 0; n < 16; n++) {
        const path = `/page/${n}`;
        const answers = new Set<string>();
        for (let i = 0; i < 3; i++) {
          const res = await visit(portico.url, path);
          assert.equal(res.status, 200);
          answers.add(res.text);
        }
        assert.equal(answers.size, 1, `${path}: ${[...answers].join(' | ')}`);
        pools.add([...answers][0]!.split(' ')[0]!);
      }
      assert.deepEqual([...pools].sort(), ['a', 'b']);
    } finally {
      await portico.stop();
    }
  });
});

describe('php route to FastCGI servers found through DNS', { skip: !fpmInstalled ? 'php-fpm8.2 is not installed' : !dnsInstalled ? 'dnsmasq is not installed' : false }, () => {
  let dns: DnsServer;
  let a: PhpFpm;
  let b: PhpFpm;
  let portico: RunningPortico;
  before(async () => {
    // A records carry no port: both pools listen on one port, on two loopback addresses.
    const port = await freePort();
    a = await PhpFpm.start({ workers: 2, pool: { 'env[POOL]': 'a' }, listen: `127.0.0.1:${port}` });
    b = await PhpFpm.start({ workers: 2, pool: { 'env[POOL]': 'b' }, listen: `127.0.0.2:${port}` });
    dns = await DnsServer.start({ hosts: { 'fpm.test': ['127.0.0.1', '127.0.0.2'] } });
    // 127.0.0.2 is also named by DNS: one server.
    const lines = `discover: { dns: fpm.test, port: ${port}, interval: 1s }\nservers: ["fcgi://127.0.0.2:${port}"]\nkeepalive: 2`;
    portico = await startPortico(phpConfig(lines, `resolver: ${dns.address}\n`), APP);
  });
  after(async () => {
    await portico?.stop();
    await dns?.close();
    await a?.close();
    await b?.close();
  });

  test('both pools named by DNS answer over FastCGI, listed as fcgi:// (one named twice listed once); a pool no longer named gets no more requests, none fails', async () => {
    await eventually(async () => {
      const pools = new Set<string>();
      for (let i = 0; i < 8; i++) pools.add((await visit(portico.url, '/who.php')).text);
      return pools.size === 2;
    }, 'both pools answering');
    const status = await portico.server.statusReport();
    const servers = status.upstreams.find((u) => u.name === 'php')!.servers;
    assert.deepEqual(servers.map((s) => s.address).sort(), [`fcgi://127.0.0.1:${a.tcp!.split(':')[1]}`, `fcgi://127.0.0.2:${b.tcp!.split(':')[1]}`], 'listed as the FastCGI servers they are, the configured one once');
    await dns.setHosts({ 'fpm.test': ['127.0.0.2'] });
    const failed: string[] = [];
    await eventually(async () => {
      const pools: string[] = [];
      for (let i = 0; i < 6; i++) {
        const res = await visit(portico.url, '/who.php');
        if (res.status !== 200) failed.push(`${res.status} ${res.text}`);
        pools.push(res.text);
      }
      return pools.every((pool) => pool === 'b');
    }, 'only pool b answering');
    assert.deepEqual(failed, []);
  });
});
