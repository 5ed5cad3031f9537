/**
 * TLS listeners: SNI picks the site's certificate, ALPN h2 and http/1.1 share a port, versions and client
 * certificates are enforced, 421 only for a host whose certificate differs from the connection's (coalescing
 * keeps working), HSTS only over TLS, redirect_https only for configured hosts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';
import { h2Get, h2Session, httpsGet, presented, testPki, type PemCertificate, type TestPki } from './tls-support.js';

let pki: TestPki;
const certs: Record<string, PemCertificate> = {};

before(async () => {
  pki = await testPki();
  certs.fallback = await pki.issue(['default.example']);
  certs.ab = await pki.issue(['a.example', 'b.example']);
  certs.c = await pki.issue(['c.example']);
  certs.wild = await pki.issue(['*.wild.example']);
});

/** The files of the certificates, for a config's folder. */
function files(): Record<string, string> {
  const out: Record<string, string> = { 'client-ca.pem': pki.ca.cert };
  for (const [name, pair] of Object.entries(certs)) {
    out[`${name}.pem`] = pair.cert;
    out[`${name}.key`] = pair.key;
  }
  return out;
}

/** Sites a and b share one SAN certificate (named twice in the config), c has its own, *.wild one wildcard. */
const SITES = `sites:
  - hosts: [a.example]
    tls: { cert: ./ab.pem, key: ./ab.key }
    hsts: { max_age: 1y, include_subdomains: true }
    routes: [{ path: "= /", respond: { body: "site a" } }]
  - hosts: [b.example]
    tls: { cert: ./ab.pem, key: ./ab.key }
    routes: [{ path: /, respond: { body: "site b" } }]
  - hosts: [c.example]
    tls: { cert: ./c.pem, key: ./c.key }
    routes: [{ path: /, respond: { body: "site c" } }]
  - hosts: ["*.wild.example"]
    tls: { cert: ./wild.pem, key: ./wild.key }
    routes: [{ path: /, respond: { body: "site wild" } }]
  - hosts: [plain.example]
    routes: [{ path: /, respond: { body: "site plain" } }]
  - routes: [{ path: /, respond: { body: "default site" } }]
`;

