/**
 * The pure parts of the operator's actions and purges: what each action leaves (`nextOverride`), how servers.json is
 * read back, and which cache keys a purge by URL or prefix matches (`planPurge`), on keys as the proxy's cache makes
 * them (template text, `\0authority`, `\0xfh=…` forwarded parts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { configServerIds, nextOverride, ServerOverrides, SERVERS_FILE } from '../../src/server/operator.js';
import { planPurge } from '../../src/server/purge.js';
import { StateDir } from '../../src/tls/state-dir.js';

describe('nextOverride: what an action leaves', () => {
  test('drain and disable keep a weight set; weight keeps the state; enable goes back to the config (no override)', () => {
    assert.deepEqual(nextOverride(undefined, { action: 'drain' }), { admin: 'draining' });
    assert.deepEqual(nextOverride({ admin: 'enabled', weight: 4 }, { action: 'disable' }), { admin: 'disabled', weight: 4 });
    assert.deepEqual(nextOverride({ admin: 'draining' }, { action: 'weight', weight: 7 }), { admin: 'draining', weight: 7 });
    assert.equal(nextOverride({ admin: 'disabled', weight: 2 }, { action: 'enable' }), undefined);
  });

  test('a weight that is not an integer from 1 to 1000, or an unknown action, is a 400', () => {
    for (const weight of [0, 1001, 2.5, Number.NaN, '3' as unknown as number]) {
      assert.throws(() => nextOverride(undefined, { action: 'weight', weight }), (err: { status?: number }) => err.status === 400);
    }
    assert.throws(() => nextOverride(undefined, { action: 'reboot' } as never), (err: { status?: number; message: string }) => err.status === 400 && /drain, enable, disable or weight/.test(err.message));
  });

  test('server ids: the config name, else the URL percent-encoded; spawned slots by slot name', () => {
    const config = parseConfig(
      'upstreams:\n  app:\n    servers:\n      - { url: "http://127.0.0.1:3001", name: one }\n      - "http://127.0.0.1:3002"\n    spawn: { command: ["true"], instances: 2, ports: "4000-4010" }\nsites: [{ routes: [{ path: /, respond: { body: ok } }] }]\n',
      'x.yaml',
      tmpdir(),
    );
    assert.deepEqual(configServerIds('app', config.upstreams.app!), ['one', encodeURIComponent('http://127.0.0.1:3002'), 'app#1', 'app#2']);
  });
});

describe('servers.json', () => {
  test('written as the overrides are, read back by another process\'s overrides; a broken file is not applied (and replaced by the next change)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'portico-operator-'));
    try {
      const first = new ServerOverrides(pino({ level: 'silent' }));
      const state = StateDir.open(dir, pino({ level: 'silent' }));
      first.load(state);
      await first.set('app', 'b', { admin: 'draining' });
      await first.set('app', 'c', { admin: 'enabled', weight: 5 });
      await first.set('app', 'c', undefined);
      const second = new ServerOverrides(pino({ level: 'silent' }));
      second.load(state);
      assert.deepEqual(second.list(), [['app', 'b', { admin: 'draining' }]]);
      writeFileSync(path.join(dir, SERVERS_FILE), '{ "upstreams": { "app": { "b": { "admin": "sleeping" } } } }');
      const third = new ServerOverrides(pino({ level: 'silent' }));
      third.load(state);
      assert.deepEqual(third.list(), []);
      state.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('planPurge: which keys a purge matches', () => {
  const config = parseConfig(
    'caches: { z: { memory: 1MB }, h: { memory: 1MB } }\nupstreams: { app: { servers: ["http://127.0.0.1:1"] } }\nsites:\n' +
      '  - hosts: [a.example, a.example.org]\n    routes:\n      - path: /\n        proxy: { upstream: app, cache: { zone: z } }\n' +
      '      - path: /q/\n        proxy: { upstream: app, cache: { zone: z, key: "$scheme$host$uri" } }\n' +
      '  - hosts: [h.example]\n    routes:\n      - path: /\n        proxy: { upstream: app, cache: { zone: h, key: "$request_uri" } }\n',
    'x.yaml',
    tmpdir(),
  );

  test('url: the route\'s key and its forwarded variants; not another port, another host or a longer path', () => {
    const match = planPurge(config, 'z', { url: 'https://a.example/img?v=1' });
    assert.equal(match('httpsa.example/img?v=1'), true);
    assert.equal(match('httpsa.example/img?v=1\0xfh=b.example'), true);
    assert.equal(match('httpsa.example/img?v=1\0a.example:8443'), false);
    assert.equal(match('httpsa.example/img?v=12'), false);
    assert.equal(match('httpsa.example.org/img?v=1'), false);
    const port = planPurge(config, 'z', { url: 'https://a.example:8443/img' });
    assert.equal(port('httpsa.example/img\0a.example:8443'), true);
    assert.equal(port('httpsa.example/img\0a.example:8443\0xfp=http'), true);
    assert.equal(port('httpsa.example/img\0a.example:84430'), false);
    assert.equal(port('httpsa.example/img'), false);
  });

  test('url on a route keyed on $uri: the query is not in the key', () => {
    const match = planPurge(config, 'z', { url: 'http://a.example/q/x?whatever' });
    assert.equal(match('httpa.example/q/x'), true);
    assert.equal(match('httpa.example/q/x?whatever'), false);
  });

  test('url_prefix: whole host, path by segments, a trailing slash below only', () => {
    const img = planPurge(config, 'z', { url_prefix: 'https://a.example/img' });
    for (const key of ['httpsa.example/img', 'httpsa.example/img/x', 'httpsa.example/img?v=2', 'httpsa.example/img/x\0xfh=c.example']) assert.equal(img(key), true, key);
    for (const key of ['httpsa.example/images', 'httpsa.example.org/img', 'httpa.example/img', 'httpsa.example/img\0a.example:8443']) assert.equal(img(key), false, JSON.stringify(key));
    const site = planPurge(config, 'z', { url_prefix: 'https://a.example' });
    assert.equal(site('httpsa.example/anything'), true);
    assert.equal(site('httpsa.example.org/anything'), false);
    const below = planPurge(config, 'z', { url_prefix: 'https://a.example/img/' });
    assert.equal(below('httpsa.example/img/x'), true);
    assert.equal(below('httpsa.example/img'), false);
  });

  test('a key without $host holds the authority: a prefix matches its own host\'s entries only', () => {
    const match = planPurge(config, 'h', { url_prefix: 'http://h.example/a' });
    assert.equal(match('/a/1\0h.example'), true);
    assert.equal(match('/a/1\0h.example:8080'), false);
    assert.equal(match('/a/1\0other.example'), false);
    assert.equal(match('/ab\0h.example'), false);
  });
});
