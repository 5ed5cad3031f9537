/**
 * The admin API's routes on a real admin listener and on the control socket: /healthz, /status, JSON errors for
 * bad input (unknown route, wrong method, bad JSON, unknown upstream or zone, bad weight or purge body), jobs for
 * reload and deploy with GET /jobs/{id} and their event stream, the dashboard's /events stream, the dashboard's
 * files under a strict CSP, a reload that applies a changed admin section (token read again, listener rebound), a
 * stub part's clean 501, and a stop that closes the listener and ends the streams.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import pino from 'pino';
import { AdminApi, type AdminApiOptions, type AdminChannel } from '../../src/control/admin-api.js';
import type { AdminParts } from '../../src/control/admin-types.js';
import { PorticoError } from '../../src/errors.js';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { freePort } from '../helpers/pebble.js';
import { APP, portRange } from '../helpers/supervise.js';
import { adminConfig, call, dashboardHeaders, finishedJob, login, openSse, startAdmin, type AdminPortico } from './admin-support.js';

const TOKEN = 'api-test-token-abcdef';
process.env.PORTICO_API_TEST_TOKEN = TOKEN;
delete process.env.PORTICO_API_TEST_UNSET;
const bearer = { authorization: `Bearer ${TOKEN}` };

/** The config of these tests: `adminConfig` with this file's token variable. */
function config(listen = '127.0.0.1:0', tokenEnv = 'PORTICO_API_TEST_TOKEN', body = 'one', tokenFile?: string): string {
  return adminConfig({ listen, tokenEnv, body, ...(tokenFile === undefined ? {} : { tokenFile }) });
}

/**
 * An AdminApi on a plain HTTP server on 127.0.0.1:0 (as `channel`), both stopped after `t`; its parts refuse with
 * PORTICO_UNSUPPORTED but those given.
 */
async function serveApi(t: TestContext, parts: Partial<AdminParts>, channel: AdminChannel, options: AdminApiOptions = {}): Promise<{ api: AdminApi; server: Server; port: number }> {
  const unsupported = () => Promise.reject(new PorticoError('PORTICO_UNSUPPORTED', 'not here'));
  const api = new AdminApi(
    { status: unsupported, metrics: unsupported, serverAction: unsupported, purge: unsupported, reopen: unsupported, operations: { run: unsupported }, ...parts },
    pino({ level: 'silent' }),
    options,
  );
  const server = createServer((req, res) => api.handle(req, res, channel));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    api.stop();
    server.close();
    server.closeAllConnections();
  });
  return { api, server, port: (server.address() as AddressInfo).port };
}

