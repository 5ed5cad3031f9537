/**
 * Odd DNS answers against a real dnsmasq on loopback (src/upstream/discovery.ts): answers larger than Node's TTL
 * array, addresses no app server can have, SRV records without a port, and more records than an upstream holds.
 */
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { DnsDiscovery, MAX_DISCOVERED, ResolutionError, resolveOnce } from '../../src/upstream/discovery.js';
import { parseConfig } from '../../src/server/config.js';
import { Upstream } from '../../src/upstream/upstream.js';
import { DnsServer } from '../helpers/dnsmasq.js';
import { requireTool } from '../helpers/tools.js';
import { within } from '../helpers/within.js';

/** `count` loopback addresses, 127.0.x.y, distinct. */
function manyAddresses(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `127.0.${(i >> 8) + 1}.${i & 255}`);
}

const servers: DnsServer[] = [];
after(async () => {
  for (const server of servers) await within('dnsmasq stop', server.close(), 10_000);
});

async function dnsWith(hosts: Record<string, readonly string[]>): Promise<{ dns: DnsServer; resolver: Resolver }> {
  const dns = await DnsServer.start({ hosts });
  servers.push(dns);
  const resolver = new Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers([dns.address]);
  return { dns, resolver };
}

describe('odd DNS answers', () => {
  test('an answer of more than 256 A records keeps its TTL: the next resolution is due at the TTL, not at once (Node gives no TTL past the 256th)', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { dns, resolver } = await dnsWith({ 'many.test': manyAddresses(300) });
    const found = await resolveOnce(resolver, { dns: 'many.test', type: 'A', port: 8080 });
    assert.equal(found.ttlMs, 1000);
    const discovery = new DnsDiscovery('app', { dns: 'many.test', type: 'A', port: 8080, interval: 5000, resolver: [dns.address] } as never, pino({ level: 'silent' }), () => {});
    discovery.start();
    try {
      await discovery.firstResolution(5000);
      assert.equal(discovery.resolutions, 1);
      const delay = discovery.nextAt - discovery.lastAt;
      t.diagnostic(`next resolution ${delay} ms after the first`);
      assert.ok(delay >= 900, `next resolution due ${delay} ms after the first (NaN or ~0: a resolution loop)`);
    } finally {
      discovery.stop();
    }
  });

  test('records naming 0.0.0.0, multicast or broadcast, or SRV port 0, are left out (0.0.0.0 would reach this machine: Portico itself); an answer of only those is a failed resolution (the last set is kept)', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const dns = await DnsServer.start({
      hosts: { 'odd.test': ['0.0.0.0', '224.0.0.1', '255.255.255.255', '127.0.0.5'], 'zero.test': ['0.0.0.0'], 'app.test': ['127.0.0.6'] },
      srv: [
        { name: '_http._tcp.app.test', target: 'app.test', port: 0, priority: 0, weight: 1 },
        { name: '_http._tcp.app.test', target: 'app.test', port: 9001, priority: 0, weight: 1 },
      ],
    });
    servers.push(dns);
    const resolver = new Resolver({ timeout: 2000, tries: 2 });
    resolver.setServers([dns.address]);
    const odd = await resolveOnce(resolver, { dns: 'odd.test', type: 'A', port: 8080 });
    assert.deepEqual(odd.servers.map((s) => s.ip), ['127.0.0.5']);
    assert.equal(odd.unusable, 3);
    const srv = await resolveOnce(resolver, { dns: '_http._tcp.app.test', type: 'SRV', port: undefined });
    assert.deepEqual(srv.servers.map((s) => `${s.ip}:${s.port}`), ['127.0.0.6:9001']);
    await assert.rejects(resolveOnce(resolver, { dns: 'zero.test', type: 'A', port: 8080 }), (err: unknown) => err instanceof ResolutionError && err.code === 'EUNUSABLE');
  });

  test(`an answer of more records than an upstream takes gives it ${MAX_DISCOVERED} servers, the same ones each time`, async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { resolver } = await dnsWith({ 'many.test': manyAddresses(MAX_DISCOVERED + 100) });
    const first = await resolveOnce(resolver, { dns: 'many.test', type: 'A', port: 8080 });
    const second = await resolveOnce(resolver, { dns: 'many.test', type: 'A', port: 8080 });
    t.diagnostic(`${first.servers.length} servers kept, ${first.beyond} left out`);
    assert.equal(first.servers.length, MAX_DISCOVERED);
    assert.equal(first.beyond, 100);
    assert.deepEqual(second.servers, first.servers);
  });

  test('discover naming the address of a configured server written with a trailing slash or without port 80 adds no second server', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { dns } = await dnsWith({ 'app.test': ['127.0.0.1'] });
    for (const [url, port] of [['http://127.0.0.1:9001/', 9001], ['http://127.0.0.1', 80]] as const) {
      const config = parseConfig(
        `resolver: ${dns.address}\nupstreams:\n  app:\n    servers: ["${url}"]\n    discover: { dns: app.test, port: ${port} }\n` +
          'sites:\n  - routes:\n      - { path: /, proxy: { upstream: app } }\n',
        '/tmp/odd.yaml',
      );
      const upstream = new Upstream('app', config.upstreams.app as Upstream['config'], '/tmp', pino({ level: 'silent' }));
      upstream.start();
      try {
        await upstream.firstResolution(5000);
        assert.deepEqual(upstream.servers.map((s) => s.label), [url], `${url} and DNS's 127.0.0.1:${port}`);
      } finally {
        await upstream.stop(0);
      }
    }
  });
});
