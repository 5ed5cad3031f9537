/**
 * TLS in a real `portico run` process: SIGHUP re-reads the certificate files without dropping open connections,
 * and `--dev` serves HTTPS with a self-signed certificate for localhost whose file it names.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, describe, test } from 'node:test';
import { makeTree } from '../helpers/portico.js';
import { PorticoProcess } from '../helpers/process.js';
import { h2Get, h2Session, httpsGet, peerCertificate, testPki } from './tls-support.js';

const dir = makeTree({});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A GET on an open HTTP/1.1 TLS connection; resolves with the answer's text once its body ("ok") is in. */
async function getOn(socket: tls.TLSSocket): Promise<string> {
  let received = '';
  const onData = (chunk: Buffer) => (received += chunk.toString('latin1'));
  socket.on('data', onData);
  socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
  while (!received.endsWith('\r\n\r\nok')) await once(socket, 'data');
  socket.off('data', onData);
  return received;
}

describe('TLS in portico run', () => {
  test('SIGHUP re-reads the certificate files: new handshakes get the new one, open HTTP/1.1 and HTTP/2 connections stay served', async () => {
    const pki = await testPki();
    const [first, second] = [await pki.issue(['localhost']), await pki.issue(['localhost'])];
    writeFileSync(path.join(dir, 'site.pem'), first.cert);
    writeFileSync(path.join(dir, 'site.key'), first.key);
    const file = path.join(dir, 'tls.yaml');
    const text = 'listen: [{ addr: "127.0.0.1:0", tls: { cert: ./site.pem, key: ./site.key } }]\nlog: { access: off }\nsites:\n  - routes: [{ path: /, respond: { body: ok } }]\n';
    writeFileSync(file, text);
    const portico = await PorticoProcess.start(file, dir);
    const h1 = tls.connect({ host: '127.0.0.1', port: portico.port, ca: pki.ca.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    h1.on('error', () => undefined);
    await once(h1, 'secureConnect');
    const session = await h2Session(portico.port, pki.ca.cert, 'localhost');
    try {
      assert.match(await getOn(h1), /^HTTP\/1\.1 200 /);
      assert.equal((await peerCertificate(portico.port, pki.ca.cert, 'localhost')).fingerprint256, new X509Certificate(first.cert).fingerprint256);
      writeFileSync(path.join(dir, 'site.pem'), second.cert);
      writeFileSync(path.join(dir, 'site.key'), second.key);
      const { line } = await portico.reload(text);
      assert.match(line, /config reloaded/);
      assert.equal((await peerCertificate(portico.port, pki.ca.cert, 'localhost')).fingerprint256, new X509Certificate(second.cert).fingerprint256);
      assert.match(await getOn(h1), /^HTTP\/1\.1 200 /, 'the HTTP/1.1 connection made before the reload is still served');
      assert.equal((await h2Get(session, 'localhost')).body, 'ok', 'so is the HTTP/2 session');
    } finally {
      h1.destroy();
      session.close();
      assert.equal(await portico.stop(), 0);
    }
  });

  test('--dev serves HTTPS on a plain listener with a self-signed certificate for localhost and 127.0.0.1, at the path it prints', async () => {
    const file = path.join(dir, 'dev.yaml');
    writeFileSync(file, 'listen: ["127.0.0.1:0"]\nlog: { access: off }\nsites:\n  - routes: [{ path: /, respond: { body: dev } }]\n');
    const portico = await PorticoProcess.start(file, dir, ['--dev']);
    try {
      assert.match(portico.stderr, /serving .* on https:\/\/127\.0\.0\.1:\d+\//);
      const line = await portico.waitForLine(/--dev: self-signed certificate/, 0);
      const certFile = /in (\S+\.pem) /.exec(line)![1]!;
      assert.ok(line.includes(`curl --cacert ${certFile} https://localhost:${portico.port}/`), `the hint names the port served: ${line}`);
      const cert = readFileSync(certFile, 'utf8');
      const x509 = new X509Certificate(cert);
      assert.equal(x509.issuer, x509.subject, 'self-signed');
      assert.match(x509.subjectAltName ?? '', /DNS:localhost/);
      // Verified as a browser would: the chain by the printed file, the name by Node's own check.
      const named = await new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port: portico.port, servername: 'localhost', ca: cert }, () => {
          resolve(socket.authorized ? 'authorized' : String(socket.authorizationError));
          socket.destroy();
        });
        socket.on('error', reject);
      });
      assert.equal(named, 'authorized');
      const res = await httpsGet({ port: portico.port, ca: cert, servername: 'localhost' });
      assert.deepEqual([res.status, res.body], [200, 'dev']);
      assert.equal(await portico.stop(), 0);
      assert.equal(existsSync(certFile), false, 'the certificate folder is removed on exit');
    } finally {
      await portico.stop();
    }
  });
});
