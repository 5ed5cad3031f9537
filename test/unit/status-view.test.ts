/**
 * `portico status` as tables (src/control/status-view.ts): a fixed StatusReport printed with colour off and on,
 * and an older Portico's answer with fewer fields.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { StatusReport } from '../../src/control/admin-types.js';
import { statusLines } from '../../src/control/status-view.js';

const NOW = Date.parse('2026-12-06T04:00:00.000Z');
const none = { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 };

const report: StatusReport = {
  version: '0.1.0',
  pid: 4242,
  started: '2026-12-06T03:56:48.000Z',
  uptime_s: 192,
  config: '/srv/portico.yaml',
  config_digest: '0123456789abcdef',
  state_dir: '/srv/var',
  control_socket: '/srv/var/control.sock',
  admin: 'http://127.0.0.1:9901/',
  listeners: [{ address: '127.0.0.1:8080', url: 'http://127.0.0.1:8080/' }],
  workers: null,
  running: null,
  queued: 0,
  instances: [],
  counting: true,
  connections: { open: 3, streams: 1 },
  totals: { requests: 12345, classes: { ...none, '2xx': 12000, '4xx': 300, '5xx': 45 }, latency: { bounds_ms: [5, 10], buckets: [10000, 12000], count: 12345, sum_ms: 40000 } },
  routes: [
    { id: '*/', handler: 'static', requests: 10000, classes: { ...none, '2xx': 9700, '3xx': 300 }, latency_ms: { p50: 0.84, p90: 2, p99: 4.5 } },
    { id: 'a.example/api/', handler: 'proxy', requests: 2345, classes: { ...none, '2xx': 2000, '4xx': 300, '5xx': 45 }, latency_ms: { p50: 12.4, p90: 80, p99: 1530 } },
  ],
  upstreams: [
    {
      name: 'app',
      spawned: false,
      requests: 2345,
      classes: { ...none, '2xx': 2300, '5xx': 45 },
      latency_ms: { p50: 12, p90: 80, p99: 1500 },
      servers: [
        {
          id: 'one',
          address: 'http://127.0.0.1:3001',
          state: 'healthy',
          admin: 'enabled',
          backup: false,
          weight: 1,
          configured_weight: 1,
          in_flight: 2,
          failures: 0,
          ejections: 0,
          last_check: { at: '2026-12-06T03:59:57.000Z', ok: true },
          requests: 1200,
          classes: { ...none, '2xx': 1200 },
          latency_ms: { p50: 11, p90: 40, p99: 90 },
        },
        {
          id: 'two',
          address: 'http://127.0.0.1:3002',
          state: 'unhealthy',
          admin: 'enabled',
          backup: false,
          weight: 5,
          configured_weight: 2,
          in_flight: 0,
          failures: 3,
          ejections: 1,
          last_check: { at: '2026-12-06T03:59:58.000Z', ok: false },
          requests: 1145,
          classes: { ...none, '2xx': 1100, '5xx': 45 },
          latency_ms: { p50: 14, p90: 300, p99: 2500 },
        },
        {
          id: 'spare',
          address: 'http://127.0.0.1:3003',
          state: 'draining',
          admin: 'draining',
          backup: true,
          weight: 1,
          configured_weight: 1,
          in_flight: 0,
          failures: 0,
          ejections: 0,
          last_check: null,
          requests: 0,
          classes: none,
          latency_ms: { p50: null, p90: null, p99: null },
        },
      ],
    },
  ],
  caches: [{ zone: 'pages', entries: 120, bytes: 1572864, hits: 900, misses: 100, stale: 4, hit_ratio: 0.9 }],
  certificates: [
    { hosts: ['a.example', 'www.a.example'], source: 'acme', not_after: '2027-02-01T00:00:00.000Z', days_left: 57, last_renewal: '2026-11-03T00:00:00.000Z', last_renewal_error: null },
    { hosts: ['b.example'], source: 'file', not_after: '2026-12-09T00:00:00.000Z', days_left: 2, last_renewal: null, last_renewal_error: 'rate limited' },
  ],
};

const plain = statusLines(report as unknown as Record<string, unknown>, { colour: false, now: NOW });
const text = plain.join('\n');

/** The line of a table whose first cells match `start`, split on runs of two or more blanks. */
function row(start: RegExp): string[] {
  const line = plain.find((l) => start.test(l));
  assert.ok(line, `a line matching ${start} in:\n${text}`);
  return line.split(/ {2,}/).map((c) => c.trim());
}

