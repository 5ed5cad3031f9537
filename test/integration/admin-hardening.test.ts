/**
 * Regression tests for the admin API defects a new-user prober found (issue 18): duplicate Host headers, no
 * connection cap, a client gone logged as Portico's error, malformed percent-encodings answered 404, an upgrade
 * refused only after its 202, unknown JSON fields, weak tokens, and unbounded audit lines of refused POSTs.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { MAX_ADMIN_CONNECTIONS } from '../../src/control/admin-listener.js';
import { capturingLogger } from '../helpers/pebble.js';
import { makeTree } from '../helpers/portico.js';
import { adminConfig, call, startAdmin, type AdminPortico } from './admin-support.js';

const TOKEN = 'hardening-token-0123456789';
process.env.PORTICO_HARDENING_TOKEN = TOKEN;
process.env.PORTICO_HARDENING_SHORT = 'short';
const bearer = { authorization: `Bearer ${TOKEN}` };

/** The config of these tests: `adminConfig` with this file's token variable. */
function config(tokenEnv = 'PORTICO_HARDENING_TOKEN'): string {
  return adminConfig({ tokenEnv });
}

/** Sends `text` on a raw connection; resolves with everything read until the server closes (bounded: 5 s). */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    }, 5_000);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.end(text);
  });
}

/** Waits (bounded) until `test()` holds. */
async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const limit = Date.now() + timeoutMs;
  for (let i = 0; !check(); i++) {
    if (Date.now() > limit) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, Math.min(10 * (i + 1), 100)));
  }
}

