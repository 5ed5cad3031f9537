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
