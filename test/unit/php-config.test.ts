/**
 * The `php` route's config and the FastCGI upstream's protocol (docs/php.md, "FastCGI upstreams"); which script
 * a path runs (docs/php.md, "Which script runs") on a real folder.
 */
import assert from 'node:assert/strict';
import { mkdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { locate, scriptSegment, type LocateOptions } from '../../src/handlers/php/script.js';
import { formatConfigIssue } from '../../src/errors.js';
import { configErrors } from '../helpers/config.js';
import { makeTree } from '../helpers/portico.js';

const dir = makeTree({
  'app/index.php': '<?php',
  'app/info.php': '<?php',
  'app/sub/index.php': '<?php',
  'app/plain/readme.txt': 'text',
  'app/docs/index.html': '<h1>docs</h1>',
  'app/uploads/evil.jpg': '<?php',
  'app/.env': 'SECRET=1',
  'outside.php': '<?php',
});
symlinkSync(path.join(dir, 'outside.php'), path.join(dir, 'app', 'out.php'));
symlinkSync(path.join(dir, 'app', 'uploads', 'evil.jpg'), path.join(dir, 'app', 'uploads', 'alias.php'));
mkdirSync(path.join(dir, 'app', 'dir.php'));
writeFileSync(path.join(dir, 'app', 'UPPER.PHP'), '<?php');
after(() => rmSync(dir, { recursive: true, force: true }));

const yaml = (upstream: string, route: string): string => `listen: ["127.0.0.1:0"]\nupstreams:\n  fpm:\n${upstream}\nsites:\n  - routes:\n      - path: /\n${route}\n`;

describe('php route config', () => {
  test('a php route makes its unix: upstream a FastCGI one (protocol implied), with defaults', () => {
    const config = parseConfig(yaml('    servers: ["unix:/run/php/php8.2-fpm.sock"]', '        php: { root: ./app, upstream: fpm }'), 'portico.yaml', dir);
    assert.equal(config.upstreams.fpm!.protocol, 'fastcgi');
    const route = config.sites[0]!.routes[0]!;
    assert.equal(route.kind, 'php');
    assert.deepEqual((route.options as { index: string[] }).index, ['index.php']);
  });

  test("a relative unix: socket is relative to the config's folder, as every path in the config", () => {
    const config = parseConfig(yaml('    servers: ["unix:./run/fpm.sock"]', '        php: { root: ./app, upstream: fpm }'), 'portico.yaml', dir);
    assert.equal(config.upstreams.fpm!.servers[0]!.url.socketPath, path.join(dir, 'run', 'fpm.sock'));
    assert.equal(config.upstreams.fpm!.servers[0]!.url.text, 'unix:./run/fpm.sock', 'named as written');
  });

  test('a unix: socket that is not there, or is no socket, is a warning at its line (valid: PHP-FPM may start later)', () => {
    const gone = parseConfig(yaml(`    servers: ["unix:${path.join(dir, 'no-fpm.sock')}"]`, '        php: { root: ./app, upstream: fpm }'), 'portico.yaml', dir);
    assert.deepEqual(gone.warnings.map(formatConfigIssue), [
      `portico.yaml:4:15 upstreams.fpm.servers[0]: unix:${path.join(dir, 'no-fpm.sock')}: no such socket (yet); its requests get 502 until PHP-FPM listens there (is it running, with this path as its pool's listen?)`,
    ]);
    const file = parseConfig(yaml(`    servers: ["unix:${path.join(dir, 'app', 'index.php')}"]`, '        php: { root: ./app, upstream: fpm }'), 'portico.yaml', dir);
    assert.match(file.warnings.map(formatConfigIssue).join('\n'), /index\.php is not a socket: its requests get 502$/);
  });

  test("hashing on PHPSESSID is warned about, with the advice PHP can follow (app_cookie with separator \"-\")", () => {
    const config = parseConfig(yaml('    servers: ["fcgi://127.0.0.1:9000"]\n    policy: hash\n    hash_key: "$cookie_PHPSESSID"', '        php: { root: ./app, upstream: fpm }'), 'portico.yaml', dir);
    assert.match(config.warnings.map(formatConfigIssue).join('\n'), /hash_key: hashing on the app's session cookie PHPSESSID .*sticky: \{ app_cookie: PHPSESSID, separator: "-" \}/);
  });

  test('fcgi://host:port is a FastCGI server; a malformed one is an error at file:line:col', () => {
    parseConfig(yaml('    servers: ["fcgi://127.0.0.1:9000"]', '        php: { root: ./app, upstream: fpm }'), 'portico.yaml', dir);
    const errors = configErrors(yaml('    servers: ["fcgi://127.0.0.1"]', '        php: { root: ./app, upstream: fpm }'), dir);
    assert.match(errors.join('\n'), /^portico\.yaml:4:\d+ .*expected "fcgi:\/\/host:port"/m);
  });

  test('an env variable whose name does not start with an upper-case letter is a config error (it would reach PHP as HTTP_*)', () => {
    for (const name of ['app_env', '_SECRET']) {
      const errors = configErrors(yaml('    servers: ["fcgi://127.0.0.1:9000"]', `        php: { root: ./app, upstream: fpm, env: { ${name}: x } }`), dir);
      assert.match(errors.join('\n'), /^portico\.yaml:\d+:\d+ .*upper-case letter/m, name);
    }
    parseConfig(yaml('    servers: ["fcgi://127.0.0.1:9000"]', '        php: { root: ./app, upstream: fpm, env: { APP_env2: x } }'), 'portico.yaml', dir);
  });

  test('a proxy route to a FastCGI upstream, and a php route to an HTTP one, are config errors naming the route', () => {
    const proxy = configErrors(yaml('    servers: ["fcgi://127.0.0.1:9000"]', '        proxy: { upstream: fpm }'), dir);
    assert.match(proxy.join('\n'), /routes\[0\]\.proxy\.upstream: upstream "fpm" speaks FastCGI/);
    const php = configErrors(yaml('    servers: ["http://127.0.0.1:3000"]', '        php: { root: ./app, upstream: fpm }'), dir);
    assert.match(php.join('\n'), /routes\[0\]\.php\.upstream: upstream "fpm" speaks HTTP/);
  });

  test('http servers in a FastCGI upstream, a missing root and an unknown upstream are refused', () => {
    const mixed = configErrors(yaml('    protocol: fastcgi\n    servers: ["unix:/tmp/a.sock", "http://127.0.0.1:3000"]', '        php: { root: ./app, upstream: fpm }'), dir);
    assert.match(mixed.join('\n'), /an http\(s\) server in a FastCGI upstream/);
    const missing = configErrors(yaml('    servers: ["unix:/tmp/a.sock"]', '        php: { root: ./nowhere, upstream: other }'), dir);
    assert.match(missing.join('\n'), /directory \.\/nowhere does not exist/);
    assert.match(missing.join('\n'), /unknown upstream "other"/);
  });
});

describe('which script a path runs', () => {
  const realRoot = realpathSync(path.join(dir, 'app'));
  const o: LocateOptions = { realRoot, split: ['.php'], index: ['index.php'], frontController: '/index.php', dotfiles: 'deny', symlinks: 'within_root' };
  const front = { kind: 'script', scriptName: '/index.php', filename: path.join(realRoot, 'index.php'), pathInfo: '' };

  test('the path is cut after its first .php segment (case-insensitive), the rest being PATH_INFO', async () => {
    assert.equal(scriptSegment(['a', 'b.php', 'c.php'], ['.php']), 1);
    assert.equal(scriptSegment(['.php'], ['.php']), -1);
    assert.deepEqual(await locate('/info.php/a/b', o), { kind: 'script', scriptName: '/info.php', filename: path.join(realRoot, 'info.php'), pathInfo: '/a/b' });
    assert.deepEqual(await locate('/info.php', o), { kind: 'script', scriptName: '/info.php', filename: path.join(realRoot, 'info.php'), pathInfo: '' });
    assert.equal(((await locate('/UPPER.PHP', o)) as { filename: string }).filename, path.join(realRoot, 'UPPER.PHP'));
  });

  test('files are files, directories run their index (after a slash redirect), the rest goes to the front controller', async () => {
    assert.deepEqual(await locate('/plain/readme.txt', o), { kind: 'file' });
    assert.deepEqual(await locate('/sub', o), { kind: 'redirect', location: '/sub/' });
    assert.deepEqual(await locate('/sub/', o), { kind: 'script', scriptName: '/sub/index.php', filename: path.join(realRoot, 'sub', 'index.php'), pathInfo: '' });
    assert.deepEqual(await locate('/plain/', o), front);
    assert.deepEqual(await locate('/blog/a-post', o), front);
    assert.deepEqual(await locate('/missing.php', o), front);
    assert.deepEqual(await locate('/dir.php', o), front);
    assert.deepEqual(await locate('/blog/a-post', { ...o, frontController: undefined }), { kind: 'status', status: 404 });
  });

  test('an index that is no script (index.html) is served as a file, after the slash redirect; without it in index, the front controller answers', async () => {
    const html = { ...o, index: ['index.php', 'index.html'] };
    assert.deepEqual(await locate('/docs/', html), { kind: 'file' });
    assert.deepEqual(await locate('/docs', html), { kind: 'redirect', location: '/docs/' });
    assert.deepEqual(await locate('/sub/', html), { kind: 'script', scriptName: '/sub/index.php', filename: path.join(realRoot, 'sub', 'index.php'), pathInfo: '' });
    assert.deepEqual(await locate('/docs/', o), front);
  });

  test('never a file that is not a .php script under the root: the path-info hole, NULs, encoded slashes, symlinks, dotfiles', async () => {
    assert.deepEqual(await locate('/uploads/evil.jpg/x.php', o), front);
    assert.deepEqual(await locate('/uploads/evil.jpg%00.php', o), { kind: 'status', status: 404 });
    assert.deepEqual(await locate('/uploads/evil.jpg%2Fx.php', o), { kind: 'status', status: 404 });
    assert.deepEqual(await locate('/uploads/alias.php', o), { kind: 'status', status: 403 });
    assert.deepEqual(await locate('/out.php', o), { kind: 'status', status: 403 });
    assert.deepEqual(await locate('/.env', o), { kind: 'status', status: 404 });
    assert.deepEqual(await locate('/uploads/evil.jpg', o), { kind: 'file' });
  });
});
