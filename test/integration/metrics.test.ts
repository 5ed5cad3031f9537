/**
 * Counting in a real Portico: requests sent to static, proxy and cached routes (a real backend behind), then the
 * figures of `statusReport()` and of the Prometheus text of `metricsText()` are exactly what was sent. Without an
 * `admin` section nothing is counted.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test, type TestContext } from 'node:test';
import type { StatusReport } from '../../src/control/admin-types.js';
import { parseConfig } from '../../src/server/config.js';
import { requestText, type TextAnswer } from '../helpers/http-text.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { h2Get, h2Session, httpsGet, testPki, type TestPki } from './tls-support.js';

/** One GET with `Host: localhost` (by default on a connection of its own). */
function get(port: number, path: string, agent: http.Agent | false = false): Promise<TextAnswer> {
  return requestText(port, path, { agent, host: 'localhost' });
}

/**
 * Polls `read` until `done` holds of its value (a request is counted when its response closes on the server, just
 * after the client has read its end): at most 200 reads, 10 ms apart.
 */
async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string): Promise<T> {
  let value = await read();
  for (let i = 0; i < 200 && !done(value); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    value = await read();
  }
  assert.ok(done(value), `waited 2 s for ${what}; last: ${JSON.stringify(value, null, 1).slice(0, 2000)}`);
  return value;
}

