/**
 * The pure rules of servers found through DNS (src/upstream/discovery.ts; docs/proxy.md "Servers found through
 * DNS"): when the next resolution is due, how a discovered server is named, and what `discover` and `resolver`
 * accept. Resolutions against a real DNS server: test/integration/dns-discovery.test.ts.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { discoveredId, discoveredUrl, nextResolution } from '../../src/upstream/discovery.js';
import { configErrors } from '../helpers/config.js';

const site = 'sites:\n  - routes:\n      - { path: /, proxy: { upstream: app } }\n';

describe('servers found through DNS: rules', () => {
  test('the next resolution is at the TTL, never sooner than 1 s nor later than interval; without a TTL (SRV), at interval', () => {
    assert.equal(nextResolution(30_000, 5000), 5000);
    assert.equal(nextResolution(3000, 5000), 3000);
    assert.equal(nextResolution(0, 5000), 1000);
    assert.equal(nextResolution(1000, 5000), 1000);
    assert.equal(nextResolution(undefined, 5000), 5000);
  });

  test('a discovered server is named by its address and port, IPv6 in brackets', () => {
    assert.equal(discoveredId({ ip: '10.0.0.5', port: 8080 }), '10.0.0.5:8080');
    assert.equal(discoveredId({ ip: 'fd00::5', port: 8080 }), '[fd00::5]:8080');
    assert.equal(discoveredUrl({ ip: 'fd00::5', port: 8080 }), 'http://[fd00::5]:8080');
  });

  test('discover and resolver parse with their defaults; the resolver reaches each upstream that discovers', () => {
    const config = parseConfig(`resolver: ["127.0.0.1:5353", "10.0.0.2", "[::1]:53"]\nupstreams:\n  app:\n    discover: { dns: app.internal, port: 8080 }\n${site}`, 'portico.yaml', tmpdir());
    const discover = config.upstreams.app!.discover!;
    assert.deepEqual({ ...discover }, { dns: 'app.internal', type: 'A', port: 8080, interval: 5000, resolver: ['127.0.0.1:5353', '10.0.0.2', '[::1]:53'] });
    assert.deepEqual(config.upstreams.app!.servers, []);
    const system = parseConfig(`upstreams:\n  app:\n    discover: { dns: _http._tcp.app.internal, type: SRV, interval: 10s }\n${site}`, 'portico.yaml', tmpdir());
    assert.equal(system.upstreams.app!.discover!.resolver, undefined, 'no resolver: the system\'s');
  });

  test('bad discover and resolver values are refused at their line with what to write', () => {
    const errors = (text: string) => configErrors(`${text}${site}`, tmpdir()).join('\n');
    assert.match(errors('upstreams:\n  app:\n    discover: { dns: app.internal, port: 80, interval: 200ms }\n'), /portico\.yaml:3:\d+.*at least 1 s/);
    assert.match(errors('upstreams:\n  app:\n    discover: { dns: "app internal", port: 80 }\n'), /portico\.yaml:3:\d+.*DNS name/);
    assert.match(errors('upstreams:\n  app:\n    discover: { dns: app.internal, type: MX, port: 80 }\n'), /portico\.yaml:3:\d+/);
    assert.match(errors('resolver: "127.0.0.1:99999"\nupstreams:\n  app:\n    discover: { dns: app.internal, port: 80 }\n'), /portico\.yaml:1:\d+.*DNS server's address/);
    assert.match(errors('upstreams:\n  app: {}\n'), /servers found through DNS \(discover:\)/);
  });

  test('discover naming an address instead of a DNS name is refused at its line, pointing to servers', () => {
    const errors = (text: string) => configErrors(`${text}${site}`, tmpdir()).join('\n');
    assert.match(errors('upstreams:\n  app:\n    discover: { dns: 10.0.0.5, port: 80 }\n'), /portico\.yaml:3:\d+.*an address, not a DNS name/);
    assert.doesNotThrow(() => parseConfig(`upstreams:\n  app:\n    discover: { dns: app10.0.0.5, port: 80 }\n${site}`, 'portico.yaml'));
  });
});
