/**
 * docs/php.md's "A typical application" as a new user writes it, against real php-fpm: a front controller routing
 * pretty URLs, an admin/ folder with its own index.php, a folder whose index is index.html, and an uploads/ folder
 * served as files where a `.php` never runs and its text is never shown.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { PhpFpm } from '../helpers/php-fpm.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { haveTool } from '../helpers/tools.js';

const fpmInstalled = haveTool('php-fpm8.2') || process.env.CI === 'true';

const APP = {
  'app/index.php': `<?php
$uri = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($uri === '/') { echo "home"; exit; }
if (preg_match('#^/post/(\\d+)$#', $uri, $m)) { echo "post {$m[1]}"; exit; }
http_response_code(404); echo "router 404";`,
  'app/admin/index.php': `<?php echo "admin ", $_SERVER['SCRIPT_NAME'];`,
  'app/docs/index.html': '<h1>docs</h1>',
  'app/mixed/index.php': `<?php echo "the script comes first";`,
  'app/mixed/index.html': 'not this one',
  'app/uploads/photo.txt': 'an uploaded file',
  'app/uploads/evil.php': `<?php echo "EVIL", "RAN";`,
  'app/uploads/evil.jpg': `<?php echo "EVIL", "RAN";`,
};

describe('a typical PHP application laid out as docs/php.md shows', { skip: fpmInstalled ? false : 'php-fpm8.2 is not installed (on CI it is: .ci/run installs php8.2-fpm)' }, () => {
  let fpm: PhpFpm;
  let portico: RunningPortico;
  before(async () => {
    fpm = await PhpFpm.start({ workers: 2 });
    // As in docs/php.md, "A typical application".
    portico = await startPortico(
      `upstreams:
  php:
    servers: ["${fpm.url}"]
sites:
  - routes:
      - path: "~* ^/uploads/.*\\\\.php"
        respond: { status: 403 }
      - path: /uploads/
        static: { root: ./app }
      - path: /
        php: { root: ./app, upstream: php, index: [index.php, index.html] }
`,
      APP,
    );
  });
  after(async () => {
    await portico?.stop();
    await fpm?.close();
  });

  const get = async (target: string): Promise<{ status: number; text: string; location: string | undefined }> => {
    const res = await request(portico.url + target);
    return { status: res.statusCode, text: await res.body.text(), location: res.headers.location as string | undefined };
  };

  test('pretty URLs reach the front controller; the admin folder runs its own index.php', async () => {
    assert.deepEqual(await get('/'), { status: 200, text: 'home', location: undefined });
    assert.equal((await get('/post/42')).text, 'post 42');
    assert.deepEqual(await get('/nothing/here'), { status: 404, text: 'router 404', location: undefined });
    assert.equal((await get('/admin')).location, '/admin/');
    assert.equal((await get('/admin/')).text, 'admin /admin/index.php');
  });

  test('a folder whose index is index.html serves it (index: [index.php, index.html]); index.php wins where both are', async () => {
    assert.deepEqual(await get('/docs/'), { status: 200, text: '<h1>docs</h1>', location: undefined });
    assert.equal((await get('/docs')).location, '/docs/');
    assert.equal((await get('/mixed/')).text, 'the script comes first');
  });

  test('uploads are files: served as such, and a .php among them never runs nor shows its text, however named', async () => {
    assert.deepEqual(await get('/uploads/photo.txt'), { status: 200, text: 'an uploaded file', location: undefined });
    for (const target of ['/uploads/evil.php', '/uploads/EVIL.PHP', '/uploads/evil.jpg/x.php', '/uploads/evil.php/x', '/uploads/%65vil.php']) {
      const res = await get(target);
      assert.equal(res.status, 403, target);
      assert.ok(!res.text.includes('EVIL'), target);
    }
    // Served as a file (its text, never run): it is no script.
    assert.ok(!(await get('/uploads/evil.jpg')).text.includes('EVILRAN'));
  });
});
