/**
 * ACME against Debian's pebble: a certificate obtained on first start, kept 0600 in the state directory, reused
 * at the next start (no new order), renewed when a third of its life remains, retried with backoff while the CA
 * is down (the old certificate keeps serving); and a real http-01 validation through Portico's plain listener,
 * which answers the challenge before access rules and rate limits; sites sharing an account make it once.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import tls from 'node:tls';
import { after, describe, test, type TestContext } from 'node:test';
import * as acme from 'acme-client';
import { parseConfig } from '../../src/server/config.js';
import { Portico, type PorticoOptions } from '../../src/server/portico.js';
import { renewalTime } from '../../src/tls/acme.js';
import { makeTree } from '../helpers/portico.js';
import { capturingLogger, freePort, startChallengeDns, startPebble } from '../helpers/pebble.js';
import { requireTool } from '../helpers/tools.js';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tree(): string {
  const dir = makeTree();
  dirs.push(dir);
  return dir;
}

const stopped = new WeakSet<Portico>();

/** Builds (not starts) a Portico from YAML in `dir`, logging into `logger`; stopped after the test if it is not. */
function build(t: TestContext, dir: string, yaml: string, logger: ReturnType<typeof capturingLogger>['logger'], options: PorticoOptions = {}): Portico {
  const server = new Portico(parseConfig(yaml, path.join(dir, 'portico.yaml'), dir), logger, options);
  t.after(() => (stopped.has(server) ? undefined : stop(server)));
  return server;
}

function stop(server: Portico): Promise<void> {
  stopped.add(server);
  return server.stop(100);
}

/** The status of a GET for `path` with `Host: host` (fetch cannot set Host). */
function statusOf(port: number, urlPath: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, headers: { host }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    }).on('error', reject);
  });
}

/** The certificate a TLS handshake to `port` with SNI `servername` gets, or the handshake's error. */
function handshake(port: number, servername: string): Promise<X509Certificate | Error> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const peer = socket.getPeerX509Certificate();
      socket.destroy();
      resolve(peer ?? new Error('no certificate'));
    });
    socket.once('error', (err) => resolve(err));
  });
}

/** A kept-alive HTTPS connection to `port` for `host`: `get()` sends one request on it and resolves to the status. */
function keptConnection(port: number, host: string): Promise<{ get(): Promise<number>; close(): void }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: host, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      let buffered = '';
      let waiting: ((status: number) => void) | undefined;
      socket.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('latin1');
        const end = buffered.indexOf('\r\n\r\n');
        const length = Number(/content-length: *(\d+)/i.exec(buffered)?.[1] ?? 0);
        if (end !== -1 && buffered.length >= end + 4 + length) {
          const status = Number(buffered.slice(9, 12));
          buffered = buffered.slice(end + 4 + length);
          waiting?.(status);
        }
      });
      resolve({
        get: () =>
          new Promise<number>((done, fail) => {
            waiting = done;
            socket.once('close', () => fail(new Error('the connection was closed')));
            socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
          }),
        close: () => socket.destroy(),
      });
    });
    socket.once('error', reject);
  });
}

function issuerOf(pem: string): string {
  return new X509Certificate(pem).issuer;
}

