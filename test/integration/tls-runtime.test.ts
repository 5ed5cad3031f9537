/**
 * Certificates at runtime: `install` swaps one in for new handshakes (as ACME will), a reload re-reads the
 * certificate files, and neither drops an open connection, which keeps being served.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PorticoError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { h2Get, h2Session, httpsGet, peerCertificate, testPki, type PemCertificate, type TestPki } from './tls-support.js';

let pki: TestPki;
let first: PemCertificate;
let second: PemCertificate;
let other: PemCertificate;

before(async () => {
  pki = await testPki();
  first = await pki.issue(['a.example']);
  second = await pki.issue(['a.example']);
  other = await pki.issue(['new.example']);
});

const CONFIG = `listen: [{ addr: "127.0.0.1:0", tls: { cert: ./a.pem, key: ./a.key } }]
log: { access: off }
sites:
  - hosts: [a.example]
    tls: { cert: ./a.pem, key: ./a.key }
    routes: [{ path: /, respond: { body: "site a" } }]
  - hosts: [new.example]
    routes: [{ path: /, respond: { body: "site new" } }]
`;

describe('certificates at runtime', () => {
  let portico: RunningPortico;
  before(async () => {
    portico = await startPortico(CONFIG, { 'a.pem': first.cert, 'a.key': first.key });
  });
  after(() => portico.stop());

  test('install() serves a new certificate to new handshakes; an open HTTP/2 session keeps working', async () => {
    const { port } = portico;
    const before = await peerCertificate(port, pki.ca.cert, 'new.example');
    assert.equal(before.subject.CN, 'a.example', 'no certificate of its own yet: the listener default');
    const session = await h2Session(port, pki.ca.cert, 'new.example');
    try {
      portico.server.certificates.install('acme:new', ['new.example'], other.cert, other.key);
      assert.equal((await peerCertificate(port, pki.ca.cert, 'new.example')).subject.CN, 'new.example');
      assert.equal((await peerCertificate(port, pki.ca.cert, 'a.example')).subject.CN, 'a.example');
      // The session was made with the default certificate, which is no longer new.example's: misdirected now.
      assert.equal((await h2Get(session, 'new.example')).status, 421);
      assert.equal((await h2Get(session, 'a.example')).body, 'site a', 'the open session is still served');
    } finally {
      session.close();
    }
  });

  test('install() refuses a key that does not match its certificate and changes nothing', () => {
    assert.throws(
      () => portico.server.certificates.install('acme:bad', ['a.example'], other.cert, first.key),
      (err: unknown) => err instanceof PorticoError && err.code === 'PORTICO_BAD_CERTIFICATE',
    );
  });

  test('a reload re-reads the certificate files and keeps installed certificates; open connections stay served', async () => {
    const { port } = portico;
    const oldPrint = (await peerCertificate(port, pki.ca.cert, 'a.example')).fingerprint256;
    const session = await h2Session(port, pki.ca.cert, 'a.example');
    try {
      writeFileSync(path.join(portico.dir, 'a.pem'), second.cert);
      writeFileSync(path.join(portico.dir, 'a.key'), second.key);
      await portico.server.reload(parseConfig(CONFIG, path.join(portico.dir, 'portico.yaml'), portico.dir));
      const newPrint = (await peerCertificate(port, pki.ca.cert, 'a.example')).fingerprint256;
      assert.notEqual(newPrint, oldPrint);
      assert.equal(newPrint, new X509Certificate(second.cert).fingerprint256, 'the certificate now in the file');
      assert.equal((await peerCertificate(port, pki.ca.cert, 'new.example')).subject.CN, 'new.example', 'the installed certificate survived the reload');
      const res = await h2Get(session, 'a.example');
      assert.deepEqual([res.status, res.body], [200, 'site a'], 'the session made before the reload is served, not misdirected');
      const h1 = await httpsGet({ port, ca: pki.ca.cert, servername: 'a.example' });
      assert.equal(h1.body, 'site a');
    } finally {
      session.close();
    }
  });
});
