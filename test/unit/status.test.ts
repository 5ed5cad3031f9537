/**
 * The status report's rules (src/server/status.ts): a server's state, worst first (the operator's say, then
 * health), the weight in force, and the certificates listed with their expiry and last renewal.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { rmSync } from 'node:fs';
import { upstreamSchema } from '../../src/config/schema.js';
import { parseConfig } from '../../src/server/config.js';
import { certificateStatuses, clusterStatus, commonDigest, serverState, serverStatus } from '../../src/server/status.js';
import { ClusterLink } from '../../src/cluster/link.js';
import { Heartbeat } from '../../src/cluster/heartbeat.js';
import { UpstreamServer } from '../../src/upstream/server.js';
import { Upstream } from '../../src/upstream/upstream.js';
import type { AcmeManager } from '../../src/tls/acme.js';
import { createCertificate } from '../../src/tls/self-signed.js';
import { makeTree } from '../helpers/portico.js';

const dir = makeTree({});
const upstreams: Upstream[] = [];
after(async () => {
  await Promise.all(upstreams.map((u) => u.stop(0)));
  rmSync(dir, { recursive: true, force: true });
});

function upstream(extra: Record<string, unknown> = {}): Upstream {
  const config = upstreamSchema.parse({ servers: [{ url: 'http://127.0.0.1:9', name: 'one', weight: 3 }], passive: { max_fails: 5, fail_timeout: '10s' }, ...extra });
  const made = new Upstream('app', config as Upstream['config'], dir, pino({ level: 'silent' }));
  upstreams.push(made);
  return made;
}

describe('a server\'s state and figures', () => {
  test('the operator\'s say comes first, then a slot with no instance, the checks, an ejection', () => {
    const server = upstream().servers[0]!;
    const now = Date.now();
    assert.equal(serverState(server, now), 'healthy');
    server.ejectedUntil = now + 1000;
    assert.equal(serverState(server, now), 'ejected');
    server.healthy = false;
    assert.equal(serverState(server, now), 'unhealthy');
    server.admin = 'draining';
    assert.equal(serverState(server, now), 'draining');
    server.admin = 'disabled';
    assert.equal(serverState(server, now), 'disabled');
    const slot = new UpstreamServer(1, { slot: 'app#1', route: 'app1', port: undefined }, upstream().config, dir);
    assert.equal(serverState(slot, now), 'down');
    assert.equal(serverStatus(slot, now).id, 'app#1');
  });

  test('the weight in force is the operator\'s when set; failures count within fail_timeout; ejections since start', () => {
    const up = upstream();
    const server = up.servers[0]!;
    assert.deepEqual([serverStatus(server).weight, serverStatus(server).configured_weight], [3, 3]);
    server.adminWeight = 7;
    assert.deepEqual([serverStatus(server).weight, serverStatus(server).configured_weight], [7, 3]);
    const now = Date.now();
    server.recordFailure(now - 20_000, 5, 60_000);
    server.recordFailure(now - 1000, 5, 60_000);
    server.recordFailure(now - 500, 5, 60_000);
    assert.equal(serverStatus(server, now).failures, 2);
    server.eject(now, 1000);
    server.clearEjection();
    server.eject(now, 1000);
    assert.equal(serverStatus(server, now).ejections, 2);
    assert.equal(serverStatus(server, now).last_check, null);
    server.lastCheckAt = now;
    server.lastCheckPassed = true;
    assert.deepEqual(serverStatus(server, now).last_check, { at: new Date(now).toISOString(), ok: true });
    assert.equal(serverStatus(server, now).requests, 0);
    assert.equal(serverStatus(server, now).latency_ms.p50, null);
  });
});

describe('certificates', () => {
  test('a site\'s certificate from files (self-signed: its issuer is its subject), an ACME site\'s (renewal and its error), a listener\'s default; each PEM once', async () => {
    const now = Date.UTC(2026, 11, 6);
    const file = await createCertificate({ names: ['a.example'], days: 30 });
    const own = await createCertificate({ names: ['fallback.example'], days: 10 });
    const tree = makeTree({ 'a.pem': file.cert, 'a.key': file.key, 'f.pem': own.cert, 'f.key': own.key });
    try {
      const config = parseConfig(
        `listen:
  - { addr: "127.0.0.1:0", tls: { cert: ./f.pem, key: ./f.key } }
  - { addr: "127.0.0.1:0", tls: { cert: ./a.pem, key: ./a.key } }
state_dir: ./state
sites:
  - hosts: [a.example]
    tls: { cert: ./a.pem, key: ./a.key }
    routes: [{ path: /, respond: { status: 200 } }]
  - hosts: [b.example, www.b.example]
    tls: { acme: { email: ops@b.example, directory: "https://acme.test/dir", agree_tos: true } }
    routes: [{ path: /, respond: { status: 200 } }]
`,
        `${tree}/portico.yaml`,
        tree,
      );
      const manager = { hosts: ['b.example', 'www.b.example'], notAfter: undefined, lastRenewal: undefined, lastError: 'the CA said no' } as unknown as AcmeManager;
      const list = certificateStatuses(config, [manager], Date.now());
      assert.deepEqual(
        list.map((c) => [c.hosts, c.source, c.last_renewal_error]),
        [
          [['a.example'], 'self-signed', null],
          [['b.example', 'www.b.example'], 'acme', 'the CA said no'],
          [['127.0.0.1:0'], 'self-signed', null],
        ],
      );
      assert.ok(list[0]!.days_left >= 29 && list[0]!.days_left <= 30, `days_left ${list[0]!.days_left}`);
      assert.equal(list[1]!.not_after, '');
      const renewed = { ...manager, notAfter: now + 90 * 86_400_000, lastRenewal: now, lastError: undefined } as unknown as AcmeManager;
      const after = certificateStatuses(config, [renewed], now)[1]!;
      assert.deepEqual([after.not_after, after.days_left, after.last_renewal, after.last_renewal_error], [new Date(now + 90 * 86_400_000).toISOString(), 90, new Date(now).toISOString(), null]);
    } finally {
      rmSync(tree, { recursive: true, force: true });
    }
  });
});

describe("the cluster part of the status", () => {
  test("the cluster's digest is the one most boxes have; a tie goes to the answering box's own", () => {
    assert.equal(commonDigest(['a', 'a', 'b'], 'b'), 'a', 'two against one: every box flags the odd one');
    assert.equal(commonDigest(['a', 'a', 'b'], 'a'), 'a');
    assert.equal(commonDigest(['a', 'b'], 'b'), 'b', 'a tie: this box is the reference');
    assert.equal(commonDigest(['a', 'b', 'c', 'c', 'b'], 'a'), 'b', 'a tie this box is not in: the first by text');
    assert.equal(commonDigest([], 'z'), 'z');
  });

  test('before any heartbeat was read (Redis away since start), the status lists this box, not seen yet, and Redis down', async () => {
    const link = new ClusterLink({ redis: 'redis://127.0.0.1:9/0', prefix: 'p', name: 'box1', timeoutMs: 50 }, pino({ level: 'silent' }));
    const heartbeat = new Heartbeat(link, () => ({ version: '1', digest: 'd', address: ['http://127.0.0.1:1/'], admin: null, started: '2026-12-06T00:00:00.000Z' }), pino({ level: 'silent' }));
    try {
      const status = clusterStatus(link, heartbeat);
      assert.equal(status.name, 'box1');
      assert.equal(status.prefix, 'p');
      assert.equal(status.redis.up, false);
      assert.equal(status.digest, 'd');
      assert.equal(status.digest_differs, false);
      assert.equal(status.secret_differs, false);
      assert.equal(status.boxes.length, 1);
      assert.deepEqual({ ...status.boxes[0], host: '', pid: 0 }, { name: 'box1', version: '1', digest: 'd', address: ['http://127.0.0.1:1/'], admin: null, host: '', pid: 0, started: '2026-12-06T00:00:00.000Z', last_seen: null, self: true, digest_differs: false, secret_differs: false });
      assert.equal(link.boxes, 1);
    } finally {
      await heartbeat.stop();
      await link.stop();
    }
  });
});
