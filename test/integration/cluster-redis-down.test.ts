/**
 * Redis killed under load on three boxes (issue 19, "What must be shown"): no client request fails, each box logs
 * the outage once and its end once, runs on its local fallbacks meanwhile (counted), and re-syncs when Redis is
 * back (its heartbeat rewritten into the empty Redis: every box lists all three again).
 *
 * The run is one function, `redisDownUnderLoad`, that returns what it measured: a feature with state in Redis
 * (rate limits, the shared cache, operator actions) adds its routes to the box config and its assertions on the
 * returned counts and boxes, without a second run of its own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Boxes } from '../helpers/boxes.js';
import { boxMetrics, clusterOf, describeClusterLoad, loadAcrossBoxes, proxyBox, waitForBoxes, type ClusterLoadReport, type ProxyBoxOptions } from '../helpers/cluster.js';
import { RedisServer } from '../helpers/redis.js';
import { eventually } from '../helpers/supervise.js';
import { requireTool } from '../helpers/tools.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import type { ClusterStatus } from '../../src/control/admin-types.js';

const NAMES = ['box1', 'box2', 'box3'];
/** Requests per second on each box, and how many answers each phase waits for (over all boxes). */
const RATE = 30;
const PER_PHASE = 150;

/** What one run measured. */
interface RedisDownRun {
  load: ClusterLoadReport;
  /** Each box's cluster status while Redis was down, and after it came back. */
  during: Map<string, ClusterStatus>;
  after: Map<string, ClusterStatus>;
  /** Each box's stderr from the kill on. */
  logs: Map<string, string>;
  /** Each box's /metrics after. */
  metrics: Map<string, string>;
  backend: TestUpstream;
  downMs: number;
}

/** What a feature's test adds to the run. */
interface RedisDownOptions {
  /** The paths the load requests in turn (default `/`, `/a`, `/b`). */
  paths?: readonly string[];
  /** Routes or config added to every box (`proxyBox`'s options but the backend). */
  box?: Omit<ProxyBoxOptions, 'backend'>;
  /** Called once every box reports Redis down (the load still running): a feature checks its fallback here. */
  whileDown?(boxes: Boxes): Promise<void>;
  /** Called once every box has re-synced (the load still running): a feature checks it is cluster-wide again. */
  afterBack?(boxes: Boxes): Promise<void>;
}

/**
 * Three boxes proxying to one backend under a steady load: Redis killed once `PER_PHASE` answers came, restarted
 * once `PER_PHASE` more came while it was down (and every box's heartbeat fell back), the load stopped once every
 * box re-synced and `PER_PHASE` more came. See `RedisDownOptions` for what a feature adds.
 */
async function redisDownUnderLoad(options: RedisDownOptions = {}): Promise<RedisDownRun> {
  const paths = options.paths ?? ['/', '/a', '/b'];
  const redis = await RedisServer.start();
  const backend = await startUpstream('from the app');
  let boxes: Boxes | undefined;
  try {
    boxes = await Boxes.start({ redis: redis.url, config: proxyBox({ ...options.box, backend: backend.url }) });
    const all = boxes;
    for (const box of all.boxes) await waitForBoxes(box, NAMES);
    const load = loadAcrossBoxes(all, { paths, rate: RATE, maxMs: 30_000 });
    const answered = (n: number, what: string) => eventually(() => load.answered() >= n || undefined, what, 15_000);
    await answered(PER_PHASE, 'answers before the kill');

    const marks = new Map(all.boxes.map((box) => [box.name, box.process.stderr.length]));
    await redis.kill();
    const killed = Date.now();
    for (const box of all.boxes) await box.process.waitForLine(/Redis unreachable/, marks.get(box.name)!, 10_000);
    const during = new Map<string, ClusterStatus>();
    for (const box of all.boxes) during.set(box.name, await eventually(async () => {
      const cluster = await clusterOf(box);
      // Down, and a heartbeat fell back meanwhile (the outage spans a beat).
      return !cluster.redis.up && (cluster.redis.fallbacks.heartbeat ?? 0) >= 1 ? cluster : undefined;
    }, `${box.name} reports Redis down and a heartbeat fallback`));
    const atKill = load.answered();
    await options.whileDown?.(all);
    await answered(atKill + PER_PHASE, 'answers while Redis is down');

    await redis.restart();
    const downMs = Date.now() - killed;
    const back = Date.now();
    for (const box of all.boxes) await box.process.waitForLine(/Redis reachable again/, marks.get(box.name)!, 15_000);
    const after = new Map<string, ClusterStatus>();
    for (const box of all.boxes) after.set(box.name, await waitForBoxes(box, NAMES, back, 10_000));
    const atBack = load.answered();
    await options.afterBack?.(all);
    await answered(atBack + PER_PHASE, 'answers after Redis is back');
    const report = await load.stop();

    const logs = new Map(all.boxes.map((box) => [box.name, box.process.stderr.slice(marks.get(box.name))]));
    const metrics = new Map<string, string>();
    for (const box of all.boxes) metrics.set(box.name, await boxMetrics(box));
    return { load: report, during, after, logs, metrics, backend, downMs };
  } finally {
    await boxes?.stop();
    await backend.stop();
    await redis.stop();
  }
}

test('Redis killed under load on three boxes: zero failed requests, each box logs the outage and its end once, and re-syncs its heartbeat when Redis is back', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const run = await redisDownUnderLoad();
  for (const line of describeClusterLoad(run.load)) t.diagnostic(line);
  t.diagnostic(`Redis down for ${run.downMs} ms; the backend saw ${run.backend.requests.length} requests`);

  assert.equal(run.load.failed, 0, 'no client request failed');
  assert.ok(run.load.ok >= 3 * PER_PHASE, `${run.load.ok} answers`);
  for (const [name, box] of run.load.boxes) assert.ok(box.ok > 0, `${name} answered under load`);
  assert.equal(run.backend.requests.length, run.load.ok, 'every answer came from the app');

  for (const name of NAMES) {
    const log = run.logs.get(name)!;
    assert.equal(log.match(/Redis unreachable/g)?.length, 1, `${name} logs the outage once:\n${log}`);
    assert.equal(log.match(/Redis reachable again/g)?.length, 1, `${name} logs its end once`);

    const during = run.during.get(name)!;
    assert.equal(during.redis.up, false);
    assert.notEqual(during.redis.down_since, null);
    assert.deepEqual(during.boxes.map((b) => b.name), NAMES, `${name} keeps the boxes it last saw while Redis is away`);

    const after = run.after.get(name)!;
    assert.equal(after.redis.up, true);
    assert.equal(after.redis.down_since, null);
    assert.equal(after.redis.outages, 1);
    assert.ok((after.redis.fallbacks.heartbeat ?? 0) >= 1, `${name} counted its heartbeats' fallbacks: ${JSON.stringify(after.redis.fallbacks)}`);
    assert.equal(after.digest_differs, false);

    const metrics = run.metrics.get(name)!;
    assert.match(metrics, /^portico_cluster_redis_up 1$/m);
    assert.match(metrics, /^portico_cluster_boxes 3$/m);
    assert.match(metrics, /^portico_cluster_outages_total 1$/m);
    assert.match(metrics, /^portico_cluster_fallbacks_total\{feature="heartbeat"\} [1-9]\d*$/m);
  }
});
