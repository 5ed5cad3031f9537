/**
 * Where a config's state directory and control socket are (src/config/control.ts): `state_dir`, else `./var/NAME`
 * beside the config file; the commands' lenient read of a file that may be broken.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { controlSocketsOfFile, defaultStateDir, socketPathProblem } from '../../src/config/control.js';
import { parseConfig } from '../../src/server/config.js';
import { makeTree } from '../helpers/portico.js';

const dir = makeTree({});
after(() => rmSync(dir, { recursive: true, force: true }));

const SITE = 'sites:\n  - routes: [{ path: /, respond: {} }]\n';

test('the default state directory is ./var/NAME, NAME being the config file\'s name without its extension', () => {
  assert.equal(defaultStateDir('portico.yaml'), path.join('var', 'portico'));
  assert.equal(defaultStateDir('/etc/portico/site-a.yml'), path.join('var', 'site-a'));
  assert.equal(defaultStateDir('edge.json'), path.join('var', 'edge'));
  assert.equal(defaultStateDir('.yaml'), path.join('var', 'portico'));
});

test('Config.control.socket is control.sock in state_dir, else in ./var/NAME; ACME without state_dir uses the same folder', () => {
  assert.equal(parseConfig(SITE, path.join(dir, 'site.yaml'), dir).control.socket, path.join(dir, 'var/site/control.sock'));
  assert.equal(parseConfig(`state_dir: ./st\n${SITE}`, path.join(dir, 'site.yaml'), dir).control.socket, path.join(dir, 'st/control.sock'));
  const acme = parseConfig(
    'sites:\n  - hosts: [example.com]\n    tls: { acme: { agree_tos: true, email: ops@example.com } }\n    routes: [{ path: /, respond: {} }]\n',
    path.join(dir, 'edge.yaml'),
    dir,
  );
  assert.equal(acme.state_dir, path.join(dir, 'var/edge'));
  assert.equal(acme.control.socket, path.join(dir, 'var/edge/control.sock'));
});

test('a socket path over 107 bytes is refused with the path and its length; 107 is accepted', () => {
  const fits = `/${'a'.repeat(106)}`;
  assert.equal(socketPathProblem(fits), undefined);
  assert.match(socketPathProblem(`${fits}b`) ?? '', /^the control socket path \/a+b is 108 bytes, over the 107-byte limit of a unix socket path: choose a shorter state_dir$/);
  // Bytes, not characters: a name in UTF-8 counts its bytes.
  assert.match(socketPathProblem(`/${'é'.repeat(54)}`) ?? '', /is 109 bytes/);
});

test('the commands read a config leniently: a broken file still names its state_dir; one naming state_dir also gives the default place, second', () => {
  const broken = path.join(dir, 'broken.yaml');
  writeFileSync(broken, 'state_dir: ./kept\nsites: [\n');
  assert.deepEqual(controlSocketsOfFile(broken), [path.join(dir, 'kept/control.sock'), path.join(dir, 'var/broken/control.sock')]);
  const unreadable = path.join(dir, 'tabs.yaml');
  writeFileSync(unreadable, '\t: [\n');
  assert.deepEqual(controlSocketsOfFile(unreadable), [path.join(dir, 'var/tabs/control.sock')]);
  const named = path.join(dir, 'named.yaml');
  writeFileSync(named, `state_dir: ./kept\ncolour: red\n${SITE}`);
  assert.deepEqual(controlSocketsOfFile(named), [path.join(dir, 'kept/control.sock'), path.join(dir, 'var/named/control.sock')]);
  const plain = path.join(dir, 'plain.yaml');
  writeFileSync(plain, SITE);
  assert.deepEqual(controlSocketsOfFile(plain), [path.join(dir, 'var/plain/control.sock')]);
});
