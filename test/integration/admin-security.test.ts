/**
 * The admin API's guards, attack by attack, on a real admin listener on loopback: a POST without the token (loopback
 * is no boundary), a wrong token, the dashboard's cookie without the custom header, from another site (Origin,
 * Sec-Fetch-Site) or as a form, a DNS-rebinding Host, CORS preflights, the admin routes on the public listener,
 * reads with and without `open_reads`, no token set, TLS (a Secure cookie; a non-loopback listener without TLS is a
 * config error at file:line:col), and the audit line of every POST.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { ConfigError } from '../../src/errors.js';
import { capturingLogger } from '../helpers/pebble.js';
import { selfSignedCert } from '../helpers/h2.js';
import { call, dashboardHeaders, login, startAdmin, type AdminPortico } from './admin-support.js';

const TOKEN = 'sec-test-token-0123456789';
process.env.PORTICO_SEC_TEST_TOKEN = TOKEN;
delete process.env.PORTICO_SEC_TEST_UNSET;

/** A config with an admin listener on loopback (port 0) and a public site answering only under /www/. */
function config(admin: string): string {
  return `listen: ["127.0.0.1:0"]
log: { access: off }
admin:
  listen: "127.0.0.1:0"
${admin}
sites:
  - routes:
      - path: /www/
        respond: { body: "public" }
`;
}

