/**
 * `rate_limit`: a token bucket per client (IPv6 per /64), 429 with Retry-After past the burst, on a site or a
 * route; the client address is the one trusted_proxies yields.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { scopedServers } from './proxy-support.js';

const { portico } = scopedServers();

describe('rate_limit', () => {
  test('a client past its burst gets 429 with Retry-After, Portico page; another client has its own bucket', async () => {
    const server = await portico(`trusted_proxies: ["127.0.0.1"]
sites:
  - routes:
      - path: /
        rate_limit: { rate: 1/m, burst: 3 }
        respond: { body: "ok" }
`);
    const as = (ip: string) => fetch(server.url, { headers: { 'x-forwarded-for': ip } });
    for (let i = 0; i < 3; i++) assert.equal((await as('198.51.100.1')).status, 200, `request ${i + 1} within the burst`);
    const limited = await as('198.51.100.1');
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('server'), 'Portico');
    const retry = Number(limited.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
    assert.match(await limited.text(), /429 Too Many Requests/);
    assert.equal((await as('198.51.100.2')).status, 200, 'another client is not limited');
  });

  test('IPv6 clients of one /64 share a bucket; another /64 does not', async () => {
    const server = await portico(`trusted_proxies: ["127.0.0.1"]
sites:
  - rate_limit: { rate: 1/h, burst: 1 }
    routes:
      - path: /
        respond: { body: "ok" }
`);
    const as = (ip: string) => fetch(server.url, { headers: { 'x-forwarded-for': ip } });
    assert.equal((await as('2001:db8:0:1::1')).status, 200);
    assert.equal((await as('2001:db8:0:1::2')).status, 429, 'same /64');
    assert.equal((await as('2001:db8:0:2::1')).status, 200, 'another /64');
  });

  test('tokens come back at the rate: after a limited request, a wait of one token lets the next one through', async () => {
    const server = await portico(`sites:
  - routes:
      - path: /
        rate_limit: { rate: 20/s, burst: 1 }
        respond: { body: "ok" }
`);
    const burst = await Promise.all(Array.from({ length: 6 }, () => fetch(server.url).then((res) => res.status)));
    assert.ok(burst.includes(429), `six at once past a burst of 1: ${burst.join(',')}`);
    const statuses: number[] = [];
    const started = Date.now();
    // One token per 50 ms: within a bounded time a request passes again.
    for (;;) {
      const status = (await fetch(server.url)).status;
      statuses.push(status);
      if (status === 200 || Date.now() - started > 5000) break;
    }
    assert.equal(statuses.at(-1), 200, `statuses ${statuses.join(',')}`);
  });

  test('a rate that is not N/s, N/m or N/h is a config error at its position', () => {
    assert.throws(
      () => parseConfig('sites:\n  - routes:\n      - path: /\n        rate_limit: { rate: "fast" }\n        respond: {}\n', 'portico.yaml', process.cwd()),
      (err: unknown) => err instanceof ConfigError && err.issues.some((i) => i.keyPath === 'sites[0].routes[0].rate_limit.rate' && i.line === 4),
    );
  });
});
