/**
 * ACME in a cluster: three `portico run` boxes (127.0.0.1-3) with one Redis and Debian's pebble. One order for the
 * site in the whole cluster, every box serving its certificate; a renewal reaching all three; a box killed during
 * the order, and another box completing it once the lease has run out (and, Redis gone, a box restarted serving its
 * copy); the keys in Redis sealed (no PEM); the order lock's lease renewed, compared and run out.
 *
 * Which box the CA's http-01 validation reaches is the test's to choose: pebble asks a small DNS server of the test
 * (a real one, on loopback UDP) for the site's address, and it answers with a box that does NOT hold the order's
 * lock (read from Redis at the moment of the query): the token must have come from Redis to that box.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { ClusterLink } from '../../src/cluster/link.js';
import { AcmeCluster, OrderLock, UNREACHABLE } from '../../src/tls/acme-cluster.js';
import { Boxes, CLUSTER_KEY } from '../helpers/boxes.js';
import { capturingLogger, freePort, startPebble, type Pebble } from '../helpers/pebble.js';
import { RedisServer } from '../helpers/redis.js';
import { eventually } from '../helpers/supervise.js';
import { requireTool } from '../helpers/tools.js';

const SITE = 'shop.test';
const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * A DNS server on 127.0.0.1 (UDP) answering every A query with `address(name)` (no answer when undefined) and every
 * other type with no record.
 */