describe('admin API hardening', () => {
  let portico: AdminPortico;
  let port: number;
  const capture = capturingLogger();

  before(async () => {
    capture.logger.level = 'debug';
    portico = await startAdmin(config(), { logger: capture.logger });
    port = portico.adminPort;
  });
  after(() => portico.stop());

  test('duplicate Host headers are answered 400 with a JSON error, whichever comes first', async () => {
    const text = await raw(port, `GET /status HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nHost: evil.example\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
    assert.match(text, /^HTTP\/1\.1 400 /);
    assert.match(text, /"code":"PORTICO_BAD_HOST"/);
    const post = await raw(port, `POST /reload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    assert.match(post, /^HTTP\/1\.1 400 /);
  });

  test('malformed percent-encodings in a path id answer 400 saying the encoding is bad', async () => {
    for (const id of ['%ZZ', '%FF%FE', '%C0%AF', 'a%2']) {
      const answer = await call(port, 'POST', `/upstreams/app/servers/${id}/drain`, { headers: bearer });
      assert.equal(answer.status, 400, `${id}: ${answer.text}`);
      assert.equal(answer.json.error.code, 'PORTICO_BAD_PATH');
      assert.match(answer.json.error.message, /percent-encoding/);
    }
  });

  test('an unknown server is PORTICO_UNKNOWN_SERVER and an unknown zone PORTICO_UNKNOWN_ZONE, both 404', async () => {
    const server = await call(port, 'POST', '/upstreams/app/servers/green/drain', { headers: bearer });
    assert.equal(server.status, 404, server.text);
    assert.equal(server.json.error.code, 'PORTICO_UNKNOWN_SERVER');
    const zone = await call(port, 'POST', '/caches/nope/purge', { headers: bearer, body: { url: 'http://a.example/' } });
    assert.equal(zone.status, 404, zone.text);
    assert.equal(zone.json.error.code, 'PORTICO_UNKNOWN_ZONE');
    const upstream = await call(port, 'POST', '/upstreams/nope/servers/blue/drain', { headers: bearer });
    assert.equal(upstream.json.error.code, 'PORTICO_UNKNOWN_UPSTREAM');
  });

  test('POST /upgrade on a Portico that cannot upgrade itself is refused at once (501), no job is made', async () => {
    const before = (await call(port, 'GET', '/jobs', { headers: bearer })).json.jobs.length;
    const answer = await call(port, 'POST', '/upgrade', { headers: bearer });
    assert.equal(answer.status, 501, answer.text);
    assert.equal(answer.json.error.code, 'PORTICO_UNSUPPORTED');
    assert.equal((await call(port, 'GET', '/jobs', { headers: bearer })).json.jobs.length, before);
  });

  test('unknown JSON fields are refused 400 on every POST, naming at most 5 of them', async () => {
    const many = Object.fromEntries(Array.from({ length: 6000 }, (_, i) => [`f${i}`, 1]));
    const purge = await call(port, 'POST', '/caches/pages/purge', { headers: bearer, body: { url: 'http://a.example/', ...many } });
    assert.equal(purge.status, 400);
    assert.ok(purge.text.length < 500, `the message is short: ${purge.text.length} bytes`);
    assert.match(purge.json.error.message, /"f0", "f1", "f2", "f3", "f4" and 5995 more/);
    const cases: Array<[string, object]> = [
      ['/upstreams/app/servers/blue/drain', { force: true }],
      ['/upstreams/app/servers/blue/enable', { x: 1 }],
      ['/upstreams/app/servers/blue/weight', { weight: 5, extra: 1 }],
      ['/reload', { config: '/etc/other.yaml' }],
      ['/upstreams/app/deploy', { x: 1 }],
      ['/reopen', { x: 1 }],
    ];
    for (const [pathname, body] of cases) {
      const answer = await call(port, 'POST', pathname, { headers: bearer, body });
      assert.equal(answer.status, 400, `${pathname}: ${answer.text}`);
      assert.match(answer.json.error.message, /unknown field/, pathname);
    }
  });

  test('a client that aborts while sending a body is no error-level log line', async () => {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    // `Expect: 100-continue`: Node answers 100 as it hands the request to the handler, which then reads the body.
    const continued = new Promise<void>((resolve) => socket.once('data', () => resolve()));
    socket.write(`POST /reload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n`);
    await continued;
    socket.write('{"a":');
    socket.resetAndDestroy();
    await capture.waitFor('admin: POST /reload → no answer');
    await until('the handler has seen the abort', () => capture.lines.some((line) => /client left|unexpected error/.test(line.msg)), 5_000);
    const errors = capture.lines.filter((line) => (line.level as number) >= 50);
    assert.deepEqual(errors, []);
  });

  test(`the admin listener holds at most ${MAX_ADMIN_CONNECTIONS} connections; idle ones are closed within a few seconds`, async (t) => {
    const sockets: Socket[] = [];
    let closed = 0;
    t.after(() => sockets.forEach((socket) => socket.destroy()));
    for (let i = 0; i < MAX_ADMIN_CONNECTIONS + 20; i++) {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => {});
      socket.on('close', () => closed++);
      sockets.push(socket);
    }
    await until('the connections past the cap are closed', () => closed >= 20, 5_000);
    t.diagnostic(`${closed} of ${sockets.length} closed at once`);
    const started = Date.now();
    await until('every idle connection is closed', () => closed === sockets.length, 15_000);
    const took = Date.now() - started;
    t.diagnostic(`the idle ones closed within ${took} ms`);
    assert.ok(took < 12_000, `idle connections closed in ${took} ms`);
    assert.equal((await call(port, 'GET', '/healthz')).status, 200);
  });
});

