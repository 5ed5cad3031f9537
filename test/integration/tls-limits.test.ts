/**
 * What a TLS listener enforces: protocol versions, client certificates (mTLS), the handshake timeout, and the
 * HTTP/1.1 limits of a plain listener (header, request and keep-alive timeouts) on connections over TLS.
 */
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import * as x509 from '@peculiar/x509';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { h2Get, h2Session, httpsGet, testPki, type PemCertificate, type TestPki } from './tls-support.js';

let pki: TestPki;
let server: PemCertificate;
let client: PemCertificate;
let stranger: PemCertificate;

before(async () => {
  pki = await testPki();
  server = await pki.issue(['localhost']);
  client = await pki.issue(['alice'], { client: true });
  const otherPki = await testPki();
  stranger = await otherPki.issue(['mallory'], { client: true });
});

function serverFiles(): Record<string, string> {
  return { 'server.pem': server.cert, 'server.key': server.key, 'clients.pem': pki.ca.cert };
}

const ROUTES = 'sites:\n  - routes: [{ path: /, respond: { body: "ok" } }]\n';

/** Resolves with the ms until `socket` closes; rejects if it is still open after `limitMs`. */
async function closesWithin(socket: net.Socket, limitMs: number, started = performance.now()): Promise<number> {
  const timer = setTimeout(() => socket.destroy(new Error(`still open after ${limitMs} ms`)), limitMs);
  try {
    const [hadError] = (await once(socket, 'close')) as [boolean];
    if (hadError && socket.errored?.message.startsWith('still open')) throw socket.errored;
    return performance.now() - started;
  } finally {
    clearTimeout(timer);
  }
}

/** A TLS connection with ALPN http/1.1, once its handshake is done. */
async function connectTls(port: number): Promise<tls.TLSSocket> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: pki.ca.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
  socket.on('error', () => undefined);
  await once(socket, 'secureConnect');
  return socket;
}

describe('TLS versions and client certificates', () => {
  let modern: RunningPortico;
  let mutual: RunningPortico;
  before(async () => {
    modern = await startPortico(`listen: [{ addr: "127.0.0.1:0", tls: { cert: ./server.pem, key: ./server.key, min_version: TLSv1.3 } }]\n${ROUTES}`, serverFiles());
    mutual = await startPortico(`listen: [{ addr: "127.0.0.1:0", tls: { cert: ./server.pem, key: ./server.key, client_ca: ./clients.pem } }]\n${ROUTES}`, serverFiles());
  });
  after(async () => {
    await modern.stop();
    await mutual.stop();
  });

  test('min_version: TLSv1.3 refuses a client that offers at most TLS 1.2, and serves one that offers 1.3', async () => {
    await assert.rejects(httpsGet({ port: modern.port, ca: pki.ca.cert, servername: 'localhost', maxVersion: 'TLSv1.2' }), /protocol version/);
    const res = await httpsGet({ port: modern.port, ca: pki.ca.cert, servername: 'localhost', minVersion: 'TLSv1.3' });
    assert.deepEqual([res.status, res.body], [200, 'ok']);
  });

  test('the default minimum (TLS 1.2) serves a TLS 1.2 client and refuses TLS 1.1', async () => {
    const res = await httpsGet({ port: mutual.port, ca: pki.ca.cert, servername: 'localhost', maxVersion: 'TLSv1.2', client });
    assert.equal(res.status, 200);
    // The client is let offer TLS 1.1 (its own default security level would not): the server's alert refuses it.
    await assert.rejects(
      httpsGet({ port: mutual.port, ca: pki.ca.cert, servername: 'localhost', minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0', client }),
      /protocol version/,
    );
  });

  test('client_ca: a client certificate signed by it is served; none, or one from another CA, is refused', async () => {
    const res = await httpsGet({ port: mutual.port, ca: pki.ca.cert, servername: 'localhost', client });
    assert.deepEqual([res.status, res.body], [200, 'ok']);
    await assert.rejects(httpsGet({ port: mutual.port, ca: pki.ca.cert, servername: 'localhost' }), /certificate required|socket hang up|ECONNRESET/);
    await assert.rejects(httpsGet({ port: mutual.port, ca: pki.ca.cert, servername: 'localhost', client: stranger }), /unknown ca|socket hang up|ECONNRESET/);
  });
});

/** A self-signed RSA certificate (Portico's own maker gives ECDSA only): static-RSA and ECDHE-RSA suites need one. */
async function rsaCertificate(name: string): Promise<PemCertificate> {
  const algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - 86_400_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: algorithm,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }])],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return { cert: cert.toString('pem'), key: `-----BEGIN PRIVATE KEY-----\n${pkcs8.replace(/(.{64})/g, '$1\n')}\n-----END PRIVATE KEY-----\n` };
}

