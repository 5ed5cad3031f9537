/**
 * The showcase: `npm start` makes the dev certificate and runs Portico on examples/portico.yaml, which starts
 * the two example app instances itself (`spawn:`). This runs those steps as `npm start` does (the suite built
 * Portico already) and opens every URL the README lists, over HTTP/1.1 on 8080 and over HTTPS + HTTP/2 on 8443
 * (the ports are the README's, so they must be free); stopping Portico leaves no app instance behind.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { haveTool } from '../helpers/tools.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const BASE = 'http://127.0.0.1:8080';

/** GETs `url` until it answers `status` (the app instances and Portico come up in parallel); bounded. */
async function until(url: string, status: number, init: RequestInit = {}): Promise<Response> {
  const limit = Date.now() + 15_000;
  for (;;) {
    try {
      const res = await fetch(url, init);
      if (res.status === status || Date.now() > limit) return res;
      await res.arrayBuffer();
    } catch (err) {
      if (Date.now() > limit) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A request to 127.0.0.1:8080 naming `host` (fetch cannot set Host), retried until it answers `status`; bounded. */
async function untilHost(host: string, pathname: string, status: number, options: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const once = () =>
    new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: 8080, path: pathname, method: options.method ?? 'GET', headers: { host, ...options.headers }, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end(options.body);
    });
  const limit = Date.now() + 15_000;
  for (;;) {
    const res = await once();
    if (res.status === status || Date.now() > limit) return res;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function h2Get(ca: Buffer, pathname: string): Promise<{ status: number; body: string; alpn: string | false | undefined }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect('https://localhost:8443', { ca });
    session.on('error', reject);
    const req = session.request({ ':path': pathname });
    let status = 0;
    let body = '';
    req.on('response', (headers) => (status = Number(headers[':status'])));
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      const alpn = session.alpnProtocol;
      session.close();
      resolve({ status, body, alpn });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the showcase (npm start)', () => {
  let child: ChildProcess;
  let stderr = '';
  before(async () => {
    // What `npm start` runs, after its build step: checked here, so that this test runs what users run.
    const start = (JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.start;
    assert.match(start ?? '', /&& node examples\/dev-certificate\.mjs >\/dev\/null && node examples\/dev-token\.mjs && node dist\/src\/cli\.js run -c examples\/portico\.yaml$/);
    const certificate = spawn(process.execPath, [path.join(repo, 'examples/dev-certificate.mjs')], { cwd: repo, stdio: 'ignore' });
    const [code] = (await once(certificate, 'exit')) as [number | null];
    assert.equal(code, 0, 'the dev certificate was made');
    const token = spawn(process.execPath, [path.join(repo, 'examples/dev-token.mjs')], { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] });
    let said = '';
    token.stderr!.on('data', (chunk: Buffer) => (said += chunk.toString()));
    const [tokenCode] = (await once(token, 'close')) as [number | null];
    assert.equal(tokenCode, 0, 'the dev token was made');
    assert.match(said, /^dashboard: http:\/\/127\.0\.0\.1:9901\/ \(log in with the token [A-Za-z0-9_-]{32}, kept in examples\/var\/admin\.token\)\n$/);
    child = spawn(process.execPath, [path.join(repo, 'dist/src/cli.js'), 'run', '-c', 'examples/portico.yaml'], { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const ready = await until(`${BASE}/healthz`, 200);
    assert.equal(ready.status, 200, stderr);
  });
  after(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGINT');
    await once(child, 'exit');
  });

  test('the static site, the SPA fallback, the redirect and /healthz answer as the README says', async () => {
    const home = await fetch(`${BASE}/`);
    assert.equal(home.status, 200);
    assert.match(home.headers.get('content-type') ?? '', /text\/html/);
    assert.equal((await fetch(`${BASE}/app/any/path`)).status, 200);
    const old = await fetch(`${BASE}/old`, { redirect: 'manual' });
    assert.equal(old.status, 301);
    assert.equal(await (await fetch(`${BASE}/healthz`)).text(), 'ok\n');
  });

  test('/api/hello is proxied and then served from the cache (Cache-Status: hit); /api/time is never stored', async () => {
    const first = await until(`${BASE}/api/hello`, 200);
    assert.equal(first.status, 200, stderr);
    await first.arrayBuffer();
    const second = await fetch(`${BASE}/api/hello`);
    assert.equal(second.status, 200);
    assert.match(second.headers.get('cache-status') ?? '', /hit/);
    const time = await fetch(`${BASE}/api/time`);
    assert.equal(time.status, 200);
    assert.doesNotMatch(time.headers.get('cache-status') ?? '', /hit/);
  });

  test('/api/session stays on the instance holding the session (app_cookie), with no cookie of Portico\'s', async () => {
    const first = await until(`${BASE}/api/session`, 200);
    const cookie = first.headers.get('set-cookie') ?? '';
    const id = /JSESSIONID=([^;]+)/.exec(cookie)?.[1];
    assert.match(id ?? '', /\.app[12]$/, cookie);
    assert.equal(first.headers.getSetCookie().length, 1, 'only the app\'s cookie');
    const { instance } = (await first.json()) as { instance: string };
    for (let visit = 2; visit <= 4; visit++) {
      const again = await fetch(`${BASE}/api/session`, { headers: { cookie: `JSESSIONID=${id}` } });
      const body = (await again.json()) as { instance: string; visits: number; session: string };
      assert.deepEqual([body.instance, body.visits, body.session], [instance, visit, id]);
      assert.equal(again.headers.get('set-cookie'), null);
    }
  });

  test('/api/boom: the app\'s 500 and its stack trace are replaced by Portico\'s page (intercept_errors)', async () => {
    const res = await fetch(`${BASE}/api/boom`);
    assert.equal(res.status, 500);
    const body = await res.text();
    assert.doesNotMatch(body, /IllegalStateException|Boom\.java|app#\d/);
    assert.doesNotMatch(res.headers.get('server') ?? '', /ExampleApp/);
    const missing = await fetch(`${BASE}/api/nothing-here`);
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /"error":"not found"/, 'a 404 is not in the route\'s list: the API\'s JSON passes');
  });

  test('the admin listener (README): /healthz, /status and /metrics open from loopback, the dashboard page, a POST only with the token, and a drain of app#1 undone by enable', async () => {
    const admin = 'http://127.0.0.1:9901';
    assert.deepEqual(await (await fetch(`${admin}/healthz`)).json(), { ok: true });
    const page = await fetch(`${admin}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /^<!doctype html>/i);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    await fetch(`${BASE}/api/hello`).then((r) => r.arrayBuffer());
    const status = (await (await fetch(`${admin}/status`)).json()) as { counting: boolean; upstreams: Array<{ name: string; servers: Array<{ id: string }> }>; caches: Array<{ zone: string }> };
    assert.equal(status.counting, true);
    assert.deepEqual(status.upstreams.find((u) => u.name === 'app')?.servers.map((s) => s.id).sort(), ['app#1', 'app#2']);
    assert.deepEqual(status.caches.map((c) => c.zone), ['main']);
    const metrics = await (await fetch(`${admin}/metrics`)).text();
    assert.match(metrics, /^portico_http_requests_total\{/m);
    const refused = await fetch(`${admin}/upstreams/app/servers/app%231/drain`, { method: 'POST' });
    assert.equal(refused.status, 401, 'a POST needs the token, on loopback too');
    const token = readFileSync(path.join(repo, 'examples/var/admin.token'), 'utf8').trim();
    const auth = { authorization: `Bearer ${token}` };
    const drained = await fetch(`${admin}/upstreams/app/servers/app%231/drain`, { method: 'POST', headers: auth });
    assert.equal(drained.status, 200, stderr);
    assert.equal(((await drained.json()) as { state: string }).state, 'draining');
    const enabled = await fetch(`${admin}/upstreams/app/servers/app%231/enable`, { method: 'POST', headers: auth });
    assert.equal(enabled.status, 200);
    assert.equal(((await enabled.json()) as { admin: string }).admin, 'enabled');
  });

  test('/files/ asks for basic auth and lists the folder for demo:portico', async () => {
    const anonymous = await fetch(`${BASE}/files/`);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    const authorized = await fetch(`${BASE}/files/`, { headers: { authorization: `Basic ${Buffer.from('demo:portico').toString('base64')}` } });
    assert.equal(authorized.status, 200);
  });

  test('https://localhost:8443/ serves the same site over HTTP/2 with the certificate npm start made', async () => {
    const ca = readFileSync(path.join(repo, 'examples/var/dev/cert.pem'));
    const home = await h2Get(ca, '/');
    assert.equal(home.alpn, 'h2');
    assert.equal(home.status, 200);
    assert.match(home.body, /<html/i);
    const api = await h2Get(ca, '/api/hello');
    assert.equal(api.status, 200, api.body);
  });

  test('http://php.localhost:8080/ runs PHP in the PHP-FPM pools Portico started: front controller, a static file, a cached script, a POST, the path-info hole closed', async () => {
    const fpm = haveTool('php-fpm8.2');
    const served = new Set<string>();
    for (let i = 0; i < 10 && served.size < 2; i++) {
      const page = await untilHost('php.localhost:8080', '/hello/world', 200);
      served.add(String(page.headers['x-served-by']));
      if (fpm) {
        assert.match(page.body, /PHP 8\.\d+\.\d+, through Portico over FastCGI/);
        assert.match(page.body, /no such file: the front controller answered/);
      } else {
        // No PHP-FPM here (not CI): the showcase's FastCGI stand-in answers through the same path.
        assert.match(page.body, /PHP-FPM is not installed on this machine/);
      }
    }
    assert.deepEqual([...served].sort(), ['php#1', 'php#2'], 'both FPM slots answer');
    const css = await untilHost('php.localhost:8080', '/style.css', 200);
    assert.match(String(css.headers['content-type']), /^text\/css/);
    assert.match(css.body, /font:/);
    if (!fpm) return;
    const first = await untilHost('php.localhost:8080', '/cached.php', 200);
    const second = await untilHost('php.localhost:8080', '/cached.php', 200);
    assert.match(String(second.headers['cache-status']), /hit/);
    assert.equal(second.body, first.body, 'PHP ran once');
    const form = await untilHost('php.localhost:8080', '/form.php', 200, { method: 'POST', body: 'name=Ada', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.match(form.body, /Hello, Ada \(a POST of 8 bytes\)/);
    const hole = await untilHost('php.localhost:8080', '/uploads/avatar.jpg/x.php', 200);
    assert.doesNotMatch(hole.body, /this must never run/);
    assert.match(hole.body, /front controller answered/);
  });

  test('gRPC through https://localhost:8443 (and with --plaintext through http://127.0.0.1:8080) to the gRPC instances Portico started: node examples/grpc/call.mjs Ada, as the README says', () => {
    const result = spawnSync(process.execPath, [path.join(repo, 'examples/grpc/call.mjs'), 'Ada', '2'], { cwd: repo, encoding: 'utf8', timeout: 30_000 });
    assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
    assert.match(result.stdout, /^SayHello: Hello, Ada! \(from greeter#[12]\)\nCountdown: Ada: 2 \(from greeter#[12]\)\nCountdown: Ada: 1 \(from greeter#[12]\)\n$/);
    // --plaintext: the same over http://127.0.0.1:8080 (HTTP/2 by prior knowledge beside HTTP/1.1).
    const plain = spawnSync(process.execPath, [path.join(repo, 'examples/grpc/call.mjs'), '--plaintext', 'Bo', '1'], { cwd: repo, encoding: 'utf8', timeout: 30_000 });
    assert.equal(plain.status, 0, `${plain.stdout}${plain.stderr}`);
    assert.match(plain.stdout, /^SayHello: Hello, Bo! \(from greeter#[12]\)\nCountdown: Bo: 1 \(from greeter#[12]\)\n$/);
  });

  test('from a second terminal, as the README says: portico status lists both instances, portico deploy app replaces them (new pids), portico reload answers ok', async () => {
    const cli = (...args: string[]) => {
      const result = spawnSync(process.execPath, [path.join(repo, 'dist/src/cli.js'), ...args, '-c', 'examples/portico.yaml'], { cwd: repo, encoding: 'utf8', timeout: 60_000 });
      return { code: result.status, out: `${result.stdout}${result.stderr}` };
    };
    const before = cli('status', '--json');
    assert.equal(before.code, 0, before.out);
    const instances = (JSON.parse(before.out) as { instances: Array<{ slot: string; pid: number }> }).instances;
    assert.deepEqual(instances.map((i) => i.slot).sort(), ['app#1', 'app#2', 'greeter#1', 'greeter#2', 'php#1', 'php#2'], before.out);
    const deploy = cli('deploy', 'app');
    assert.equal(deploy.code, 0, deploy.out);
    assert.match(deploy.out, /summary: 2 instances replaced/);
    const after = (JSON.parse(cli('status', '--json').out) as { instances: Array<{ slot: string; pid: number }> }).instances.filter((i) => i.slot.startsWith('app#'));
    assert.equal(after.length, 2);
    for (const instance of after) assert.ok(!instances.some((old) => old.pid === instance.pid), `${instance.slot} has a new pid`);
    const reload = cli('reload');
    assert.equal(reload.code, 0, reload.out);
    assert.match(reload.out, /reload ok/);
  });

  test('both spawned instances (app#1, app#2) answer, and stopping Portico (Ctrl-C) stops them too', async () => {
    const pids = new Map<string, number>();
    for (let i = 0; i < 20 && pids.size < 2; i++) {
      const res = await fetch(`${BASE}/api/time`);
      const body = (await res.json()) as { instance: string; pid: number };
      pids.set(body.instance, body.pid);
    }
    assert.deepEqual([...pids.keys()].sort(), ['app#1', 'app#2'], 'round robin reaches both slots');
    child.kill('SIGINT');
    const limit = Date.now() + 20_000;
    while (child.exitCode === null && child.signalCode === null && Date.now() < limit) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.notEqual(child.exitCode ?? child.signalCode, null, 'Portico exited');
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    assert.deepEqual([...pids.values()].filter(alive), [], 'no app instance outlives Portico');
  });
});
