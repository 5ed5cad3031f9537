/**
 * The TLS keys of a config: defaults, and the errors for certificate files (missing, not PEM, a key that is
 * not the certificate's), each at the file:line:col of the key that names the file.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { parseConfig, type Config } from '../../src/server/config.js';
import { createCertificate, type PemCertificate } from '../../src/tls/self-signed.js';
import { configErrors } from '../helpers/config.js';
import { makeTree } from '../helpers/portico.js';

let dir: string;
let one: PemCertificate;
before(async () => {
  one = await createCertificate({ names: ['one.example'] });
  const two = await createCertificate({ names: ['two.example'] });
  dir = makeTree({ 'one.pem': one.cert, 'one.key': one.key, 'two.key': two.key, 'junk.pem': 'not a certificate\n' });
});
after(() => rmSync(dir, { recursive: true, force: true }));

const SITES = 'sites:\n  - routes: [{ path: /, respond: { body: ok } }]\n';

function parse(text: string): Config {
  return parseConfig(text, 'portico.yaml', dir);
}

function errorsOf(text: string): string[] {
  return configErrors(text, dir);
}

describe('TLS config', () => {
  test('a TLS listener: TLS 1.2 to 1.3, HTTP/2 on with safe settings, PEM read from files relative to the config', () => {
    const config = parse(`listen: [{ addr: "127.0.0.1:0", tls: { cert: ./one.pem, key: ./one.key } }, "127.0.0.1:0"]\n${SITES}`);
    const [secure, plain] = config.listen;
    assert.equal(secure!.tls!.min_version, 'TLSv1.2');
    assert.equal(secure!.tls!.max_version, 'TLSv1.3');
    assert.equal(secure!.tls!.cert, `${dir}/one.pem`);
    assert.equal(secure!.tls!.pem!.cert, one.cert);
    assert.deepEqual(secure!.http2, { max_concurrent_streams: 100, max_header_list_size: 16 * 1024 + 32 * 100, initial_window_size: 65535, max_frame_size: 16384 });
    assert.equal(plain!.http2, false);
    assert.equal(plain!.tls, undefined);
    const off = parse(`listen: [{ addr: "127.0.0.1:0", http2: false, tls: { cert: ./one.pem, key: ./one.key } }]\n${SITES}`);
    assert.equal(off.listen[0]!.http2, false);
  });

  test('a plain listener speaks HTTP/2 (prior knowledge) only with http2 set: true for the defaults, or settings', () => {
    const config = parse(`listen: [{ addr: "127.0.0.1:0", http2: true }, { addr: "127.0.0.1:0", http2: { max_concurrent_streams: 250 } }, "127.0.0.1:0"]\n${SITES}`);
    const [on, tuned, plain] = config.listen;
    assert.deepEqual(on!.http2, { max_concurrent_streams: 100, max_header_list_size: 16 * 1024 + 32 * 100, initial_window_size: 65535, max_frame_size: 16384 });
    assert.equal(tuned!.http2 !== false && tuned!.http2.max_concurrent_streams, 250);
    assert.equal(plain!.http2, false);
  });

  test('a key that does not match its certificate is an error at the key, naming both files', () => {
    assert.deepEqual(errorsOf(`listen:\n  - addr: "127.0.0.1:0"\n    tls: { cert: ./one.pem, key: ./two.key }\n${SITES}`), [
      'portico.yaml:3:34 listen[0].tls.key: the key in ./two.key does not match the certificate in ./one.pem',
    ]);
  });

  test('a missing file, a file without a certificate, and a site certificate are reported where they are named', () => {
    const errors = errorsOf(
      `listen: [{ addr: "127.0.0.1:0", tls: { cert: ./absent.pem, key: ./one.key } }]\nsites:\n  - hosts: [a.example]\n    tls: { cert: ./junk.pem, key: ./one.key }\n    routes: [{ path: /, respond: { body: ok } }]\n`,
    );
    assert.deepEqual(errors, [
      'portico.yaml:1:46 listen[0].tls.cert: file ./absent.pem does not exist',
      'portico.yaml:4:18 sites[0].tls.cert: file ./junk.pem holds no PEM certificate',
    ]);
  });

  test('combinations that cannot work are refused', () => {
    const errors = errorsOf(
      [
        'listen:',
        '  - { addr: "127.0.0.1:3", tls: { cert: ./one.pem } }',
        '  - { addr: "127.0.0.1:4", tls: { cert: ./one.pem, key: ./one.key, min_version: TLSv1.3, max_version: TLSv1.2, ciphers: "NOPE-CIPHER" } }',
        'sites:',
        '  - hsts: { preload: true }',
        '    routes: [{ path: /, respond: { body: ok } }]',
        '',
      ].join('\n'),
    );
    assert.deepEqual(
      errorsOf(`listen:\n  - { addr: "127.0.0.1:2", redirect_https: 443, tls: { cert: ./one.pem, key: ./one.key } }\n${SITES}`).map((line) => line.replace(/ \(.*$|: this one.*$/, '')),
      ['portico.yaml:2:44 listen[0].redirect_https: redirect_https is for a plain listener'],
    );
    const messages = errors.map((line) => line.replace(/^portico\.yaml:\d+:\d+ /, ''));
    for (const expected of [
      /^listen\[0\]\.tls\.cert: cert and key go together/,
      /^listen\[1\]\.tls\.max_version: max_version is below min_version/,
      /^listen\[1\]\.tls\.ciphers: no cipher of "NOPE-CIPHER"/,
      /^sites\[0\]\.hsts\.preload: preload needs include_subdomains/,
    ]) {
      assert.ok(messages.some((message) => expected.test(message)), `${expected} among:\n${messages.join('\n')}`);
    }
    // Checked by the schema, before the files: an error of its own.
    assert.match(errorsOf(`listen: [{ addr: "127.0.0.1:0", tls: { cert: ./one.pem, key: ./one.key, min_version: TLSv1.1 } }]\n${SITES}`)[0]!, /listen\[0\]\.tls\.min_version: expected one of TLSv1\.2, TLSv1\.3 \(got "TLSv1\.1"\)$/);
  });

  test('a TLS listener without a certificate of its own needs a site with one', () => {
    assert.deepEqual(errorsOf(`listen: [{ addr: "127.0.0.1:0", tls: {} }]\n${SITES}`), [
      'portico.yaml:1:38 listen[0].tls: a TLS listener needs a certificate: tls.cert and tls.key, or a site with tls',
    ]);
  });
});