async function startDns(address: (name: string) => Promise<string | undefined>): Promise<{ address: string; stop(): Promise<void> }> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (query, peer) => {
    void reply(query, address)
      .then((answer) => {
        if (answer !== undefined) socket.send(answer, peer.port, peer.address);
      })
      .catch(() => {});
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${socket.address().port}`,
    stop: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** The answer to one DNS query (RFC 1035 §4.1): its question echoed, and an A record when there is an address. */
async function reply(query: Buffer, address: (name: string) => Promise<string | undefined>): Promise<Buffer | undefined> {
  if (query.length < 12 || query.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let offset = 12;
  for (let steps = 0; steps < 64 && offset < query.length; steps++) {
    const length = query[offset]!;
    offset++;
    if (length === 0) break;
    labels.push(query.toString('latin1', offset, offset + length));
    offset += length;
  }
  if (offset + 4 > query.length) return undefined;
  const type = query.readUInt16BE(offset);
  const question = query.subarray(12, offset + 4);
  const ip = type === 1 ? await address(labels.join('.').toLowerCase()) : undefined;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0);
  // A response, authoritative, recursion desired (echoed) and available, no error.
  header.writeUInt16BE(0x8000 | 0x0400 | (query.readUInt16BE(2) & 0x0100) | 0x0080, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(ip === undefined ? 0 : 1, 6);
  const answer = ip === undefined ? Buffer.alloc(0) : Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, ...ip.split('.').map(Number)]);
  return Buffer.concat([header, question, answer]);
}

/** The certificate a TLS handshake with SNI `SITE` gets from `host:port`, or undefined when the handshake fails. */
function served(host: string, port: number): Promise<X509Certificate | undefined> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, servername: SITE, rejectUnauthorized: false }, () => {
      const peer = socket.getPeerX509Certificate();
      socket.destroy();
      resolve(peer);
    });
    socket.setTimeout(2000, () => socket.destroy());
    socket.once('error', () => resolve(undefined));
    socket.once('close', () => resolve(undefined));
  });
}

/** The stderr lines of every box with this message (JSON lines with fields), parsed. */
function logLines(boxes: Boxes, msg: string): Array<{ box: number; time: number; [field: string]: unknown }> {
  return boxes.boxes.flatMap((box) =>
    box.process.stderr
      .split('\n')
      .filter((line) => line.startsWith('{') && line.includes(`"msg":"${msg}"`))
      .map((line) => {
        const fields = JSON.parse(line) as { time: string };
        return { ...fields, time: Date.parse(fields.time), box: box.index };
      }),
  );
}

/** The cluster under test: Redis (stopped until `redisUp`), pebble, the DNS server, three boxes, a Redis client. */
interface Cluster {
  redis: RedisServer;
  client: Redis;
  pebble: Pebble;
  boxes: Boxes;
  tlsPort: number;
  /** Each validation's DNS answer: the lock's holder then, and the box it was sent to. */
  validations: Array<{ holder: number; sentTo: number }>;
}

/**
 * Starts the cluster with Redis away (no box orders while it is: each says so once), so that the order starts once
 * all three boxes serve. `onQuery(holder)`, called for each validation's lookup, may act before it is answered.
 */
async function startCluster(t: TestContext, validitySeconds: number, onQuery: (cluster: Cluster, holder: number) => Promise<void> = async () => {}): Promise<Cluster> {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-cluster-acme-'));
  dirs.push(dir);
  const redis = await RedisServer.start();
  t.after(() => redis.stop());
  await redis.stop();
  const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: (times) => Math.min(50 * times, 500) });
  client.on('error', () => {});
  t.after(() => client.disconnect());
  const cluster = { redis, client, validations: [] } as unknown as Cluster;
  const dns = await startDns(async (name) => {
    if (name !== SITE) return '127.0.0.1';
    const locks = await client.keys(`${cluster.boxes.prefix}:acme:lock:*`);
    const holderName = locks.length === 0 ? null : await client.get(locks[0]!);
    const holder = Number(/^box(\d+)\//.exec(holderName ?? '')?.[1] ?? 0);
    await onQuery(cluster, holder);
    // A live box other than the holder, once it is linked to Redis again (until then it answers no other box's token).
    const linked = (i: number) => {
      const { child, stderr } = cluster.boxes.box(i).process;
      return i !== holder && child.exitCode === null && child.signalCode === null && stderr.includes('cluster: Redis reachable again') ? i : undefined;
    };
    const sentTo = await eventually(() => linked(1) ?? linked(2) ?? linked(3), 'a box other than the holder linked to Redis', 3000);
    cluster.validations.push({ holder, sentTo });
    return `127.0.0.${sentTo}`;
  });
  t.after(() => dns.stop());
  const [httpPort, tlsPort] = [await freePort(), await freePort()];
  cluster.tlsPort = tlsPort;
  cluster.pebble = await startPebble(dir, { alwaysValid: false, httpPort, dnsServer: dns.address, validitySeconds });
  t.after(() => cluster.pebble.stop());
  cluster.boxes = await Boxes.start({
    redis: redis.url,
    cluster: '  acme_lease: 3s\n',
    config: ({ host, index }) => `listen: ["${host}:${httpPort}", { addr: "${host}:${tlsPort}", tls: {} }]
log: { access: off }
sites:
  - hosts: [${SITE}]
    tls: { acme: { email: ops@${SITE}, agree_tos: true, directory: "${cluster.pebble.directory}", trusted_roots: ${cluster.pebble.caFile} } }
    routes: [{ path: /, respond: { body: "box${index}" } }]
`,
  });
  t.after(async () => {
    if (process.env.CLUSTER_ACME_DEBUG !== undefined) for (const box of cluster.boxes.boxes) console.error(`--- box${box.index}\n${box.process.stderr}`);
    await cluster.boxes.stop();
    for (const box of cluster.boxes.boxes) dirs.push(box.dir);
  });
  // Redis away: each box serves, orders nothing, and says so once.
  await eventually(() => logLines(cluster.boxes, 'acme: Redis unreachable: no certificate is ordered until it is back; the installed certificate keeps serving').length === 3, 'each box: no order while Redis is away');
  await redis.restart();
  await client.connect();
  return cluster;
}

/** Waits until every live box serves a certificate from pebble other than `previous`; returns their serials. */
async function allServe(cluster: Cluster, boxes: number[], previous?: string, timeoutMs = 20_000): Promise<string[]> {
  return eventually(async () => {
    const certs = await Promise.all(boxes.map((i) => served(`127.0.0.${i}`, cluster.tlsPort)));
    if (certs.some((cert) => cert === undefined || !/Pebble Intermediate CA/.test(cert.issuer) || cert.serialNumber === previous)) return undefined;
    return certs.map((cert) => cert!.serialNumber);
  }, `boxes ${boxes.join(', ')} serving a new certificate`, timeoutMs);
}

/** Every value stored under the cluster's prefix (strings and hash fields), by key. */
async function storedValues(cluster: Cluster): Promise<Map<string, string[]>> {
  const values = new Map<string, string[]>();
  for (const key of await cluster.client.keys(`${cluster.boxes.prefix}:*`)) {
    const type = await cluster.client.type(key);
    if (type === 'string') values.set(key, [(await cluster.client.get(key)) ?? '']);
    else if (type === 'hash') values.set(key, Object.entries(await cluster.client.hgetall(key)).map(([field, value]) => `${field}=${value}`));
  }
  return values;
}

test('three boxes, one ACME order: the CA validates on a box that did not order, all three serve the one certificate, a renewal reaches all three, and Redis holds no private key in the clear', async (t) => {
  if (!requireTool(t, 'redis-server') || !requireTool(t, 'pebble') || !requireTool(t, 'openssl')) return;
  // 21 s certificates: renewed 14 s after they are issued (an order takes 5 s or more: acme-client polls every 5 s).
  const cluster = await startCluster(t, 21);
  const { boxes, pebble } = cluster;
  const serials = await allServe(cluster, [1, 2, 3]);
  assert.equal(new Set(serials).size, 1, `one certificate on the three boxes: ${serials.join(', ')}`);
  assert.equal(pebble.issued(), 1, 'one certificate issued');
  const orders = logLines(boxes, 'acme: ordering a certificate');
  assert.equal(orders.length, 1, 'one order in the whole cluster');
  const orderer = orders[0]!.box;
  // Each of the two others logs once it has installed it and kept its copy.
  const others = [1, 2, 3].filter((i) => i !== orderer);
  await eventually(() => logLines(boxes, 'acme: certificate installed from the cluster').length >= 2, 'the install lines');
  assert.deepEqual(logLines(boxes, 'acme: certificate installed from the cluster').map((line) => line.box).sort(), others, 'the two other boxes installed it from the cluster');
  assert.ok(cluster.validations.length >= 1 && cluster.validations.every((v) => v.holder === orderer && v.sentTo !== orderer), JSON.stringify(cluster.validations));
  t.diagnostic(`box${orderer} ordered; the CA's validations went to ${cluster.validations.map((v) => `box${v.sentTo}`).join(', ')}; serial ${serials[0]}`);

  // At rest: the certificate and the account in Redis; their private keys sealed (no PEM), certificates as PEM.
  const values = await storedValues(cluster);
  const all = [...values.values()].flat();
  assert.ok(all.length > 0);
  assert.ok(all.every((value) => !/PRIVATE KEY/.test(value)), 'no private key in the clear');
  const sealedKeys = all.filter((value) => value.startsWith('key='));
  assert.equal(sealedKeys.length, 2, `the account's key and the certificate's key: ${[...values.keys()].join(', ')}`);
  for (const value of sealedKeys) {
    assert.match(value, /^key=v1\.[A-Za-z0-9_-]+$/);
    assert.doesNotMatch(value, /-----BEGIN/);
  }
  assert.ok(all.some((value) => value.startsWith('cert=-----BEGIN CERTIFICATE-----')), 'the certificate is public: PEM');
  assert.equal([...values.keys()].filter((key) => key.includes(':acme:token:')).length, 0, 'the order removed its tokens');

  // The renewal, due 10 s after issuance: one order again, and the new certificate on all three boxes.
  const renewed = await allServe(cluster, [1, 2, 3], serials[0], 25_000);
  assert.equal(new Set(renewed).size, 1, `one renewed certificate on the three boxes: ${renewed.join(', ')}`);
  assert.equal(pebble.issued(), 2, 'one renewal issued');
  assert.equal(logLines(boxes, 'acme: ordering a certificate').length, 2, 'one renewal order in the cluster');
  for (const box of boxes.boxes) assert.equal(box.process.stderr.split('\n').filter((line) => line.includes('acme: Redis unreachable')).length, 1, `box${box.index} said once that it waited for Redis`);
  t.diagnostic(`renewed: serial ${renewed[0]} on the three boxes; orders ${logLines(boxes, 'acme: ordering a certificate').map((line) => `box${line.box}`).join(', ')}`);
});

