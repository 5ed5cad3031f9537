/**
 * App servers found through DNS (`upstreams.NAME.discover`, docs/proxy.md "Servers found through DNS"), against a
 * real DNS server (dnsmasq on a loopback port, its records changed by the test), real app servers on 127.0.0.x and a
 * real `portico run` process under a steady loopback load: a record added gets traffic within its TTL + interval, a
 * record removed drains with zero failed requests (a slow request in flight finishes), the DNS server stopped leaves
 * the last set serving (the failure logged once), SRV priorities and weights become backups and weights, and a
 * server that stays across a re-resolve keeps its state.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { DnsServer } from '../helpers/dnsmasq.js';
import { describeLoad, failures, startLoad } from '../helpers/load.js';
import { freePort } from '../helpers/pebble.js';
import { PorticoProcess } from '../helpers/process.js';
import { eventually } from '../helpers/supervise.js';
import { requireTool } from '../helpers/tools.js';
import { closeHttpServer } from '../helpers/upstream.js';
import { within } from '../helpers/within.js';
import { configErrors } from '../helpers/config.js';

/**
 * One app server on `host`:`port`: answers `X-Instance: host:port`; `/slow?ms=N` answers after N ms; an upgrade
 * (WebSocket) is accepted and its bytes echoed, prefixed with the instance.
 */
interface App {
  readonly id: string;
  /** When each request arrived (ms since the epoch), and its path. */
  readonly seen: Array<{ at: number; url: string }>;
  /** Every request answers 502 while set. */
  failing: boolean;
  close(): Promise<void>;
}

async function startApp(host: string, port: number): Promise<App> {
  const tunnels = new Set<import('node:stream').Duplex>();
  const app: App = {
    id: `${host}:${port}`,
    seen: [],
    failing: false,
    close: () => {
      // Upgraded sockets are no longer the HTTP server's to close.
      for (const socket of tunnels) socket.destroy();
      return closeHttpServer(server);
    },
  };
  const server = http.createServer((req, res) => {
    app.seen.push({ at: Date.now(), url: req.url! });
    const slow = /^\/slow\?ms=(\d+)/.exec(req.url!);
    const answer = () => {
      res.writeHead(app.failing ? 502 : 200, { 'x-instance': app.id, 'content-type': 'text/plain' });
      res.end(app.id);
    };
    if (slow !== null) setTimeout(answer, Number(slow[1]));
    else answer();
  });
  server.on('upgrade', (req, socket) => {
    app.seen.push({ at: Date.now(), url: req.url! });
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    tunnels.add(socket);
    socket.on('data', (chunk: Buffer) => socket.write(`${app.id} ${chunk.toString()}`));
    socket.on('end', () => socket.end());
    socket.on('close', () => tunnels.delete(socket));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return app;
}

/** App servers on each of `hosts`, all on one port (A records carry no port): a port free on all of them. */
async function startApps(hosts: readonly string[]): Promise<{ port: number; apps: App[] }> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const port = await freePort();
    const apps: App[] = [];
    try {
      for (const host of hosts) apps.push(await startApp(host, port));
      return { port, apps };
    } catch {
      await Promise.all(apps.map((app) => app.close()));
    }
  }
  throw new Error(`no port free on all of ${hosts.join(', ')} in 10 tries`);
}

