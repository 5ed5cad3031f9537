/**
 * The cache zone and its memory tier, without sockets: the byte bound holds under churn, LRU order keeps the
 * most recently used, purge by key and by prefix, Vary lookups, hit-for-miss marks, the bound of disk writes in
 * flight; and the growing body that
 * streams one response to many readers while it arrives.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import pino from 'pino';
import { GrowingBody } from '../../src/cache/growing-body.js';
import { MemoryStore } from '../../src/cache/memory-store.js';
import { DEFAULT_TARGETED, type RuleOptions } from '../../src/cache/rules.js';
import { DiskStore } from '../../src/cache/disk-store.js';
import { storedSize, type PersistentStore, type StoredResponse } from '../../src/cache/types.js';
import { CacheZone, DISK_DELETES_IN_FLIGHT, DISK_WRITES_IN_FLIGHT, makeVariant, sameOriginPath } from '../../src/cache/zone.js';

const RULES: RuleOptions = { heuristic: false, defaultTtl: 0, defaultTtlWithCredentials: false, ignoreSetCookie: false, staleIfError: 0, targeted: DEFAULT_TARGETED };
const silent = pino({ level: 'silent' });

function response(key: string, body: string | Buffer, extraHeaders: string[] = [], varyKey = ''): StoredResponse {
  return {
    key,
    varyKey,
    status: 200,
    headers: ['Cache-Control', 'max-age=60', 'Content-Type', 'text/plain', ...extraHeaders],
    body: Buffer.isBuffer(body) ? body : Buffer.from(body),
    requestTime: Date.now(),
    responseTime: Date.now(),
  };
}

function zone(memory: number, maxObject = memory): CacheZone {
  return new CacheZone('test', { memory, max_object: maxObject } as ConstructorParameters<typeof CacheZone>[1], silent);
}

describe('memory tier bound and LRU', () => {
  test('the memory size never exceeds the bound while 2000 keys churn through a 64 KB zone', async () => {
    const z = zone(64 * 1024);
    await z.start();
    const body = Buffer.alloc(700, 'a');
    let peak = 0;
    for (let i = 0; i < 2000; i++) {
      z.store(response(`http/churn/${i}`, body), RULES);
      peak = Math.max(peak, z.memory.size);
      assert.ok(z.memory.size <= 64 * 1024, `size ${z.memory.size} after ${i} stores`);
    }
    // It did fill up (the bound is used, not just respected by storing nothing).
    assert.ok(peak > 60 * 1024, `peak ${peak}`);
    assert.ok(z.memory.keys().length < 2000);
    await z.stop();
  });

  test('the most recently used keys survive eviction', async () => {
    // A small body is also kept as its one-write string, which counts against the bound too.
    const one = storedSize(response('http/lru/00', Buffer.alloc(1000))) + 1000;
    const z = zone(one * 10 + 10);
    await z.start();
    for (let i = 0; i < 10; i++) z.store(response(`http/lru/${String(i).padStart(2, '0')}`, Buffer.alloc(1000)), RULES);
    // Touch the oldest two: they become the most recently used.
    assert.ok('hit' in (await z.lookup('http/lru/00', {}, RULES)));
    assert.ok('hit' in (await z.lookup('http/lru/01', {}, RULES)));
    for (let i = 10; i < 13; i++) z.store(response(`http/lru/${i}`, Buffer.alloc(1000)), RULES);
    const keys = z.memory.keys();
    assert.ok(keys.includes('http/lru/00') && keys.includes('http/lru/01'), keys.join(' '));
    assert.ok(!keys.includes('http/lru/02') && !keys.includes('http/lru/03') && !keys.includes('http/lru/04'), keys.join(' '));
    assert.equal(keys[0], 'http/lru/12');
    await z.stop();
  });

  test('a variant larger than the whole memory tier is not stored, and leaves the others alone', () => {
    const store = new MemoryStore<null>(4096);
    store.put({ stored: response('a', 'small'), extra: null });
    store.put({ stored: response('b', Buffer.alloc(5000)), extra: null });
    assert.deepEqual(store.keys(), ['a']);
  });

  test('the extra bytes of a variant count in that check: one that fits only without them is refused, the key kept', () => {
    const small = response('k', 'small', [], 'v1');
    const big = response('k', Buffer.alloc(3000), [], 'v2');
    const store = new MemoryStore<number>(storedSize(small) + 20 + storedSize(big) + 100, (extra) => extra);
    store.put({ stored: small, extra: 20 });
    // Fits by its stored size (and together with the first), not with its 3000 extra bytes.
    store.put({ stored: big, extra: 3000 });
    assert.deepEqual(store.keys(), ['k']);
    assert.deepEqual(store.get('k')?.map((v) => v.stored.varyKey), ['v1']);
  });

  test('variants of one key: a new variant is added, the same secondary key is replaced', () => {
    const store = new MemoryStore<null>(1 << 20);
    store.put({ stored: response('k', 'en-1', [], 'accept-language:en\n'), extra: null });
    store.put({ stored: response('k', 'fr-1', [], 'accept-language:fr\n'), extra: null });
    store.put({ stored: response('k', 'en-2', [], 'accept-language:en\n'), extra: null });
    const bodies = store.get('k')!.map((v) => v.stored.body.toString()).sort();
    assert.deepEqual(bodies, ['en-2', 'fr-1']);
  });
});

describe('zone lookup, purge and hit-for-miss', () => {
  test('Vary: the variant whose secondary key matches, else a vary-miss; an unknown key is a uri-miss', async () => {
    const z = zone(1 << 20);
    z.store(response('http/v', 'en', ['Vary', 'Accept-Language'], 'accept-language:en\n'), RULES);
    const en = await z.lookup('http/v', { 'accept-language': 'en' }, RULES);
    assert.ok('hit' in en && en.hit.stored.body.toString() === 'en');
    assert.deepEqual(await z.lookup('http/v', { 'accept-language': 'fr' }, RULES), { miss: 'vary-miss' });
    assert.deepEqual(await z.lookup('http/none', {}, RULES), { miss: 'uri-miss' });
  });

  test('purge by exact key removes only that key; by prefix every key under it', async () => {
    const z = zone(1 << 20);
    for (const key of ['http/a/1', 'http/a/2', 'http/a/2/x', 'http/b/1']) z.store(response(key, key), RULES);
    assert.equal(await z.purge('http/a/2'), 1);
    assert.deepEqual(z.memory.keys().sort(), ['http/a/1', 'http/a/2/x', 'http/b/1']);
    assert.equal(await z.purgePrefix('http/a/'), 2);
    assert.deepEqual(z.memory.keys(), ['http/b/1']);
    assert.equal(await z.purge('http/nothing'), 0);
  });

  test('hit-for-miss marks expire, and storing the key clears its mark', () => {
    const z = zone(1 << 20);
    const now = Date.now();
    z.markHitForMiss('k', now + 1000);
    assert.equal(z.isHitForMiss('k', now), true);
    assert.equal(z.isHitForMiss('k', now + 1001), false);
    z.markHitForMiss('k', now + 1000);
    z.store(response('k', 'x'), RULES);
    assert.equal(z.isHitForMiss('k', now), false);
  });

  test('a served variant has an exact Content-Length and no stored Age or Cache-Status', () => {
    const v = makeVariant(response('k', 'hello', ['Age', '10', 'Content-Length', '999', 'Cache-Status', 'Other; hit']), RULES);
    const names = v.extra.baseHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    assert.ok(!names.includes('age') && !names.includes('cache-status'));
    assert.equal(v.extra.baseHeaders[v.extra.baseHeaders.indexOf('Content-Length') + 1], '5');
    // Age is still in the stored headers, where currentAge reads it.
    assert.ok(v.stored.headers.includes('Age'));
  });

  test('sameOriginPath: relative paths and same-host absolute URLs only', () => {
    assert.equal(sameOriginPath('/a?b=1', 'example.com'), '/a?b=1');
    assert.equal(sameOriginPath('http://example.com:8080/x?y', 'example.com:8080'), '/x?y');
    assert.equal(sameOriginPath('http://other.example/x', 'example.com'), undefined);
    assert.equal(sameOriginPath('//other.example/x', 'example.com'), undefined);
    assert.equal(sameOriginPath(undefined, 'example.com'), undefined);
  });
});

describe('GrowingBody', () => {
  test('a reader that joins late gets what arrived, then follows; all readers get every byte', async () => {
    const body = new GrowingBody();
    body.push(Buffer.from('one,'));
    const early: Buffer[] = [];
    const readEarly = body.pipeTo((c) => (early.push(c), true), async () => {});
    body.push(Buffer.from('two,'));
    const late: Buffer[] = [];
    const readLate = body.pipeTo((c) => (late.push(c), true), async () => {});
    body.push(Buffer.from('three'));
    body.end();
    await Promise.all([readEarly, readLate]);
    assert.equal(Buffer.concat(early).toString(), 'one,two,three');
    assert.equal(Buffer.concat(late).toString(), 'one,two,three');
    assert.equal(body.concat().toString(), 'one,two,three');
  });

  test('a reader sees the first chunk before the body ends', async () => {
    const body = new GrowingBody();
    const got: string[] = [];
    const reading = body.pipeTo((c) => (got.push(c.toString()), true), async () => {});
    body.push(Buffer.from('half'));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(got, ['half']);
    body.push(Buffer.from('rest'));
    body.end();
    await reading;
    assert.deepEqual(got, ['half', 'rest']);
  });

  test('backpressure: a full reader waits for its drain, without losing or reordering chunks', async () => {
    const body = new GrowingBody();
    const got: string[] = [];
    let release!: () => void;
    let full = true;
    const reading = body.pipeTo(
      (c) => {
        got.push(c.toString());
        return !full;
      },
      () => new Promise<void>((resolve) => (release = resolve)),
    );
    body.push(Buffer.from('a'));
    body.push(Buffer.from('b'));
    body.push(Buffer.from('c'));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(got, ['a']);
    full = false;
    release();
    body.end();
    await reading;
    assert.deepEqual(got, ['a', 'b', 'c']);
  });

  test('a failed body rejects its readers, also those joining after the failure', async () => {
    const body = new GrowingBody();
    const reading = body.pipeTo(() => true, async () => {});
    body.push(Buffer.from('x'));
    body.fail(new Error('cut'));
    await assert.rejects(reading, /cut/);
    await assert.rejects(body.pipeTo(() => true, async () => {}), /cut/);
  });

  test('release(): chunks every reader has passed are dropped, a new reader is refused, the body is not kept', async () => {
    const body = new GrowingBody();
    const got: string[] = [];
    const reading = body.pipeTo((c) => (got.push(c.toString()), true), async () => {});
    for (let i = 0; i < 5; i++) body.push(Buffer.from(String(i)));
    assert.equal(body.joinable, true);
    body.release();
    assert.equal(body.joinable, false);
    assert.equal(body.chunks.length, 0);
    for (let i = 5; i < 10; i++) body.push(Buffer.from(String(i)));
    assert.equal(body.chunks.length, 0);
    assert.equal(body.bytes, 10);
    await assert.rejects(body.pipeTo(() => true, async () => {}), /released/);
    assert.throws(() => body.concat(), /released/);
    body.end();
    await reading;
    assert.equal(got.join(''), '0123456789');
  });

  test('release() keeps what a slow reader has not passed yet', async () => {
    const body = new GrowingBody();
    let release!: () => void;
    const got: string[] = [];
    const reading = body.pipeTo(
      (c) => (got.push(c.toString()), false),
      () => new Promise<void>((resolve) => (release = resolve)),
    );
    body.push(Buffer.from('a'));
    body.push(Buffer.from('b'));
    body.push(Buffer.from('c'));
    body.release();
    // The reader wrote 'a' and waits: 'b' and 'c' are kept for it.
    assert.deepEqual(body.chunks.map(String), ['b', 'c']);
    body.end();
    while (got.length < 3) {
      release();
      await new Promise((resolve) => setImmediate(resolve));
    }
    release();
    await reading;
    assert.deepEqual(got, ['a', 'b', 'c']);
    assert.equal(body.chunks.length, 0);
  });

  test('released, a writer learns when the readers are more than a limit behind, and is resumed once they catch up', async () => {
    const body = new GrowingBody();
    let drained!: () => void;
    const reading = body.pipeTo(
      () => false,
      () => new Promise<void>((resolve) => (drained = resolve)),
    );
    let resumed = 0;
    body.push(Buffer.alloc(10));
    // Kept whole: never over, whatever is held.
    assert.equal(body.holdsOver(5, () => resumed++), false);
    body.release();
    body.push(Buffer.alloc(10));
    body.push(Buffer.alloc(10));
    // The reader took the first chunk and waits: the other two (20 bytes) are held for it.
    assert.equal(body.held, 20);
    assert.equal(body.holdsOver(15, () => resumed++), true);
    drained();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(resumed, 1, 'resumed once the reader passed a chunk');
    assert.ok(body.held <= 15);
    body.end();
    while (body.held > 0) {
      drained();
      await new Promise((resolve) => setImmediate(resolve));
    }
    drained();
    await reading;
  });

  test('an aborted reader leaves at once: the promise rejects and it holds no chunk back', async () => {
    const body = new GrowingBody();
    const controller = new AbortController();
    const reading = body.pipeTo(() => false, () => new Promise<void>(() => {}), controller.signal);
    body.push(Buffer.from('a'));
    body.push(Buffer.from('b'));
    body.release();
    assert.equal(body.readers, 1);
    assert.equal(body.held, 1);
    controller.abort(new Error('client gone'));
    await assert.rejects(reading, /client gone/);
    assert.equal(body.readers, 0);
    assert.equal(body.held, 0);
  });

  test('an empty body that already ended resolves at once', async () => {
    const body = new GrowingBody();
    body.end();
    await body.pipeTo(() => true, async () => {});
  });
});

/**
 * The real store on a real folder, its writes and deletes held at a gate after `hold()` until `open()`: a disk that
 * cannot keep up with the stores. Everything else goes straight to the store.
 */