test('a box killed (SIGKILL) during the order: another box takes the order once the lease has run out, and the two left serve the certificate', async (t) => {
  if (!requireTool(t, 'redis-server') || !requireTool(t, 'pebble') || !requireTool(t, 'openssl')) return;
  let killed: { box: number; at: number } | undefined;
  const cluster = await startCluster(t, 90 * 86_400, async (running, holder) => {
    // The first validation: the box that holds the lock dies before the CA has its answer.
    if (killed !== undefined || holder === 0) return;
    killed = { box: holder, at: Date.now() };
    const child = running.boxes.box(holder).process.child;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  });
  const { boxes, pebble } = cluster;
  await eventually(() => killed, 'the first validation', 15_000);
  const left = [1, 2, 3].filter((i) => i !== killed!.box);
  const serials = await allServe(cluster, left, undefined, 20_000);
  assert.equal(new Set(serials).size, 1, `one certificate on the two boxes left: ${serials.join(', ')}`);
  assert.equal(pebble.issued(), 1, 'one certificate issued');
  const orders = logLines(boxes, 'acme: ordering a certificate');
  assert.equal(orders.length, 2, `the killed box's order and the one that completed: ${JSON.stringify(orders.map((o) => o.box))}`);
  assert.equal(orders[0]!.box === killed!.box || orders[1]!.box === killed!.box, true);
  const taken = orders.find((order) => order.box !== killed!.box)!;
  assert.ok(left.includes(taken.box));
  // The lease (3 s, renewed every second) ran out before the other box ordered: at least 2 s after the kill.
  const waited = taken.time - killed!.at;
  assert.ok(waited >= 1500, `ordered ${waited} ms after the kill`);
  const waiting = logLines(boxes, 'acme: another box is ordering this certificate; waiting for it');
  assert.ok(waiting.some((line) => String(line.holder).startsWith(`box${killed!.box}/`)), 'the others waited for the killed box');
  t.diagnostic(`box${killed!.box} killed during its order; box${taken.box} ordered ${waited} ms later; validations ${JSON.stringify(cluster.validations)}`);

  // Redis gone: a box restarted meanwhile serves the certificate from its state directory, as the other one does.
  await cluster.redis.kill();
  // (The box that did not order: the orders counted below are in the stderr of the processes still there.)
  const restarted = await boxes.restart(left.find((i) => i !== taken.box)!);
  const [again, other] = await Promise.all([served(restarted.host, cluster.tlsPort), served(`127.0.0.${taken.box}`, cluster.tlsPort)]);
  assert.equal(again?.serialNumber, serials[0], 'the restarted box serves its copy while Redis is away');
  assert.equal(other?.serialNumber, serials[0]);
  assert.match(restarted.process.stderr, /acme: certificate loaded from the state directory/);
  assert.equal(logLines(boxes, 'acme: ordering a certificate').length, 2, 'no order while Redis is away');
});

