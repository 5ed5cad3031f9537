/** The `cluster` section's checks (docs/cluster.md). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { configErrors } from '../helpers/config.js';
import { parseConfig } from '../../src/server/config.js';

const site = 'sites:\n  - routes:\n      - path: /\n        respond: { status: 200 }\n';

test('a cluster without its secret in the environment is refused at the line of key_env', () => {
  delete process.env.PORTICO_TEST_NO_KEY;
  const errors = configErrors(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_NO_KEY\n${site}`, tmpdir());
  assert.equal(errors.length, 1);
  assert.match(errors[0]!, /portico\.yaml:3:\d+.*PORTICO_TEST_NO_KEY is not set/);
});

test('a weak cluster secret is refused; a strong one is read into the config, and the box is named after the host by default', () => {
  process.env.PORTICO_TEST_WEAK_KEY = 'short';
  assert.match(configErrors(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_WEAK_KEY\n${site}`, tmpdir())[0]!, /32\+ characters/);
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  const config = parseConfig(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\n${site}`, 'portico.yaml', tmpdir());
  assert.equal(config.cluster?.key, 'k'.repeat(64));
  assert.ok((config.cluster?.name ?? '').length > 0);
  assert.equal(config.cluster?.prefix, 'portico');
  assert.equal(config.cluster?.timeout, 50);
});

test('a cluster URL that is not redis:// or rediss:// is refused', () => {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  assert.match(configErrors(`cluster:\n  redis: http://127.0.0.1:6379\n  key_env: PORTICO_TEST_KEY\n${site}`, tmpdir())[0]!, /portico\.yaml:2:\d+.*redis:\/\//);
});

test('a cluster box may run workers (workers: 2 is accepted with a cluster section)', () => {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  const text = `workers: 2\ncluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\n${site}`;
  assert.equal(parseConfig(text, 'portico.yaml', tmpdir()).workers, 2);
});

test('acme_lease defaults to 30 s; a lease under 1 s is refused at its line', () => {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  const config = parseConfig(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\n${site}`, 'portico.yaml', tmpdir());
  assert.equal(config.cluster?.acme_lease, 30_000);
  const errors = configErrors(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\n  acme_lease: 200ms\n${site}`, tmpdir());
  assert.equal(errors.length, 1);
  assert.match(errors[0]!, /portico\.yaml:4:\d+.*at least 1s/);
});

test('a Redis URL the client cannot read (bad brackets, a port out of range, a database that is not a number) is refused at its line by check, not at run', () => {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  for (const [url, message] of [
    ["'redis://u:p@[::1:6379/0'", /not a URL the Redis client can read/],
    ['redis://127.0.0.1:99999/0', /not a URL the Redis client can read/],
    ['redis://127.0.0.1:6379/x', /path is the database number/],
  ] as const) {
    const errors = configErrors(`cluster:\n  redis: ${url}\n  key_env: PORTICO_TEST_KEY\n${site}`, tmpdir());
    assert.equal(errors.length, 1, url);
    assert.match(errors[0]!, /portico\.yaml:2:\d+ cluster\.redis: /, url);
    assert.match(errors[0]!, message, url);
  }
  for (const url of ['redis://127.0.0.1:6379', 'redis://127.0.0.1:6379/', 'redis://:p%40ss@[::1]:6379/2', 'rediss://user:pw@redis.internal:6380/0?family=6']) {
    assert.doesNotThrow(() => parseConfig(`cluster:\n  redis: ${url}\n  key_env: PORTICO_TEST_KEY\n${site}`, 'portico.yaml', tmpdir()), url);
  }
});

test('cluster.timeout is refused at 0 and past 5 s (a bare number is seconds: "timeout: 50" would hold requests 50 s on a hung Redis)', () => {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  for (const timeout of ['0', '50', '10m']) {
    const errors = configErrors(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\n  timeout: ${timeout}\n${site}`, tmpdir());
    assert.equal(errors.length, 1, timeout);
    assert.match(errors[0]!, /portico\.yaml:4:\d+ cluster\.timeout: .*between 1ms and 5s/, timeout);
  }
  for (const timeout of ['1ms', '50ms', '5s']) {
    assert.doesNotThrow(() => parseConfig(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\n  timeout: ${timeout}\n${site}`, 'portico.yaml', tmpdir()), timeout);
  }
});

test('a shared tier lock of 0 is refused at its line (Redis refuses a TTL of 0: every miss would fail the call)', () => {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  const errors = configErrors(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\ncaches:\n  main: { memory: 1MB, shared: { lock: 0 } }\n${site}`, tmpdir());
  assert.equal(errors.length, 1);
  assert.match(errors[0]!, /portico\.yaml:5:\d+ caches\.main\.shared\.lock: .*at least 1ms/);
});

test("with sentinels, the URL's host is the master's name: taken without a port, refused with one or with rediss://; a sentinel address is host:port (IPv6 in brackets), refused at its line otherwise", () => {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  const config = parseConfig(`cluster:\n  redis: redis://:secret@mymaster/2\n  sentinels: ["10.0.0.1:26379", "sentinel.internal:26380"]\n  key_env: PORTICO_TEST_KEY\n${site}`, 'portico.yaml', tmpdir());
  assert.deepEqual(config.cluster?.sentinels, ['10.0.0.1:26379', 'sentinel.internal:26380']);
  const withPort = configErrors(`cluster:\n  redis: redis://:secret@mymaster:6379/2\n  sentinels: ["10.0.0.1:26379"]\n  key_env: PORTICO_TEST_KEY\n${site}`, tmpdir());
  assert.equal(withPort.length, 1);
  assert.match(withPort[0]!, /portico\.yaml:2:\d+ cluster\.redis: with sentinels, the URL's host is the master's name in Sentinel, and Sentinel gives its address: no port \(redis:\/\/…@mymaster\/2\)/);
  assert.doesNotMatch(withPort[0]!, /secret/, 'the password is not repeated');
  for (const address of ['10.0.0.2', '10.0.0.2:0', '10.0.0.2:99999', '::1:26379']) {
    const bad = configErrors(`cluster:\n  redis: redis://mymaster/0\n  sentinels: ["10.0.0.1:26379", "${address}"]\n  key_env: PORTICO_TEST_KEY\n${site}`, tmpdir());
    assert.equal(bad.length, 1, address);
    assert.match(bad[0]!, /portico\.yaml:3:\d+.*a sentinel is host:port, the port 1 to 65535/, address);
  }
  const v6 = parseConfig(`cluster:\n  redis: redis://mymaster/0\n  sentinels: ["[::1]:26379", "[fd00::5]:65535"]\n  key_env: PORTICO_TEST_KEY\n${site}`, 'portico.yaml', tmpdir());
  assert.deepEqual(v6.cluster?.sentinels, ['[::1]:26379', '[fd00::5]:65535']);
  const tls = configErrors(`cluster:\n  redis: rediss://:secret@mymaster/0\n  sentinels: ["10.0.0.1:26379"]\n  key_env: PORTICO_TEST_KEY\n${site}`, tmpdir());
  assert.equal(tls.length, 1);
  assert.match(tls[0]!, /portico\.yaml:2:\d+ cluster\.redis: a rediss:\/\/ \(TLS\) Redis found through Sentinel is not supported yet/);
});