/** The value of one sample in Prometheus text (`name{labels}`), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const SITE = `caches:
  main: { memory: 1MB }
sites:
  - routes:
      - path: /static/
        static: { root: ./www }
      - path: /api/
        proxy: { upstream: app }
      - path: /cached/
        proxy: { upstream: app, cache: { zone: main } }`;

describe('counting with admin on', () => {
  let backend: TestUpstream;
  let portico: RunningPortico;
  const deadPort = 9; // discard: nothing listens on it on loopback

  before(async () => {
    backend = await startUpstream((req, res) => {
      if (req.url === '/health') return void res.end('ok');
      if (req.url!.startsWith('/api/fail')) {
        res.writeHead(500);
        return void res.end('failed');
      }
      const cc = req.url === '/cached/swr' ? 'max-age=0, stale-while-revalidate=60' : req.url!.startsWith('/cached/') ? 'max-age=60' : 'no-store';
      res.writeHead(200, { 'cache-control': cc, 'content-type': 'text/plain' });
      res.end(`page ${req.url}`);
    });
    portico = await startPortico(
      `admin: {}
upstreams:
  app:
    servers:
      - { url: "${backend.url}", name: one }
      - { url: "http://127.0.0.1:${deadPort}", name: dead, backup: true }
    health: { path: /health, interval: 100ms, timeout: 500ms, fall: 1, rise: 1 }
${SITE}`,
      { 'www/static/a.txt': 'static file' },
    );
  });
  after(async () => {
    await portico?.stop();
    await backend?.stop();
  });

  test('statusReport() and metricsText() give exactly the requests sent, by route, class, upstream server and cache result', async (t: TestContext) => {
    const sent = { static: 5, api: 4, fail: 2, cached: 3, unrouted: 1 };
    for (let i = 0; i < sent.static; i++) assert.equal((await get(portico.port, '/static/a.txt')).status, 200);
    for (let i = 0; i < sent.api; i++) assert.equal((await get(portico.port, `/api/x${i}`)).status, 200);
    for (let i = 0; i < sent.fail; i++) assert.equal((await get(portico.port, '/api/fail')).status, 500);
    for (let i = 0; i < sent.cached; i++) assert.equal((await get(portico.port, '/cached/page')).body, 'page /cached/page');
    assert.equal((await get(portico.port, '/nothing-here')).status, 404);
    const total = Object.values(sent).reduce((a, b) => a + b, 0);
    const report = await until(() => portico.server.statusReport(), (r) => r.totals.requests === total && r.upstreams[0]!.servers[1]!.last_check !== null, `${total} requests counted`);
    t.diagnostic(`sent ${JSON.stringify(sent)}; counted ${report.totals.requests}`);

    assert.equal(report.counting, true);
    assert.match(report.config_digest, /^[0-9a-f]{16}$/);
    assert.ok(Date.parse(report.started) <= Date.now());
    assert.deepEqual(report.totals.classes, { '1xx': 0, '2xx': 12, '3xx': 0, '4xx': 1, '5xx': 2 });
    assert.equal(report.totals.latency.count, total);
    assert.equal(report.totals.latency.buckets.at(-1), total);

    const route = (id: string) => report.routes.find((r) => r.id === id)!;
    assert.deepEqual(
      report.routes.map((r) => [r.id, r.handler, r.requests]),
      [
        ['*/static/', 'static', 5],
        ['*/api/', 'proxy', 6],
        ['*/cached/', 'proxy', 3],
      ],
    );
    assert.deepEqual(route('*/api/').classes, { '1xx': 0, '2xx': 4, '3xx': 0, '4xx': 0, '5xx': 2 });
    assert.ok(route('*/static/').latency_ms.p50! > 0 && route('*/static/').latency_ms.p99! >= route('*/static/').latency_ms.p50!);
    assert.equal('histogram' in route('*/api/'), false);

    const app = report.upstreams[0]!;
    assert.equal(app.name, 'app');
    // 6 forwarded by /api/, 1 miss of /cached/ (the 2 hits never reached the backend).
    assert.equal(app.requests, 7);
    assert.equal(backend.requests.filter((r) => r.url !== '/health').length, 7);
    const [one, dead] = app.servers;
    assert.deepEqual([one!.id, one!.state, one!.requests, one!.classes['5xx'], one!.in_flight, one!.weight, one!.backup], ['one', 'healthy', 7, 2, 0, 1, false]);
    assert.deepEqual([dead!.id, dead!.state, dead!.requests, dead!.backup], ['dead', 'unhealthy', 0, true]);
    assert.equal(dead!.last_check!.ok, false);
    assert.equal(one!.last_check!.ok, true);

    assert.deepEqual(report.caches, [{ zone: 'main', entries: 1, bytes: report.caches[0]!.bytes, hits: 2, misses: 1, stale: 0, hit_ratio: 0.6667 }]);
    assert.ok(report.caches[0]!.bytes > 'page /cached/page'.length);

    const { contentType, body } = await portico.server.metricsText();
    assert.match(contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(sample(body, 'portico_http_requests_total{route="*/static/",class="2xx"}'), 5);
    assert.equal(sample(body, 'portico_http_requests_total{route="*/api/",class="5xx"}'), 2);
    assert.equal(sample(body, 'portico_http_requests_total{route="-",class="4xx"}'), 1);
    assert.equal(sample(body, 'portico_http_request_duration_seconds_count{route="*/cached/"}'), 3);
    assert.equal(sample(body, 'portico_http_request_duration_seconds_bucket{le="+Inf",route="*/api/"}'), 6);
    assert.equal(sample(body, 'portico_upstream_requests_total{upstream="app",server="one",class="2xx"}'), 5);
    assert.equal(sample(body, 'portico_upstream_request_duration_seconds_count{upstream="app",server="one"}'), 7);
    assert.equal(sample(body, 'portico_upstream_server_up{upstream="app",server="one"}'), 1);
    assert.equal(sample(body, 'portico_upstream_server_up{upstream="app",server="dead"}'), 0);
    assert.equal(sample(body, 'portico_upstream_server_state{upstream="app",server="dead",state="unhealthy"}'), 1);
    assert.equal(sample(body, 'portico_upstream_server_in_flight{upstream="app",server="one"}'), 0);
    assert.equal(sample(body, 'portico_cache_requests_total{zone="main",result="hit"}'), 2);
    assert.equal(sample(body, 'portico_cache_requests_total{zone="main",result="miss"}'), 1);
    assert.equal(sample(body, 'portico_cache_served_bytes_total{zone="main"}'), 2 * 'page /cached/page'.length);
    assert.equal(sample(body, 'portico_cache_entries{zone="main",tier="memory"}'), 1);
    assert.ok(sample(body, 'process_cpu_user_seconds_total')! > 0, 'process metrics are there');
  });

  test('a stored answer served stale (stale-while-revalidate) counts as stale, its bytes as served from the cache', async () => {
    const before = (await portico.server.statusReport()).caches[0]!;
    assert.equal((await get(portico.port, '/cached/swr')).status, 200); // a miss: stored, stale at once
    assert.equal((await get(portico.port, '/cached/swr')).body, 'page /cached/swr'); // stale, refreshed behind
    const report = await until(() => portico.server.statusReport(), (r) => r.caches[0]!.stale === before.stale + 1, 'the stale answer counted');
    const cache = report.caches[0]!;
    assert.deepEqual([cache.hits - before.hits, cache.misses - before.misses, cache.stale - before.stale], [0, 1, 1]);
    const { body } = await portico.server.metricsText();
    assert.equal(sample(body, 'portico_cache_requests_total{zone="main",result="stale"}'), cache.stale);
    assert.equal(sample(body, 'portico_cache_served_bytes_total{zone="main"}'), 2 * 'page /cached/page'.length + 'page /cached/swr'.length);
  });

  test('an open keep-alive connection shows in connections.open and portico_connections_open', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      await get(portico.port, '/static/a.txt', agent);
      const report = await until(() => portico.server.statusReport(), (r) => r.connections.open === 1, 'one connection open');
      assert.equal(report.connections.streams, 0);
      assert.equal(sample((await portico.server.metricsText()).body, 'portico_connections_open'), 1);
    } finally {
      agent.destroy();
    }
    await until(() => portico.server.statusReport(), (r) => r.connections.open === 0, 'the connection closed');
  });

  test('a reload keeps the counts: a route of the same id goes on from where it was', async () => {
    const before = (await portico.server.statusReport()).routes.find((r) => r.id === '*/static/')!.requests;
    const config = parseConfig(`listen: ["127.0.0.1:${portico.port}"]\nlog: { access: off }\nadmin: {}\nupstreams:\n  app: { servers: [{ url: "${backend.url}", name: one }] }\n${SITE}`, `${portico.dir}/portico.yaml`, portico.dir);
    await portico.server.reload(config);
    await get(portico.port, '/static/a.txt');
    const report = await until(() => portico.server.statusReport(), (r) => r.routes.find((x) => x.id === '*/static/')!.requests === before + 1, 'the request after the reload');
    assert.deepEqual(report.upstreams[0]!.servers.map((s) => s.id), ['one']);
  });
});

