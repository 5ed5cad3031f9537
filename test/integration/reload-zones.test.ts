/**
 * A reload and cache zones with a disk tier: a zone rebuilt on the same folder shares the open store (one owner
 * per folder, no second store sweeping the first one's files), a failed reload changes nothing, and two zones
 * naming one folder is a config error.
 */
import { eventually } from '../helpers/supervise.js';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { scopedServers } from './proxy-support.js';

const { portico, upstream } = scopedServers();

function text(appUrl: string, memory: string, listen = '127.0.0.1:0'): string {
  return `listen: ["${listen}"]
log: { access: off }
caches:
  main: { memory: ${memory}, disk: { path: ./disk, size: 10MB } }
upstreams:
  app:
    servers: [{ url: "${appUrl}" }]
sites:
  - routes:
      - path: /
        proxy: { upstream: app, cache: { zone: main } }
`;
}

describe('reload and disk cache zones', () => {
  test('a zone rebuilt by a reload on the same folder keeps serving what the disk tier holds (the store is handed over, not opened twice)', async () => {
    const app = await upstream((req, res) => {
      res.setHeader('Cache-Control', 'max-age=600');
      res.end(`page ${req.url}`);
    });
    const server = await portico(text(app.url, '1MB'), { 'disk/.keep': '' });
    for (let i = 0; i < 5; i++) assert.equal(await (await fetch(`${server.url}/p${i}`)).text(), `page /p${i}`);
    assert.equal(app.requests.length, 5);
    // Settings change (memory size): a new zone, same folder. Its memory tier starts empty; the disk tier is the same.
    const before = server.server.cacheZone('main')!;
    // The disk tier is written after the answers: a loaded machine may not have all five there yet.
    await eventually(() => before.stored.disk?.entries === 5 && before.diskWritesInFlight === 0, 'the five pages on the disk tier');
    await server.server.reload(parseConfig(text(app.url, '2MB'), path.join(server.dir, 'portico.yaml'), server.dir));
    const after = server.server.cacheZone('main')!;
    assert.notEqual(after, before, 'changed settings make a new zone');
    assert.equal(after.disk, before.disk, 'one store for the folder: the new zone took the open one over');
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${server.url}/p${i}`);
      assert.equal(await res.text(), `page /p${i}`);
      assert.match(res.headers.get('cache-status') ?? '', /hit/, `p${i} came from the disk tier`);
    }
    assert.equal(app.requests.length, 5, 'nothing was fetched again');
    // And it still stores: a new page reaches the disk tier through the new zone.
    assert.equal(await (await fetch(`${server.url}/new`)).text(), 'page /new');
    assert.match((await fetch(`${server.url}/new`)).headers.get('cache-status') ?? '', /hit/);
  });

  test('a reload that fails after building a zone on the same folder leaves the old zone serving from its open store', async () => {
    const app = await upstream((req, res) => {
      res.setHeader('Cache-Control', 'max-age=600');
      res.end(`page ${req.url}`);
    });
    const server = await portico(text(app.url, '1MB'), { 'disk/.keep': '' });
    assert.equal(await (await fetch(`${server.url}/kept`)).text(), 'page /kept');
    const holder = net.createServer().listen(0, '127.0.0.1');
    await once(holder, 'listening');
    try {
      const busy = `127.0.0.1:${(holder.address() as net.AddressInfo).port}`;
      const next = parseConfig(text(app.url, '2MB', busy), path.join(server.dir, 'portico.yaml'), server.dir);
      await assert.rejects(server.server.reload(next), /address already in use/);
      const res = await fetch(`${server.url}/kept`);
      assert.equal(await res.text(), 'page /kept');
      assert.match(res.headers.get('cache-status') ?? '', /hit/);
      // The disk store is still open (the failed zone did not close it): a new page is stored and read back.
      await fetch(`${server.url}/after`);
      assert.match((await fetch(`${server.url}/after`)).headers.get('cache-status') ?? '', /hit/);
      assert.equal(app.requests.length, 2);
    } finally {
      holder.close();
    }
  });

  test('two cache zones naming one disk folder is a config error', () => {
    const dir = path.join(process.cwd(), 'dist');
    mkdirSync(path.join(dir, 'shared-disk'), { recursive: true });
    assert.throws(
      () =>
        parseConfig(
          'caches:\n  a: { memory: 1MB, disk: { path: ./shared-disk/x } }\n  b: { memory: 1MB, disk: { path: ./shared-disk/x } }\nsites:\n  - routes:\n      - path: /\n        respond: {}\n',
          path.join(dir, 'portico.yaml'),
          dir,
        ),
      (err: unknown) => err instanceof ConfigError && err.issues.some((i) => i.keyPath === 'caches.b.disk.path' && /caches\.a already uses this folder/.test(i.message)),
    );
  });
});
