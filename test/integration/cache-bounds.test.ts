/**
 * The cache's bounds over real sockets: the memory tier stays within `memory:` under churn and keeps what is
 * used; a response beyond `max_object` streams through uncached; the disk tier survives a restart, and a
 * corrupt or truncated entry on disk is discarded, never served.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { answer, cacheStatus, get, isHit, startOrigin, type Origin } from './cache-support.js';
import { waitFor } from './proxy-support.js';

const MEMORY = 64 * 1024;
const MAX_OBJECT = 16 * 1024;

let origin: Origin;
let portico: RunningPortico;
const diskDir = mkdtempSync(path.join(tmpdir(), 'portico-cache-disk-'));

before(async () => {
  origin = await startOrigin();
  portico = await startPortico(`caches:
  small: { memory: ${MEMORY}, max_object: ${MAX_OBJECT} }
upstreams:
  origin: { servers: [{ url: "${origin.url}" }], retries: 0 }
sites:
  - routes:
      - path: /
        proxy: { upstream: origin, cache: { zone: small } }
`);
});

after(async () => {
  await portico?.stop();
  await origin?.stop();
  rmSync(diskDir, { recursive: true, force: true });
});

describe('memory bound', () => {
  test('300 keys of 2 KB through a 64 KB zone: the size never exceeds the bound; a key in use stays', async () => {
    const body = 'b'.repeat(2000);
    origin.on('/churn', answer({ 'cache-control': 'max-age=60' }, body));
    origin.on('/hot', answer({ 'cache-control': 'max-age=60' }, 'hot'));
    const zone = portico.server.cacheZone('small')!;
    await get(portico.port, '/hot');
    for (let i = 0; i < 300; i++) {
      const res = await get(portico.port, `/churn?i=${i}`);
      assert.equal(res.body.length, 2000);
      assert.ok(zone.memory.size <= MEMORY, `memory ${zone.memory.size} > ${MEMORY} after ${i + 1} keys`);
      if (i % 10 === 0) assert.ok(isHit(await get(portico.port, '/hot')), `/hot evicted after ${i + 1} keys`);
    }
    assert.ok(zone.memory.size > MEMORY * 0.8, `the zone was filled (${zone.memory.size})`);
    assert.ok(isHit(await get(portico.port, '/hot')));
    // The oldest churn keys were evicted, the newest are there.
    assert.ok(!isHit(await get(portico.port, '/churn?i=0')));
    assert.ok(isHit(await get(portico.port, '/churn?i=299')));
    // The client named a port (127.0.0.1:PORT): the key ends with the authority the app was told.
    assert.equal(zone.memory.keys()[0], `http127.0.0.1/churn?i=299\u0000127.0.0.1:${portico.port}`);
  });
});

describe('max_object', () => {
  test('a larger response (Content-Length) streams through whole and is not stored', async () => {
    const big = 'L'.repeat(MAX_OBJECT + 1);
    origin.on('/large', answer({ 'cache-control': 'max-age=60' }, big));
    const a = await get(portico.port, '/large');
    assert.equal(a.body.toString(), big);
    assert.equal(cacheStatus(a), 'Portico; fwd=uri-miss; fwd-status=200');
    const b = await get(portico.port, '/large');
    assert.ok(!isHit(b));
    assert.equal(origin.seen('/large').length, 2);
  });

  test('a larger chunked response (no Content-Length) streams through whole and is not stored', async () => {
    const chunk = 'C'.repeat(4096);
    origin.on('/large-chunked', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' });
      for (let i = 0; i < 8; i++) res.write(chunk);
      res.end();
    });
    const a = await get(portico.port, '/large-chunked');
    assert.equal(a.body.length, 8 * 4096);
    const b = await get(portico.port, '/large-chunked');
    assert.ok(!isHit(b));
    assert.equal(b.body.length, 8 * 4096);
    assert.equal(origin.seen('/large-chunked').length, 2);
  });

  test('collapsed on a chunked response that outgrows max_object: the early waiter gets it whole, later requests do not join', async () => {
    const piece = 'P'.repeat(4096);
    const whole = piece.repeat(10);
    let overflowed!: () => void;
    const afterOverflow = new Promise<void>((resolve) => (overflowed = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let finish!: () => void;
    const finishing = new Promise<void>((resolve) => (finish = resolve));
    origin.on('/outgrow', (_req, res, n) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' });
      if (n > 1) return void res.end(whole);
      res.write(piece);
      void released.then(async () => {
        for (let i = 1; i < 6; i++) res.write(piece);
        overflowed();
        // The rest comes once the late request below has been answered (or given up on).
        await finishing;
        for (let i = 6; i < 10; i++) res.write(piece);
        res.end();
      });
    });
    const leader = get(portico.port, '/outgrow');
    await waitFor('the leader at the origin', () => origin.seen('/outgrow').length === 1);
    // The waiter has joined the flight once it has the head and the first piece (from the flight, not the origin).
    let waiterBytes = 0;
    const waiter = new Promise<{ status: string; body: string }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: portico.port, path: '/outgrow', agent: false }, (res) => {
          let body = '';
          res.setEncoding('latin1');
          res.on('data', (chunk: string) => {
            body += chunk;
            waiterBytes = body.length;
          });
          res.on('end', () => resolve({ status: String(res.headers['cache-status']), body }));
          res.on('error', reject);
        })
        .on('error', reject);
    });
    await waitFor('the waiter to get the first piece', () => waiterBytes >= piece.length);
    release();
    await afterOverflow;
    // Portico has taken in the piece that outgrew max_object: the waiter has it.
    await waitFor('the overflowing piece at the waiter', () => waiterBytes >= 6 * piece.length);
    const lateRequest = get(portico.port, '/outgrow');
    // A late request that (wrongly) joined the flight would wait for the rest: let the origin go on after 5 s.
    await waitFor('the late request at the origin', () => origin.seen('/outgrow').length === 2, 5000).catch(() => undefined);
    finish();
    const late = await lateRequest;
    assert.equal(late.body.toString(), whole);
    assert.equal(origin.seen('/outgrow').length, 2);
    const [a, b] = await Promise.all([leader, waiter]);
    assert.equal(a.body.toString(), whole);
    assert.equal(b.body, whole);
    assert.match(b.status, /collapsed/);
    assert.ok(!isHit(await get(portico.port, '/outgrow')));
  });

  test('a response just under the limit is stored', async () => {
    origin.on('/just-fits', answer({ 'cache-control': 'max-age=60' }, 'f'.repeat(MAX_OBJECT - 1024)));
    await get(portico.port, '/just-fits');
    assert.ok(isHit(await get(portico.port, '/just-fits')));
  });
});

describe('disk tier', () => {
  const config = () => `caches:
  disk: { memory: 1MB, max_object: 64KB, disk: { path: "${diskDir}", size: 10MB } }
upstreams:
  origin: { servers: [{ url: "${origin.url}" }], retries: 0 }
sites:
  - routes:
      - path: /
        proxy: { upstream: origin, cache: { zone: disk } }
`;
  /**
   * A request as a site's clients send it, naming no port: each Portico below listens on a new port, and a port the
   * client names is part of the key (the app was told it), so a Host with one would not find the last run's entries.
   */
  const getSite = (port: number, path: string) => get(port, path, { host: '127.0.0.1' });
  /** The entry file of a key with no Vary. */
  const entryFile = (key: string) => {
    const name = createHash('sha256').update(`${key}\0`).digest('hex');
    return path.join(diskDir, name.slice(0, 2), name);
  };

  test('a hit survives a restart: a new Portico on the same disk path answers without the origin', async () => {
    origin.on('/disk/kept', answer({ 'cache-control': 'max-age=600', 'x-origin': 'yes' }, 'kept across restarts'));
    const first = await startPortico(config());
    await getSite(first.port, '/disk/kept');
    assert.ok(isHit(await getSite(first.port, '/disk/kept')));
    await first.stop();
    const second = await startPortico(config());
    try {
      const res = await getSite(second.port, '/disk/kept');
      assert.ok(isHit(res), cacheStatus(res));
      assert.equal(res.body.toString(), 'kept across restarts');
      assert.equal(res.headers['x-origin'], 'yes');
      assert.equal(origin.seen('/disk/kept').length, 1);
    } finally {
      await second.stop();
    }
  });

  test('a corrupt body or a truncated file on disk is discarded, never served', async () => {
    origin.on('/disk/flipped', answer({ 'cache-control': 'max-age=600' }, (_req, n) => `flipped body, version ${n}`));
    origin.on('/disk/truncated', answer({ 'cache-control': 'max-age=600' }, (_req, n) => `truncated body, version ${n}`));
    const first = await startPortico(config());
    await getSite(first.port, '/disk/flipped');
    await getSite(first.port, '/disk/truncated');
    await first.stop();

    // Flip the last byte of one body (the header still parses; its CRC no longer matches); cut the other file.
    const flipped = entryFile('http127.0.0.1/disk/flipped');
    const data = readFileSync(flipped);
    data[data.length - 1] ^= 0xff;
    writeFileSync(flipped, data);
    const truncated = entryFile('http127.0.0.1/disk/truncated');
    truncateSync(truncated, readFileSync(truncated).length - 5);

    const second = await startPortico(config());
    try {
      const a = await getSite(second.port, '/disk/flipped');
      assert.equal(a.body.toString(), 'flipped body, version 2');
      assert.match(cacheStatus(a), /^Portico; fwd=uri-miss/);
      const b = await getSite(second.port, '/disk/truncated');
      assert.equal(b.body.toString(), 'truncated body, version 2');
      assert.match(cacheStatus(b), /^Portico; fwd=uri-miss/);
      // The fresh copies are stored again and served.
      assert.equal((await getSite(second.port, '/disk/flipped')).body.toString(), 'flipped body, version 2');
    } finally {
      await second.stop();
    }
  });
});
