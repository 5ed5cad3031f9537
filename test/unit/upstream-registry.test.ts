/**
 * The upstream registry across reloads (upstream/registry.ts): an unchanged upstream is kept whole; a changed
 * one is new and takes over, at the commit, each server's state by address and the policy's position; the two
 * are paired under max_conns until the previous one stops; a failed reload changes nothing.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { UpstreamRegistry } from '../../src/upstream/registry.js';
import type { Upstream } from '../../src/upstream/upstream.js';
import type { UpstreamServer } from '../../src/upstream/server.js';
import { makeTree } from '../helpers/portico.js';

const dir = makeTree();
const registries: UpstreamRegistry[] = [];
after(async () => {
  for (const registry of registries) await registry.stop(0);
  rmSync(dir, { recursive: true, force: true });
});

/** A config whose upstream `app` has `body` (YAML flow-map entries) and servers on ports nobody listens on. */
function config(body: string) {
  const text = `upstreams:\n  app: { ${body} }\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n`;
  return parseConfig(text, path.join(dir, 'portico.yaml'), dir);
}

function registry(): UpstreamRegistry {
  const made = new UpstreamRegistry(pino({ level: 'silent' }));
  registries.push(made);
  return made;
}

const pick = { clientIp: '127.0.0.1', hashKey: '', random: () => 0.5 };

function picked(upstream: Upstream): string {
  const server = upstream.select(undefined, pick, undefined);
  assert.notEqual(typeof server, 'string');
  return (server as UpstreamServer).address;
}

const A = 'http://127.0.0.1:9';
const B = 'http://127.0.0.1:10';
const C = 'http://127.0.0.1:11';

