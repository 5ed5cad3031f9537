/**
 * The product promise: an app server can be restarted under load without a single failed request, and it is
 * back in rotation as soon as its health checks say so.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { sleep } from './proxy-support.js';

const INTERVAL_MS = 200;
const RISE = 2;
const LOAD_MS = 6000;
const LOOPS = 4;

let backends: TestUpstream[] = [];
let portico: RunningPortico | undefined;
after(async () => {
  await portico?.stop();
  await Promise.all(backends.map((b) => b.stop()));
});

test('three app servers under steady load, one restarted: zero failed GETs, and it gets traffic again within rise × interval', async (t) => {
  /** When each backend answered an app request (not a health check). */
  const served: number[][] = [[], [], []];
  backends = await Promise.all(
    [0, 1, 2].map((i) =>
      startUpstream((req, res) => {
        if (req.url !== '/health') served[i]!.push(Date.now());
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`server ${i}`);
      }),
    ),
  );
  portico = await startPortico(
    `upstreams:\n  app:\n    servers: [${backends.map((b) => `{ url: "${b.url}" }`).join(', ')}]\n` +
      `    health: { path: /health, interval: ${INTERVAL_MS}ms, timeout: 500ms, rise: ${RISE}, fall: 1 }\n` +
      '    retries: 2\n' +
      'sites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\n',
  );
  const url = portico.url;

  let ok = 0;
  const failures: string[] = [];
  const end = Date.now() + LOAD_MS;
  const loop = async (n: number) => {
    for (let i = 0; Date.now() < end && i < 100_000; i++) {
      try {
        const res = await fetch(`${url}/loop${n}/${i}`);
        const body = await res.text();
        if (res.status === 200 && body.startsWith('server ')) ok++;
        else failures.push(`${res.status} ${body.slice(0, 60)}`);
      } catch (err) {
        failures.push(String((err as Error).cause ?? err));
      }
    }
  };
  const load = Promise.all(Array.from({ length: LOOPS }, (_, n) => loop(n)));

  const restarted = backends[1]!;
  await sleep(1000);
  await restarted.stop();
  const stoppedAt = Date.now();
  await sleep(1500);
  await restarted.restart();
  const backAt = Date.now();
  await load;

  assert.deepEqual(failures, [], `${failures.length} failed of ${ok + failures.length}`);
  assert.ok(ok > 200, `only ${ok} requests in ${LOAD_MS} ms`);
  const duringOutage = served[1]!.filter((t) => t > stoppedAt + 50 && t < backAt).length;
  assert.equal(duringOutage, 0, 'the stopped server answered nothing while down');
  const firstAfter = served[1]!.find((t) => t >= backAt);
  assert.ok(firstAfter !== undefined, 'the restarted server got traffic again');
  const delay = firstAfter - backAt;
  t.diagnostic(`${ok} requests, none failed; the restarted server was back in rotation ${delay} ms after it listened again`);
  assert.ok(delay <= RISE * INTERVAL_MS + 400, `back in rotation after ${delay} ms (rise × interval = ${RISE * INTERVAL_MS} ms)`);
  assert.ok(served[0]!.length > 0 && served[2]!.length > 0);
});