describe('ACME with pebble', () => {
  test('obtained on first start and kept 0600; a reload orders only for a new site; reused at restart with no new order; renewed at a third of life left; retried with backoff while the CA is down, the old certificate serving', async (t) => {
    if (!requireTool(t, 'pebble') || !requireTool(t, 'openssl')) return;
    const dir = tree();
    const pebble = await startPebble(dir, { alwaysValid: true });
    t.after(() => pebble.stop());
    const yaml = `listen: ["127.0.0.1:0", { addr: "127.0.0.1:0", tls: {} }]
log: { access: off }
state_dir: ./state
sites:
  - hosts: [a.test, www.a.test]
    tls: { acme: { email: ops@a.test, agree_tos: true, directory: "${pebble.directory}", trusted_roots: ${pebble.caFile} } }
    routes:
      - path: /
        respond: { body: "a" }
`;
    // First start: ordered in the background, the listener serving meanwhile.
    const first = capturingLogger();
    const server = build(t, dir, yaml, first.logger);
    await server.start();
    assert.equal(await statusOf(server.addresses[0]!.port, '/', 'a.test'), 200);
    await first.waitFor('acme: certificate obtained');
    const cert = server.acmeManager('a.test')?.certificate;
    assert.ok(cert !== undefined);
    assert.match(issuerOf(cert), /Pebble Intermediate CA/);
    assert.match(new X509Certificate(cert).subjectAltName ?? '', /DNS:a\.test.*DNS:www\.a\.test|DNS:www\.a\.test.*DNS:a\.test/);
    // Served by SNI on the TLS listener, for each host of the site.
    for (const name of ['a.test', 'www.a.test']) {
      const peer = await handshake(server.addresses[1]!.port, name);
      assert.ok(peer instanceof X509Certificate, String(peer));
      assert.match(peer.issuer, /Pebble Intermediate CA/);
      assert.equal(peer.serialNumber, new X509Certificate(cert).serialNumber);
    }
    const state = path.join(dir, 'state');
    assert.equal(statSync(state).mode & 0o777, 0o700);
    const files = ['certificates', 'accounts'].flatMap((sub) => readdirSync(path.join(state, sub)).map((name) => path.join(state, sub, name)));
    assert.deepEqual(files.map((file) => path.extname(file)).sort(), ['.crt', '.json', '.key', '.key']);
    for (const file of [...files, path.join(state, 'sticky.key')]) assert.equal(statSync(file).mode & 0o777, 0o600, file);
    assert.equal(pebble.issued(), 1);

    // A reload keeps the manager of the unchanged site (no new order) and orders for the new one.
    const manager = server.acmeManager('a.test');
    const withC = yaml.replace('sites:\n', `sites:
  - hosts: [c.test]
    tls: { acme: { email: ops@a.test, agree_tos: true, directory: "${pebble.directory}", trusted_roots: ${pebble.caFile} } }
    routes: [{ path: /, respond: { body: "c" } }]
`);
    await server.reload(parseConfig(withC, path.join(dir, 'portico.yaml'), dir));
    await first.waitFor('acme: certificate obtained', 2);
    assert.equal(server.acmeManager('a.test'), manager, 'the same manager after a reload');
    const orders = first.lines.filter((line) => line.msg === 'acme: ordering a certificate').map((line) => (line.hosts as string[]).join());
    assert.deepEqual(orders, ['a.test,www.a.test', 'c.test']);
    assert.match(issuerOf(server.acmeManager('c.test')!.certificate!), /Pebble Intermediate CA/);
    assert.equal(pebble.issued(), 2);
    await stop(server);

    // Restart: the stored certificate is installed at once; nothing is ordered.
    const second = capturingLogger();
    const again = build(t, dir, yaml, second.logger);
    await again.start();
    assert.equal(second.lines.filter((line) => line.msg === 'acme: certificate loaded from the state directory').length, 1);
    assert.equal(second.lines.filter((line) => line.msg === 'acme: ordering a certificate').length, 0, 'no order at a restart with a good certificate');
    assert.equal(again.acmeManager('a.test')?.certificate, cert);
    await stop(again);
    assert.equal(pebble.issued(), 2);

    // Renewal: the clock is moved to 300 ms before the renewal point; the timer fires and a new certificate is
    // installed. Once renewed, the clock is put back (the new certificate is then far from its own renewal).
    const x509 = new X509Certificate(cert);
    let offset = renewalTime(Date.parse(x509.validFrom), Date.parse(x509.validTo)) - 300 - Date.now();
    const third = capturingLogger((line) => {
      if (line.msg === 'acme: certificate renewed') offset = 0;
    });
    const renewing = build(t, dir, yaml, third.logger, { acme: { now: () => Date.now() + offset } });
    await renewing.start();
    assert.equal(renewing.acmeManager('a.test')?.certificate, cert, 'the old certificate serves until the renewal');
    const tlsPort = renewing.addresses[1]!.port;
    assert.equal(((await handshake(tlsPort, 'a.test')) as X509Certificate).serialNumber, x509.serialNumber, 'the stored one, installed at start');
    const kept = await keptConnection(tlsPort, 'a.test');
    t.after(() => kept.close());
    assert.equal(await kept.get(), 200);
    assert.equal(third.lines.filter((line) => line.msg === 'acme: ordering a certificate').length, 0, 'not due yet at start');
    await third.waitFor('acme: certificate renewed');
    const renewed = renewing.acmeManager('a.test')?.certificate;
    assert.ok(renewed !== undefined && renewed !== cert);
    assert.notEqual(new X509Certificate(renewed).serialNumber, x509.serialNumber);
    // Swapped in for new handshakes; the connection made before is still served.
    assert.equal(((await handshake(tlsPort, 'a.test')) as X509Certificate).serialNumber, new X509Certificate(renewed).serialNumber);
    assert.equal(await kept.get(), 200, 'a connection from before the renewal is not dropped');
    kept.close();
    assert.equal(pebble.issued(), 3);
    await stop(renewing);

    // The CA goes away; at the next renewal the order fails, is retried with a doubling delay and logged, and the
    // certificate in place keeps serving.
    await pebble.stop();
    const r = new X509Certificate(renewed);
    offset = renewalTime(Date.parse(r.validFrom), Date.parse(r.validTo)) + 1000 - Date.now();
    const fourth = capturingLogger();
    const failing = build(t, dir, yaml, fourth.logger, { acme: { now: () => Date.now() + offset, retryFirstMs: 100, retryMaxMs: 10_000 } });
    await failing.start();
    const failures = await fourth.waitFor('acme: certificate order failed; retrying', 3);
    const serving = await handshake(failing.addresses[1]!.port, 'a.test');
    assert.equal((serving as X509Certificate).serialNumber, r.serialNumber, 'the old certificate keeps serving');
    await stop(failing);
    assert.deepEqual(failures.slice(0, 3).map((line) => line.attempt), [1, 2, 3]);
    const delays = failures.slice(0, 3).map((line) => line.retryInMs as number);
    assert.ok(delays[0]! >= 90 && delays[0]! <= 110, `first retry after ~100 ms: ${delays.join(', ')}`);
    assert.ok(delays[1]! > delays[0]! * 1.5 && delays[2]! > delays[1]! * 1.5, `doubling: ${delays.join(', ')}`);
    for (const line of failures) {
      assert.match(String(line.reason), /ECONNREFUSED|connect/i, 'the reason is logged');
      assert.equal(line.serving, true);
    }
    assert.equal(failing.acmeManager('a.test')?.certificate, undefined, 'stopped: managers are gone');
    assert.equal(fourth.lines.filter((line) => line.msg === 'acme: certificate loaded from the state directory').length, 1);
  });

  test('a real http-01 validation: pebble fetches the token from the plain listener, past access rules and a rate limit', async (t) => {
    if (!requireTool(t, 'pebble') || !requireTool(t, 'pebble-challtestsrv') || !requireTool(t, 'openssl')) return;
    const dir = tree();
    const dns = await startChallengeDns(dir);
    t.after(() => dns.stop());
    // Portico first (port 0), so that pebble's httpPort can name its port.
    const logs = capturingLogger();
    const port = await freePort();
    const pebble = await startPebble(dir, { alwaysValid: false, httpPort: port, dnsServer: dns.address });
    t.after(() => pebble.stop());
    const server = build(t, dir, `listen: ["127.0.0.1:${port}"]
log: { access: off }
state_dir: ./state
sites:
  - hosts: [b.test]
    access: [{ deny: all }]
    rate_limit: { rate: 1/m, burst: 1 }
    tls: { acme: { email: ops@b.test, agree_tos: true, directory: "${pebble.directory}", trusted_roots: ${pebble.caFile} } }
    routes:
      - path: /
        respond: { body: "b" }
`, logs.logger);
    await server.start();
    await logs.waitFor('acme: certificate obtained');
    assert.match(issuerOf(server.acmeManager('b.test')!.certificate!), /Pebble Intermediate CA/);
    // The site refuses everything else: the challenge path alone skipped the rules. A token not pending is 404.
    assert.equal(await statusOf(port, '/', 'b.test'), 403);
    for (let i = 0; i < 3; i++) assert.equal(await statusOf(port, '/.well-known/acme-challenge/not-pending', 'b.test'), 404);
  });

  test('external account binding: a CA that requires it issues with the kid and key, and refuses without (logged, retried)', async (t) => {
    if (!requireTool(t, 'pebble') || !requireTool(t, 'openssl')) return;
    const dir = tree();
    const hmac = 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W';
    const pebble = await startPebble(dir, { alwaysValid: true, eab: { 'kid-1': hmac } });
    t.after(() => pebble.stop());
    const site = (host: string, eab: string) => `  - hosts: [${host}]
    tls: { acme: { email: ops@${host}, agree_tos: true, directory: "${pebble.directory}", trusted_roots: ${pebble.caFile}${eab} } }
`;
    const logs = capturingLogger();
    const server = build(t, dir, `listen: [{ addr: "127.0.0.1:0", tls: {} }]
log: { access: off }
state_dir: ./state
sites:
${site('eab.test', `, eab: { kid: kid-1, hmac_key: ${hmac} }`)}${site('no-eab.test', '')}`, logs.logger, { acme: { retryFirstMs: 60_000 } });
    await server.start();
    await Promise.all([logs.waitFor('acme: certificate obtained'), logs.waitFor('acme: certificate order failed; retrying')]);
    assert.match(issuerOf(server.acmeManager('eab.test')!.certificate!), /Pebble Intermediate CA/);
    assert.equal(server.acmeManager('no-eab.test')!.certificate, undefined);
    const failure = logs.lines.find((line) => line.msg === 'acme: certificate order failed; retrying')!;
    assert.deepEqual(failure.hosts, ['no-eab.test']);
    assert.match(String(failure.reason), /externalAccountBinding/);
    // A host whose certificate does not exist (yet), on a listener without a default one: the handshake fails.
    assert.ok((await handshake(server.addresses[0]!.port, 'no-eab.test')) instanceof Error);
    assert.match(((await handshake(server.addresses[0]!.port, 'eab.test')) as X509Certificate).issuer, /Pebble Intermediate CA/);
  });

  test('three sites on one account at first start: one account is made, and the saved key owns the saved account URL', async (t) => {
    if (!requireTool(t, 'pebble') || !requireTool(t, 'openssl')) return;
    const dir = tree();
    const pebble = await startPebble(dir, { alwaysValid: true });
    t.after(() => pebble.stop());
    const site = (host: string) => `  - hosts: [${host}]
    tls: { acme: { email: ops@shared.test, agree_tos: true, directory: "${pebble.directory}", trusted_roots: ${pebble.caFile} } }
    routes: [{ path: /, respond: { body: "${host}" } }]
`;
    const logs = capturingLogger();
    const server = build(t, dir, `listen: [{ addr: "127.0.0.1:0", tls: {} }]
log: { access: off }
state_dir: ./state
sites:
${site('one.test')}${site('two.test')}${site('three.test')}`, logs.logger);
    await server.start();
    await logs.waitFor('acme: certificate obtained', 3);
    for (const host of ['one.test', 'two.test', 'three.test']) assert.match(issuerOf(server.acmeManager(host)!.certificate!), /Pebble Intermediate CA/);
    assert.equal(pebble.accounts(), 1, 'one account for the three sites');
    const accounts = path.join(dir, 'state', 'accounts');
    const names = readdirSync(accounts).sort();
    assert.deepEqual(names.map((name) => path.extname(name)), ['.json', '.key']);
    const accountKey = readFileSync(path.join(accounts, names[1]!));
    const saved = JSON.parse(readFileSync(path.join(accounts, names[0]!), 'utf8')) as { url: string };
    // The CA's account for the saved key (looked up, never made) is the saved one: a renewal signs for it.
    const client = new acme.Client({ directoryUrl: pebble.directory, accountKey });
    await client.createAccount({ onlyReturnExisting: true });
    assert.equal(client.getAccountUrl(), saved.url);
    assert.equal(pebble.accounts(), 1);
  });
});
