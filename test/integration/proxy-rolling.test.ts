/**
 * The product promise: an app server can be restarted under load without a single failed request, and it is
 * back in rotation as soon as its health checks say so. Half the load goes through a cached route whose answers
 * are always revalidated: an answer served stale because no app could be reached (`detail=unreachable-stale`)
 * counts as a failure, so that the cache cannot mask one.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { settle, waitFor, watchUpstreamRequests } from './proxy-support.js';

const INTERVAL_MS = 200;
const RISE = 2;
/** Upper bound on the whole scenario; the load runs until the restarted server is back in rotation. */
const MAX_LOAD_MS = 30_000;
const LOOPS = 4;

let backends: TestUpstream[] = [];
let portico: RunningPortico | undefined;
const outcomes = watchUpstreamRequests('/health');
after(async () => {
  outcomes.stop();
  await portico?.stop();
  await Promise.all(backends.map((b) => b.stop()));
});

test('three app servers under steady load, one restarted: zero failed GETs, and it gets traffic again once rise checks have passed, before the next check', async (t) => {
  /** When each backend answered an app request (not a health check), and when it answered a health check. */
  const served: number[][] = [[], [], []];
  const checked: number[][] = [[], [], []];
  backends = await Promise.all(
    [0, 1, 2].map((i) =>
      startUpstream((req, res) => {
        (req.url === '/health' ? checked : served)[i]!.push(Date.now());
        // The cached route's answers are stored but stale at once: every request asks an app again.
        res.writeHead(200, req.url!.startsWith('/cached/') ? { 'content-type': 'text/plain', 'cache-control': 'max-age=0' } : { 'content-type': 'text/plain' });
        res.end(`server ${i}`);
      }),
    ),
  );
  portico = await startPortico(
    'caches:\n  main: { memory: 16MB }\n' +
      `upstreams:\n  app:\n    servers: [${backends.map((b) => `{ url: "${b.url}" }`).join(', ')}]\n` +
      `    health: { path: /health, interval: ${INTERVAL_MS}ms, timeout: 500ms, rise: ${RISE}, fall: 1 }\n` +
      '    retries: 2\n' +
      'sites:\n  - routes:\n      - path: /cached/\n        proxy: { upstream: app, cache: { zone: main } }\n' +
      '      - path: /\n        proxy: { upstream: app }\n',
  );
  const url = portico.url;

  let ok = 0;
  const failures: string[] = [];
  let loading = true;
  const end = Date.now() + MAX_LOAD_MS;
  const loop = async (n: number) => {
    for (let i = 0; loading && Date.now() < end && i < 100_000; i++) {
      try {
        // Loops 0 and 1 on the plain route, 2 and 3 on a few keys of the cached one.
        const res = await fetch(n < 2 ? `${url}/loop${n}/${i}` : `${url}/cached/loop${n}/${i % 8}`);
        const body = await res.text();
        const stale = /detail=unreachable-stale/.test(res.headers.get('cache-status') ?? '');
        if (res.status === 200 && body.startsWith('server ') && !stale) ok++;
        else failures.push(`${res.status} ${body.slice(0, 60)}${stale ? ' (served stale: no app reachable)' : ''}`);
      } catch (err) {
        failures.push(String((err as Error).cause ?? err));
      }
    }
  };
  const load = Promise.all(Array.from({ length: LOOPS }, (_, n) => loop(n)));

  const restarted = backends[1]!;
  try {
    // Steady load through all three first.
    await waitFor('load through every server', () => ok >= 100 && served.every((s) => s.length >= 20), 10_000);
    await restarted.stop();
    const stoppedAt = Date.now();
    // Portico notices (a failed check; fall: 1), and the load goes on through the other two meanwhile.
    const errored = outcomes.of(restarted.url).errored;
    await waitFor('a failed check of the stopped server', () => outcomes.of(restarted.url).errored > errored, 10_000, 5);
    await settle();
    const okAtDown = ok;
    await waitFor('load during the outage', () => ok >= okAtDown + 100, 10_000);
    const okDuringOutage = ok - okAtDown;
    await restarted.restart();
    const backAt = Date.now();
    await waitFor('app traffic at the restarted server', () => served[1]!.some((t) => t >= backAt), 10_000, 5);
    loading = false;
    await load;

    assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}`);
    assert.ok(okDuringOutage >= 100, `only ${okDuringOutage} requests while the server was down`);
    const duringOutage = served[1]!.filter((t) => t > stoppedAt + 50 && t < backAt).length;
    assert.equal(duringOutage, 0, 'the stopped server answered nothing while down');
    const firstAfter = served[1]!.find((t) => t >= backAt)!;
    const checksAfter = checked[1]!.filter((t) => t >= backAt);
    const delay = firstAfter - backAt;
    t.diagnostic(`${ok} requests, none failed; the restarted server was back in rotation ${delay} ms after it listened again, ${checksAfter.filter((c) => c <= firstAfter).length} checks after`);
    // Back in rotation within rise × interval: before the check that follows the rise-th passing one.
    const nextCheck = checksAfter[RISE];
    assert.ok(
      nextCheck === undefined || firstAfter <= nextCheck,
      `first app request ${delay} ms after the restart; check ${RISE + 1} came at ${nextCheck! - backAt} ms (rise = ${RISE}, interval = ${INTERVAL_MS} ms)`,
    );
    assert.ok(served[0]!.length > 0 && served[2]!.length > 0);
  } finally {
    loading = false;
    await load;
  }
});
