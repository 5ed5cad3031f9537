/**
 * The operator's actions on upstream servers (`Portico.serverAction`, what the admin API's
 * `POST /upstreams/{name}/servers/{id}/drain|enable|disable|weight` calls), in one process over real sockets: a
 * drain keeps the clients pinned to the server and sends new ones elsewhere, a disable takes it out at once, a weight
 * changes the spread; each holds across a reload, and with a state directory across a restart (servers.json).
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { describeLoad, failures, startLoad } from '../helpers/load.js';
import { makeTree } from '../helpers/portico.js';
import { assertRefused } from '../helpers/refused.js';
import { eventually } from '../helpers/supervise.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { httpRequest, scopedServers, type FullResponse } from './proxy-support.js';

const servers = scopedServers();

/** Three backends answering their name. */
async function backends(names: readonly string[] = ['a', 'b', 'c']): Promise<Map<string, TestUpstream>> {
  const out = new Map<string, TestUpstream>();
  for (const name of names) out.set(name, await servers.upstream(name));
  return out;
}

/** The upstream's servers as YAML list items with names. */
function serverList(ups: Map<string, TestUpstream>, indent = '      ', extra: Record<string, string> = {}): string {
  return [...ups].map(([name, up]) => `${indent}- { url: "${up.url}", name: ${name}${extra[name] ?? ''} }`).join('\n');
}

/** `count` requests, each on a fresh connection: how many each backend answered. */
async function spread(port: number, count: number, headers: Record<string, string> = {}): Promise<Record<string, number>> {
  const seen: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    const res = await httpRequest(port, `/r${i}`, { headers });
    assert.equal(res.status, 200, `request ${i}: ${res.status} ${res.body.toString()}`);
    const name = res.body.toString();
    seen[name] = (seen[name] ?? 0) + 1;
  }
  return seen;
}

function pinOf(res: FullResponse): string | undefined {
  const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
  return cookies.map((c) => /^pin=([0-9a-f]{16});/.exec(c)?.[1]).find((v) => v !== undefined);
}