test('status prints the process lines first, as before the tables, plus the admin URL, config digest, connections and traffic', () => {
  assert.equal(plain[0], 'portico 0.1.0: pid 4242, up 3m 12s');
  assert.match(text, /^config {4}\/srv\/portico\.yaml \(0123456789abcdef\)$/m);
  assert.match(text, /^listen {4}http:\/\/127\.0\.0\.1:8080\/$/m);
  assert.match(text, /^admin {5}http:\/\/127\.0\.0\.1:9901\/$/m);
  assert.match(text, /^operation idle$/m);
  assert.match(text, /^open {6}3 connections, 1 HTTP\/2 streams$/m);
  assert.match(text, /^traffic {3}12,345 requests \(2xx 12,000, 3xx 0, 4xx 300, 5xx 45\)$/m);
  assert.doesNotMatch(text, /\x1b\[/, 'no escape codes with colour off');
});

test('the upstream servers table has one row a server: state, weight in force (configured), in flight, requests, 5xx, failures, p50/p99, last check', () => {
  assert.deepEqual(row(/^UPSTREAM/), ['UPSTREAM', 'SERVER', 'ADDRESS', 'STATE', 'WEIGHT', 'IN FLIGHT', 'REQUESTS', '5XX', 'FAILS', 'P50', 'P99', 'LAST CHECK']);
  assert.deepEqual(row(/^app +one /), ['app', 'one', 'http://127.0.0.1:3001', 'healthy', '1', '2', '1,200', '0', '0', '11ms', '90ms', 'ok 3s ago']);
  assert.deepEqual(row(/^app +two /), ['app', 'two', 'http://127.0.0.1:3002', 'unhealthy', '5 (2)', '0', '1,145', '45', '3', '14ms', '2.5s', 'failed 2s ago']);
  assert.deepEqual(row(/^app +spare /), ['app', 'spare', 'http://127.0.0.1:3003', 'draining (backup)', '1', '0', '0', '0', '0', '-', '-', '-']);
});

test('the columns line up: every row of a table starts each column at the same offset as its header', () => {
  const header = plain.find((l) => l.startsWith('UPSTREAM'))!;
  const rows = plain.filter((l) => l.startsWith('app '));
  assert.equal(rows.length, 3);
  // STATE is left-aligned: it starts where its header does; P99 is right-aligned: it ends where its header does.
  for (const r of rows) {
    assert.equal(r.slice(header.indexOf('STATE')).match(/^(healthy|unhealthy|draining)/) !== null, true, r);
    const p99End = header.indexOf('P99') + 3;
    assert.match(r.slice(0, p99End), /(ms|s|-)$/, r);
  }
});

test('the routes table has requests, each status class and p50/p99 per route', () => {
  assert.deepEqual(row(/^ROUTE/), ['ROUTE', 'HANDLER', 'REQUESTS', '2XX', '3XX', '4XX', '5XX', 'P50', 'P99']);
  assert.deepEqual(row(/^\*\/ /), ['*/', 'static', '10,000', '9,700', '300', '0', '0', '0.8ms', '4.5ms']);
  assert.deepEqual(row(/^a\.example\/api\//), ['a.example/api/', 'proxy', '2,345', '2,000', '0', '300', '45', '12ms', '1.5s']);
});

test('the caches table has entries, size, hits, misses, stale answers and the hit ratio', () => {
  assert.deepEqual(row(/^CACHE/), ['CACHE', 'ENTRIES', 'SIZE', 'HITS', 'MISSES', 'STALE', 'HIT RATIO']);
  assert.deepEqual(row(/^pages/), ['pages', '120', '1.5 MiB', '900', '100', '4', '90.0%']);
});

test('the certificates table has hosts, source, expiry date, days left and the last renewal or its error', () => {
  assert.deepEqual(row(/^CERTIFICATE/), ['CERTIFICATE', 'SOURCE', 'EXPIRES', 'DAYS LEFT', 'RENEWAL']);
  assert.deepEqual(row(/^a\.example www/), ['a.example www.a.example', 'acme', '2027-02-01', '57', 'renewed 2026-11-03']);
  assert.deepEqual(row(/^b\.example/), ['b.example', 'file', '2026-12-09', '2', 'error: rate limited']);
});

test('with colour on, states, 5xx counts and days left are coloured, headers bold, and without the escapes the text is the same', () => {
  const coloured = statusLines(report as unknown as Record<string, unknown>, { colour: true, now: NOW });
  const joined = coloured.join('\n');
  assert.match(joined, /\x1b\[32mhealthy\x1b\[39m/);
  assert.match(joined, /\x1b\[31munhealthy\x1b\[39m/);
  assert.match(joined, /\x1b\[33mdraining \(backup\)\x1b\[39m/);
  assert.match(joined, /\x1b\[31m45\x1b\[39m/, 'a 5xx count above zero is red');
  assert.match(joined, /\x1b\[31m2\x1b\[39m/, 'two days left is red');
  assert.match(joined, /\x1b\[32m57\x1b\[39m/, '57 days left is green');
  assert.match(joined, /\x1b\[1mUPSTREAM/);
  // Colour is applied after padding: stripped of escapes, the coloured output is the plain one.
  assert.deepEqual(
    coloured.map((l) => l.replace(/\x1b\[\d+m/g, '')),
    plain,
  );
});

test("an older Portico's status (no traffic, servers, caches or certificates) prints the process lines and no table", () => {
  const old = {
    ok: true,
    version: '0.0.9',
    pid: 7,
    uptime_s: 5,
    config: '/srv/portico.yaml',
    state_dir: null,
    control_socket: null,
    listeners: [{ address: '127.0.0.1:8080', url: 'http://127.0.0.1:8080/' }],
    instances: [{ upstream: 'app', slot: 'app#1', state: 'ready', pid: 99, port: 3001, restarts: 0 }],
  };
  const lines = statusLines(old, { colour: true, now: NOW });
  assert.deepEqual(lines, [
    'portico 0.0.9: pid 7, up 5s',
    'config    /srv/portico.yaml',
    'listen    http://127.0.0.1:8080/',
    'state     -',
    'control   -',
    'operation idle',
    'instance  app#1 ready pid 99 port 3001',
  ]);
});

test('a report with odd or missing fields inside the tables prints dashes, not "undefined" or NaN', () => {
  const odd = {
    version: '0.1.0',
    pid: 1,
    uptime_s: 1,
    upstreams: [{ name: 'app', servers: [{ id: 'x' }, null] }],
    routes: [{ id: '*/' }],
    caches: [{ zone: 'z', hit_ratio: null }],
    certificates: [{ hosts: [] }],
  };
  const lines = statusLines(odd, { colour: false, now: NOW }).join('\n');
  assert.doesNotMatch(lines, /undefined|NaN|null|\[object/);
  assert.match(lines, /^app +x +- +- +- +- +- +- +- +- +- +-$/m);
  assert.match(lines, /^z +- +- +- +- +- +-$/m);
});

test("with workers, each worker's pid, and one that did not answer the status question said so (red on a terminal)", () => {
  const withWorkers = { ...report, workers: [{ slot: 1, pid: 10 }, { slot: 2, pid: 11, answered: false }, { slot: 3, pid: undefined }] };
  const lines = statusLines(withWorkers as unknown as Record<string, unknown>, { colour: false, now: NOW });
  assert.ok(lines.includes('workers   1: pid 10, 2: pid 11 (no answer), 3: starting'), lines.join('\n'));
  const coloured = statusLines(withWorkers as unknown as Record<string, unknown>, { colour: true, now: NOW }).join('\n');
  assert.match(coloured, /2: pid 11 \x1b\[31m\(no answer\)\x1b\[39m/);
});

test("a cluster box's status shows its Redis link, a Boxes table, and the boxes whose config digest differs", () => {
  const box = (name: string, digest: string, self: boolean, differs: boolean) => ({
    name,
    version: '0.1.0',
    digest,
    address: [`http://10.0.0.${name.slice(-1)}:80/`],
    admin: null,
    host: 'h',
    pid: 1,
    started: '2026-12-06T03:00:00.000Z',
    last_seen: '2026-12-06T03:59:58.000Z',
    self,
    digest_differs: differs,
  });
  const cluster = {
    name: 'box1',
    prefix: 'portico:shop',
    redis: { up: false, down_since: '2026-12-06T03:59:30.000Z', outages: 2, fallbacks: { heartbeat: 3, rate_limit: 1200 } },
    digest: 'aaaaaaaaaaaaaaaa',
    digest_differs: true,
    boxes: [box('box1', 'aaaaaaaaaaaaaaaa', true, false), box('box2', 'aaaaaaaaaaaaaaaa', false, false), box('box3', 'bbbbbbbbbbbbbbbb', false, true)],
  };
  const lines = statusLines({ ...report, cluster } as unknown as Record<string, unknown>, { colour: false, now: NOW });
  const all = lines.join('\n');
  assert.match(all, /^cluster {3}box1 in portico:shop: Redis DOWN since 30s ago: local fallbacks, 2 outages, fallbacks: heartbeat 3, rate_limit 1,200$/m);
  assert.match(all, /^MISMATCH {2}config digest differs from the cluster's \(aaaaaaaaaaaaaaaa\) on: box3$/m);
  const cells = (start: RegExp) => lines.find((l) => start.test(l))!.split(/ {2,}/).map((c) => c.trim());
  assert.deepEqual(cells(/^BOX/), ['BOX', 'VERSION', 'DIGEST', 'ADDRESS', 'ADMIN', 'LAST SEEN']);
  assert.deepEqual(cells(/^box1/), ['box1 (this)', '0.1.0', 'aaaaaaaaaaaaaaaa', 'http://10.0.0.1:80/', '-', '2s ago']);
  assert.deepEqual(cells(/^box3/), ['box3', '0.1.0', 'bbbbbbbbbbbbbbbb DIFFERS', 'http://10.0.0.3:80/', '-', '2s ago']);
  const agreeing = statusLines({ ...report, cluster: { ...cluster, digest_differs: false, redis: { ...cluster.redis, up: true }, boxes: cluster.boxes.slice(0, 2) } } as unknown as Record<string, unknown>, { colour: false, now: NOW });
  assert.ok(agreeing.some((l) => /^cluster {3}box1 in portico:shop: Redis up, 2 outages/.test(l)));
  assert.ok(!agreeing.some((l) => /MISMATCH|DIFFERS/.test(l)));
  // A box with another cluster secret: named on a MISMATCH line, and marked in the table.
  const otherSecret = statusLines(
    { ...report, cluster: { ...cluster, digest_differs: false, secret_differs: true, boxes: [cluster.boxes[0], cluster.boxes[1], { ...cluster.boxes[2], digest_differs: false, secret_differs: true }] } } as unknown as Record<string, unknown>,
    { colour: false, now: NOW },
  );
  assert.ok(otherSecret.some((l) => /^MISMATCH {2}cluster secret \(key_env\) differs from most boxes' on: box3 /.test(l)), otherSecret.join('\n'));
  assert.ok(otherSecret.some((l) => /^box3 OTHER SECRET /.test(l)));
  assert.ok(!otherSecret.some((l) => /config digest differs/.test(l)));
});

test('gRPC: an HTTP/2 server shows its protocol beside its address (not for h2c://, which says it), and a table counts each route\'s calls by grpc-status', () => {
  const grpcReport = structuredClone(report);
  const [server] = grpcReport.upstreams[0]!.servers;
  grpcReport.upstreams[0]!.servers = [
    { ...server!, id: 'tls', address: 'https://10.0.0.8:443', protocol: 'auto: h2', http2: { connections: 1, streams: 2, waiting: 0 } },
    { ...server!, id: 'plain', address: 'h2c://10.0.0.9:50051', protocol: 'h2c', http2: { connections: 1, streams: 0, waiting: 0 } },
  ];
  grpcReport.routes[1]!.grpc = { '0': 1200, '14': 3, '4': 2 };
  const lines = statusLines(grpcReport as unknown as Record<string, unknown>, { colour: false, now: NOW });
  const cells = (start: RegExp): string[] => lines.find((l) => start.test(l))!.split(/ {2,}/).map((c) => c.trim());
  assert.equal(cells(/^app +tls /)[2], 'https://10.0.0.8:443 (auto: h2)');
  assert.equal(cells(/^app +plain /)[2], 'h2c://10.0.0.9:50051');
  assert.deepEqual(cells(/^GRPC ROUTE/), ['GRPC ROUTE', 'CALLS', 'OK', 'NOT OK', 'BY GRPC-STATUS']);
  assert.deepEqual(cells(/^a\.example\/api\/ +1,205/), ['a.example/api/', '1,205', '1,200', '5', '0:1200 4:2 14:3']);
  assert.equal(lines.filter((l) => l.startsWith('*/ ')).length, 1, 'a route without gRPC calls has no row in it');
  assert.doesNotMatch(text, /GRPC ROUTE/, 'no gRPC table without gRPC calls');
});
