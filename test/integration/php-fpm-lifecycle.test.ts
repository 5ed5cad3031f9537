/**
 * A `php` route's requests against real php-fpm when things come and go (docs/php.md, "Clients that leave, and
 * reloads"): a client that leaves mid-answer frees its PHP worker and Portico's FastCGI connection (a script that
 * streams is stopped by PHP at its next write; one that sleeps keeps its worker until it wakes, as behind nginx),
 * and a reload (SIGHUP to a real `portico run`) while PHP requests are in flight fails none of them. Pools are
 * small (pm.max_children 2-3) so that a worker left pinned shows as a request that waits.
 */
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { PhpFpm, phpConfig } from '../helpers/php-fpm.js';
import { PorticoProcess } from '../helpers/process.js';
import { makeTree, startPortico, type RunningPortico } from '../helpers/portico.js';
import { eventually } from '../helpers/supervise.js';
import { haveTool } from '../helpers/tools.js';
import { within } from '../helpers/within.js';

const fpmInstalled = haveTool('php-fpm8.2') || process.env.CI === 'true';

const APP = {
  'app/ok.php': `<?php echo $_SERVER['GEN'] ?? 'ok';`,
  // Streams for up to 20 s, a line every 10 ms; notes in a file how it ended (PHP stops a script whose client is
  // gone at its next write: connection_aborted()).
  'app/stream.php': `<?php
$mark = $_SERVER['DOCUMENT_ROOT'] . '/../ended-' . preg_replace('/[^a-z0-9]/', '', $_GET['id']);
register_shutdown_function(function () use ($mark) { file_put_contents($mark, connection_aborted() ? 'aborted' : 'finished'); });
header('Content-Type: text/plain');
for ($i = 0; $i < 2000; $i++) { echo str_repeat('x', 1024), "\\n"; flush(); usleep(10000); }`,
  'app/sleep.php': `<?php usleep((int)$_GET['ms'] * 1000); echo "slept";`,
  'app/post.php': `<?php usleep(30000); echo strlen(file_get_contents('php://input'));`,
};

/** Sends a GET on a raw socket and resolves once the answer's first body bytes came: the caller then leaves. */
async function startThenLeave(port: number, target: string): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  socket.write(`GET ${target} HTTP/1.1\r\nHost: a\r\n\r\n`);
  let seen = '';
  await within(`the first bytes of ${target}`, new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      if (seen.includes('\r\n\r\n') && seen.includes('xxxx')) resolve();
    });
    socket.once('error', reject);
  }));
  return socket;
}

/** How many requests Portico has in flight to the upstream's servers now. */
async function inFlight(portico: RunningPortico): Promise<number> {
  const status = await portico.server.statusReport();
  return status.upstreams.find((u) => u.name === 'php')!.servers.reduce((sum, s) => sum + s.in_flight, 0);
}

describe('php clients that leave mid-request', { skip: fpmInstalled ? false : 'php-fpm8.2 is not installed (on CI it is: .ci/run installs php8.2-fpm)' }, () => {
  let fpm: PhpFpm;
  let portico: RunningPortico;
  before(async () => {
    fpm = await PhpFpm.start({ workers: 2, ini: { display_errors: '0' } });
    portico = await startPortico(phpConfig(`servers: ["${fpm.url}"]\nkeepalive: 2`), APP);
  });
  after(async () => {
    await portico?.stop();
    await fpm?.close();
  });

  test('two clients leave long streamed answers: PHP stops both scripts, both workers serve the next requests at once, nothing is left in flight', async () => {
    const clients = [await startThenLeave(portico.port, '/stream.php?id=s1'), await startThenLeave(portico.port, '/stream.php?id=s2')];
    for (const socket of clients) socket.destroy();
    const marks = ['s1', 's2'].map((id) => path.join(portico.dir, `ended-${id}`));
    await eventually(() => marks.every((mark) => existsSync(mark)), 'both scripts ended', 5000);
    // Both workers are free: two requests at once are answered well before either stream would have ended (20 s).
    const answers = await within('two requests on the two workers', Promise.all([request(`${portico.url}/ok.php`), request(`${portico.url}/ok.php`)]), 5000);
    for (const res of answers) assert.equal(await res.body.text(), 'ok');
    await eventually(async () => (await inFlight(portico)) === 0, 'no request in flight');
  });

  test('clients that leave sleeping scripts: Portico lets go at once; the workers answer again once the scripts wake, and no request fails', async () => {
    const sockets: net.Socket[] = [];
    for (let i = 0; i < 2; i++) {
      const socket = net.connect(portico.port, '127.0.0.1');
      socket.write('GET /sleep.php?ms=800 HTTP/1.1\r\nHost: a\r\n\r\n');
      sockets.push(socket);
    }
    await eventually(async () => (await inFlight(portico)) === 2, 'both scripts running');
    for (const socket of sockets) socket.destroy();
    // PHP cannot see the client leave while it sleeps (it would at its next write): the worker is held until then,
    // but nothing of Portico's is.
    await eventually(async () => (await inFlight(portico)) === 0, 'Portico let both go', 2000);
    const started = Date.now();
    const res = await within('a request once a worker woke', request(`${portico.url}/ok.php`), 5000);
    assert.equal(res.statusCode, 200);
    assert.equal(await res.body.text(), 'ok');
    assert.ok(Date.now() - started < 3000, `answered in ${Date.now() - started} ms`);
  });
});

