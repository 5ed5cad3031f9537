/** The cluster's config digest (src/cluster/digest.ts): the config's meaning, minus what differs per box. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { configDigest } from '../../src/cluster/digest.js';
import { parseConfig } from '../../src/server/config.js';

process.env.PORTICO_TEST_DIGEST_KEY = 'k'.repeat(40);

/** A box's config: its own addresses, name, folders and logs; `upstream` the part that must agree. */
function boxConfig(box: number, upstream = 'http://127.0.0.1:3000'): string {
  return `listen: ['127.0.0.${box}:80']
cluster:
  redis: redis://10.0.0.${box}:6379/0
  name: box${box}
  key_env: PORTICO_TEST_DIGEST_KEY
admin:
  listen: 127.0.0.${box}:9901
state_dir: ./var${box}
pid_file: ./run/box${box}.pid
log:
  access: ./logs/access-${box}.log
  error: ./logs/error-${box}.log
upstreams:
  app:
    servers: ['${upstream}']
sites:
  - hosts: [shop.example]
    routes:
      - path: ~ ^/api/v[0-9]+/
        proxy: { upstream: app }
      - path: /
        static: { root: ./public }
`;
}

/** A box's folder: its config's folders exist there. */
function boxDir(label: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `digest-${label}-`));
  for (const sub of ['logs', 'run', 'public', 'www']) mkdirSync(path.join(dir, sub));
  return dir;
}

function digestIn(dir: string, text: string): string {
  return configDigest(parseConfig(text, 'portico.yaml', dir));
}

test('boxes that differ only in addresses, name, state, pid and log paths, each config in its own folder, have one digest', () => {
  const digests = [1, 2, 3].map((box) => digestIn(boxDir(String(box)), boxConfig(box)));
  assert.match(digests[0]!, /^[0-9a-f]{16}$/);
  assert.deepEqual(new Set(digests), new Set([digests[0]]));
});

test('the same meaning written another way (key order, defaults spelt out) has the same digest', () => {
  const dir = boxDir('x');
  const reordered = boxConfig(1).replace('state_dir: ./var1\npid_file: ./run/box1.pid\n', 'pid_file: ./run/box1.pid\nstate_dir: ./var1\nserver_header: Portico\n');
  assert.equal(digestIn(dir, reordered), digestIn(dir, boxConfig(1)));
});

test('another upstream server, route or cache setting changes the digest', () => {
  const dir = boxDir('x');
  const base = digestIn(dir, boxConfig(1));
  assert.notEqual(digestIn(dir, boxConfig(1, 'http://127.0.0.1:3001')), base);
  assert.notEqual(digestIn(dir, boxConfig(1).replace('v[0-9]+', 'v[0-9]')), base, 'a route regex');
  assert.notEqual(digestIn(dir, boxConfig(1).replace('root: ./public', 'root: ./www')), base, 'a static root');
  const cached = boxConfig(1).replace('upstreams:', 'caches:\n  main: { memory: 10MB }\nupstreams:');
  assert.notEqual(digestIn(dir, cached), base, 'a cache zone');
  assert.notEqual(digestIn(dir, cached.replace('10MB', '20MB')), digestIn(dir, cached), 'a cache setting');
});
