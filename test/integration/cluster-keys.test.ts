/**
 * The keys a cluster's boxes share (docs/cluster.md, "Sticky sessions and TLS resumption"): three boxes of one
 * cluster on 127.0.0.1-3 (real `portico run` processes, a real redis-server) before three app servers that each
 * answer their own name. A client pinned by the sticky cookie through one box lands on the same app server
 * through any box; a TLS session established on one box resumes on another. A fourth Portico on 127.0.0.4 with
 * the same config but no cluster is the contrast: it knows neither the cookie nor the session.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { tlsVisit } from '../helpers/cluster.js';
import pino from 'pino';
import { Portico } from '../../src/server/portico.js';
import { ClusterKeys, TICKET_PERIOD_MS } from '../../src/server/cluster.js';
import { parseConfig } from '../../src/server/config.js';
import { Boxes, CLUSTER_KEY, type Box } from '../helpers/boxes.js';
import { makeTree } from '../helpers/portico.js';
import { selfSignedCert, type CertPair } from '../helpers/h2.js';
import { PorticoProcess } from '../helpers/process.js';
import { RedisServer } from '../helpers/redis.js';
import { requireTool } from '../helpers/tools.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

/** A box's config after its `cluster` section: a plain and a TLS listener on `host`, a sticky upstream. */
function boxYaml(host: string, dir: string, cert: CertPair, apps: readonly TestUpstream[]): string {
  writeFileSync(path.join(dir, 'cert.pem'), cert.cert);
  writeFileSync(path.join(dir, 'cert.key'), cert.key);
  return `listen:
  - "${host}:0"
  - { addr: "${host}:0", tls: { cert: ./cert.pem, key: ./cert.key } }
log: { access: off }
upstreams:
  app:
    servers: [${apps.map((app) => `"${app.url}"`).join(', ')}]
    sticky: { cookie: pin }
sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`;
}

interface Answer {
  body: string;
  setCookie: string | undefined;
}

/** One GET through `origin` with `cookie` (a fresh connection each time). */
function get(origin: string, cookie?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${origin}/`, { agent: false, headers: cookie === undefined ? {} : { cookie } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ body, setCookie: res.headers['set-cookie']?.[0] }));
      res.on('error', reject);
    });
    req.setTimeout(5000, () => req.destroy(new Error(`no answer from ${origin} within 5 s`)));
    req.on('error', reject);
  });
}

/** The port of the TLS listener a Portico process printed in its serving line. */
function tlsPort(running: PorticoProcess, host: string): number {
  const match = new RegExp(`https://${host.replace(/\./g, '\\.')}:(\\d+)/`).exec(running.stderr);
  assert.ok(match !== null, `no https URL for ${host} in:\n${running.stderr}`);
  return Number(match[1]);
}

/** The cookie pair (`pin=VALUE`) of a Set-Cookie. */
function pair(setCookie: string | undefined): string {
  assert.ok(setCookie !== undefined, 'a sticky cookie was set');
  return setCookie.split(';')[0]!;
}