describe('php workers that end after pm.max_requests', { skip: fpmInstalled ? false : 'php-fpm8.2 is not installed' }, () => {
  test('GETs under load on kept connections with workers ending every 3 requests: none fails (one written into an ending worker is sent again)', async () => {
    const fpm = await PhpFpm.start({ workers: 2, pool: { 'pm.max_requests': '3' } });
    // Kept connections (keep_conn: true) are where a worker's end meets the next request.
    const portico = await startPortico(phpConfig(`servers: ["${fpm.url}"]\nkeepalive: 2\nfastcgi: { keep_conn: true }`), APP);
    try {
      let left = 300;
      const failures: string[] = [];
      const client = async (): Promise<void> => {
        while (left-- > 0) {
          const res = await request(`${portico.url}/ok.php`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
          const text = await res.body.text();
          if (res.statusCode !== 200 || text !== 'ok') failures.push(`${res.statusCode} ${text.slice(0, 80)}`);
        }
      };
      await within('300 GETs', Promise.all(Array.from({ length: 6 }, client)), 60_000);
      assert.deepEqual(failures, []);
    } finally {
      await portico.stop();
      await fpm.close();
    }
  });
});

describe('php requests in flight across a reload', { skip: fpmInstalled ? false : 'php-fpm8.2 is not installed' }, () => {
  let fpm: PhpFpm;
  let portico: PorticoProcess | undefined;
  let dir: string;
  before(async () => {
    fpm = await PhpFpm.start({ workers: 3, ini: { display_errors: '0' } });
    dir = makeTree(APP);
  });
  after(async () => {
    await portico?.stop();
    await fpm?.close();
  });

  const config = (port: number, generation: string): string => `listen: ["127.0.0.1:${port}"]
log: { access: off }
upstreams:
  php:
    servers: ["${fpm.url}"]
    keepalive: 3
sites:
  - routes:
      - path: /
        php: { root: ./app, upstream: php, env: { GEN: ${generation} } }
`;

  test('SIGHUP while GETs, POSTs and a streamed answer are in flight: every one is answered whole, and the new config answers after', async () => {
    const file = path.join(dir, 'portico.yaml');
    // Port 0 at start; each reload names the port it got, so that the listener is kept.
    writeFileSync(file, config(0, 'one'));
    portico = await PorticoProcess.start(file, dir);
    const base = `http://127.0.0.1:${portico.port}`;
    const failures: string[] = [];
    const generations = new Set<string>();
    let answered = 0;
    let running = true;
    const loop = async (kind: 'get' | 'post'): Promise<void> => {
      while (running) {
        try {
          const options = { headersTimeout: 10_000, bodyTimeout: 10_000 };
          const res = kind === 'get' ? await request(`${base}/sleep.php?ms=40`, options) : await request(`${base}/post.php`, { ...options, method: 'POST', body: 'x'.repeat(100_000) });
          const text = await res.body.text();
          if (res.statusCode !== 200 || text !== (kind === 'get' ? 'slept' : '100000')) failures.push(`${kind} ${res.statusCode} ${text.slice(0, 100)}`);
          else answered++;
        } catch (err) {
          failures.push(`${kind} ${String(err)}`);
        }
      }
    };
    // A streamed answer (20 s) read across both reloads, then left.
    const stream = await startThenLeave(portico.port, '/stream.php?id=r1');
    let streamed = 0;
    stream.on('data', (chunk: Buffer) => (streamed += chunk.length));
    const loops = [loop('get'), loop('post')];
    try {
      const progress = async (n: number): Promise<void> => {
        const until = answered + n;
        await eventually(() => answered >= until || failures.length > 0, `${n} more answers`, 10_000);
      };
      await progress(10);
      for (const generation of ['two', 'three']) {
        const { line } = await portico.reload(config(portico.port, generation));
        assert.match(line, /config reloaded/);
        await progress(10);
        await eventually(async () => {
          const text = await (await request(`${base}/ok.php`)).body.text();
          generations.add(text);
          return text === generation;
        }, `generation ${generation} answering`, 5000);
      }
      const before = streamed;
      await eventually(() => streamed > before + 50_000, 'the streamed answer still flowing after both reloads', 5000);
    } finally {
      running = false;
      await Promise.all(loops);
      stream.destroy();
    }
    assert.deepEqual(failures, []);
    assert.ok(generations.has('three'));
    // The reloads left no FastCGI connection pinning a worker: three requests at once are answered at once.
    const all = await within('three requests on the three workers', Promise.all([1, 2, 3].map(() => request(`${base}/sleep.php?ms=300`))), 5000);
    for (const res of all) assert.equal(await res.body.text(), 'slept');
  });
});