function gatedDisk(disk: DiskStore): { store: PersistentStore; peak(): number; hold(): void; open(): void } {
  let gate: Promise<void> | null = null;
  let open = () => {};
  let inFlight = 0;
  let peak = 0;
  const put = async (entry: StoredResponse) => {
    peak = Math.max(peak, ++inFlight);
    try {
      await gate;
      await disk.put(entry);
    } finally {
      inFlight--;
    }
  };
  const remove = async (key: string) => {
    await gate;
    return disk.delete(key);
  };
  const store = new Proxy(disk, {
    get(target, name) {
      if (name === 'put') return put;
      if (name === 'delete') return remove;
      const value: unknown = Reflect.get(target, name, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return {
    store,
    peak: () => peak,
    hold: () => void (gate = new Promise<void>((resolve) => (open = resolve))),
    open: () => (open(), (gate = null)),
  };
}

/** Waits (at most 5 s) until the zone has no disk write in flight. */
async function diskSettled(z: CacheZone): Promise<void> {
  const deadline = Date.now() + 5000;
  while (z.diskWritesInFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(z.diskWritesInFlight, 0);
}

/** Runs `body` with a zone over a real DiskStore in a temporary folder, its disk gated (`gatedDisk`). */
async function withGatedZone(body: (z: CacheZone, disk: DiskStore, gated: ReturnType<typeof gatedDisk>) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-zone-disk-'));
  const disk = new DiskStore({ path: dir, maxSize: 100_000_000 });
  await disk.open();
  const gated = gatedDisk(disk);
  const z = new CacheZone('test', { memory: 10_000_000, max_object: 1_000_000 } as ConstructorParameters<typeof CacheZone>[1], silent, gated.store);
  try {
    await body(z, disk, gated);
  } finally {
    gated.open();
    await z.stop();
    await disk.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('disk-tier writes in flight', () => {
  test('a burst of stores keeps at most DISK_WRITES_IN_FLIGHT disk writes in flight and drops (and counts) the rest', async () => {
    await withGatedZone(async (z, disk, gated) => {
      gated.hold();
      const total = DISK_WRITES_IN_FLIGHT * 4;
      for (let i = 0; i < total; i++) z.store(response(`http/burst/${i}`, `body ${i}`), RULES);
      assert.equal(gated.peak(), DISK_WRITES_IN_FLIGHT);
      assert.equal(z.diskWritesInFlight, DISK_WRITES_IN_FLIGHT);
      assert.equal(z.diskWritesDropped, total - DISK_WRITES_IN_FLIGHT);
      // Every store is in memory all the same.
      assert.equal(z.memory.keys().length, total);
      gated.open();
      await diskSettled(z);
      // The writes let through reached the disk; the dropped ones did not.
      assert.equal((await disk.get('http/burst/0')).length, 1);
      assert.equal((await disk.get(`http/burst/${total - 1}`)).length, 0);
      // With the disk caught up, the next store is written again.
      z.store(response('http/after', 'after'), RULES);
      assert.equal(z.diskWritesInFlight, 1);
      assert.equal(z.diskWritesDropped, total - DISK_WRITES_IN_FLIGHT);
    });
  });

  test('a store whose disk write is dropped removes the older disk copy of its key: once memory lets the new one go, the old one is not served', async () => {
    await withGatedZone(async (z, disk, gated) => {
      // The old copy reaches both tiers.
      z.store(response('http/page', 'old'), RULES);
      await diskSettled(z);
      assert.equal((await disk.get('http/page')).length, 1);
      // The disk falls behind: the new copy's write is dropped.
      gated.hold();
      for (let i = 0; i < DISK_WRITES_IN_FLIGHT; i++) z.store(response(`http/other/${i}`, `body ${i}`), RULES);
      z.store(response('http/page', 'new'), RULES);
      assert.equal(z.diskWritesDropped, 1);
      // Memory lets the new copy go (as its LRU would under pressure): the old one must not come back.
      z.memory.delete('http/page');
      const lookup = await z.lookup('http/page', {}, RULES);
      if ('hit' in lookup) assert.notEqual(lookup.hit.stored.body.toString(), 'old', 'the old copy came back from disk');
      gated.open();
      await diskSettled(z);
      const again = await z.lookup('http/page', {}, RULES);
      if ('hit' in again) assert.notEqual(again.hit.stored.body.toString(), 'old', 'the old copy came back from disk');
      assert.equal((await disk.get('http/page')).length, 0, 'the old copy is gone from the disk');
    });
  });

  test('with DISK_DELETES_IN_FLIGHT deletes in flight too, a store of a key the disk holds is kept nowhere, so no older copy stands beside it', async () => {
    await withGatedZone(async (z, disk, gated) => {
      const onDisk = DISK_DELETES_IN_FLIGHT + 1;
      for (let i = 0; i < onDisk; i++) {
        z.store(response(`http/page/${i}`, 'old'), RULES);
        await diskSettled(z);
      }
      gated.hold();
      for (let i = 0; i < DISK_WRITES_IN_FLIGHT; i++) z.store(response(`http/other/${i}`, `body ${i}`), RULES);
      for (let i = 0; i < onDisk; i++) z.store(response(`http/page/${i}`, 'new'), RULES);
      // The first DISK_DELETES_IN_FLIGHT are kept in memory (their old copies being deleted); the last nowhere.
      assert.equal(z.memory.get('http/page/0')?.[0]?.stored.body.toString(), 'new');
      assert.equal(z.memory.get(`http/page/${onDisk - 1}`), undefined);
      gated.open();
      await diskSettled(z);
      assert.equal((await disk.get('http/page/0')).length, 0);
    });
  });
});