describe('TLS listener with SNI, ALPN and misdirection', () => {
  let portico: RunningPortico;
  before(async () => {
    portico = await startPortico(
      `listen:\n  - { addr: "127.0.0.1:0", tls: { cert: ./fallback.pem, key: ./fallback.key } }\n  - "127.0.0.1:0"\n  - { addr: "127.0.0.1:0", redirect_https: 8443 }\nlog: { access: off }\n${SITES}`,
      files(),
    );
  });
  after(() => portico.stop());

  test('SNI picks the site certificate: exact host, wildcard, the listener default for an unknown name or no SNI', async () => {
    const { port } = portico;
    assert.equal(await presented(port, pki.ca.cert, 'a.example'), 'a.example');
    assert.equal(await presented(port, pki.ca.cert, 'B.Example'), 'a.example', 'the a/b SAN certificate, matched case-insensitively');
    assert.equal(await presented(port, pki.ca.cert, 'c.example'), 'c.example');
    assert.equal(await presented(port, pki.ca.cert, 'x.wild.example'), '*.wild.example');
    assert.equal(await presented(port, pki.ca.cert, 'plain.example'), 'default.example', 'a site without its own certificate gets the default');
    assert.equal(await presented(port, pki.ca.cert, 'unknown.example'), 'default.example');
    assert.equal(await presented(port, pki.ca.cert, ''), 'default.example');
  });

  test('a wildcard certificate is chosen for one label only (RFC 6125 §6.4.3): *.wild.example for x.wild.example, not deep.x.wild.example', async () => {
    const { port } = portico;
    assert.equal(await presented(port, pki.ca.cert, 'x.wild.example'), '*.wild.example');
    assert.equal(await presented(port, pki.ca.cert, 'deep.x.wild.example'), 'default.example', 'a name the wildcard cannot cover gets the default');
    assert.equal(await presented(port, pki.ca.cert, 'a.b.c.wild.example'), 'default.example');
    assert.equal(await presented(port, pki.ca.cert, 'wild.example'), 'default.example');
  });

  test('ALPN: one port answers an HTTP/2 client (h2) and an HTTPS/1.1 client', async () => {
    const h1 = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'c.example' });
    assert.equal(h1.alpn, 'http/1.1');
    assert.equal(h1.status, 200);
    assert.equal(h1.body, 'site c');
    const session = await h2Session(portico.port, pki.ca.cert, 'c.example');
    try {
      assert.equal(session.alpnProtocol, 'h2');
      const h2 = await h2Get(session, 'c.example');
      assert.equal(h2.status, 200);
      assert.equal(h2.body, 'site c');
    } finally {
      session.close();
    }
  });

  test('421 for a host whose certificate differs from the connection\'s, over HTTP/1.1 and HTTP/2', async () => {
    const h1 = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'a.example', host: 'c.example' });
    assert.equal(h1.status, 421);
    assert.doesNotMatch(h1.body, /site c/);
    const noSni = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: '', host: 'a.example' });
    assert.equal(noSni.status, 421, 'the default certificate is not a.example\'s');
    const session = await h2Session(portico.port, pki.ca.cert, 'a.example');
    try {
      assert.equal((await h2Get(session, 'c.example')).status, 421);
      assert.equal((await h2Get(session, 'x.wild.example')).status, 421);
    } finally {
      session.close();
    }
  });

  test('no 421 when the connection\'s certificate serves the host too: coalescing over HTTP/2 and HTTP/1.1, wildcard, default', async () => {
    const session = await h2Session(portico.port, pki.ca.cert, 'a.example');
    try {
      assert.deepEqual([(await h2Get(session, 'a.example')).body, (await h2Get(session, 'b.example')).body], ['site a', 'site b']);
    } finally {
      session.close();
    }
    const wild = await h2Session(portico.port, pki.ca.cert, 'one.wild.example');
    try {
      const other = await h2Get(wild, 'two.wild.example');
      assert.deepEqual([other.status, other.body], [200, 'site wild']);
    } finally {
      wild.close();
    }
    const b = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'a.example', host: 'b.example' });
    assert.deepEqual([b.status, b.body], [200, 'site b']);
    const plain = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'unknown.example', host: 'plain.example' });
    assert.deepEqual([plain.status, plain.body], [200, 'site plain'], 'the default certificate is plain.example\'s too');
  });

  test('an unknown host is not misdirected: the default site answers it as without TLS', async () => {
    const res = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'a.example', host: 'nobody.example' });
    assert.deepEqual([res.status, res.body], [200, 'default site']);
  });

  test('HSTS is sent over TLS only, on the site\'s answers and error pages', async () => {
    const secure = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'a.example' });
    assert.equal(secure.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains');
    const missing = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'a.example', path: '/missing' });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains');
    const b = await httpsGet({ port: portico.port, ca: pki.ca.cert, servername: 'b.example' });
    assert.equal(b.headers['strict-transport-security'], undefined, 'site b sets no hsts');
    const plainPort = portico.server.addresses[1]!.port;
    const res = await rawRequest(plainPort, 'GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
    assert.equal(res.body, 'site a');
    assert.equal(res.headers['strict-transport-security'], undefined);
  });

  test('redirect_https: 308 to https on the port for a configured host, path canonical and query kept', async () => {
    const port = portico.server.addresses[2]!.port;
    const exact = await rawRequest(port, 'GET /x/../y?q=1 HTTP/1.1\r\nHost: A.example:80\r\nConnection: close\r\n\r\n');
    assert.deepEqual([exact.status, exact.headers.location], [308, 'https://a.example:8443/y?q=1']);
    const wild = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: deep.wild.example\r\nConnection: close\r\n\r\n');
    assert.deepEqual([wild.status, wild.headers.location], [308, 'https://deep.wild.example:8443/']);
    const plain = await rawRequest(port, 'GET /p HTTP/1.1\r\nHost: plain.example\r\nConnection: close\r\n\r\n');
    assert.deepEqual([plain.status, plain.headers.location], [308, 'https://plain.example:8443/p'], 'a site without a certificate of its own too');
  });

  test('redirect_https never echoes an unknown Host: 421, no Location', async () => {
    const port = portico.server.addresses[2]!.port;
    for (const request of [
      'GET /x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n',
      'GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n',
      'GET /x HTTP/1.0\r\n\r\n',
    ]) {
      const res = await rawRequest(port, request);
      assert.equal(res.status, 421, request);
      assert.equal(res.headers.location, undefined, request);
      assert.doesNotMatch(res.raw, /evil/, request);
    }
  });
});
