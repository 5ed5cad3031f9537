/**
 * Purge by URL and by URL prefix (`Portico.purgeTarget`, what the admin API's `POST /caches/{zone}/purge` calls), in
 * one process over real sockets, on a zone with a memory and a disk tier: keys come from the routes' key templates,
 * a prefix is matched on whole URL parts (`http://a.example` never purges `a.example.org`; `/img` is a path segment,
 * never `/images`), and what cannot be matched safely is refused with 400.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type { RunningPortico } from '../helpers/portico.js';
import { assertRefused } from '../helpers/refused.js';
import { httpRequest, scopedServers } from './proxy-support.js';

const servers = scopedServers();

describe('purge by URL and URL prefix (one process)', { timeout: 30_000 }, () => {
  let portico: RunningPortico;

  before(async () => {
    const app = await servers.upstream((req, res) => {
      res.writeHead(200, { 'Cache-Control': 'max-age=600', 'Content-Type': 'text/plain' });
      res.end(`${req.headers.host}${req.url}`);
    });
    const route = (hosts: string, cache: string) => `  - hosts: [${hosts}]\n    routes:\n      - path: /\n        proxy: { upstream: app, cache: ${cache} }\n`;
    portico = await servers.portico(
      `caches:\n  z: { memory: 1MB, disk: { path: cache-z, size: 10MB } }\n  other: { memory: 1MB }\n` +
        `upstreams:\n  app: { servers: ["${app.url}"] }\nsites:\n` +
        route('a.example', '{ zone: z }') +
        route('a.example.org', '{ zone: z }') +
        route('d.example', '{ zone: z, key: "$scheme://$host$uri" }') +
        route('c.example', '{ zone: other, key: "$host$request_uri$cookie_lang" }'),
    );
  });

  /** GET `path` with `Host: host`: whether the cache answered it. */
  async function hit(host: string, path: string): Promise<boolean> {
    const res = await httpRequest(portico.port, path, { headers: { Host: host } });
    assert.equal(res.status, 200);
    return /^Portico; hit/.test(String(res.headers['cache-status']));
  }

  /** Requests each URL once so that it is stored (a miss, or a hit already). */
  async function fill(urls: ReadonlyArray<[string, string]>): Promise<void> {
    for (const [host, path] of urls) await hit(host, path);
  }

  const A: ReadonlyArray<[string, string]> = [
    ['a.example', '/img'],
    ['a.example', '/img/x'],
    ['a.example', '/img?v=1'],
    ['a.example', '/images'],
    ['a.example', '/imgs/y'],
    ['a.example', '/other'],
    ['a.example.org', '/img/x'],
    ['a.example.org', '/img'],
  ];

  test('url_prefix http://a.example/img purges /img, /img/x and /img?v=1 (both tiers), not /images, /imgs/y, /other nor anything of a.example.org', async () => {
    await fill(A);
    assert.deepEqual(await portico.server.purgeTarget('z', { url_prefix: 'http://a.example/img' }), { purged: 3 });
    const after = await Promise.all(A.map(([host, path]) => hit(host, path)));
    assert.deepEqual(after, [false, false, false, true, true, true, true, true]);
  });

  test('url_prefix http://a.example purges every a.example entry and none of a.example.org; the same prefix over https purges nothing', async () => {
    await fill(A);
    assert.deepEqual(await portico.server.purgeTarget('z', { url_prefix: 'https://a.example' }), { purged: 0 });
    assert.deepEqual(await portico.server.purgeTarget('z', { url_prefix: 'http://a.example' }), { purged: 6 });
    const after = await Promise.all(A.map(([host, path]) => hit(host, path)));
    assert.deepEqual(after, [false, false, false, false, false, false, true, true]);
  });

  test('a prefix ending in / purges below it only: http://a.example/img/ takes /img/x, not /img nor /img?v=1', async () => {
    await fill(A);
    assert.deepEqual(await portico.server.purgeTarget('z', { url_prefix: 'http://a.example/img/' }), { purged: 1 });
    assert.deepEqual(await Promise.all(A.slice(0, 3).map(([host, path]) => hit(host, path))), [true, false, true]);
  });

  test('url purges that one URL\'s key: /img?v=1 and not /img; a URL not stored purges 0; its path is canonicalised as a request\'s', async () => {
    await fill(A);
    assert.deepEqual(await portico.server.purgeTarget('z', { url: 'http://a.example/img?v=1' }), { purged: 1 });
    assert.deepEqual(await portico.server.purgeTarget('z', { url: 'http://a.example/nothing' }), { purged: 0 });
    assert.deepEqual(await portico.server.purgeTarget('z', { url: 'http://A.Example/%69mages' }), { purged: 1 });
    assert.deepEqual(await Promise.all(A.slice(0, 4).map(([host, path]) => hit(host, path))), [true, true, false, false]);
  });

  test('a port is part of the URL: the entry stored for Host a.example:8080 is purged by http://a.example:8080/p, not by http://a.example/p', async () => {
    await fill([['a.example:8080', '/p'], ['a.example', '/p']]);
    assert.deepEqual(await portico.server.purgeTarget('z', { url: 'http://a.example:8080/p' }), { purged: 1 });
    assert.equal(await hit('a.example', '/p'), true);
    assert.equal(await hit('a.example:8080', '/p'), false);
    assert.deepEqual(await portico.server.purgeTarget('z', { url_prefix: 'http://a.example/p' }), { purged: 1 });
    assert.equal(await hit('a.example:8080', '/p'), true);
  });

  test('a custom key of scheme, host and path ($scheme://$host$uri) is matched too, by url and by prefix', async () => {
    await fill([['d.example', '/img/1'], ['d.example', '/images']]);
    assert.deepEqual(await portico.server.purgeTarget('z', { url_prefix: 'http://d.example/img' }), { purged: 1 });
    assert.deepEqual([await hit('d.example', '/img/1'), await hit('d.example', '/images')], [false, true]);
    // $uri has no query: the URL with one names the same entry.
    assert.deepEqual(await portico.server.purgeTarget('z', { url: 'http://d.example/images?x=1' }), { purged: 1 });
    assert.equal(await hit('d.example', '/images'), false);
  });

  test('bad input: unknown zone 404 naming the zones; not an absolute http(s) URL, a prefix with a query, a key a URL does not give: 400', async () => {
    await assertRefused(portico.server.purgeTarget('nope', { url: 'http://a.example/' }), 404, /no cache zone "nope" \(zones: z, other\)/);
    await assertRefused(portico.server.purgeTarget('z', { url: '/img' }), 400, /absolute http/);
    await assertRefused(portico.server.purgeTarget('z', { url: 'ftp://a.example/img' }), 400, /absolute http/);
    await assertRefused(portico.server.purgeTarget('z', { url_prefix: 'http://a.example/img?v' }), 400, /no query/);
    await assertRefused(portico.server.purgeTarget('other', { url_prefix: 'http://c.example/' }), 400, /url_prefix is matched only on keys of/);
    await assertRefused(portico.server.purgeTarget('other', { url: 'http://c.example/x' }), 400, /\$cookie_lang/);
    await assertRefused(portico.server.purgeTarget('z', {} as never), 400, /either "url" or "url_prefix"/);
  });
});
