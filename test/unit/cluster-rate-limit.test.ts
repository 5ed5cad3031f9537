/**
 * The pure parts of cluster-wide rate limits (docs/cluster.md, "Rate limits"): a box's local share while Redis is
 * away (rate and burst / boxes), the Retry-After of a refused take, and the config keys (`rate_limit.scope`,
 * `cluster.boxes`). The Redis script itself is tested against a real redis-server in
 * test/integration/cluster-rate-limit.test.ts.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import pino from 'pino';
import { ClusterLink } from '../../src/cluster/link.js';
import { retryAfterSeconds } from '../../src/cluster/rate-bucket.js';
import { LocalShare } from '../../src/handlers/middleware/rate-limit.js';
import { parseConfig } from '../../src/server/config.js';
import { configErrors } from '../helpers/config.js';

/** A link never started (no connection is made): what a share reads is its box count. */
function link(expectedBoxes?: number): ClusterLink {
  return new ClusterLink({ redis: 'redis://127.0.0.1:1/0', prefix: 'test', name: 'a', timeoutMs: 50, ...(expectedBoxes === undefined ? {} : { expectedBoxes }) }, pino({ level: 'silent' }));
}

/** How many takes in a row pass before the first refusal (at most `max`). */
function passes(share: LocalShare, key: string, max = 100): number {
  let n = 0;
  while (n < max && share.take(key) === 0) n++;
  return n;
}

test('a local share divides the burst by the boxes (rounded up), at least cluster.boxes, and follows the heartbeat count', () => {
  const perMs = 6 / 3_600_000; // 6/h: nothing refills during the test
  const alone = new LocalShare(link(), perMs, 6, 100);
  assert.equal(alone.boxes, 1, 'no heartbeat, no cluster.boxes: the whole rule');
  assert.equal(passes(alone, 'k'), 6);

  const three = link(3);
  const share = new LocalShare(three, perMs, 6, 100);
  assert.equal(share.boxes, 3);
  assert.equal(passes(share, 'k'), 2, 'burst 6 / 3 boxes');
  assert.equal(passes(share, 'other'), 2, 'per key');
  three.boxes = 2;
  assert.equal(share.boxes, 3, 'fewer counted than cluster.boxes: cluster.boxes');
  three.boxes = 4;
  assert.equal(share.boxes, 4);
  assert.equal(passes(share, 'k'), 2, 'a new count makes new buckets: ceil(6 / 4)');
  assert.ok(share.take('k') > 0);
  share.reset();
  assert.equal(passes(share, 'k'), 2, 'reset (Redis back): the next outage starts from full buckets');
  const tiny = new LocalShare(link(5), perMs, 2, 100);
  assert.equal(passes(tiny, 'k'), 1, 'a share keeps a burst of at least 1');
});

test("a worker's local share (workers: N) is the rule / boxes / N: the box's share divided among its workers", () => {
  const perMs = 12 / 3_600_000;
  const worker = new ClusterLink({ redis: 'redis://127.0.0.1:1/0', prefix: 'test', name: 'a', timeoutMs: 50, processes: 2 }, pino({ level: 'silent' }));
  const share = new LocalShare(worker, perMs, 12, 100);
  assert.equal(share.boxes, 2, 'one box (no heartbeat yet), two workers');
  assert.equal(passes(share, 'k'), 6, 'burst 12 / 1 box / 2 workers');
  worker.boxes = 3; // the primary's heartbeat count, passed on
  assert.equal(share.boxes, 6);
  assert.equal(passes(share, 'k'), 2, 'burst 12 / 3 boxes / 2 workers');
});

test('a link tells its listeners when the box count changes (a primary passes it on to its workers), not when it stays', () => {
  const counted = link();
  const heard: number[] = [];
  const off = counted.onBoxes((count) => heard.push(count));
  counted.boxes = 3;
  counted.boxes = 3;
  counted.boxes = 2;
  off();
  counted.boxes = 5;
  assert.deepEqual(heard, [3, 2]);
});

test('a local share refills at rate / boxes', () => {
  const share = new LocalShare(link(4), 4 / 1000, 4, 100); // 4/s in all: 1/s for each of 4 boxes
  assert.equal(passes(share, 'k'), 1);
  const wait = share.take('k');
  assert.equal(wait, 1, 'one token a second: Retry-After 1');
});

test('Retry-After of a refused take is its wait in whole seconds, at least 1', () => {
  assert.equal(retryAfterSeconds(1), 1);
  assert.equal(retryAfterSeconds(1_000_000), 1);
  assert.equal(retryAfterSeconds(1_000_001), 2);
  assert.equal(retryAfterSeconds(59_500_000), 60);
});

test('rate_limit.scope is cluster (the default) or box; cluster.boxes is a whole number ≥ 1; others are refused at their line', () => {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  const cluster = (extra: string) => `cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\n${extra}`;
  const route = (rule: string) => `sites:\n  - routes:\n      - path: /\n        rate_limit: ${rule}\n        respond: { status: 200 }\n`;
  const config = parseConfig(cluster('  boxes: 3\n') + route('{ rate: 10/s }'), 'portico.yaml', tmpdir());
  assert.equal(config.cluster?.boxes, 3);
  const options = config.sites[0]!.routes[0]!.middlewares[0]!.options as { scope: string };
  assert.equal(options.scope, 'cluster');
  const box = parseConfig(route('{ rate: 10/s, scope: box }'), 'portico.yaml', tmpdir());
  assert.equal((box.sites[0]!.routes[0]!.middlewares[0]!.options as { scope: string }).scope, 'box');
  assert.match(configErrors(route('{ rate: 10/s, scope: fleet }'), tmpdir()).join('\n'), /portico\.yaml:4:\d+ .*rate_limit\.scope/);
  assert.match(configErrors(cluster('  boxes: 0\n') + route('{ rate: 10/s }'), tmpdir()).join('\n'), /portico\.yaml:4:\d+ cluster\.boxes/);
  assert.equal(parseConfig(cluster('') + route('{ rate: 10/s }'), 'portico.yaml', tmpdir()).cluster?.boxes, 1, 'default 1');
});