describe('operator actions on upstream servers (one process)', { timeout: 30_000 }, () => {
  test('drain keeps the clients pinned to the server by the sticky cookie and sends every new client elsewhere; disable then moves the pinned ones too', async () => {
    const ups = await backends(['a', 'b']);
    const portico = await servers.portico(`upstreams:\n  app:\n    servers:\n${serverList(ups)}\n    sticky: { cookie: pin }\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    // A client pinned to b: the first answers alternate (round robin), each with its pin.
    let pinB: string | undefined;
    for (let i = 0; i < 4 && pinB === undefined; i++) {
      const res = await httpRequest(portico.port, '/');
      if (res.body.toString() === 'b') pinB = pinOf(res);
    }
    assert.ok(pinB !== undefined, 'a client pinned to b');
    const status = await portico.server.serverAction('app', 'b', { action: 'drain' });
    assert.equal(status.state, 'draining');
    assert.equal(status.admin, 'draining');
    assert.equal(status.id, 'b');
    // The pinned client stays on b, its cookie unchanged (no new Set-Cookie).
    for (let i = 0; i < 5; i++) {
      const res = await httpRequest(portico.port, '/', { headers: { Cookie: `pin=${pinB}` } });
      assert.equal(res.body.toString(), 'b', 'a client pinned to a draining server stays on it');
      assert.equal(pinOf(res), undefined);
    }
    // New clients all go to a.
    assert.deepEqual(await spread(portico.port, 10), { a: 10 });
    // Disabled: the pinned client moves to a and is pinned there.
    assert.equal((await portico.server.serverAction('app', 'b', { action: 'disable' })).state, 'disabled');
    const moved = await httpRequest(portico.port, '/', { headers: { Cookie: `pin=${pinB}` } });
    assert.equal(moved.body.toString(), 'a');
    assert.ok(pinOf(moved) !== undefined && pinOf(moved) !== pinB, 'pinned again, to a');
    // Enabled: back in the rotation.
    assert.equal((await portico.server.serverAction('app', 'b', { action: 'enable' })).state, 'healthy');
    assert.deepEqual(await spread(portico.port, 10), { a: 5, b: 5 });
  });

  test('a drain under ~200 req/s fails no request: those in flight on the drained server finish there, and it gets no new one', async (t) => {
    const ups = new Map<string, TestUpstream>();
    for (const name of ['a', 'b']) {
      ups.set(
        name,
        await servers.upstream((_req, res) =>
          setTimeout(() => {
            res.writeHead(200, { 'X-Instance': name, 'Content-Type': 'text/plain' });
            res.end(name);
          }, 40),
        ),
      );
    }
    const portico = await servers.portico(`upstreams:\n  app:\n    servers:\n${serverList(ups)}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    const load = startLoad({ base: portico.url, paths: ['/'], header: 'x-instance', maxMs: 15_000 });
    await eventually(() => load.report.ok >= 100, `100 answers (${describeLoad(load.report)})`);
    const b = ups.get('b')!;
    const status = await portico.server.serverAction('app', 'b', { action: 'drain' });
    const receivedAtDrain = b.requests.length;
    const okAtDrain = load.report.ok;
    await eventually(() => load.report.ok >= okAtDrain + 200, `200 more answers (${describeLoad(load.report)})`);
    const report = await load.stop();
    t.diagnostic(`${describeLoad(report)}; in flight on b at the drain: ${status.in_flight}; b received ${b.requests.length - receivedAtDrain} after it`);
    assert.equal(failures(report), 0, describeLoad(report));
    // b received nothing new: at most the requests already on their way to it when it was drained.
    assert.ok(b.requests.length - receivedAtDrain <= status.in_flight, `${b.requests.length - receivedAtDrain} > ${status.in_flight}`);
  });

  test('disable takes a server out at once, for every request, and enable brings it back', async () => {
    const ups = await backends();
    const portico = await servers.portico(`upstreams:\n  app:\n    servers:\n${serverList(ups)}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    assert.deepEqual(await spread(portico.port, 9), { a: 3, b: 3, c: 3 });
    await portico.server.serverAction('app', 'c', { action: 'disable' });
    assert.deepEqual(await spread(portico.port, 10), { a: 5, b: 5 });
    await portico.server.serverAction('app', 'c', { action: 'enable' });
    const back = await spread(portico.port, 9);
    assert.equal(back.c, 3, JSON.stringify(back));
  });

  test('weight overrides the config\'s: 3:1 gives 30 of 40 requests to the heavier server (smooth weighted round robin), enable restores 1:1', async () => {
    const ups = await backends(['a', 'b']);
    const portico = await servers.portico(`upstreams:\n  app:\n    servers:\n${serverList(ups)}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    const status = await portico.server.serverAction('app', 'a', { action: 'weight', weight: 3 });
    assert.equal(status.weight, 3);
    assert.equal(status.configured_weight, 1);
    assert.equal(status.state, 'healthy');
    assert.deepEqual(await spread(portico.port, 40), { a: 30, b: 10 });
    // A drain keeps the weight set; enable goes back to the config (enabled, weight 1).
    assert.equal((await portico.server.serverAction('app', 'a', { action: 'drain' })).weight, 3);
    assert.equal((await portico.server.serverAction('app', 'a', { action: 'enable' })).weight, 1);
    assert.deepEqual(await spread(portico.port, 10), { a: 5, b: 5 });
  });

  test('with policy hash, a weight change rebuilds the ring: the heavier server takes about its share of the keys', async () => {
    const ups = await backends(['a', 'b']);
    const portico = await servers.portico(`upstreams:\n  app:\n    policy: hash\n    servers:\n${serverList(ups)}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    const before = await spread(portico.port, 200);
    await portico.server.serverAction('app', 'b', { action: 'weight', weight: 9 });
    const afterChange = await spread(portico.port, 200);
    // 200 keys: about 100 each before, about 180 on b after (ketama: within a generous margin).
    assert.ok((before.b ?? 0) > 60 && (before.b ?? 0) < 140, JSON.stringify(before));
    assert.ok((afterChange.b ?? 0) > 160, JSON.stringify(afterChange));
  });

  test('unknown upstream or server id: 404 naming the known ones; a weight out of 1..1000 or not an integer: 400', async () => {
    const ups = await backends(['a', 'b']);
    const portico = await servers.portico(`upstreams:\n  app:\n    servers:\n${serverList(ups)}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    await assertRefused(portico.server.serverAction('nope', 'a', { action: 'drain' }), 404, /no upstream "nope" \(upstreams: app\)/);
    await assertRefused(portico.server.serverAction('app', 'zz', { action: 'drain' }), 404, /upstream "app" has no server "zz" \(servers: a, b\)/);
    await assertRefused(portico.server.serverAction('app', 'a', { action: 'weight', weight: 0 }), 400, /weight must be an integer from 1 to 1000/);
    await assertRefused(portico.server.serverAction('app', 'a', { action: 'weight', weight: 1.5 }), 400, /weight/);
    await assertRefused(portico.server.serverAction('app', 'a', { action: 'weight', weight: 1001 }), 400, /weight/);
    // Nothing changed.
    assert.deepEqual(await spread(portico.port, 4), { a: 2, b: 2 });
  });

  test('a server without a name is known by its URL percent-encoded', async () => {
    const up = await servers.upstream('x');
    const portico = await servers.portico(`upstreams:\n  app:\n    servers: ["${up.url}"]\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`);
    const status = await portico.server.serverAction('app', encodeURIComponent(up.url), { action: 'drain' });
    assert.equal(status.address, up.url);
    assert.equal(status.id, encodeURIComponent(up.url));
    assert.equal((await httpRequest(portico.port, '/')).status, 503, 'the only server draining: no server for a new client');
  });

  test('a drain holds across reloads: one that rebuilds the upstream, one that removes the server and one that brings it back', async () => {
    const ups = await backends();
    const text = (list: Map<string, TestUpstream>, extra = '') =>
      `upstreams:\n  app:\n    servers:\n${serverList(list)}\n${extra}sites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
    const portico = await servers.portico(text(ups));
    await portico.server.serverAction('app', 'b', { action: 'drain' });
    const reload = (yaml: string) => portico.server.reload(parseConfig(`listen: ["127.0.0.1:${portico.port}"]\nlog: { access: off }\n${yaml}`, path.join(portico.dir, 'portico.yaml'), portico.dir));
    // A changed upstream is built anew: it takes the operator's say.
    await reload(text(ups, '    keepalive: 5\n'));
    assert.deepEqual(await spread(portico.port, 10), { a: 5, c: 5 });
    // b removed from the config, then back: the drain was kept meanwhile.
    await reload(text(new Map([...ups].filter(([name]) => name !== 'b'))));
    assert.deepEqual(await spread(portico.port, 10), { a: 5, c: 5 });
    await reload(text(ups));
    assert.deepEqual(await spread(portico.port, 10), { a: 5, c: 5 });
    // A server the config does not have cannot be acted on.
    await reload(text(new Map([...ups].filter(([name]) => name !== 'b'))));
    await assert.rejects(portico.server.serverAction('app', 'b', { action: 'enable' }), /has no server "b" \(servers: a, c\)/);
  });

  test('with a state directory the actions are kept in servers.json (0600, atomic) and a new Portico on it starts with them', async () => {
    const ups = await backends();
    const dir = makeTree();
    servers.defer(() => rmSync(dir, { recursive: true, force: true }));
    const yaml = `listen: ["127.0.0.1:0"]\nlog: { access: off }\nstate_dir: state\nupstreams:\n  app:\n    servers:\n${serverList(ups)}\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
    const build = () => new Portico(parseConfig(yaml, path.join(dir, 'portico.yaml'), dir), pino({ level: 'silent' }));
    const first = build();
    await first.start();
    await first.serverAction('app', 'b', { action: 'drain' });
    await first.serverAction('app', 'c', { action: 'weight', weight: 3 });
    const file = path.join(dir, 'state', 'servers.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { upstreams: { app: { b: { admin: 'draining' }, c: { admin: 'enabled', weight: 3 } } } });
    await first.stop(100);
    const second = build();
    await second.start();
    try {
      assert.deepEqual(await spread(second.addresses[0]!.port, 8), { a: 2, c: 6 });
      await second.serverAction('app', 'b', { action: 'enable' });
      assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { upstreams: { app: { c: { admin: 'enabled', weight: 3 } } } });
    } finally {
      await second.stop(100);
    }
  });
});
