/**
 * `workers: 2` with counting on: a real primary and two real worker processes (test/helpers/primary-status.ts);
 * requests spread over both workers (each on a connection of its own) are summed in the primary's status report
 * and its aggregated Prometheus text, and a worker that does not answer within 2 s is left out and marked so.
 */
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test, type TestContext } from 'node:test';
import type { StatusReport } from '../../src/control/admin-types.js';
import { requestText as get } from '../helpers/http-text.js';
import { makeTree } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/primary-status.js');

/** The next message of type `t` from the primary, within `ms`. */
function reply<T>(child: ChildProcess, t: string, ms = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('message', onMessage);
      reject(new Error(`no ${t} message from the primary within ${ms} ms`));
    }, ms);
    const onMessage = (message: { t: string } & T) => {
      if (message.t !== t) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolve(message);
    };
    child.on('message', onMessage);
  });
}

async function status(child: ChildProcess): Promise<StatusReport> {
  const answer = reply<{ report: StatusReport }>(child, 'status');
  child.send({ t: 'status' });
  return (await answer).report;
}

async function metrics(child: ChildProcess): Promise<string> {
  const answer = reply<{ text: string }>(child, 'metrics');
  child.send({ t: 'metrics' });
  return (await answer).text;
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

let backend: TestUpstream;
let primary: ChildProcess;
let port: number;
let workers: Array<{ slot: number; pid: number }>;
const dir = makeTree({ 'www/static/a.txt': 'static file' });
/** Which worker (pid) forwarded each request to the backend. */
const seen = new Set<string>();
/** Every request the first test counted (both workers). */
let counted = 0;

before(async () => {
  backend = await startUpstream((req, res) => {
    seen.add(String(req.headers['x-worker']));
    res.end('ok');
  });
  const file = path.join(dir, 'portico.yaml');
  writeFileSync(
    file,
    `listen: ["127.0.0.1:0"]
log: { access: off }
workers: 2
admin: {}
upstreams:
  app: { servers: [{ url: "${backend.url}", name: one }] }
sites:
  - routes:
      - path: /static/
        static: { root: ./www }
      - path: /api/
        proxy: { upstream: app, set_headers: { X-Worker: "$pid" } }
`,
  );
  primary = fork(FIXTURE, [file], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const ready = await reply<{ workers: Array<{ slot: number; pid: number }>; port: number }>(primary, 'ready', 30_000);
  workers = ready.workers;
  port = ready.port;
});

after(async () => {
  if (primary !== undefined && primary.exitCode === null) {
    for (const w of workers ?? []) {
      try {
        process.kill(w.pid, 'SIGCONT');
      } catch {
        // gone already
      }
    }
    const exited = once(primary, 'exit');
    primary.send({ t: 'stop' });
    await exited;
  }
  await backend?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('the primary sums both workers\' counts in statusReport() and metricsText()', async (t: TestContext) => {
  // Until both workers have forwarded requests (bounded: 200 requests), then 10 static ones.
  let api = 0;
  while ((seen.size < 2 || api < 10) && api < 200) {
    assert.equal((await get(port, `/api/${api}`)).status, 200);
    api++;
  }
  assert.equal(seen.size, 2, `both workers forwarded requests (pids seen: ${[...seen].join(', ')})`);
  for (let i = 0; i < 10; i++) assert.equal((await get(port, '/static/a.txt')).status, 200);
  const total = api + 10;
  let report = await status(primary);
  for (let i = 0; i < 200 && report.totals.requests < total; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    report = await status(primary);
  }
  t.diagnostic(`${api} proxied and 10 static requests over 2 workers (pids ${[...seen].join(', ')}); counted ${report.totals.requests}`);
  assert.equal(report.counting, true);
  assert.deepEqual(report.workers?.map((w) => [w.slot, w.answered]), [[1, true], [2, true]]);
  assert.equal(report.totals.requests, total);
  counted = total;
  assert.equal(report.totals.classes['2xx'], total);
  assert.equal(report.totals.latency.count, total);
  assert.deepEqual(report.routes.map((r) => [r.id, r.requests]), [['*/static/', 10], ['*/api/', api]]);
  const server = report.upstreams[0]!.servers[0]!;
  assert.deepEqual([server.id, server.requests, server.classes['2xx'], server.in_flight, server.state], ['one', api, api, 0, 'healthy']);
  assert.notEqual(report.routes[1]!.latency_ms.p50, null);

  const text = await metrics(primary);
  assert.equal(sample(text, 'portico_http_requests_total{route="*/api/",class="2xx"}'), api);
  assert.equal(sample(text, 'portico_http_requests_total{route="*/static/",class="2xx"}'), 10);
  assert.equal(sample(text, 'portico_http_request_duration_seconds_count{route="*/api/"}'), api);
  assert.equal(sample(text, 'portico_http_request_duration_seconds_bucket{le="+Inf",route="*/static/"}'), 10);
  assert.equal(sample(text, 'portico_upstream_requests_total{upstream="app",server="one",class="2xx"}'), api);
  assert.equal(sample(text, 'portico_upstream_server_up{upstream="app",server="one"}'), 1);
  assert.equal(sample(text, 'portico_workers_answered'), 2);
  assert.ok(sample(text, 'process_resident_memory_bytes')! > 0);
});

test('two scrapes in a row never print NaN: the event loop gauges with no sample since the last scrape are left out', async () => {
  const first = await metrics(primary);
  const second = await metrics(primary);
  for (const text of [first, second]) {
    assert.doesNotMatch(text, /\b(Nan|NaN)\b/, text.split('\n').filter((l) => /nan/i.test(l)).join('\n'));
    const mean = sample(text, 'nodejs_eventloop_lag_mean_seconds');
    assert.ok(mean === undefined || (mean >= 0 && Number.isFinite(mean)), `mean ${mean}`);
  }
});

test('a worker that does not answer within 2 s is left out, and the report says which', async () => {
  const stopped = workers[1]!;
  process.kill(stopped.pid, 'SIGSTOP');
  try {
    const started = Date.now();
    const report = await status(primary);
    const waited = Date.now() - started;
    assert.ok(waited >= 1900 && waited < 8000, `answered after ${waited} ms`);
    assert.deepEqual(report.workers?.map((w) => [w.slot, w.answered]), [[1, true], [2, false]]);
    // Only worker 1's figures: fewer than both workers counted (each forwarded some).
    assert.ok(report.totals.requests > 0 && report.totals.requests < counted, `${report.totals.requests} of ${counted}`);
    const text = await metrics(primary);
    assert.equal(sample(text, 'portico_workers_answered'), 1);
  } finally {
    process.kill(stopped.pid, 'SIGCONT');
  }
  const report = await status(primary);
  assert.deepEqual(report.workers?.map((w) => w.answered), [true, true]);
});