describe('admin API attacks', () => {
  let portico: AdminPortico;
  let port: number;
  const capture = capturingLogger();
  const bearer = { authorization: `Bearer ${TOKEN}` };

  before(async () => {
    portico = await startAdmin(config('  token_env: PORTICO_SEC_TEST_TOKEN\n  hosts: ["admin.example"]'), { logger: capture.logger });
    port = portico.adminPort;
  });
  after(() => portico.stop());

  /** The jobs the API knows (with the token). */
  async function jobCount(): Promise<number> {
    return (await call(port, 'GET', '/jobs', { headers: bearer })).json.jobs.length;
  }

  test('a POST without the token from loopback is refused 401 and starts nothing', async () => {
    const before = await jobCount();
    const answer = await call(port, 'POST', '/reload');
    assert.equal(answer.status, 401);
    assert.equal(answer.json.error.code, 'PORTICO_UNAUTHORIZED');
    assert.match(String(answer.headers['www-authenticate']), /^Bearer/);
    assert.equal(await jobCount(), before);
  });

  test('a wrong Bearer token is refused 401, as is a token of another length and another scheme', async () => {
    for (const authorization of [`Bearer ${TOKEN.slice(0, -1)}x`, 'Bearer x', `Basic ${Buffer.from(`a:${TOKEN}`).toString('base64')}`]) {
      const answer = await call(port, 'POST', '/reload', { headers: { authorization } });
      assert.equal(answer.status, 401, authorization);
    }
  });

  test('a GET without credentials is refused 401 when open_reads is off', async () => {
    for (const pathname of ['/status', '/metrics', '/jobs', '/events']) {
      const answer = await call(port, 'GET', pathname);
      assert.equal(answer.status, 401, pathname);
    }
  });

  test('/healthz and the dashboard need no credentials', async () => {
    assert.equal((await call(port, 'GET', '/healthz')).status, 200);
    assert.equal((await call(port, 'GET', '/')).status, 200);
  });

  test('login: a wrong token is 401, a form content type is 403, the right one gets an HttpOnly SameSite=Strict cookie', async () => {
    assert.equal((await call(port, 'POST', '/login', { headers: { 'content-type': 'application/json' }, body: { token: 'nope' } })).status, 401);
    const form = await call(port, 'POST', '/login', { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${TOKEN}` });
    assert.equal(form.status, 403);
    const cross = await call(port, 'POST', '/login', { headers: { 'content-type': 'application/json', origin: 'http://evil.example' }, body: { token: TOKEN } });
    assert.equal(cross.status, 403);
    const ok = await call(port, 'POST', '/login', { headers: { 'content-type': 'application/json' }, body: { token: TOKEN } });
    assert.equal(ok.status, 204);
    const cookie = String(ok.headers['set-cookie']?.[0]);
    assert.match(cookie, /^portico_admin=[A-Za-z0-9_-]{43}; /);
    assert.match(cookie, /; HttpOnly/);
    assert.match(cookie, /; SameSite=Strict/);
    assert.match(cookie, /; Path=\//);
    assert.doesNotMatch(cookie, /Secure/, 'no Secure flag on a plain-HTTP listener');
  });

  test('the session cookie reads without the custom header, but a cookie POST without X-Portico-Admin is 403', async () => {
    const cookie = await login(port, TOKEN);
    assert.equal((await call(port, 'GET', '/status', { headers: { cookie } })).status, 200);
    const headers = dashboardHeaders(port, cookie);
    delete (headers as Record<string, string | undefined>)['x-portico-admin'];
    const answer = await call(port, 'POST', '/reload', { headers, body: {} });
    assert.equal(answer.status, 403);
    assert.match(answer.json.error.message, /X-Portico-Admin/);
  });

  test('a cookie POST from another site is 403: cross-site Origin, Sec-Fetch-Site cross-site or same-site', async () => {
    const cookie = await login(port, TOKEN);
    const variants: Array<Record<string, string>> = [
      { origin: 'http://evil.example' },
      { origin: `http://127.0.0.1:${port + 1}` },
      { origin: 'null' },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
    ];
    for (const variant of variants) {
      const headers = { ...dashboardHeaders(port, cookie), ...variant };
      if (variant['sec-fetch-site'] !== undefined) delete (headers as Record<string, string | undefined>).origin;
      const answer = await call(port, 'POST', '/reload', { headers, body: {} });
      assert.equal(answer.status, 403, JSON.stringify(variant));
    }
  });

  test('a cookie POST with a form or text content type is 403 (what a cross-site form can send)', async () => {
    const cookie = await login(port, TOKEN);
    for (const type of ['application/x-www-form-urlencoded', 'text/plain', 'multipart/form-data; boundary=x']) {
      const answer = await call(port, 'POST', '/reload', { headers: { ...dashboardHeaders(port, cookie), 'content-type': type }, body: '{}' });
      assert.equal(answer.status, 403, type);
      assert.match(answer.json.error.message, /application\/json/);
    }
  });

  test('a cookie POST with every dashboard header is accepted (202 for a reload)', async () => {
    const cookie = await login(port, TOKEN);
    const answer = await call(port, 'POST', '/reload', { headers: dashboardHeaders(port, cookie), body: {} });
    assert.equal(answer.status, 202);
    assert.equal(answer.json.job.operation, 'reload');
  });

  test('a logout ends the session: the cookie is refused afterwards', async () => {
    const cookie = await login(port, TOKEN);
    const out = await call(port, 'POST', '/logout', { headers: dashboardHeaders(port, cookie), body: {} });
    assert.equal(out.status, 204);
    assert.match(String(out.headers['set-cookie']?.[0]), /Max-Age=0/);
    assert.equal((await call(port, 'GET', '/status', { headers: { cookie } })).status, 401);
    assert.equal((await call(port, 'GET', '/status', { headers: { cookie: 'portico_admin=forged' } })).status, 401);
  });

  test('a DNS-rebinding Host is refused 421 even with the token; the own address, localhost and admin.hosts are answered', async () => {
    for (const host of [`evil.example:${port}`, 'evil.example', `127.0.0.2:${port}`, `127.0.0.1:${port + 1}`, `127.0.0.1.evil.example:${port}`]) {
      const answer = await call(port, 'GET', '/status', { headers: { ...bearer, host } });
      assert.equal(answer.status, 421, `Host ${JSON.stringify(host)}`);
      assert.equal(answer.json.error.code, 'PORTICO_MISDIRECTED');
      assert.equal((await call(port, 'POST', '/reload', { headers: { ...bearer, host } })).status, 421, host);
    }
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, 'admin.example', `admin.example:${port}`]) {
      assert.equal((await call(port, 'GET', '/status', { headers: { ...bearer, host } })).status, 200, host);
    }
  });

  test('no CORS: OPTIONS is 405 and no answer carries an Access-Control header', async () => {
    const preflight = await call(port, 'OPTIONS', '/reload', {
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    assert.equal(preflight.status, 405);
    const answers = [preflight, await call(port, 'GET', '/status', { headers: { ...bearer, origin: 'http://evil.example' } })];
    for (const answer of answers) {
      assert.deepEqual(Object.keys(answer.headers).filter((name) => name.startsWith('access-control-')), []);
    }
  });

  test('nothing of the admin API is reachable from the public listener (404 there)', async () => {
    for (const [method, pathname] of [['GET', '/status'], ['GET', '/metrics'], ['GET', '/healthz'], ['GET', '/events'], ['POST', '/reload'], ['POST', '/login']] as const) {
      const answer = await call(portico.publicPort, method, pathname, { headers: bearer });
      assert.equal(answer.status, 404, `${method} ${pathname}`);
      assert.doesNotMatch(answer.text, /"version"|"job"/);
    }
  });

  test('every POST is audited with peer, path, status and by, refused ones included; the token is never logged', async () => {
    const mark = capture.lines.length;
    // From an address of its own: the refusals of the tests before are not counted against it (see admin-hardening).
    await call(port, 'POST', '/reload', { localAddress: '127.0.0.44' });
    await call(port, 'POST', '/reload', { headers: bearer });
    await call(port, 'POST', '/login', { headers: { 'content-type': 'application/json' }, body: { token: TOKEN } });
    const audits = capture.lines.slice(mark).filter((line) => line.audit !== undefined);
    const entries = audits.map((line) => line.audit as { peer: string; method: string; path: string; status: number; by: string });
    assert.deepEqual(
      entries.map((a) => [a.path, a.status, a.by]),
      [
        ['/reload', 401, 'none'],
        ['/reload', 202, 'token'],
        ['/login', 204, 'token'],
      ],
    );
    assert.match(entries[0]!.peer, /^127\.0\.0\.44:\d+$/);
    for (const entry of entries.slice(1)) assert.match(entry.peer, /^127\.0\.0\.1:\d+$/);
    assert.equal(audits[0]!.msg, 'admin: POST /reload → 401');
    assert.ok(!JSON.stringify(capture.lines).includes(TOKEN), 'the token appears in no log line');
  });
});

describe('admin API settings', () => {
  test('open_reads answers GET /status and /metrics to a loopback peer without a token, and still refuses a POST and the other reads', async (t) => {
    const portico = await startAdmin(config('  token_env: PORTICO_SEC_TEST_TOKEN\n  open_reads: true'));
    t.after(() => portico.stop());
    assert.equal((await call(portico.adminPort, 'GET', '/status')).status, 200);
    assert.notEqual((await call(portico.adminPort, 'GET', '/metrics')).status, 401);
    assert.equal((await call(portico.adminPort, 'POST', '/reload')).status, 401);
    assert.equal((await call(portico.adminPort, 'GET', '/jobs')).status, 401, 'open_reads opens /status and /metrics only');
    assert.equal((await call(portico.adminPort, 'GET', '/events')).status, 401);
    // A wrong token is not rescued by open_reads.
    assert.equal((await call(portico.adminPort, 'GET', '/status', { headers: { authorization: 'Bearer wrong' } })).status, 401);
  });

  test('with no token in its variable every POST is refused 403 naming the variable and saying restart (or token_file), and so is a login', async (t) => {
    const portico = await startAdmin(config('  token_env: PORTICO_SEC_TEST_UNSET'));
    t.after(() => portico.stop());
    for (const headers of [{}, { authorization: "Bearer anything" }] as Array<Record<string, string>>) {
      const answer = await call(portico.adminPort, 'POST', '/reload', { headers });
      assert.equal(answer.status, 403);
      assert.match(answer.json.error.message, /PORTICO_SEC_TEST_UNSET/);
      // A running process's environment cannot change: a reload would not help.
      assert.match(answer.json.error.message, /restart Portico.*admin\.token_file, read again at every reload/);
      assert.doesNotMatch(answer.json.error.message, /and reload/);
    }
    const loginAnswer = await call(portico.adminPort, 'POST', '/login', { headers: { 'content-type': 'application/json' }, body: { token: '' } });
    assert.equal(loginAnswer.status, 403);
  });

  test('with admin.tls the listener serves HTTPS and the session cookie is Secure', async (t) => {
    const { cert, key } = await selfSignedCert();
    const portico = await startAdmin(config('  token_env: PORTICO_SEC_TEST_TOKEN\n  tls: { cert: admin.crt, key: admin.key }'), { files: { 'admin.crt': cert, 'admin.key': key } });
    t.after(() => portico.stop());
    assert.match(portico.server.adminUrl ?? '', /^https:\/\/127\.0\.0\.1:\d+\/$/);
    const target = { port: portico.adminPort, ca: cert };
    assert.equal((await call(target, 'GET', '/status', { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
    const answer = await call(target, 'POST', '/login', { headers: { 'content-type': 'application/json', origin: `https://127.0.0.1:${portico.adminPort}` }, body: { token: TOKEN } });
    assert.equal(answer.status, 204);
    assert.match(String(answer.headers['set-cookie']?.[0]), /; Secure$/);
    // Plain HTTP on the TLS port gets no answer of the API.
    await assert.rejects(call(portico.adminPort, 'GET', '/healthz'));
  });

  test('admin.token_file: the token read from the file wins over token_env; a missing file is a config error at file:line:col', async (t) => {
    const portico = await startAdmin(config('  token_env: PORTICO_SEC_TEST_TOKEN\n  token_file: admin.token'), { files: { 'admin.token': '  from-the-file-0123456789\n' } });
    t.after(() => portico.stop());
    const byFile = await call(portico.adminPort, 'POST', '/reload', { headers: { authorization: 'Bearer from-the-file-0123456789' } });
    assert.equal(byFile.status, 202, byFile.text);
    const byEnv = await call(portico.adminPort, 'POST', '/reload', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(byEnv.status, 401, 'the variable is not the token while a file gives one');
    const missing = `listen: ["127.0.0.1:0"]\nadmin:\n  token_file: ./nowhere.token\nsites:\n  - routes:\n      - path: /\n        respond: { body: "x" }\n`;
    assert.throws(() => parseConfig(missing, '/tmp/admin-token.yaml', '/tmp'), /admin-token\.yaml:3:15 admin\.token_file: cannot read the token file \/tmp\/nowhere\.token/);
  });

  test('a non-loopback admin listen without tls is a config error at file:line:col of admin.listen', () => {
    const text = `listen: ["127.0.0.1:0"]\nadmin:\n  listen: "0.0.0.0:9901"\nsites:\n  - routes:\n      - path: /\n        respond: { body: "x" }\n`;
    assert.throws(
      () => parseConfig(text, path.join('/tmp', 'admin-tls.yaml'), '/tmp'),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /admin-tls\.yaml:3:11 admin\.listen: 0\.0\.0\.0:9901 is not a loopback address: .*needs TLS/);
        return true;
      },
    );
    const same = `listen: ["127.0.0.1:8080"]\nadmin:\n  listen: "127.0.0.1:8080"\nsites:\n  - routes:\n      - path: /\n        respond: { body: "x" }\n`;
    assert.throws(() => parseConfig(same, '/tmp/admin-same.yaml', '/tmp'), /admin\.listen: 127\.0\.0\.1:8080 is also listen\[0\]/);
  });
});