describe('the upstream registry', () => {
  test('a server that answered within the clock\'s resolution (a 0 ms sample) counts as measured: ewma then prefers an idle unmeasured one', () => {
    const upstreams = registry();
    const first = upstreams.resolve(config(`servers: ["${A}", "${B}"], policy: ewma`), undefined);
    first.commit();
    const upstream = first.upstreams.get('app')!;
    const [a] = upstream.servers as [UpstreamServer, UpstreamServer];
    a.observeLatency(0, Date.now());
    assert.ok(a.ewmaMs > 0, 'measured, however fast');
    // Both random draws: whichever pair order, the unmeasured idle server (cost 0) beats the measured one.
    for (const random of [() => 0, () => 0.99]) {
      const chosen = upstream.select(undefined, { ...pick, random }, undefined);
      assert.equal((chosen as UpstreamServer).address, B);
    }
  });

  test('an upstream whose config is unchanged is kept whole (same object, nothing fresh or retired)', () => {
    const upstreams = registry();
    const first = upstreams.resolve(config(`servers: ["${A}"]`), undefined);
    first.commit();
    const again = upstreams.resolve(config(`servers: ["${A}"]`), undefined);
    again.commit();
    assert.equal(again.upstreams.get('app'), first.upstreams.get('app'));
    assert.deepEqual([again.fresh.length, again.retired.length], [0, 0]);
  });

  test('a changed upstream is new, and takes over health, ejection, slow start and latency of each server it still has', () => {
    const upstreams = registry();
    const health = 'health: { path: /h, interval: 1h }';
    const first = upstreams.resolve(config(`servers: ["${A}", "${B}"], ${health}`), undefined);
    first.commit();
    const [a, b] = first.upstreams.get('app')!.servers as [UpstreamServer, UpstreamServer];
    a.healthy = false;
    a.fails = 3;
    b.eject(Date.now(), 60_000);
    b.observeLatency(42, Date.now());
    const next = upstreams.resolve(config(`servers: ["${C}", "${B}", "${A}"], keepalive: 9, ${health}`), undefined);
    next.commit();
    const upstream = next.upstreams.get('app')!;
    assert.notEqual(upstream, first.upstreams.get('app'));
    assert.deepEqual(next.retired, [first.upstreams.get('app')]);
    const [c2, b2, a2] = upstream.servers as [UpstreamServer, UpstreamServer, UpstreamServer];
    assert.deepEqual([a2.healthy, a2.fails], [false, 3], 'the checks\' verdict, by address whatever the order');
    assert.equal(b2.ejectedUntil, b.ejectedUntil);
    assert.equal(b2.ejections, 1);
    assert.equal(b2.recoveredAt, b.recoveredAt);
    assert.equal(b2.ewmaMs, 42);
    assert.deepEqual([c2.healthy, c2.ejectedUntil, c2.ewmaMs], [true, 0, 0], 'a new server starts afresh');
    assert.equal(picked(upstream), C, 'only the new server is available');
  });

  test('without active checks in the new config, a server held down by the old checks counts as up (nothing would bring it back)', () => {
    const upstreams = registry();
    const first = upstreams.resolve(config(`servers: ["${A}"], health: { path: /h, interval: 1h }`), undefined);
    first.commit();
    first.upstreams.get('app')!.servers[0]!.healthy = false;
    const next = upstreams.resolve(config(`servers: ["${A}"]`), undefined);
    next.commit();
    assert.equal(next.upstreams.get('app')!.servers[0]!.healthy, true);
  });

  test('round robin goes on where it was across a reload that changes the upstream, rather than start over', () => {
    const upstreams = registry();
    const first = upstreams.resolve(config(`servers: ["${A}", "${B}", "${C}"]`), undefined);
    first.commit();
    const before = first.upstreams.get('app')!;
    assert.deepEqual([picked(before), picked(before)], [A, B]);
    const next = upstreams.resolve(config(`servers: ["${A}", "${B}", "${C}"], keepalive: 9`), undefined);
    next.commit();
    const now = next.upstreams.get('app')!;
    assert.deepEqual([picked(now), picked(now), picked(now)], [C, A, B]);
  });

  test('max_conns counts the requests of both configs on a server until the previous upstream stops', async () => {
    const upstreams = registry();
    const first = upstreams.resolve(config(`servers: ["${A}"], max_conns: 1`), undefined);
    first.commit();
    const before = first.upstreams.get('app')!;
    before.acquire(before.servers[0]!);
    const next = upstreams.resolve(config(`servers: ["${A}"], max_conns: 1, keepalive: 9`), undefined);
    next.commit();
    const now = next.upstreams.get('app')!;
    assert.equal(now.select(undefined, pick, undefined), 'full', 'the previous config\'s request holds the one connection allowed');
    before.release(before.servers[0]!);
    assert.equal(picked(now), A);
    before.acquire(before.servers[0]!);
    await before.stop(0);
    assert.equal(picked(now), A, 'once the previous upstream stopped, its count no longer weighs');
  });

  test('live(name) is the held upstream and the replaced ones not stopped yet, until stopRetired', async () => {
    const upstreams = registry();
    const first = upstreams.resolve(config(`servers: ["${A}"]`), undefined);
    first.commit();
    const next = upstreams.resolve(config(`servers: ["${A}"], keepalive: 9`), undefined);
    next.commit();
    assert.deepEqual(upstreams.live('app'), [next.upstreams.get('app'), first.upstreams.get('app')]);
    await upstreams.stopRetired(next.retired, 0);
    assert.deepEqual(upstreams.live('app'), [next.upstreams.get('app')]);
    assert.deepEqual(upstreams.live('other'), []);
  });

  test('a plan that is not committed changes nothing: the held upstream stays', async () => {
    const upstreams = registry();
    const first = upstreams.resolve(config(`servers: ["${A}"]`), undefined);
    first.commit();
    const failed = upstreams.resolve(config(`servers: ["${B}"]`), undefined);
    await failed.discard();
    const again = upstreams.resolve(config(`servers: ["${A}"]`), undefined);
    assert.equal(again.upstreams.get('app'), first.upstreams.get('app'));
  });
});