describe('admin API weak tokens', () => {
  test('a token_env token shorter than 16 characters is refused: an error log line and every POST refused 403 saying why', async (t) => {
    const capture = capturingLogger();
    const portico = await startAdmin(config('PORTICO_HARDENING_SHORT'), { logger: capture.logger });
    t.after(() => portico.stop());
    assert.ok(capture.lines.some((line) => (line.level as number) >= 50 && /shorter than 16/.test(line.msg)), JSON.stringify(capture.lines));
    const answer = await call(portico.adminPort, 'POST', '/reload', { headers: { authorization: 'Bearer short' } });
    assert.equal(answer.status, 403);
    assert.match(answer.json.error.message, /shorter than 16/);
  });

  test('a token_file too short, with whitespace, or readable by others is a config error at file:line:col of admin.token_file', () => {
    const dir = makeTree({ 'short.token': 'abc\n', 'space.token': 'abcdefgh ijklmnopqrstu\n', 'open.token': 'abcdefghijklmnopqrstuvwxyz\n', 'good.token': 'abcdefghijklmnopqrstuvwxyz\n' });
    for (const name of ['short.token', 'space.token', 'good.token']) chmodSync(path.join(dir, name), 0o600);
    chmodSync(path.join(dir, 'open.token'), 0o644);
    const yaml = (file: string) => `listen: ["127.0.0.1:0"]\nadmin:\n  token_file: ./${file}\nsites:\n  - routes:\n      - path: /\n        respond: { body: "x" }\n`;
    const file = path.join(dir, 'portico.yaml');
    assert.throws(() => parseConfig(yaml('short.token'), file, dir), /portico\.yaml:3:15 admin\.token_file: .*shorter than 16 characters/);
    assert.throws(() => parseConfig(yaml('space.token'), file, dir), /portico\.yaml:3:15 admin\.token_file: .*whitespace/);
    assert.throws(() => parseConfig(yaml('open.token'), file, dir), /portico\.yaml:3:15 admin\.token_file: .*readable by group or others.*chmod 600/);
    assert.equal(parseConfig(yaml('good.token'), file, dir).admin?.token, 'abcdefghijklmnopqrstuvwxyz');
    writeFileSync(path.join(dir, 'unused'), '');
  });
});

describe('admin API refused requests', () => {
  test('refused POSTs write a few audit lines per second per peer, then one summary; accepted ones are all written', async (t) => {
    const capture = capturingLogger();
    const portico = await startAdmin(config(), { logger: capture.logger });
    t.after(() => portico.stop());
    const port = portico.adminPort;
    // No credentials at all: 401s, not counted as wrong tokens.
    for (let i = 0; i < 60; i++) assert.equal((await call(port, 'POST', '/reload')).status, 401);
    const refusedLines = capture.lines.filter((line) => /^admin: POST \/reload → 401/.test(line.msg)).length;
    t.diagnostic(`${refusedLines} audit lines for 60 refused POSTs`);
    assert.ok(refusedLines <= 10, `${refusedLines} audit lines`);
    await until('the summary line', () => capture.lines.some((line) => /^admin: \d+ more refused requests from 127\.0\.0\.1 in the last second/.test(line.msg)), 5_000);
    const summed = capture.lines
      .map((line) => /^admin: (\d+) more refused/.exec(line.msg)?.[1])
      .filter((n) => n !== undefined)
      .reduce((sum, n) => sum + Number(n), 0);
    await until('every refusal is counted', () => {
      const total = capture.lines.map((line) => /^admin: (\d+) more refused/.exec(line.msg)?.[1]).filter((n) => n !== undefined).reduce((sum, n) => sum + Number(n), 0);
      return total + refusedLines === 60;
    }, 5_000);
    assert.ok(summed > 0);
    for (let i = 0; i < 20; i++) assert.equal((await call(port, 'POST', '/upstreams/app/servers/blue/enable', { headers: bearer })).status, 200);
    assert.equal(capture.lines.filter((line) => line.msg === 'admin: POST /upstreams/app/servers/blue/enable → 200').length, 20);
  });

  test('after 10 wrong tokens within a minute a peer is answered 429 with Retry-After, even with the right token', async (t) => {
    const portico = await startAdmin(config());
    t.after(() => portico.stop());
    const port = portico.adminPort;
    for (let i = 0; i < 10; i++) assert.equal((await call(port, 'POST', '/reload', { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status, 401);
    const slowed = await call(port, 'POST', '/reload', { headers: { authorization: 'Bearer wrong-token-0123456789' } });
    assert.equal(slowed.status, 429, slowed.text);
    assert.equal(slowed.json.error.code, 'PORTICO_TOO_MANY_REQUESTS');
    const retry = Number(slowed.headers['retry-after']);
    assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
    assert.equal((await call(port, 'GET', '/status', { headers: bearer })).status, 429);
    assert.equal((await call(port, 'GET', '/healthz')).status, 200);
  });
});
