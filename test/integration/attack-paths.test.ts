/**
 * Path traversal and file disclosure: a corpus of attack targets sent byte for byte with the raw client, so that
 * no client library normalises them first. Each must get 400, 403 or 404, and no answer may carry the content
 * of a secret file outside the root, of /etc/passwd, or of `.env` / `.git/config` inside the root.
 */
import assert from 'node:assert/strict';
import { symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest } from '../helpers/raw-client.js';

const MARKERS = ['OUTSIDE-SECRET-MARKER', 'ENV-SECRET-MARKER', 'GIT-SECRET-MARKER', 'HTPASSWD-MARKER', 'root:x:0:0'];

/** Request targets, as raw bytes (latin1) on the request line. */
const ATTACKS: string[] = [
  // plain and encoded ../
  '/../secret.txt',
  '/../../../../../../../../etc/passwd',
  '/public/../secret.txt',
  '/index.html/../../secret.txt',
  '/%2e%2e/secret.txt',
  '/%2E%2E/secret.txt',
  '/%2e%2E/%2E%2e/secret.txt',
  '/.%2e/secret.txt',
  '/%2e./secret.txt',
  '/..%2fsecret.txt',
  '/..%2Fsecret.txt',
  '/%2e%2e%2fsecret.txt',
  '/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
  '/x/..%2f..%2fsecret.txt',
  '/%2fsecret.txt',
  '/%2f..%2fsecret.txt',
  // double and triple encoding
  '/%252e%252e/secret.txt',
  '/%252e%252e%252fsecret.txt',
  '/..%252fsecret.txt',
  '/%25252e%25252e/secret.txt',
  // backslashes, raw and encoded
  '/..\\secret.txt',
  '/..\\..\\secret.txt',
  '/\\..\\secret.txt',
  '/..%5csecret.txt',
  '/..%5Csecret.txt',
  '/%5c..%5csecret.txt',
  '/%2e%2e%5csecret.txt',
  '/x/..%5c..%5csecret.txt',
  // NUL
  '/secret.txt%00',
  '/..%00/secret.txt',
  '/.env%00',
  '/.env%00.html',
  '/index.html%00/../../secret.txt',
  // overlong and odd UTF-8, %u escapes
  '/%c0%ae%c0%ae/secret.txt',
  '/%c0%ae%c0%ae%c0%afsecret.txt',
  '/%e0%80%ae%e0%80%ae/secret.txt',
  '/%c1%9c..%c1%9csecret.txt',
  '/..%c0%afsecret.txt',
  '/..%c1%9csecret.txt',
  '/%ef%bc%8e%ef%bc%8e/secret.txt',
  '/%u002e%u002e/secret.txt',
  '/%%32%65%%32%65/secret.txt',
  '/%2%65%2%65/secret.txt',
  '/\xc0\xae\xc0\xae/secret.txt',
  // ;/.. and other separators
  '/..;/secret.txt',
  '/.;/secret.txt',
  '/;/../secret.txt',
  '/x;/../../secret.txt',
  '/..;/..;/etc/passwd',
  '/....//secret.txt',
  '/..././secret.txt',
  '/.../secret.txt',
  '/secret.txt::$DATA',
  // dotfiles inside the root
  '/.env',
  '/.ENV',
  '/%2eenv',
  '/%2Eenv',
  '/./.env',
  '//.env',
  '/.env/',
  '/.env?x=1',
  '/.env#frag',
  '/x/../.env',
  '/.git/config',
  '/.git/./config',
  '/.git%2fconfig',
  '/%2egit/config',
  '/.git//config',
  '/.htpasswd',
  '/.well-known/../.env',
  '/.well-known/%2e%2e/.env',
  '/.well-known/..%2f.env',
  '/.well-known/../.git/config',
  // symlinks leading out of the root
  '/link-out',
  '/linkdir-out/secret.txt',
  '/linkdir-out/../secret.txt',
  // absolute-form and other target forms
  'http://localhost/../secret.txt',
  'http://localhost/%2e%2e/secret.txt',
  'http://localhost/..%2fsecret.txt',
  'http://localhost/.env',
  'https://localhost/.git/config',
  'HTTP://LOCALHOST/%2e%2e/%2e%2e/etc/passwd',
  'http://user@localhost/secret.txt',
  'http://localhost:80@evil/secret.txt',
  'file:///etc/passwd',
  '//localhost/../secret.txt',
  '../secret.txt',
  '..\\secret.txt',
  '\\..\\secret.txt',
  'secret.txt',
  '*',
];

let portico: RunningPortico;

before(async () => {
  portico = await startPortico(
    `sites:
  - routes:
      - path: /
        static: { root: ./public }
`,
    {
      'secret.txt': 'OUTSIDE-SECRET-MARKER',
      'outside/secret.txt': 'OUTSIDE-SECRET-MARKER',
      'public/index.html': 'welcome',
      'public/.env': 'ENV-SECRET-MARKER',
      'public/.git/config': 'GIT-SECRET-MARKER',
      'public/.htpasswd': 'HTPASSWD-MARKER',
      'public/.well-known/x': 'well known',
    },
  );
  symlinkSync(path.join(portico.dir, 'secret.txt'), path.join(portico.dir, 'public/link-out'));
  symlinkSync(path.join(portico.dir, 'outside'), path.join(portico.dir, 'public/linkdir-out'));
  writeFileSync(path.join(portico.dir, 'public/secret.txt.sample'), 'not the secret');
});
after(() => portico.stop());

function send(target: string) {
  return rawRequest(portico.port, Buffer.from(`GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`, 'latin1'));
}

test('the corpus holds at least 60 distinct attack paths', () => {
  assert.ok(new Set(ATTACKS).size >= 60, String(new Set(ATTACKS).size));
  assert.equal(new Set(ATTACKS).size, ATTACKS.length, 'no duplicates');
});

test('the server does serve the root: the index is 200 (so the 4xx below are not an accident)', async () => {
  const res = await send('/index.html');
  assert.equal(res.status, 200);
  assert.equal(res.body, 'welcome');
});

test('every attack path gets 400, 403 or 404 and never the content of a secret file', async () => {
  const failures: string[] = [];
  for (const target of ATTACKS) {
    const res = await send(target);
    if (![400, 403, 404].includes(res.status)) failures.push(`${JSON.stringify(target)} → ${res.status}`);
    const leaked = MARKERS.find((marker) => res.raw.includes(marker));
    if (leaked !== undefined) failures.push(`${JSON.stringify(target)} leaked ${leaked}`);
  }
  assert.deepEqual(failures, []);
});

test('error answers reveal no file-system path', async () => {
  for (const target of ['/../secret.txt', '/link-out', '/.env', '/%00']) {
    const res = await send(target);
    assert.ok(!res.raw.includes(portico.dir), target);
  }
});

test('/.well-known/ stays reachable', async () => {
  const res = await send('/.well-known/x');
  assert.equal(res.status, 200);
  assert.equal(res.body, 'well known');
});
