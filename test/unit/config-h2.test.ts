/** Config of HTTP/2 upstreams: h2c:// URLs, protocol (ALPN), http2 limits, gRPC health checks; errors located. */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portico-h2-config-'));
const parse = (text: string) => parseConfig(text, 'portico.yaml', dir);

function issueOf(text: string): [number, number, string, string] {
  try {
    parse(text);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    const issue = err.issues[0]!;
    return [issue.line!, issue.col!, issue.keyPath, issue.message];
  }
  return assert.fail('the config was accepted');
}

test('h2c://host:port and https:// with protocol h2 | auto are accepted, with the http2 defaults', () => {
  const config = parse(`upstreams:
  g:
    servers: ["h2c://127.0.0.1:50051", { url: "https://127.0.0.1:8443", protocol: auto }]
    health: { type: grpc }
sites: [{ routes: [{ path: /, proxy: { upstream: g } }] }]
`.replace('health: { type: grpc }', ''));
  const upstream = config.upstreams.g!;
  assert.equal(upstream.servers[0]!.url.kind, 'h2c');
  assert.equal(upstream.servers[0]!.url.origin, 'http://127.0.0.1:50051');
  assert.equal(upstream.servers[1]!.protocol, 'auto');
  assert.deepEqual(upstream.http2, { connections: 1, max_concurrent_streams: 100, ping_interval: 10_000, ping_timeout: 5000 });
});

test('protocol on an http:// server is an error at its key, pointing to h2c://', () => {
  const [line, , keyPath, message] = issueOf(`upstreams:
  g:
    servers:
      - { url: "http://127.0.0.1:50051", protocol: h2 }
sites: [{ routes: [{ path: /, proxy: { upstream: g } }] }]
`);
  assert.equal(line, 4);
  assert.equal(keyPath, 'upstreams.g.servers[0].protocol');
  assert.match(message, /needs an https:\/\/ URL \(HTTP\/2 without TLS: write the URL as h2c:\/\/host:port\)/);
});

test('a gRPC health check of an HTTP/1.1 server is an error naming the server', () => {
  const [, , keyPath, message] = issueOf(`upstreams:
  g:
    servers: ["http://127.0.0.1:3000"]
    health: { type: grpc }
sites: [{ routes: [{ path: /, proxy: { upstream: g } }] }]
`);
  assert.equal(keyPath, 'upstreams.g.health.type');
  assert.match(message, /gRPC health checks need HTTP\/2 servers: servers\[0\] \(http:\/\/127\.0\.0\.1:3000\)/);
});

test('an h2c:// URL without a port is an error', () => {
  const [, , keyPath, message] = issueOf(`upstreams:
  g:
    servers: ["h2c://127.0.0.1"]
sites: [{ routes: [{ path: /, proxy: { upstream: g } }] }]
`);
  assert.equal(keyPath, 'upstreams.g.servers[0]');
  assert.match(message, /expected "h2c:\/\/host:port"/);
});

test('spawn.protocol h2c is accepted with gRPC health checks; spawned HTTP/1.1 instances with them are an error', () => {
  const config = parse(`upstreams:
  g:
    spawn: { command: ["node", "app.js"], ports: 3001-3010, protocol: h2c }
    health: { type: grpc }
sites: [{ routes: [{ path: /, proxy: { upstream: g } }] }]
`);
  assert.equal(config.upstreams.g!.spawn!.protocol, 'h2c');
  const [line, , keyPath, message] = issueOf(`upstreams:
  g:
    spawn: { command: ["node", "app.js"], ports: 3001-3010 }
    health: { type: grpc }
sites: [{ routes: [{ path: /, proxy: { upstream: g } }] }]
`);
  assert.equal(line, 4);
  assert.equal(keyPath, 'upstreams.g.health.type');
  assert.match(message, /spawned app servers speak HTTP\/1\.1 unless spawn\.protocol is h2c/);
});

test('spawned instances of a FastCGI upstream are PHP-FPM pools: spawn accepted, spawn.protocol h2c there an error', () => {
  const config = parse(`upstreams:
  php:
    protocol: fastcgi
    spawn: { command: ["php-fpm8.2", "-F"], ports: 9001-9010, stop_signal: SIGQUIT }
sites: [{ routes: [{ path: /, php: { root: ".", upstream: php } }] }]
`);
  assert.equal(config.upstreams.php!.protocol, 'fastcgi');
  const [line, , keyPath, message] = issueOf(`upstreams:
  php:
    protocol: fastcgi
    spawn: { command: ["php-fpm8.2", "-F"], ports: 9001-9010, protocol: h2c }
sites: [{ routes: [{ path: /, php: { root: ".", upstream: php } }] }]
`);
  assert.equal(line, 4);
  assert.equal(keyPath, 'upstreams.php.spawn.protocol');
  assert.match(message, /speak FastCGI/);
});