describe('counting with admin off', () => {
  test('nothing is counted, the report says so, and the metrics text has process metrics only', async () => {
    const backend = await startUpstream('ok');
    const portico = await startPortico(`upstreams:\n  app: { servers: [{ url: "${backend.url}" }] }\n${SITE}`, { 'www/static/a.txt': 'static file' });
    try {
      for (let i = 0; i < 3; i++) await get(portico.port, '/static/a.txt');
      await get(portico.port, '/api/x');
      const report: StatusReport = await portico.server.statusReport();
      assert.equal(report.counting, false);
      assert.equal(report.totals.requests, 0);
      assert.deepEqual(report.routes, []);
      assert.equal(report.upstreams[0]!.servers[0]!.requests, 0);
      assert.equal(report.upstreams[0]!.servers[0]!.state, 'healthy');
      assert.equal(report.upstreams[0]!.servers[0]!.id, encodeURIComponent(backend.url));
      const { body } = await portico.server.metricsText();
      assert.doesNotMatch(body, /^portico_http_requests_total\{/m);
      assert.match(body, /^process_cpu_user_seconds_total /m);
    } finally {
      await portico.stop();
      await backend.stop();
    }
  });
});

describe('counting turned on by a reload', () => {
  test('a reload that adds admin starts counting, an upstream it kept included; one that removes it stops', async () => {
    const backend = await startUpstream('ok');
    const upstreams = `upstreams:\n  app: { servers: [{ url: "${backend.url}", name: one }] }\n`;
    const portico = await startPortico(`${upstreams}${SITE}`, { 'www/static/a.txt': 'static file' });
    const reload = (admin: boolean) =>
      portico.server.reload(
        parseConfig(`listen: ["127.0.0.1:${portico.port}"]\nlog: { access: off }\n${admin ? 'admin: {}\n' : ''}${upstreams}${SITE}`, `${portico.dir}/portico.yaml`, portico.dir),
      );
    try {
      await get(portico.port, '/api/before');
      await reload(true);
      await get(portico.port, '/api/after');
      const report = await until(() => portico.server.statusReport(), (r) => r.totals.requests === 1, 'the request after the reload');
      assert.equal(report.counting, true);
      assert.equal(report.routes.find((r) => r.id === '*/api/')!.requests, 1);
      assert.equal(report.upstreams[0]!.servers[0]!.requests, 1);
      await reload(false);
      await get(portico.port, '/api/off');
      const off = await portico.server.statusReport();
      assert.equal(off.counting, false);
      assert.equal(off.upstreams[0]!.servers[0]!.requests, 0);
    } finally {
      await portico.stop();
      await backend.stop();
    }
  });
});

describe('TLS handshakes and certificates', () => {
  let pki: TestPki;
  before(async () => {
    pki = await testPki();
  });

  test('an HTTP/2 request being answered shows in connections.streams and portico_http2_streams_open', async () => {
    const cert = await pki.issue(['a.example']);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let arrived!: () => void;
    const arrival = new Promise<void>((resolve) => (arrived = resolve));
    const backend = await startUpstream((_req, res) => {
      arrived();
      void held.then(() => res.end('late'));
    });
    const portico = await startPortico(
      `listen: [{ addr: "127.0.0.1:0", tls: { cert: ./a.pem, key: ./a.key } }]\nadmin: {}\nupstreams:\n  app: { servers: [{ url: "${backend.url}" }] }\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }`,
      { 'a.pem': cert.cert, 'a.key': cert.key },
    );
    const session = await h2Session(portico.port, pki.ca.cert, 'a.example');
    try {
      const answer = h2Get(session, 'a.example', '/slow');
      await arrival;
      const report = await portico.server.statusReport();
      assert.deepEqual(report.connections, { open: 1, streams: 1 });
      assert.equal(report.upstreams[0]!.servers[0]!.in_flight, 1);
      const { body } = await portico.server.metricsText();
      assert.equal(sample(body, 'portico_http2_streams_open'), 1);
      assert.equal(sample(body, `portico_upstream_server_in_flight{upstream="app",server="${encodeURIComponent(backend.url)}"}`), 1);
      release();
      assert.equal((await answer).body, 'late');
      await until(() => portico.server.statusReport(), (r) => r.connections.streams === 0 && r.totals.classes['2xx'] === 1, 'the stream closed and counted');
    } finally {
      release();
      session.close();
      await portico.stop();
      await backend.stop();
    }
  });

  test('handshakes are counted by version, failures apart; the certificate and its expiry are reported', async () => {
    const cert = await pki.issue(['a.example']);
    const portico = await startPortico(
      `listen: [{ addr: "127.0.0.1:0", tls: { cert: ./a.pem, key: ./a.key } }]\nadmin: {}\nsites:\n  - hosts: [a.example]\n    tls: { cert: ./a.pem, key: ./a.key }\n    routes:\n      - path: /\n        respond: { status: 200, body: hi }`,
      { 'a.pem': cert.cert, 'a.key': cert.key },
    );
    try {
      for (const maxVersion of ['TLSv1.3', 'TLSv1.2', 'TLSv1.3'] as const) {
        assert.equal((await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'a.example', maxVersion })).status, 200);
      }
      // A client that trusts another CA gives up in the handshake: a failure on Portico's side too.
      await assert.rejects(httpsGet({ port: portico.port, ca: (await testPki()).ca.cert, servername: 'a.example' }));
      const text = await until(
        async () => (await portico.server.metricsText()).body,
        (body) => sample(body, 'portico_tls_handshake_errors_total') === 1,
        'the failed handshake counted',
      );
      assert.equal(sample(text, 'portico_tls_handshakes_total{version="TLSv1.3"}'), 2);
      assert.equal(sample(text, 'portico_tls_handshakes_total{version="TLSv1.2"}'), 1);
      const report = await portico.server.statusReport();
      assert.equal(report.certificates.length, 1);
      const [certificate] = report.certificates;
      assert.deepEqual(certificate!.hosts, ['a.example']);
      assert.equal(certificate!.source, 'file');
      assert.ok(certificate!.days_left >= 0 && certificate!.days_left <= 2, `days_left ${certificate!.days_left}`);
      assert.equal(sample(text, 'portico_certificate_expiry_seconds{hosts="a.example"}'), Math.floor(Date.parse(certificate!.not_after) / 1000));
    } finally {
      await portico.stop();
    }
  });
});