test('the order lock: one holder; its lease renewed while held; deleted only by its holder; run out when its process stops renewing it; held back after a failed order', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  t.after(() => redis.stop());
  const logger = capturingLogger().logger;
  const links = ['a', 'b'].map((name) => new ClusterLink({ redis: redis.url, prefix: 'test:acme-lock', name, timeoutMs: 200 }, logger));
  t.after(() => Promise.all(links.map((link) => link.stop())));
  const [a, b] = links.map((link) => new AcmeCluster(link, CLUSTER_KEY, 600, logger)) as [AcmeCluster, AcmeCluster];
  for (const link of links) link.start();
  await eventually(() => links.every((link) => link.up), 'both links up');
  const first = await a.lock('site');
  assert.ok(first instanceof OrderLock);
  const held = await b.lock('site');
  assert.ok(!(held instanceof OrderLock) && held !== UNREACHABLE && held.holder.startsWith('a/'), String(held));
  // Three leases long, the lock stays a's: renewed every 200 ms.
  const until = Date.now() + 1800;
  let checks = 0;
  for (; Date.now() < until && checks < 100; checks++) {
    const again = await b.lock('site');
    assert.ok(!(again instanceof OrderLock), `b took the lock after ${checks} checks: a's lease was not renewed`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await first.release();
  const second = await eventually(async () => {
    const taken = await b.lock('site');
    return taken instanceof OrderLock ? taken : undefined;
  }, 'b takes the released lock');
  // A lock that became another's (its lease ran out, another box took it): not extended (compare-and-extend, so
  // the holder learns it lost it), and not deleted by the old holder (compare-and-delete).
  const other = await a.lock('other');
  assert.ok(other instanceof OrderLock);
  const otherKey = 'test:acme-lock:acme:lock:other';
  await links[0]!.redis.set(otherKey, 'c/another-box', 'PX', 5000);
  await eventually(() => other.lost, 'a learns it lost the lock');
  await other.release();
  assert.equal(await links[0]!.redis.get(otherKey), 'c/another-box');
  assert.ok(!((await a.lock('site')) instanceof OrderLock), "b's lock stays b's");
  // b's process stops (its renewals fall back): the lease runs out, and a takes the lock.
  await links[1]!.stop();
  const stoppedAt = Date.now();
  const third = await eventually(async () => {
    const taken = await a.lock('site');
    return taken instanceof OrderLock ? taken : undefined;
  }, 'a takes the lock after b stopped', 5000);
  assert.ok(Date.now() - stoppedAt >= 200, `taken ${Date.now() - stoppedAt} ms after b stopped`);
  await Promise.all([third.release(), second.release()]);
  // A failed order holds the whole cluster back for the failing box's backoff (its own next try included).
  await a.holdBack('failing', 400);
  const backoff = await a.lock('failing');
  assert.ok(!(backoff instanceof OrderLock) && backoff !== UNREACHABLE && backoff.failed === true && backoff.holder === 'a' && backoff.ttlMs <= 400, JSON.stringify(backoff));
  const afterBackoff = await eventually(async () => {
    const taken = await a.lock('failing');
    return taken instanceof OrderLock ? taken : undefined;
  }, 'an order once the backoff is over', 3000);
  await afterBackoff.release();
  a.stop();
  b.stop();
  t.diagnostic(`${checks} checks over three leases found the lock held; taken over ${Date.now() - stoppedAt} ms after its holder stopped`);
});