/** A TLS handshake offering only `ciphers` (TLS 1.2 unless `version` says otherwise): the suite agreed, or the error. */
function handshake(port: number, servername: string, ciphers: string | undefined, version: tls.SecureVersion = 'TLSv1.2'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername,
      rejectUnauthorized: false,
      minVersion: version,
      maxVersion: version,
      ...(ciphers === undefined ? {} : { ciphers }),
    });
    socket.once('secureConnect', () => {
      resolve(socket.getCipher().name);
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

describe('TLS 1.2 cipher suites', () => {
  let ecdsa: RunningPortico;
  let rsa: RunningPortico;
  let explicit: RunningPortico;
  before(async () => {
    const rsaCert = await rsaCertificate('rsa.test');
    const files = { ...serverFiles(), 'rsa.pem': rsaCert.cert, 'rsa.key': rsaCert.key };
    // The RSA certificate is a site's, chosen by SNI: the listener's suites hold for SNI certificates too.
    const sites = `sites:\n  - hosts: [rsa.test]\n    tls: { cert: ./rsa.pem, key: ./rsa.key }\n    routes: [{ path: /, respond: { body: "rsa" } }]\n  - routes: [{ path: /, respond: { body: "ok" } }]\n`;
    ecdsa = await startPortico(`listen: [{ addr: "127.0.0.1:0", tls: { cert: ./server.pem, key: ./server.key } }]\n${sites}`, files);
    rsa = await startPortico(`listen: [{ addr: "127.0.0.1:0", tls: { cert: ./rsa.pem, key: ./rsa.key } }]\n${ROUTES}`, files);
    explicit = await startPortico(
      `listen: [{ addr: "127.0.0.1:0", tls: { cert: ./rsa.pem, key: ./rsa.key, ciphers: "AES128-SHA:ECDHE-RSA-AES128-SHA" } }]\n${ROUTES}`,
      files,
    );
  });
  after(async () => {
    await ecdsa.stop();
    await rsa.stop();
    await explicit.stop();
  });

  test('by default a TLS 1.2 client offering only CBC or static-RSA suites is refused (RSA and ECDSA certificates, SNI too)', async () => {
    for (const suite of ['AES128-SHA', 'AES256-SHA256', 'ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES256-SHA384', 'AES128-GCM-SHA256']) {
      await assert.rejects(handshake(rsa.port, 'localhost', suite), /handshake failure|no shared cipher/, `${suite} on the RSA listener`);
      await assert.rejects(handshake(ecdsa.port, 'rsa.test', suite), /handshake failure|no shared cipher/, `${suite} on the RSA SNI certificate`);
    }
    for (const suite of ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA384']) {
      await assert.rejects(handshake(ecdsa.port, 'localhost', suite), /handshake failure|no shared cipher/, `${suite} on the ECDSA listener`);
    }
  });

  test('by default ECDHE with AES-GCM or ChaCha20-Poly1305 is agreed over TLS 1.2, and TLS 1.3 is unchanged', async () => {
    assert.equal(await handshake(rsa.port, 'localhost', 'ECDHE-RSA-AES128-GCM-SHA256'), 'ECDHE-RSA-AES128-GCM-SHA256');
    assert.equal(await handshake(rsa.port, 'localhost', 'ECDHE-RSA-CHACHA20-POLY1305'), 'ECDHE-RSA-CHACHA20-POLY1305');
    assert.equal(await handshake(ecdsa.port, 'rsa.test', 'ECDHE-RSA-AES256-GCM-SHA384'), 'ECDHE-RSA-AES256-GCM-SHA384');
    assert.equal(await handshake(ecdsa.port, 'localhost', 'ECDHE-ECDSA-AES128-GCM-SHA256'), 'ECDHE-ECDSA-AES128-GCM-SHA256');
    assert.equal(await handshake(ecdsa.port, 'localhost', undefined), 'ECDHE-ECDSA-AES128-GCM-SHA256', 'a client offering everything gets AEAD');
    assert.match(await handshake(ecdsa.port, 'localhost', undefined, 'TLSv1.3'), /^TLS_/);
    assert.match(await handshake(rsa.port, 'localhost', undefined, 'TLSv1.3'), /^TLS_/);
  });

  test('an explicit tls.ciphers still replaces the default: the CBC and static-RSA suites it names are agreed', async () => {
    assert.equal(await handshake(explicit.port, 'localhost', 'AES128-SHA'), 'AES128-SHA');
    assert.equal(await handshake(explicit.port, 'localhost', 'ECDHE-RSA-AES128-SHA'), 'ECDHE-RSA-AES128-SHA');
    await assert.rejects(handshake(explicit.port, 'localhost', 'ECDHE-RSA-AES128-GCM-SHA256'), /handshake failure|no shared cipher/);
  });
});

describe('timeouts on a TLS listener', () => {
  let portico: RunningPortico;
  before(async () => {
    portico = await startPortico(
      `listen: [{ addr: "127.0.0.1:0", header_timeout: 300ms, request_timeout: 700ms, keepalive_timeout: 300ms, tls: { cert: ./server.pem, key: ./server.key } }]\n${ROUTES}`,
      serverFiles(),
    );
  });
  after(() => portico.stop());

  test('the handshake timeout (header_timeout) closes a client that connects and says nothing', async () => {
    const started = performance.now();
    const socket = net.connect(portico.port, '127.0.0.1');
    socket.on('error', () => undefined);
    const elapsed = await closesWithin(socket, 5000, started);
    assert.ok(elapsed >= 250, `closed after ${Math.round(elapsed)} ms, before the 300 ms timeout`);
  });

  test('plain HTTP sent to the TLS port gets a 400 in plain HTTP (as nginx), not an empty reply, and the port serves TLS on', async () => {
    const socket = net.connect(portico.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    await once(socket, 'connect');
    socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await closesWithin(socket, 5000);
    assert.match(received, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(received, /\r\nConnection: close\r\n/);
    const again = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'localhost' });
    assert.equal(again.status, 200);
  });

  test('header_timeout over TLS: a request head that stalls gets 408 and the connection closes', async () => {
    const socket = await connectTls(portico.port);
    const started = performance.now();
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n');
    const elapsed = await closesWithin(socket, 5000, started);
    assert.match(received, /^HTTP\/1\.1 408 /);
    assert.ok(elapsed >= 250, `answered after ${Math.round(elapsed)} ms`);
  });

  test('request_timeout over TLS: a body that stalls gets 408', async () => {
    const socket = await connectTls(portico.port);
    const started = performance.now();
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.write('POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nab');
    const elapsed = await closesWithin(socket, 5000, started);
    // The respond route answers without reading the body (200 first); the stalled body then gets its 408.
    assert.match(received, /HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.ok(elapsed >= 600, `answered after ${Math.round(elapsed)} ms, before the 700 ms request_timeout`);
  });

  test('keepalive_timeout over TLS: an idle connection is closed after its answer', async () => {
    const socket = await connectTls(portico.port);
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    while (!received.endsWith('ok')) await once(socket, 'data');
    assert.match(received, /^HTTP\/1\.1 200 /);
    const elapsed = await closesWithin(socket, 5000);
    assert.ok(elapsed >= 250, `closed after ${Math.round(elapsed)} ms`);
  });

  test('keepalive_timeout over HTTP/2: an idle session is closed (GOAWAY) after its answers', async () => {
    const session = await h2Session(portico.port, pki.ca.cert, 'localhost');
    const closed = once(session, 'close');
    assert.equal((await h2Get(session, 'localhost')).body, 'ok');
    const started = performance.now();
    let timedOut = false;
    const limit = setTimeout(() => {
      timedOut = true;
      session.destroy();
    }, 5000);
    try {
      await closed;
      assert.equal(timedOut, false, 'still open after 5 s');
    } finally {
      clearTimeout(limit);
    }
    assert.ok(performance.now() - started >= 250);
  });
});

describe('request_timeout on HTTP/2', () => {
  let portico: RunningPortico;
  let app: TestUpstream;
  before(async () => {
    // The app reads the whole body before it answers, as most do: the stall holds the request open.
    app = await startUpstream((_req, res, body) => res.end(`got ${body.length}`));
    portico = await startPortico(
      `listen: [{ addr: "127.0.0.1:0", request_timeout: 700ms, keepalive_timeout: 10s, tls: { cert: ./server.pem, key: ./server.key } }]
upstreams: { app: { servers: [{ url: "${app.url}" }] } }
sites:
  - routes: [{ path: /upload, proxy: { upstream: app } }, { path: /, respond: { body: "ok" } }]
`,
      serverFiles(),
    );
  });
  after(async () => {
    await portico.stop();
    await app.stop();
  });

  test('a request body that stalls is reset (RST_STREAM CANCEL) at request_timeout; the session serves on', async () => {
    const session = await h2Session(portico.port, pki.ca.cert, 'localhost');
    try {
      const started = performance.now();
      const stream = session.request({ ':method': 'POST', ':path': '/upload', ':authority': 'localhost' }, { endStream: false });
      stream.on('error', () => undefined);
      stream.resume();
      stream.write('ab');
      const limit = setTimeout(() => stream.destroy(new Error('still open after 3 s')), 3000);
      await once(stream, 'close');
      clearTimeout(limit);
      const elapsed = performance.now() - started;
      assert.equal(stream.rstCode, 8, `closed with code ${stream.rstCode} after ${Math.round(elapsed)} ms`);
      assert.ok(elapsed >= 600, `reset after ${Math.round(elapsed)} ms, before the 700 ms request_timeout`);
      assert.equal((await h2Get(session, 'localhost')).body, 'ok', 'the session goes on');
    } finally {
      session.destroy();
    }
  });
});

describe('stopping a TLS listener', () => {
  test('stop() sends an idle HTTP/2 session GOAWAY and returns without waiting for the grace period', async () => {
    const portico = await startPortico(`listen: [{ addr: "127.0.0.1:0", tls: { cert: ./server.pem, key: ./server.key } }]\n${ROUTES}`, serverFiles());
    const session = await h2Session(portico.port, pki.ca.cert, 'localhost');
    assert.equal((await h2Get(session, 'localhost')).body, 'ok');
    const goaway = once(session, 'goaway');
    const started = performance.now();
    await portico.server.stop(20_000);
    assert.ok(performance.now() - started < 10_000, 'stop waited for the grace period');
    await goaway;
    session.destroy();
    await portico.stop();
  });
});
