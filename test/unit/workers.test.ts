/**
 * `workers: N`: the key's values, and each worker's view of the config (what is counted per process divided by N,
 * a disk folder of its own), and which Node versions have `reusePort`.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { RestartBackoff, reusePortAvailable, workerConfig } from '../../src/server/workers.js';
import { configErrors } from '../helpers/config.js';

const TEXT = `listen: [{ addr: "127.0.0.1:0", max_connections: 100, max_connections_per_ip: 3 }]
workers: 2
caches: { main: { memory: 64MB, disk: { path: /var/cache/portico, size: 1GB } } }
upstreams:
  app: { servers: ["http://127.0.0.1:3000", { url: "http://127.0.0.1:3001", max_conns: 5 }], max_conns: 10 }
sites:
  - rate_limit: { rate: 10/s }
    routes:
      - path: /api/
        rate_limit: { rate: 100/s, burst: 7 }
        proxy: { upstream: app }
      - { path: /, respond: { body: ok } }
`;

describe('workers', () => {
  test('workers is 1 by default, a number, or auto (one per core); anything else is an error naming the key', () => {
    const base = 'sites: [{ routes: [{ path: /, respond: { body: ok } }] }]\n';
    assert.equal(parseConfig(base, 'portico.yaml', '/tmp').workers, 1);
    assert.equal(parseConfig(`workers: 3\n${base}`, 'portico.yaml', '/tmp').workers, 3);
    assert.equal(parseConfig(`workers: auto\n${base}`, 'portico.yaml', '/tmp').workers, availableParallelism());
    for (const bad of ['0', 'many', '1.5']) {
      const errors = configErrors(`workers: ${bad}\n${base}`, '/tmp');
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.match(errors[0]!, /^portico\.yaml:1:10 workers: /);
    }
  });

  test("a worker's config divides rate limits, connection limits, max_conns and cache sizes by N, and gives it its own disk folder", () => {
    const config = parseConfig(TEXT, 'portico.yaml', '/tmp');
    const second = workerConfig(config, 2, 2);
    assert.equal(second.listen[0]!.max_connections, 50);
    assert.equal(second.listen[0]!.max_connections_per_ip, 1);
    const zone = second.caches.main!;
    assert.equal(zone.memory, 32 * 1024 * 1024);
    assert.equal(zone.disk?.path, '/var/cache/portico/w2');
    assert.equal(zone.disk?.size, 512 * 1024 * 1024);
    assert.equal(second.upstreams.app!.max_conns, 5);
    assert.equal(second.upstreams.app!.servers[1]!.max_conns, 2);
    assert.equal(second.upstreams.app!.servers[0]!.max_conns, undefined);
    const siteRate = second.sites[0]!.middlewares.find((m) => m.kind === 'rate_limit')!.options as { rate: number; burst?: number };
    assert.equal(siteRate.rate, 5 / 1000);
    assert.equal(siteRate.burst, undefined, 'the default burst (the rate per second) follows the divided rate');
    const routeRate = second.sites[0]!.routes[0]!.middlewares.find((m) => m.kind === 'rate_limit')!.options as { rate: number; burst?: number };
    assert.equal(routeRate.rate, 50 / 1000);
    assert.equal(routeRate.burst, 3);
    // The config itself is unchanged, and one worker is the config as written.
    assert.equal(config.caches.main!.disk?.path, '/var/cache/portico');
    assert.equal(workerConfig(config, 1, 1), config);
  });

  test("in a cluster box, a worker's config keeps a cluster-wide rate limit whole (one bucket in Redis) and divides a scope: box one", () => {
    process.env.PORTICO_TEST_WORKERS_KEY = 'k'.repeat(64);
    const text = `workers: 2
cluster: { redis: "redis://127.0.0.1:6379/0", key_env: PORTICO_TEST_WORKERS_KEY }
sites:
  - rate_limit: { rate: 10/s, burst: 20 }
    routes:
      - path: /api/
        rate_limit: { rate: 100/s, burst: 8, scope: box }
        respond: { body: ok }
`;
    const second = workerConfig(parseConfig(text, 'portico.yaml', '/tmp'), 2, 2);
    const fleet = second.sites[0]!.middlewares.find((m) => m.kind === 'rate_limit')!.options as { rate: number; burst?: number };
    assert.equal(fleet.rate, 10 / 1000, 'cluster-wide: not divided');
    assert.equal(fleet.burst, 20);
    const box = second.sites[0]!.routes[0]!.middlewares.find((m) => m.kind === 'rate_limit')!.options as { rate: number; burst?: number };
    assert.equal(box.rate, 50 / 1000, 'scope: box: the box\'s buckets, divided among its workers');
    assert.equal(box.burst, 4);
  });

  test('a crashed worker is replaced after 100 ms, doubling per exit within a minute up to 30 s; the fifth exit within a minute begins a crash loop, reported once', () => {
    const backoff = new RestartBackoff();
    const seen = [0, 1000, 2000, 3000, 4000, 5000].map((at) => backoff.exited(at));
    assert.deepEqual(seen.map((e) => e.delayMs), [100, 200, 400, 800, 1600, 3200]);
    assert.deepEqual(seen.map((e) => e.loopBegins), [false, false, false, false, true, false]);
    // A minute later the window holds one exit again: back to the first delay, and a later loop is reported anew.
    const calm = backoff.exited(70_000);
    assert.equal(calm.delayMs, 100);
    assert.equal(calm.recent, 1);
    const again = [71_000, 72_000, 73_000, 74_000].map((at) => backoff.exited(at));
    assert.deepEqual(again.map((e) => e.loopBegins), [false, false, false, true]);
    // Never longer than 30 s.
    for (let at = 75_000; at < 90_000; at += 100) backoff.exited(at);
    assert.equal(backoff.exited(90_000).delayMs, 30_000);
  });

  test('reusePort is used from Node 22.12 and 23.1 on', () => {
    assert.equal(reusePortAvailable('20.18.1'), false);
    assert.equal(reusePortAvailable('22.11.0'), false);
    assert.equal(reusePortAvailable('22.12.0'), true);
    assert.equal(reusePortAvailable('23.0.0'), false);
    assert.equal(reusePortAvailable('23.1.0'), true);
    assert.equal(reusePortAvailable('24.11.1'), true);
  });
});
