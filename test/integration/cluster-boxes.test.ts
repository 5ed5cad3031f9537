/**
 * The cluster's boxes (docs/cluster.md, "Boxes and status"): three `portico run` boxes on one Redis announce
 * themselves by heartbeat; each lists every box on GET /status, `portico status` prints them, a box whose config
 * means something else is flagged by all until a reload fixes it, and a box that stops leaves the list.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { boxConfig, Boxes } from '../helpers/boxes.js';
import { boxMetrics, clusterOf, proxyBox, waitForBoxes } from '../helpers/cluster.js';
import { runCli } from '../helpers/process.js';
import { RedisServer } from '../helpers/redis.js';
import { eventually } from '../helpers/supervise.js';
import { requireTool } from '../helpers/tools.js';
import { startUpstream } from '../helpers/upstream.js';

test('three boxes list each other on /status within seconds, all flag the box with another config (until it is fixed and reloaded), portico status shows them, and a stopped box leaves the list', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const backend = await startUpstream('from the app');
  const base = proxyBox({ backend: backend.url });
  // Box 3 has one route more: its config means something else.
  const odd = proxyBox({ backend: backend.url, routes: '      - path: /health\n        respond: { status: 200, body: "ok" }\n' });
  let boxes: Boxes | undefined;
  try {
    boxes = await Boxes.start({ redis: redis.url, config: (box) => (box.index === 3 ? odd(box) : base(box)) });
    const all = boxes;
    const names = ['box1', 'box2', 'box3'];
    const started = Date.now();
    for (const box of all.boxes) await waitForBoxes(box, names);
    t.diagnostic(`every box listed all three ${Date.now() - started} ms after the last one started`);

    for (const box of all.boxes) {
      const cluster = await clusterOf(box);
      assert.equal(cluster.name, box.name);
      assert.equal(cluster.prefix, all.prefix);
      assert.equal(cluster.redis.up, true);
      assert.equal(cluster.digest_differs, true, `${box.name} flags the mismatch`);
      assert.equal(cluster.secret_differs, false, `${box.name}: the boxes share one secret`);
      const byName = new Map(cluster.boxes.map((b) => [b.name, b]));
      assert.deepEqual(cluster.boxes.filter((b) => b.self).map((b) => b.name), [box.name]);
      assert.deepEqual(cluster.boxes.filter((b) => b.digest_differs).map((b) => b.name), ['box3'], `${box.name} flags box3 alone`);
      assert.equal(byName.get('box1')!.digest, byName.get('box2')!.digest, 'boxes that differ only in their addresses and names agree');
      for (const other of all.boxes) {
        const seen = byName.get(other.name)!;
        assert.deepEqual(seen.address, [`${other.origin}/`]);
        assert.equal(seen.admin, other.admin);
        assert.equal(seen.pid, other.process.child.pid);
        assert.ok(seen.last_seen !== null && Date.now() - Date.parse(seen.last_seen) < 10_000, `${other.name} seen lately: ${seen.last_seen}`);
      }
    }
    assert.match(await boxMetrics(all.box(1)), /^portico_cluster_boxes 3$/m);
    assert.match(await boxMetrics(all.box(1)), /^portico_cluster_redis_up 1$/m);

    // `portico status` on box 1 (through its control socket) prints the Boxes table and the mismatch.
    const out = await runCli(['status', '-c', all.box(1).process.file], all.box(1).dir, 20_000);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^cluster {3}box1 in test:\S+: Redis up, 0 outages$/m);
    assert.match(out.stdout, /^MISMATCH {2}config digest differs from the cluster's \([0-9a-f]{16}\) on: box3$/m);
    assert.match(out.stdout, /^BOX +VERSION +DIGEST +ADDRESS +ADMIN +LAST SEEN$/m);
    assert.match(out.stdout, /^box1 \(this\) /m);
    assert.match(out.stdout, /^box3 +\S+ +[0-9a-f]{16} DIFFERS +http:\/\/127\.0\.0\.3:\d+\/ /m);
    for (const line of out.stdout.split('\n').filter((l) => /^(cluster|MISMATCH|BOX|box\d)/.test(l))) t.diagnostic(line);

    // Box 3's config fixed and reloaded: its heartbeat carries the new digest, and the mismatch is gone everywhere.
    const three = all.box(3);
    const reloaded = await three.process.reload(boxConfig({ redis: redis.url, config: base }, three, all.prefix));
    assert.match(reloaded.line, /config reloaded/);
    for (const box of all.boxes) {
      await eventually(async () => {
        const cluster = await clusterOf(box);
        return cluster.boxes.length === 3 && !cluster.digest_differs ? cluster : undefined;
      }, `${box.name} sees box3's new digest`, 10_000);
    }

    // Box 3 stops: it deletes its record, and the others drop it at their next beat.
    await all.box(3).process.stop();
    const stopped = Date.now();
    for (const box of all.boxes.slice(0, 2)) await waitForBoxes(box, ['box1', 'box2']);
    t.diagnostic(`box3 left both lists ${Date.now() - stopped} ms after it stopped`);
    assert.match(await boxMetrics(all.box(2)), /^portico_cluster_boxes 2$/m);
  } finally {
    await boxes?.stop();
    await backend.stop();
    await redis.stop();
  }
});
