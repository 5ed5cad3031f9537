/**
 * `access` rules (nginx allow/deny) on a site or a route: first match wins, no match allows, denied is 403; a
 * route's list replaces its site's; the client address is the one trusted_proxies yields; upgrades too.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { rawRequest } from '../helpers/raw-client.js';
import { scopedServers } from './proxy-support.js';

const { portico, upstream } = scopedServers();

describe('access rules', () => {
  test('the first matching rule decides: allow 127.0.0.1 before deny all lets loopback in; deny all alone gives 403', async () => {
    const server = await portico(`sites:
  - routes:
      - path: /open
        access: [{ allow: 127.0.0.1 }, { deny: all }]
        respond: { body: "open" }
      - path: /closed
        access: [{ deny: all }]
        respond: { body: "closed" }
      - path: /ten
        access: [{ allow: 10.0.0.0/8 }, { deny: all }]
        respond: { body: "ten" }
`);
    assert.equal((await fetch(`${server.url}/open`)).status, 200);
    const closed = await fetch(`${server.url}/closed`);
    assert.equal(closed.status, 403);
    assert.equal(closed.headers.get('server'), 'Portico');
    assert.match(await closed.text(), /403 Forbidden/);
    assert.equal((await fetch(`${server.url}/ten`)).status, 403);
  });

  test('no rule matches: the request is allowed (as nginx)', async () => {
    const server = await portico(`sites:
  - routes:
      - path: /
        access: [{ deny: 192.0.2.0/24 }, { deny: "2001:db8::/32" }]
        respond: { body: "ok" }
`);
    assert.equal((await fetch(server.url)).status, 200);
  });

  test("a site's rules apply to its routes; a route's own list replaces them", async () => {
    const server = await portico(`sites:
  - access: [{ deny: all }]
    routes:
      - path: /inherits
        respond: { body: "no" }
      - path: /own
        access: [{ allow: all }]
        respond: { body: "yes" }
`);
    assert.equal((await fetch(`${server.url}/inherits`)).status, 403);
    assert.equal((await fetch(`${server.url}/own`)).status, 200);
  });

  test('behind a trusted proxy the forwarded client address is judged, not the proxy', async () => {
    const server = await portico(`trusted_proxies: ["127.0.0.1"]
sites:
  - routes:
      - path: /
        access: [{ deny: 203.0.113.0/24 }]
        respond: { body: "ok" }
`);
    assert.equal((await fetch(server.url, { headers: { 'x-forwarded-for': '203.0.113.9' } })).status, 403);
    assert.equal((await fetch(server.url, { headers: { 'x-forwarded-for': '198.51.100.9' } })).status, 200);
  });

  test('a denied WebSocket upgrade gets 403 and never reaches the app', async () => {
    const app = await upstream('app');
    let upgrades = 0;
    app.server.on('upgrade', (_req, socket) => {
      upgrades++;
      socket.destroy();
    });
    const server = await portico(`upstreams:
  app:
    servers: [{ url: "${app.url}" }]
sites:
  - access: [{ deny: all }]
    routes:
      - path: /
        proxy: { upstream: app }
`);
    const res = await rawRequest(server.port, 'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    assert.equal(res.status, 403);
    assert.equal(upgrades, 0);
  });

  test('a rule that is neither an address, a CIDR nor "all" is a config error at its position', () => {
    assert.throws(
      () => parseConfig('sites:\n  - routes:\n      - path: /\n        access: [{ allow: 10.0.0.0/33 }]\n        respond: {}\n', 'portico.yaml', process.cwd()),
      (err: unknown) => err instanceof ConfigError && err.issues.some((i) => i.keyPath === 'sites[0].routes[0].access[0].allow' && i.line === 4),
    );
  });
});