test('three boxes share the sticky key and the session-ticket keys: a pinned client lands on its app server and a TLS session resumes through any box; a Portico outside the cluster knows neither', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const cert = await selfSignedCert();
  const apps = await Promise.all(['app1', 'app2', 'app3'].map((name) => startUpstream(name)));
  const redis = await RedisServer.start();
  let boxes: Boxes | undefined;
  let outsider: PorticoProcess | undefined;
  try {
    boxes = await Boxes.start({ redis: redis.url, config: ({ host, dir }) => boxYaml(host, dir, cert, apps) });
    const lone = mkdtempSync(path.join(tmpdir(), 'portico-lone-'));
    writeFileSync(path.join(lone, 'portico.yaml'), `state_dir: ./var\n${boxYaml('127.0.0.4', lone, cert, apps)}`);
    outsider = await PorticoProcess.start(path.join(lone, 'portico.yaml'), lone);
    const all: Box[] = boxes.boxes;

    // Sticky: six clients, each pinned through box 1, then 30 requests each spread over the three boxes.
    const pinnedTo = new Map<string, string>();
    let requests = 0;
    for (let client = 0; client < 6; client++) {
      const first = await get(boxes.box(1).origin);
      const cookie = pair(first.setCookie);
      pinnedTo.set(cookie, first.body);
      for (let i = 0; i < 30; i++) {
        const box = all[i % all.length]!;
        const answer = await get(box.origin, cookie);
        requests++;
        assert.equal(answer.body, first.body, `client ${client} pinned to ${first.body} through box1 was sent to ${answer.body} through ${box.name}`);
        assert.equal(answer.setCookie, undefined, `${box.name} knew the cookie (set none)`);
      }
    }
    const servers = new Set(pinnedTo.values());
    t.diagnostic(`sticky: 6 clients pinned through box1 to ${[...servers].join(', ')}; ${requests} requests through 3 boxes, all on their app server`);
    assert.ok(servers.size > 1, 'the clients were pinned to different app servers (round robin), so landing right is no accident');
    // The contrast: a Portico with its own key does not know box 1's cookie (it pins the client anew).
    const [[cookie]] = [...pinnedTo];
    const alone = await get(`http://127.0.0.4:${outsider.port}`, cookie);
    assert.ok(alone.setCookie !== undefined && pair(alone.setCookie) !== cookie, 'a Portico outside the cluster pins anew');

    // TLS resumption: a session established on box 1 resumes on box 2 and box 3 (and on box 1 again).
    const ports = all.map((box) => tlsPort(box.process, box.host));
    const established = await tlsVisit('127.0.0.1', ports[0]!);
    assert.equal(established.reused, false);
    assert.ok(established.session !== undefined, 'box1 issued a session ticket');
    const reuses: string[] = [];
    let session = established.session;
    for (const i of [1, 2, 0, 2, 1]) {
      const box = all[i]!;
      const resumed = await tlsVisit(box.host, ports[i]!, session);
      reuses.push(`${box.name}:${resumed.reused}`);
      assert.equal(resumed.reused, true, `the session from box1 resumed on ${box.name}`);
      assert.match(resumed.body, /\bapp\d\b/);
      session = resumed.session ?? session;
    }
    const outside = await tlsVisit('127.0.0.4', tlsPort(outsider, '127.0.0.4'), established.session);
    t.diagnostic(`tls: resumed ${reuses.join(' ')}; outside the cluster: ${outside.reused}`);
    assert.equal(outside.reused, false, 'a Portico outside the cluster makes a full handshake');
    assert.match(outside.body, /\bapp\d\b/);
  } finally {
    await Promise.all([boxes?.stop(), outsider?.stop()]);
    await redis.stop();
    await Promise.all(apps.map((app) => app.stop()));
  }
});

test('a rotation of the ticket keys reaches the TLS listeners: a session from before it makes a full handshake on the rotated box, and resumes on a box not rotated yet', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const cert = await selfSignedCert();
  const app = await startUpstream('app1');
  const redis = await RedisServer.start();
  const clocks = [{ at: Date.now() }, { at: Date.now() }];
  const keys = clocks.map((clock) => new ClusterKeys(CLUSTER_KEY, () => clock.at));
  const servers: Portico[] = [];
  const dirs: string[] = [];
  const previous = process.env.PORTICO_CLUSTER_KEY;
  process.env.PORTICO_CLUSTER_KEY = CLUSTER_KEY;
  try {
    for (const [i, ring] of keys.entries()) {
      const dir = makeTree({ 'cert.pem': cert.cert, 'cert.key': cert.key });
      dirs.push(dir);
      const yaml = `cluster: { redis: "${redis.url}", prefix: test:rotation, name: r${i} }\nlisten: [{ addr: "127.0.0.1:0", tls: { cert: ./cert.pem, key: ./cert.key } }]\nlog: { access: off }\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app }\nupstreams:\n  app:\n    servers: ["${app.url}"]\n`;
      const server = new Portico(parseConfig(yaml, path.join(dir, 'portico.yaml'), dir), pino({ level: 'silent' }), { clusterKeys: ring });
      servers.push(server);
      await server.start();
    }
    const [a, b] = servers.map((server) => server.addresses[0]!.port) as [number, number];
    const first = await tlsVisit('127.0.0.1', a);
    assert.ok(first.session !== undefined);
    assert.equal((await tlsVisit('127.0.0.1', b, first.session)).reused, true, 'resumed on the other box before any rotation');
    clocks[0]!.at += TICKET_PERIOD_MS;
    assert.equal(keys[0]!.tickets.refresh(), true);
    const afterRotation = await tlsVisit('127.0.0.1', a, first.session);
    assert.equal(afterRotation.reused, false, 'a ticket from before the rotation makes a full handshake');
    assert.equal((await tlsVisit('127.0.0.1', b, first.session)).reused, true, 'the box not rotated yet still resumes it');
    assert.ok(afterRotation.session !== undefined);
    assert.equal((await tlsVisit('127.0.0.1', a, afterRotation.session)).reused, true, 'the new ticket resumes on the rotated box');
    clocks[1]!.at += TICKET_PERIOD_MS;
    keys[1]!.tickets.refresh();
    assert.equal((await tlsVisit('127.0.0.1', b, afterRotation.session)).reused, true, 'and on the other box once it rotated too');
  } finally {
    if (previous === undefined) delete process.env.PORTICO_CLUSTER_KEY;
    else process.env.PORTICO_CLUSTER_KEY = previous;
    for (const server of servers) await server.stop(100);
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    await redis.stop();
    await app.stop();
  }
});