describe('admin API routes', () => {
  let portico: AdminPortico;
  let port: number;

  before(async () => {
    portico = await startAdmin(config(), { control: true });
    port = portico.adminPort;
  });
  after(() => portico.stop());

  test('GET /healthz answers 200 {"ok": true} with no credentials, not cached', async () => {
    const answer = await call(port, 'GET', '/healthz');
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.json, { ok: true });
    assert.equal(answer.headers['cache-control'], 'no-store');
    assert.match(String(answer.headers['content-type']), /^application\/json/);
  });

  test('GET /status answers the status report: version, pid, listeners, the admin URL, the queue', async () => {
    const answer = await call(port, 'GET', '/status', { headers: bearer });
    assert.equal(answer.status, 200);
    const report = answer.json;
    assert.equal(report.version, 'test');
    assert.equal(report.pid, process.pid);
    assert.equal(report.admin, `http://127.0.0.1:${port}/`);
    assert.deepEqual(report.listeners, [{ address: `127.0.0.1:${portico.publicPort}`, url: `http://127.0.0.1:${portico.publicPort}/` }]);
    assert.equal(report.config, portico.file);
    assert.equal(report.workers, null);
    assert.equal(typeof report.uptime_s, 'number');
    assert.equal(report.queued, 0);
  });

  test('a part not built yet answers a clean 501 JSON error (no stack, no path)', async () => {
    const answer = await call(port, 'POST', '/reopen', { headers: bearer });
    if (answer.status === 200) return; // The reopen part is in: nothing to check here.
    assert.equal(answer.status, 501);
    assert.equal(answer.json.error.code, 'PORTICO_UNSUPPORTED');
    assert.doesNotMatch(answer.text, /at |\.js/);
  });

  test('bad input gets a 4xx JSON error: unknown route 404, wrong method 405 with Allow, bad JSON 400, non-object 400, oversize 413', async () => {
    const cases: Array<[string, string, string | undefined, number, string]> = [
      ['GET', '/nope', undefined, 404, 'PORTICO_NOT_FOUND'],
      ['GET', '/upstreams/app/servers/blue/drain', undefined, 405, 'PORTICO_METHOD_NOT_ALLOWED'],
      ['POST', '/status', undefined, 405, 'PORTICO_METHOD_NOT_ALLOWED'],
      ['DELETE', '/jobs', undefined, 405, 'PORTICO_METHOD_NOT_ALLOWED'],
      ['POST', '/upstreams/app/servers/blue/weight', '{"weight": ', 400, 'PORTICO_BAD_REQUEST'],
      ['POST', '/upstreams/app/servers/blue/drain', '[1]', 400, 'PORTICO_BAD_REQUEST'],
      ['POST', '/caches/pages/purge', JSON.stringify({ url: 'x'.repeat(70_000) }), 413, 'PORTICO_PAYLOAD_TOO_LARGE'],
    ];
    for (const [method, pathname, body, status, code] of cases) {
      const answer = await call(port, method, pathname, { headers: bearer, ...(body === undefined ? {} : { body }) });
      assert.equal(answer.status, status, `${method} ${pathname}: ${answer.text}`);
      assert.equal(answer.json.error.code, code, `${method} ${pathname}`);
      assert.equal(typeof answer.json.error.message, 'string');
    }
    assert.equal((await call(port, 'GET', '/reload', { headers: bearer })).headers.allow, 'POST');
    assert.equal((await call(port, 'POST', '/status', { headers: bearer })).headers.allow, 'GET, HEAD');
  });

  test('unknown upstream, zone, job or deploy target is 404; a bad weight or purge body is 400; a deploy of an upstream without spawn is 409', async () => {
    const cases: Array<[string, string, object | undefined, number]> = [
      ['POST', '/upstreams/nope/servers/blue/drain', undefined, 404],
      ['POST', '/upstreams/nope/deploy', undefined, 404],
      ['POST', '/caches/nope/purge', { url: 'http://a.example/' }, 404],
      ['GET', '/jobs/0f0f0f0f-0000-4000-8000-000000000000', undefined, 404],
      ['GET', '/jobs/0f0f0f0f-0000-4000-8000-000000000000/events', undefined, 404],
      ['POST', '/upstreams/app/servers/blue/weight', { weight: 0 }, 400],
      ['POST', '/upstreams/app/servers/blue/weight', { weight: 1001 }, 400],
      ['POST', '/upstreams/app/servers/blue/weight', { weight: '5' }, 400],
      ['POST', '/upstreams/app/servers/blue/weight', {}, 400],
      ['POST', '/caches/pages/purge', {}, 400],
      ['POST', '/caches/pages/purge', { url: 'http://a.example/', url_prefix: 'http://a.example/' }, 400],
      ['POST', '/caches/pages/purge', { key: 'x' }, 400],
      ['POST', '/upstreams/app/deploy', undefined, 409],
    ];
    for (const [method, pathname, body, status] of cases) {
      const answer = await call(port, method, pathname, { headers: bearer, ...(body === undefined ? {} : { body }) });
      assert.equal(answer.status, status, `${method} ${pathname} ${JSON.stringify(body)}: ${answer.text}`);
      assert.equal(typeof answer.json.error.code, 'string');
    }
    const unknown = await call(port, 'POST', '/upstreams/nope/servers/blue/enable', { headers: bearer });
    assert.match(unknown.json.error.message, /unknown upstream "nope" \(the config has "app"\)/);
  });

  test('POST /reload answers 202 with a job at once; GET /jobs/{id} shows it done with its progress; GET /jobs lists it', async () => {
    const answer = await call(port, 'POST', '/reload', { headers: bearer });
    assert.equal(answer.status, 202);
    const job = answer.json.job;
    assert.match(job.id, /^[0-9a-f-]{36}$/);
    assert.equal(job.operation, 'reload');
    assert.ok(['queued', 'running', 'done'].includes(job.state));
    assert.equal(answer.headers.location, `/jobs/${job.id}`);
    const done = await finishedJob(port, job.id, bearer);
    assert.equal(done.state, 'done');
    assert.equal(done.result.ok, true);
    assert.ok(done.events.some((event: { message: string }) => /reading .*portico\.yaml/.test(event.message)));
    assert.ok(done.started !== undefined && done.finished !== undefined);
    const list = await call(port, 'GET', '/jobs', { headers: bearer });
    assert.ok(list.json.jobs.some((j: { id: string }) => j.id === job.id));
  });

  test('a reload of a broken config is a failed job whose issues name file:line:col; the old config keeps serving', async () => {
    writeFileSync(portico.file, config().replace('respond: { body: "one" }', 'respond: { bodyy: "one" }'));
    try {
      const answer = await call(port, 'POST', '/reload', { headers: bearer });
      const job = await finishedJob(port, answer.json.job.id, bearer);
      assert.equal(job.state, 'failed');
      assert.equal(job.result.error.code, 'PORTICO_CONFIG_INVALID');
      assert.match(job.result.error.issues[0], /portico\.yaml:\d+:\d+ .*bodyy/);
      assert.equal(await (await fetch(`http://127.0.0.1:${portico.publicPort}/`)).text(), 'one');
    } finally {
      writeFileSync(portico.file, config());
    }
  });

  test('GET /jobs/{id}/events replays the progress, then sends the result and ends', async () => {
    const answer = await call(port, 'POST', '/reload', { headers: bearer });
    const id = answer.json.job.id;
    const stream = await openSse(port, `/jobs/${id}/events`, bearer);
    assert.equal(stream.status, 200);
    assert.match(String(stream.headers['content-type']), /^text\/event-stream/);
    const result = await stream.waitFor((e) => e.event === 'result');
    await stream.ended;
    assert.equal(result.data.ok, true);
    assert.ok(stream.events.filter((e) => e.event === 'progress').length >= 1);
    assert.equal(stream.events.at(-1)!.event, 'result');
    // A finished job's stream replays everything and ends at once.
    const again = await openSse(port, `/jobs/${id}/events`, bearer);
    await again.ended;
    assert.deepEqual(
      again.events.map((e) => e.event),
      stream.events.map((e) => e.event),
    );
  });

  test('GET /events (dashboard cookie) sends a status at once and every interval, and a job event as a reload runs', async () => {
    const cookie = await login(port, TOKEN);
    const stream = await openSse(port, '/events', { cookie });
    try {
      assert.equal(stream.status, 200);
      const first = await stream.waitFor((e) => e.event === 'status');
      assert.equal(first.data.pid, process.pid);
      const index = stream.events.indexOf(first);
      await stream.waitFor((e) => e.event === 'status', index + 1);
      const posted = await call(port, 'POST', '/reload', { headers: dashboardHeaders(port, cookie), body: {} });
      assert.equal(posted.status, 202);
      const id = posted.json.job.id;
      const done = await stream.waitFor((e) => e.event === 'job' && e.data.id === id && e.data.state === 'done');
      assert.equal(done.data.result.ok, true);
    } finally {
      stream.close();
    }
  });

  test('GET / serves the dashboard with a strict CSP; /assets/ never leaves the folder', async () => {
    const page = await call(port, 'GET', '/');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
    assert.match(String(page.headers['content-security-policy']), /frame-ancestors 'none'/);
    for (const pathname of ['/assets/../package.json', '/assets/%2e%2e/package.json', '/assets/.hidden', '/assets/nope.js', '/assets/']) {
      const answer = await call(port, 'GET', pathname);
      assert.equal(answer.status, 404, pathname);
      assert.equal(answer.json.error.code, 'PORTICO_NOT_FOUND');
    }
  });

  test('the control socket serves the same routes with no token (its folder is the guard), and /v1/* stays the CLI\'s', async () => {
    const socketPath = portico.server.config.control.socket;
    const status = await call({ socketPath }, 'GET', '/status');
    assert.equal(status.status, 200);
    assert.equal(status.json.pid, process.pid);
    const posted = await call({ socketPath }, 'POST', '/reload');
    assert.equal(posted.status, 202);
    const job = await finishedJob({ socketPath }, posted.json.job.id, {});
    assert.equal(job.state, 'done');
    const v1 = await call({ socketPath }, 'GET', '/v1/status');
    assert.equal(v1.status, 200);
    assert.match(v1.text, /^\{"result":\{"ok":true/);
  });
});

describe('admin API life', () => {
  test('a reload reads the token file again (the old token is refused, sessions end) and rebinds a changed address', async (t) => {
    const portico = await startAdmin(config('127.0.0.1:0', 'PORTICO_API_TEST_UNSET', 'one', 'admin.token'), { files: { 'admin.token': 'first-token-0123456789\n' } });
    t.after(() => portico.stop());
    const old = portico.adminPort;
    const cookie = await login(old, 'first-token-0123456789');
    writeFileSync(path.join(portico.dir, 'admin.token'), 'second-token-0123456789\n', { mode: 0o600 });
    const next = await freePort();
    writeFileSync(portico.file, config(`127.0.0.1:${next}`, 'PORTICO_API_TEST_UNSET', 'two', 'admin.token'));
    const answer = await call(old, 'POST', '/reload', { headers: { authorization: 'Bearer first-token-0123456789' } });
    assert.equal(answer.status, 202);
    // The job is watched on the new address (the old one closes after the swap).
    const job = await finishedJob(next, answer.json.job.id, { authorization: 'Bearer second-token-0123456789' });
    assert.equal(job.state, 'done', JSON.stringify(job.result));
    assert.equal(portico.server.adminUrl, `http://127.0.0.1:${next}/`);
    assert.equal((await call(next, 'GET', '/status', { headers: { authorization: 'Bearer first-token-0123456789' } })).status, 401);
    assert.equal((await call(next, 'GET', '/status', { headers: { authorization: 'Bearer second-token-0123456789' } })).status, 200);
    assert.equal((await call(next, 'GET', '/status', { headers: { cookie, host: `127.0.0.1:${next}` } })).status, 401);
    await assert.rejects(call(old, 'GET', '/healthz'), /ECONNREFUSED/);
  });

  test('a reload whose new admin address is in use fails and changes nothing', async (t) => {
    const portico = await startAdmin(config());
    t.after(() => portico.stop());
    const busy = await startAdmin(config());
    t.after(() => busy.stop());
    writeFileSync(portico.file, config(`127.0.0.1:${busy.adminPort}`, 'PORTICO_API_TEST_TOKEN', 'two'));
    const answer = await call(portico.adminPort, 'POST', '/reload', { headers: bearer });
    const job = await finishedJob(portico.adminPort, answer.json.job.id, bearer);
    assert.equal(job.state, 'failed');
    assert.equal(job.result.error.code, 'PORTICO_LISTEN_FAILED');
    assert.equal(await (await fetch(`http://127.0.0.1:${portico.publicPort}/`)).text(), 'one');
    assert.equal((await call(portico.adminPort, 'GET', '/healthz')).status, 200);
  });

  test('POST /upstreams/{name}/deploy of a spawned upstream is a job: its event stream shows each step, then the result', { timeout: 60_000 }, async (t) => {
    const yaml = `listen: ["127.0.0.1:0"]
log: { access: off }
admin:
  listen: "127.0.0.1:0"
  token_env: PORTICO_API_TEST_TOKEN
upstreams:
  app:
    spawn: { command: ["node", ${JSON.stringify(APP)}], instances: 1, ports: "${portRange(2).text}" }
    health: { path: /healthz, interval: 100ms }
sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`;
    const portico = await startAdmin(yaml);
    t.after(() => portico.stop());
    const posted = await call(portico.adminPort, 'POST', '/upstreams/app/deploy', { headers: bearer });
    assert.equal(posted.status, 202, posted.text);
    assert.equal(posted.json.job.operation, 'deploy app');
    const stream = await openSse(portico.adminPort, `/jobs/${posted.json.job.id}/events`, bearer);
    const result = await stream.waitFor((e) => e.event === 'result', 0, 30_000);
    await stream.ended;
    assert.equal(result.data.ok, true, JSON.stringify(result.data));
    const messages = stream.events.filter((e) => e.event === 'progress').map((e) => String(e.data.message));
    assert.ok(messages.some((m) => /deploying upstream "app"/.test(m)), messages.join('\n'));
    assert.ok(messages.length >= 3, messages.join('\n'));
    const job = (await call(portico.adminPort, 'GET', `/jobs/${posted.json.job.id}`, { headers: bearer })).json.job;
    assert.equal(job.state, 'done');
  });

  test('/healthz answers 503 once Portico is stopping (the L4 balancer takes it out)', async (t) => {
    const { api, port } = await serveApi(t, {}, { kind: 'tcp', secure: false });
    assert.equal((await call(port, 'GET', '/healthz')).status, 200);
    api.stopping();
    const answer = await call(port, 'GET', '/healthz');
    assert.equal(answer.status, 503);
    assert.equal(answer.json.error.code, 'PORTICO_STOPPING');
  });

  test('an /events client that does not read is cut once 64 KiB wait for it; a reading client keeps its stream', async (t) => {
    const big = { filler: 'x'.repeat(200_000) };
    const { server, port } = await serveApi(t, { status: async () => big as never }, { kind: 'socket' }, { eventsIntervalMs: 5, eventsMaxBuffered: 64 * 1024 });
    const closed: Promise<void>[] = [];
    server.on('connection', (socket) => closed.push(new Promise((resolve) => socket.once('close', () => resolve()))));
    // The slow client: asks, then never reads.
    const slow = connect(port, '127.0.0.1');
    slow.on('error', () => {});
    slow.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n');
    slow.pause();
    const reader = await openSse(port, '/events', {});
    t.after(() => reader.close());
    let timer: NodeJS.Timeout | undefined;
    const cut = await Promise.race([closed[0]!.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 20_000)))]);
    clearTimeout(timer);
    assert.ok(cut, 'the slow client was cut within 20 s');
    const count = reader.events.length;
    await reader.waitFor((e) => e.event === 'status', count);
    t.diagnostic(`the reading client had ${reader.events.length} status events`);
    slow.destroy();
  });

  test('stop ends the event streams and closes the admin listener', async () => {
    const portico = await startAdmin(config());
    const port = portico.adminPort;
    const stream = await openSse(port, '/events', bearer);
    await stream.waitFor((e) => e.event === 'status');
    await portico.stop();
    await stream.ended;
    await assert.rejects(
      new Promise((resolve, reject) => {
        const socket = connect(port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(undefined);
        });
        socket.once('error', reject);
      }),
      /ECONNREFUSED/,
    );
    assert.ok(path.isAbsolute(portico.file));
  });
});