/** A `portico run` process with `upstream` (YAML lines of upstreams.app) and `resolver`, and its admin API. */
async function startPortico(dns: DnsServer, upstream: string): Promise<{ portico: PorticoProcess; base: string; admin: string; dir: string; text: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-dns-test-'));
  const file = path.join(dir, 'portico.yaml');
  const text = configText(dns, upstream);
  writeFileSync(file, text);
  const portico = await PorticoProcess.start(file, dir, [], { PORTICO_ADMIN_TOKEN: TOKEN });
  const admin = /admin API on (http:\/\/[^\s"]+)/.exec(await portico.waitForLine(/admin API on/, 0))?.[1];
  assert.ok(admin !== undefined, `the admin API's URL in the log:\n${portico.stderr}`);
  return { portico, base: `http://127.0.0.1:${portico.port}`, admin: admin.replace(/\/$/, ''), dir, text };
}

/** The config: upstream `app` (its YAML lines given) behind one proxy route, `resolver` the test's dnsmasq. */
function configText(dns: DnsServer, upstream: string): string {
  return `listen: ["127.0.0.1:0"]
log: { access: off, error_format: json }
admin: { listen: "127.0.0.1:0", open_reads: true }
resolver: ${dns.address}
upstreams:
  app:
${upstream
  .trim()
  .split('\n')
  .map((line) => `    ${line}`)
  .join('\n')}
sites:
  - routes:
      - { path: /, proxy: { upstream: app } }
`;
}

interface ServerLine {
  id: string;
  address: string;
  discovered?: boolean;
  state: string;
  backup: boolean;
  weight: number;
  requests: number;
  ejections: number;
  failures: number;
}

/** The app upstream's servers as GET /status shows them. */
async function statusServers(admin: string): Promise<ServerLine[]> {
  const res = await fetch(`${admin}/status`, { headers: { accept: 'application/json' } });
  assert.equal(res.status, 200);
  const body = (await res.json()) as { upstreams: Array<{ name: string; servers: ServerLine[] }> };
  return body.upstreams.find((u) => u.name === 'app')!.servers;
}

/** GET `url` with a fresh connection; the status, the answering instance and the body. */
async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; instance: string; setCookie: string | null }> {
  const res = await fetch(url, { headers });
  await res.text();
  return { status: res.status, instance: res.headers.get('x-instance') ?? '', setCookie: res.headers.get('set-cookie') };
}

/** The admin API's token in the tests' Portico processes. */
const TOKEN = 'dns-discovery-test-token-0123456789';

/** POSTs an action on the app upstream's server `id`; the status. */
async function serverAction(admin: string, id: string, action: string): Promise<number> {
  const res = await fetch(`${admin}/upstreams/app/servers/${encodeURIComponent(id)}/${action}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
  await res.text();
  return res.status;
}

/** stderr lines whose message matches. */
function logLines(portico: PorticoProcess, msg: RegExp): string[] {
  return portico.stderr.split('\n').filter((line) => msg.test(line));
}

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  // Portico first (its tunnels end), then DNS and the app servers; each bounded.
  for (const cleanup of cleanups.reverse()) await within('a test cleanup', Promise.resolve(cleanup()), 15_000);
});

async function setUp(hosts: Record<string, readonly string[]>, appHosts: readonly string[], upstream: (port: number) => string) {
  const { port, apps } = await startApps(appHosts);
  cleanups.push(() => Promise.all(apps.map((app) => app.close())).then(() => undefined));
  const dns = await DnsServer.start({ hosts });
  cleanups.push(() => dns.close());
  const running = await startPortico(dns, upstream(port));
  cleanups.push(async () => {
    await running.portico.stop();
    rmSync(running.dir, { recursive: true, force: true });
  });
  return { port, apps, dns, ...running };
}

describe('app servers found through DNS', () => {
  test('a record added under load gets traffic within its TTL + interval; a record removed drains with zero failed requests, its slow request in flight finishing', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { port, apps, dns, portico, base } = await setUp({ 'app.test': ['127.0.0.2', '127.0.0.3'] }, ['127.0.0.2', '127.0.0.3', '127.0.0.4'], (p) => `discover: { dns: app.test, type: A, port: ${p}, interval: 2s }`);
    const [two, three, four] = apps as [App, App, App];
    const load = startLoad({ base, paths: ['/'], rate: 100, header: 'x-instance', maxMs: 30_000 });
    try {
      await eventually(() => (load.report.seen.get(two.id) ?? 0) > 0 && (load.report.seen.get(three.id) ?? 0) > 0, 'traffic on both first servers');
      // Added: the record's TTL is 1 s and interval 2 s, so the next resolution is at most 1 s away (the floor).
      const added = Date.now();
      await dns.setHosts({ 'app.test': ['127.0.0.2', '127.0.0.3', '127.0.0.4'] });
      await eventually(() => four.seen.length > 0, 'traffic on the added server', 5000);
      const delay = four.seen[0]!.at - added;
      t.diagnostic(`the added record got its first request ${delay} ms after the change (TTL 1 s, interval 2 s)`);
      assert.ok(delay <= 3000 + 500, `within TTL + interval (3 s), took ${delay} ms`);

      // Removed while slow requests are in flight on it: they finish, and it takes no new request.
      const slow = Array.from({ length: 6 }, () => get(`${base}/slow?ms=3000`));
      await eventually(() => three.seen.some((r) => r.url.startsWith('/slow')), 'a slow request on the server to remove');
      const mark = portico.stderr.length;
      await dns.setHosts({ 'app.test': ['127.0.0.2', '127.0.0.4'] });
      await portico.waitForLine(/servers found through DNS changed/, mark, 5000);
      const removedAt = Date.now();
      const answers = await Promise.all(slow);
      assert.deepEqual(
        answers.map((a) => a.status),
        answers.map(() => 200),
        'every slow request answered 200',
      );
      assert.ok(
        answers.some((a) => a.instance === three.id),
        'a slow request in flight on the removed server finished there',
      );
      const before = (load.report.seen.get(three.id) ?? 0);
      await eventually(() => (load.report.seen.get(four.id) ?? 0) > 50, 'more traffic after the removal');
      const late = three.seen.filter((r) => r.at > removedAt + 100 && r.url === '/').length;
      assert.equal(late, 0, 'no new request reached the removed server');
      t.diagnostic(`removed server: ${before} load answers before removal, ${late} after`);
    } finally {
      const report = await load.stop();
      t.diagnostic(describeLoad(report));
      assert.equal(failures(report), 0, `no failed request: ${describeLoad(report)}`);
      assert.ok(report.ok > 200);
    }
  });

  test('the DNS server stopped: the last set keeps serving with zero failed requests, the failure logged once, and its return logged', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { apps, dns, portico, base } = await setUp({ 'app.test': ['127.0.0.2', '127.0.0.3'] }, ['127.0.0.2', '127.0.0.3'], (p) => `discover: { dns: app.test, port: ${p}, interval: 1s }`);
    const [two, three] = apps as [App, App];
    const load = startLoad({ base, paths: ['/'], rate: 100, header: 'x-instance', maxMs: 30_000 });
    try {
      await eventually(() => (load.report.seen.get(two.id) ?? 0) > 0 && (load.report.seen.get(three.id) ?? 0) > 0, 'traffic on both servers');
      const mark = portico.stderr.length;
      await dns.stop();
      await portico.waitForLine(/DNS resolution failed: keeping the last 2 servers found/, mark, 5000);
      // Several resolutions fail meanwhile (retried at 1 s, 2 s...): the servers keep serving, logged once.
      const stoppedAt = Date.now();
      await eventually(() => Date.now() - stoppedAt > 3500 && two.seen.some((r) => r.at > stoppedAt + 3000) && three.seen.some((r) => r.at > stoppedAt + 3000), 'both servers serving 3 s into the outage', 8000);
      assert.equal(logLines(portico, /DNS resolution failed/).length, 1, `one line for the failure streak:\n${portico.stderr.slice(mark)}`);
      const back = portico.stderr.length;
      await dns.restart();
      await portico.waitForLine(/DNS resolution works again/, back, 8000);
      assert.equal(logLines(portico, /DNS resolution works again/).length, 1);
    } finally {
      const report = await load.stop();
      t.diagnostic(describeLoad(report));
      assert.equal(failures(report), 0, `no failed request: ${describeLoad(report)}`);
    }
  });

  test('SRV records: the lowest priority serves with its weights, a higher priority is the backup, used once the primaries are down', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const ports = [await freePort(), await freePort(), await freePort()];
    const hosts = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
    const apps = await Promise.all(hosts.map((host, i) => startApp(host, ports[i]!)));
    cleanups.push(() => Promise.all(apps.map((app) => app.close())).then(() => undefined));
    const [a, b, c] = apps as [App, App, App];
    const srv = '_http._tcp.app.test';
    const dns = await DnsServer.start({
      hosts: { 'a.app.test': ['127.0.0.2'], 'b.app.test': ['127.0.0.3'], 'c.app.test': ['127.0.0.4'] },
      srv: [
        { name: srv, target: 'a.app.test', port: ports[0]!, priority: 10, weight: 30 },
        { name: srv, target: 'b.app.test', port: ports[1]!, priority: 10, weight: 10 },
        { name: srv, target: 'c.app.test', port: ports[2]!, priority: 20, weight: 10 },
      ],
    });
    cleanups.push(() => dns.close());
    const running = await startPortico(dns, `discover: { dns: ${srv}, type: SRV, interval: 2s }\nhealth: { path: /, interval: 300ms, fall: 1, rise: 1 }`);
    cleanups.push(async () => {
      await running.portico.stop();
      rmSync(running.dir, { recursive: true, force: true });
    });
    const servers = await eventually(async () => {
      const list = await statusServers(running.admin);
      return list.length === 3 && list;
    }, 'three servers found through DNS in /status');
    const byId = new Map(servers.map((s) => [s.id, s]));
    for (const app of apps) assert.equal(byId.get(app.id)?.discovered, true, `${app.id} shown as discovered`);
    assert.deepEqual(
      [a, b, c].map((app) => [byId.get(app.id)!.backup, byId.get(app.id)!.weight]),
      [
        [false, 3],
        [false, 1],
        [true, 1],
      ],
      'priority 10 primary with weights 30:10 (as 3:1), priority 20 backup',
    );
    const counts = new Map<string, number>();
    for (let i = 0; i < 80; i++) {
      const { status, instance } = await get(`${running.base}/`);
      assert.equal(status, 200);
      counts.set(instance, (counts.get(instance) ?? 0) + 1);
    }
    t.diagnostic(`80 requests: ${JSON.stringify(Object.fromEntries(counts))}`);
    assert.equal(counts.get(a.id), 60, 'weight 3 of 4');
    assert.equal(counts.get(b.id), 20, 'weight 1 of 4');
    assert.equal(counts.get(c.id) ?? 0, 0, 'the backup takes nothing while a primary is up');
    // A new answer with another weight for b (SRV records change only with a restart of dnsmasq): the same server,
    // its counts going on, with its new weight.
    const bBefore = byId.get(b.id)!;
    await dns.restart({
      hosts: { 'a.app.test': ['127.0.0.2'], 'b.app.test': ['127.0.0.3'], 'c.app.test': ['127.0.0.4'] },
      srv: [
        { name: srv, target: 'a.app.test', port: ports[0]!, priority: 10, weight: 30 },
        { name: srv, target: 'b.app.test', port: ports[1]!, priority: 10, weight: 30 },
        { name: srv, target: 'c.app.test', port: ports[2]!, priority: 20, weight: 10 },
      ],
    });
    const reweighed = await eventually(async () => (await statusServers(running.admin)).find((s) => s.id === b.id && s.weight === 3), 'b at weight 3 (30:30:10)', 8000);
    assert.ok(reweighed.requests >= bBefore.requests + 20, `b's counts went on (${bBefore.requests} before the 80 requests, ${reweighed.requests} now)`);
    await a.close();
    await b.close();
    await eventually(async () => (await statusServers(running.admin)).filter((s) => s.state === 'unhealthy').length === 2, 'both primaries down');
    const { status, instance } = await get(`${running.base}/`);
    assert.equal(status, 200);
    assert.equal(instance, c.id, 'the backup serves once the primaries are down');
  });

  test('a server that stays across a re-resolve keeps its state: its passive ejection, its counts and its sticky clients', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { apps, dns, admin, base } = await setUp(
      { 'app.test': ['127.0.0.2', '127.0.0.3'] },
      ['127.0.0.2', '127.0.0.3', '127.0.0.4'],
      (p) => `discover: { dns: app.test, port: ${p}, interval: 2s }\nretries: 0\nsticky: { cookie: pin }\npassive: { max_fails: 3, fail_timeout: 60s }`,
    );
    const [two, three, four] = apps as [App, App, App];
    // The server on 127.0.0.3 fails live traffic and is ejected.
    three.failing = true;
    await eventually(async () => {
      await get(`${base}/`);
      return (await statusServers(admin)).find((s) => s.id === three.id)?.state === 'ejected';
    }, 'the failing server ejected');
    three.failing = false;
    // A client pinned to 127.0.0.2.
    const first = await get(`${base}/`);
    assert.equal(first.instance, two.id);
    const cookie = first.setCookie!.split(';')[0]!;
    const before = new Map((await statusServers(admin)).map((s) => [s.id, s]));
    await dns.setHosts({ 'app.test': ['127.0.0.2', '127.0.0.3', '127.0.0.4'] });
    const afterChange = await eventually(async () => {
      const list = await statusServers(admin);
      return list.length === 3 && list;
    }, 'the added server in /status');
    const now = new Map(afterChange.map((s) => [s.id, s]));
    t.diagnostic(`before: ${JSON.stringify([...before.values()].map((s) => [s.id, s.state, s.requests, s.ejections]))}; after: ${JSON.stringify(afterChange.map((s) => [s.id, s.state, s.requests, s.ejections]))}`);
    assert.equal(now.get(three.id)!.state, 'ejected', 'the ejected server is still ejected');
    assert.equal(now.get(three.id)!.ejections, 1);
    assert.ok(now.get(two.id)!.requests >= before.get(two.id)!.requests && now.get(two.id)!.requests > 0, 'its counts go on');
    assert.equal(now.get(four.id)!.state, 'healthy');
    for (let i = 0; i < 5; i++) assert.equal((await get(`${base}/`, { cookie })).instance, two.id, 'the pinned client stays on its server');
    const spread = new Set<string>();
    for (let i = 0; i < 6; i++) spread.add((await get(`${base}/`)).instance);
    assert.ok(spread.has(four.id), 'the added server takes new clients');
    assert.ok(!spread.has(three.id), 'the ejected server takes none');
  });

  test('a server DNS drops and names again while its slow request still drains keeps its sticky clients: they land on it, not on another', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { apps, dns, portico, base } = await setUp(
      { 'app.test': ['127.0.0.2', '127.0.0.3'] },
      ['127.0.0.2', '127.0.0.3'],
      (p) => `discover: { dns: app.test, port: ${p}, interval: 2s }\nsticky: { cookie: pin }`,
    );
    const [two, three] = apps as [App, App];
    // A client pinned to 127.0.0.3, and a slow request on it that holds it draining once DNS drops it.
    let pinned = await get(`${base}/`);
    for (let i = 0; i < 4 && pinned.instance !== three.id; i++) pinned = await get(`${base}/`);
    assert.equal(pinned.instance, three.id);
    const cookie = pinned.setCookie!.split(';')[0]!;
    const slow = get(`${base}/slow?ms=4000`, { cookie });
    await eventually(() => three.seen.some((r) => r.url.startsWith('/slow')), 'the slow request on 127.0.0.3');
    let mark = portico.stderr.length;
    await dns.setHosts({ 'app.test': ['127.0.0.2'] });
    await portico.waitForLine(/servers found through DNS changed/, mark, 5000);
    mark = portico.stderr.length;
    await dns.setHosts({ 'app.test': ['127.0.0.2', '127.0.0.3'] });
    await portico.waitForLine(/servers found through DNS changed/, mark, 5000);
    const landed: string[] = [];
    for (let i = 0; i < 6; i++) landed.push((await get(`${base}/`, { cookie })).instance);
    t.diagnostic(`the pinned client's requests after the server came back: ${landed.join(' ')}`);
    assert.deepEqual(landed, landed.map(() => three.id), 'every request of the pinned client on its server');
    assert.equal((await slow).status, 200);
    assert.ok(two.seen.length > 0);
  });

  test('a first resolution that fails at start: the configured servers serve, the failure is logged, and the servers come once the name resolves', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { port, apps } = await startApps(['127.0.0.1', '127.0.0.2']);
    cleanups.push(() => Promise.all(apps.map((app) => app.close())).then(() => undefined));
    const [configured, found] = apps as [App, App];
    const dns = await DnsServer.start({ hosts: { 'other.test': ['127.0.0.9'] } });
    cleanups.push(() => dns.close());
    const running = await startPortico(dns, `servers: ["http://127.0.0.1:${port}"]\ndiscover: { dns: app.test, port: ${port}, interval: 1s }`);
    cleanups.push(async () => {
      await running.portico.stop();
      rmSync(running.dir, { recursive: true, force: true });
    });
    await running.portico.waitForLine(/DNS resolution failed: no servers found through DNS yet/, 0, 5000);
    for (let i = 0; i < 5; i++) {
      const answer = await get(`${running.base}/`);
      assert.deepEqual([answer.status, answer.instance], [200, configured.id], 'the configured server serves meanwhile');
    }
    const mark = running.portico.stderr.length;
    await dns.setHosts({ 'other.test': ['127.0.0.9'], 'app.test': ['127.0.0.2'] });
    await running.portico.waitForLine(/DNS resolution works again/, mark, 8000);
    await eventually(async () => (await get(`${running.base}/`)).instance === found.id, 'the server found through DNS serving');
    assert.equal(logLines(running.portico, /DNS resolution failed/).length, 1, 'the failure streak logged once');
  });

  test('a reload that changes the upstream starts with the servers found through DNS, and their state', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { apps, admin, base, portico, text } = await setUp(
      { 'app.test': ['127.0.0.2', '127.0.0.3'] },
      ['127.0.0.2', '127.0.0.3'],
      (p) => `discover: { dns: app.test, port: ${p}, interval: 5s }\nretries: 0\npassive: { max_fails: 3, fail_timeout: 60s }`,
    );
    const [two, three] = apps as [App, App];
    three.failing = true;
    await eventually(async () => {
      await get(`${base}/`);
      return (await statusServers(admin)).find((s) => s.id === three.id)?.state === 'ejected';
    }, 'the failing server ejected');
    three.failing = false;
    const { line } = await portico.reload(text.replace('retries: 0', 'retries: 1'));
    assert.match(line, /config reloaded/);
    const servers = new Map((await statusServers(admin)).map((s) => [s.id, s]));
    assert.deepEqual([...servers.keys()].sort(), [two.id, three.id], 'both servers at once after the reload');
    assert.equal(servers.get(three.id)!.state, 'ejected', 'the ejection carried over by address');
    for (let i = 0; i < 4; i++) assert.equal((await get(`${base}/`)).instance, two.id);
  });

  test('a reload that changes the DNS name serves the new name\'s servers from its first request: the swap waits for the first answer (a slow resolver: 503s until it came)', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { apps, base, portico, text, dns } = await setUp({ 'app.test': ['127.0.0.2'], 'next.test': ['127.0.0.3'] }, ['127.0.0.2', '127.0.0.3'], (p) => `discover: { dns: app.test, port: ${p}, interval: 5s }`);
    const [two, three] = apps as [App, App];
    assert.equal((await get(`${base}/`)).instance, two.id);
    // A slow resolver: dnsmasq behind a relay that holds every query 700 ms (well within the swap's 3 s bound, and
    // far more than a request takes): without the wait the first request after the reload would find no server.
    const [dnsHost, dnsPort] = [dns.address.slice(0, dns.address.lastIndexOf(':')), Number(dns.address.slice(dns.address.lastIndexOf(':') + 1))];
    const slow = dgram.createSocket('udp4');
    slow.on('message', (query, from) => {
      const timer = setTimeout(() => {
        const relay = dgram.createSocket('udp4');
        relay.once('message', (answer) => {
          slow.send(answer, from.port, from.address);
          relay.close();
        });
        relay.send(query, dnsPort, dnsHost);
      }, 700);
      timer.unref();
    });
    await new Promise<void>((resolve) => slow.bind(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => slow.close(() => resolve())));
    const next = text.replace('dns: app.test', 'dns: next.test').replace(`resolver: ${dns.address}`, `resolver: 127.0.0.1:${slow.address().port}`);
    assert.notEqual(next, text);
    const { line } = await portico.reload(next);
    assert.match(line, /config reloaded/);
    const first = await get(`${base}/`);
    assert.deepEqual([first.status, first.instance], [200, three.id], 'the first request after the reload on the new name\'s server');
  });

  test('a WebSocket open on a server DNS no longer names goes on; new requests go to the servers named now', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { apps, dns, portico, base } = await setUp({ 'app.test': ['127.0.0.2'] }, ['127.0.0.2', '127.0.0.3'], (p) => `discover: { dns: app.test, port: ${p}, interval: 2s }`);
    const [two, three] = apps as [App, App];
    const socket = await new Promise<import('node:net').Socket>((resolve, reject) => {
      const req = http.request(`${base}/ws`, { headers: { connection: 'Upgrade', upgrade: 'websocket' } });
      req.once('upgrade', (_res, upgraded) => resolve(upgraded));
      req.once('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
      req.once('error', reject);
      req.end();
    });
    cleanups.push(() => void socket.destroy());
    const echo = (text: string) =>
      new Promise<string>((resolve) => {
        socket.once('data', (chunk: Buffer) => resolve(chunk.toString()));
        socket.write(text);
      });
    assert.equal(await echo('one'), `${two.id} one`);
    const mark = portico.stderr.length;
    await dns.setHosts({ 'app.test': ['127.0.0.3'] });
    await portico.waitForLine(/servers found through DNS changed/, mark, 5000);
    await eventually(async () => (await get(`${base}/`)).instance === three.id, 'new requests on the server named now');
    assert.equal(await echo('two'), `${two.id} two`, 'the tunnel on the removed server still works');
    socket.end();
    await eventually(() => socket.closed, 'the tunnel closed');
  });

  test('the admin API drains a server found through DNS by its address:port id, and one DNS names later takes a drain set before', async (t) => {
    if (!requireTool(t, 'dnsmasq')) return;
    const { apps, dns, admin, base } = await setUp({ 'app.test': ['127.0.0.2', '127.0.0.3'] }, ['127.0.0.2', '127.0.0.3', '127.0.0.4'], (p) => `discover: { dns: app.test, port: ${p}, interval: 2s }`);
    const [two, three, four] = apps as [App, App, App];
    assert.equal(await serverAction(admin, three.id, 'drain'), 200);
    assert.equal((await statusServers(admin)).find((s) => s.id === three.id)?.state, 'draining');
    for (let i = 0; i < 4; i++) assert.equal((await get(`${base}/`)).instance, two.id, 'the drained server takes no new client');
    // Not named by DNS yet: kept (404 says so), and applied when DNS names it.
    assert.equal(await serverAction(admin, four.id, 'drain'), 404);
    await dns.setHosts({ 'app.test': ['127.0.0.2', '127.0.0.3', '127.0.0.4'] });
    const found = await eventually(async () => (await statusServers(admin)).find((s) => s.id === four.id), 'the added server in /status');
    assert.equal(found.state, 'draining', 'the drain set before applies');
    assert.equal(await serverAction(admin, '127.0.0.9', 'drain'), 404, 'an id that is no address:port is unknown');
  });

  test('discover: port with SRV is refused at its line, and A without a port too', () => {
    const site = 'sites:\n  - routes:\n      - { path: /, proxy: { upstream: app } }\n';
    const srv = configErrors(`upstreams:\n  app:\n    discover:\n      dns: _http._tcp.app.test\n      type: SRV\n      port: 8080\n${site}`, tmpdir());
    assert.match(srv.join('\n'), /portico\.yaml:6:\d+.*SRV records carry each server's port: remove port/);
    const a = configErrors(`upstreams:\n  app:\n    discover: { dns: app.test }\n${site}`, tmpdir());
    assert.match(a.join('\n'), /portico\.yaml:3:\d+.*A records carry no port/);
    const resolver = configErrors(`resolver: dns.example:53\nupstreams:\n  app:\n    discover: { dns: app.test, port: 80 }\n${site}`, tmpdir());
    assert.match(resolver.join('\n'), /portico\.yaml:1:\d+.*DNS server's address/);
  });
});
