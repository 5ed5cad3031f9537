import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { DiskStore } from '../../src/cache/disk-store.js';
import { storedSize, type StoredResponse } from '../../src/cache/types.js';

let dir: string;
const stores: DiskStore[] = [];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'portico-disk-store-'));
});

afterEach(async () => {
  for (const store of stores.splice(0)) await store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function openStore(maxSize = 10_000_000): Promise<DiskStore> {
  const store = new DiskStore({ path: dir, maxSize });
  stores.push(store);
  await store.open();
  return store;
}

function response(key: string, varyKey = '', body: Buffer | string = `body of ${key}`): StoredResponse {
  return {
    key,
    varyKey,
    status: 200,
    headers: ['content-type', 'application/octet-stream', 'set-cookie', 'a=1', 'set-cookie', 'b=2'],
    body: Buffer.isBuffer(body) ? body : Buffer.from(body),
    requestTime: 1_700_000_000_000,
    responseTime: 1_700_000_000_250,
  };
}

/** The layout the store promises: <path>/<first two hex>/<sha256(key \0 varyKey)>. */
function fileOf(key: string, varyKey = ''): string {
  const name = createHash('sha256').update(`${key}\0${varyKey}`).digest('hex');
  return path.join(dir, name.slice(0, 2), name);
}

function entryFiles(): string[] {
  return readdirSync(dir)
    .filter((folder) => /^[0-9a-f]{2}$/.test(folder))
    .flatMap((folder) => readdirSync(path.join(dir, folder)));
}

function openFileDescriptors(): number | undefined {
  return existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : undefined;
}

const byVaryKey = (a: StoredResponse, b: StoredResponse) => a.varyKey.localeCompare(b.varyKey);

describe('DiskStore', () => {
  test('round trip of a variant with a binary body and repeated header fields', async () => {
    const store = await openStore();
    const body = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256));
    const entry = { ...response('http://a/x?q=1', 'accept-encoding=gzip', body), status: 203 };
    await store.put(entry);
    const [stored, ...rest] = await store.get(entry.key);
    assert.deepEqual(rest, []);
    assert.deepEqual(stored, entry);
    assert.equal(store.size, storedSize(entry));
    assert.ok(existsSync(fileOf(entry.key, entry.varyKey)));
    assert.equal(readFileSync(fileOf(entry.key, entry.varyKey)).subarray(0, 4).toString('latin1'), 'PCO1');
    assert.deepEqual(await store.get('http://a/other'), []);
  });

  test('two variants of one key are both returned; a put replaces only its own variant', async () => {
    const store = await openStore();
    const gzip = response('http://a/x', 'gzip', 'zipped');
    const br = response('http://a/x', 'br', 'brotli');
    await store.put(gzip);
    await store.put(br);
    assert.deepEqual((await store.get('http://a/x')).sort(byVaryKey), [br, gzip]);

    const newer = { ...response('http://a/x', 'gzip', 'zipped, a longer second version'), status: 201 };
    await store.put(newer);
    assert.deepEqual((await store.get('http://a/x')).sort(byVaryKey), [br, newer]);
    assert.equal(store.size, storedSize(br) + storedSize(newer));
    assert.equal(entryFiles().length, 2);
  });

  test('survives a restart: a new instance on the same path serves the same entries and size', async () => {
    const first = await openStore();
    const a = response('http://a/1', '', Buffer.from([0, 1, 2, 255, 254]));
    const b = response('http://a/2', 'v', 'two');
    await first.put(a);
    await first.put(b);
    await first.close();

    const second = await openStore();
    assert.equal(second.size, storedSize(a) + storedSize(b));
    assert.deepEqual(await second.get('http://a/1'), [a]);
    assert.deepEqual(await second.get('http://a/2'), [b]);
  });

  test('a truncated file is never served: get returns [] and deletes it', async () => {
    const store = await openStore();
    const entry = response('http://a/t', '', Buffer.alloc(1000, 'x'));
    await store.put(entry);
    const file = fileOf(entry.key);
    truncateSync(file, statSync(file).size - 3);
    assert.deepEqual(await store.get(entry.key), []);
    assert.equal(existsSync(file), false);
    assert.equal(store.size, 0);
  });

  test('a truncated file is deleted by open() after a restart (header-only check of the length)', async () => {
    const first = await openStore();
    const entry = response('http://a/t', '', Buffer.alloc(1000, 'x'));
    await first.put(entry);
    await first.close();
    const file = fileOf(entry.key);
    truncateSync(file, statSync(file).size - 3);
    const second = await openStore();
    assert.equal(existsSync(file), false);
    assert.equal(second.size, 0);
    assert.deepEqual(await second.get(entry.key), []);
  });

  test('a flipped byte in the body is caught by the CRC-32, also after a restart, and the file discarded', async () => {
    const first = await openStore();
    const entry = response('http://a/c', '', Buffer.alloc(2000, 'y'));
    await first.put(entry);
    await first.close();
    const file = fileOf(entry.key);
    const data = readFileSync(file);
    data[data.length - 100] ^= 0x01;
    writeFileSync(file, data);

    // The length is intact, so open() (headers only) keeps it; get() reads the body and rejects it.
    const second = await openStore();
    assert.equal(second.size, storedSize(entry));
    assert.deepEqual(await second.get(entry.key), []);
    assert.equal(existsSync(file), false);
    assert.equal(second.size, 0);
  });

  test('open() sweeps leftover tmp files and deletes garbage, keeping valid entries and foreign names', async () => {
    const first = await openStore();
    const good = response('http://a/good');
    await first.put(good);
    await first.close();

    writeFileSync(path.join(dir, 'tmp', 'half-written'), 'PCO1\0\0');
    const garbage = fileOf('http://a/garbage');
    writeFileSync(garbage, 'this is not an entry at all');
    const badJson = fileOf('http://a/bad-json');
    const json = Buffer.from('{"key": nope');
    const prefix = Buffer.alloc(8);
    prefix.write('PCO1', 'latin1');
    prefix.writeUInt32BE(json.length, 4);
    writeFileSync(badJson, Buffer.concat([prefix, json]));
    const misplaced = fileOf('http://a/elsewhere'); // a valid entry under another entry's name
    writeFileSync(misplaced, readFileSync(fileOf(good.key)));
    const empty = fileOf('http://a/empty');
    writeFileSync(empty, '');
    const foreign = path.join(dir, '00', 'README');
    writeFileSync(foreign, 'not ours');

    const second = await openStore();
    assert.deepEqual(readdirSync(path.join(dir, 'tmp')), []);
    for (const file of [garbage, badJson, misplaced, empty]) assert.equal(existsSync(file), false, file);
    assert.ok(existsSync(foreign), 'a file name the store never writes is left alone');
    assert.equal(second.size, storedSize(good));
    assert.deepEqual(await second.get(good.key), [good]);
  });

  test('the bound holds under churn, and least recently used entries go first (get() counts as a use)', async () => {
    const maxSize = 300_000;
    const store = await openStore(maxSize);
    const keyOf = (i: number) => `http://a/item/${i}`;
    const hot = [0, 1, 2];
    for (let i = 0; i < 200; i++) {
      await store.put(response(keyOf(i), '', Buffer.alloc(10_000, i % 256)));
      assert.ok(store.size <= maxSize, `size ${store.size} > ${maxSize} after put ${i}`);
      for (const h of hot) if (h <= i) assert.equal((await store.get(keyOf(h))).length, 1, `hot ${h} evicted at ${i}`);
    }
    const present = [];
    for (let i = 0; i < 200; i++) if ((await store.get(keyOf(i))).length > 0) present.push(i);
    const capacity = Math.floor(maxSize / storedSize(response(keyOf(100), '', Buffer.alloc(10_000))));
    assert.equal(present.length, capacity);
    const recent = Array.from({ length: capacity - hot.length }, (_, i) => 200 - capacity + hot.length + i);
    assert.deepEqual(present, [...hot, ...recent]);
    assert.equal(entryFiles().length, present.length, 'evicted files are gone from disk');

    await store.close();
    const reopened = await openStore(maxSize);
    assert.equal(reopened.size, store.size);
    assert.equal(entryFiles().length, present.length);
  });

  test('open() with a smaller bound evicts the least recently used of the last session', async () => {
    const first = await openStore();
    for (let i = 0; i < 5; i++) {
      await first.put(response(`http://a/${i}`, '', Buffer.alloc(1000)));
      await new Promise((resolve) => setTimeout(resolve, 15)); // distinct mtimes
    }
    await first.get('http://a/0'); // now the most recently used
    await first.close();
    const one = storedSize(response('http://a/0', '', Buffer.alloc(1000)));
    const second = await openStore(one * 2);
    assert.equal(second.size, one * 2);
    assert.equal((await second.get('http://a/0')).length, 1);
    assert.equal((await second.get('http://a/4')).length, 1);
    assert.equal(entryFiles().length, 2);
  });

  test('an entry larger than maxSize is not stored, and the older version it replaces is dropped', async () => {
    const store = await openStore(5_000);
    await store.put(response('http://a/big', '', 'small'));
    await store.put(response('http://a/big', '', Buffer.alloc(6_000)));
    assert.deepEqual(await store.get('http://a/big'), []);
    assert.equal(store.size, 0);
    assert.deepEqual(entryFiles(), []);
    assert.deepEqual(readdirSync(path.join(dir, 'tmp')), []);
  });

  test('delete and deletePrefix remove every variant and return how many', async () => {
    const store = await openStore();
    await store.put(response('http://a/x/1', 'gzip'));
    await store.put(response('http://a/x/1', 'br'));
    await store.put(response('http://a/x/2'));
    await store.put(response('http://a/y/1'));
    await store.put(response('http://a/z', 'gzip'));
    await store.put(response('http://a/z', ''));

    assert.equal(await store.deletePrefix('http://a/x/'), 3);
    assert.deepEqual(await store.get('http://a/x/1'), []);
    assert.deepEqual(await store.get('http://a/x/2'), []);
    assert.equal(existsSync(fileOf('http://a/x/1', 'gzip')), false);
    assert.equal(existsSync(fileOf('http://a/x/2')), false);
    assert.equal((await store.get('http://a/y/1')).length, 1);

    assert.equal(await store.delete('http://a/z'), 2);
    assert.equal(await store.delete('http://a/z'), 0);
    assert.equal(await store.deletePrefix('http://nothing/'), 0);
    assert.equal(store.size, storedSize(response('http://a/y/1')));
    assert.equal(entryFiles().length, 1);
  });

  test('concurrent puts of one variant: one whole entry wins, no leftovers, size consistent', async () => {
    const store = await openStore();
    const versions = Array.from({ length: 20 }, (_, i) => response('http://a/race', '', Buffer.alloc(1000 + i * 37, i)));
    await Promise.all(versions.map((v) => store.put(v)));
    const stored = await store.get('http://a/race');
    assert.equal(stored.length, 1);
    assert.ok(versions.some((v) => v.body.equals(stored[0]!.body)));
    assert.equal(store.size, storedSize(stored[0]!));
    assert.equal(entryFiles().length, 1);
    assert.deepEqual(readdirSync(path.join(dir, 'tmp')), []);

    await store.close();
    const reopened = await openStore();
    assert.deepEqual(await reopened.get('http://a/race'), stored);
  });

  test('a delete wins over a put of the same key still being written', async () => {
    const store = await openStore();
    const writing = store.put(response('http://a/purged', '', Buffer.alloc(50_000)));
    assert.equal(await store.delete('http://a/purged'), 0);
    await writing;
    assert.deepEqual(await store.get('http://a/purged'), []);
    assert.equal(store.size, 0);
    assert.deepEqual(entryFiles(), []);
    assert.deepEqual(readdirSync(path.join(dir, 'tmp')), []);
  });

  test('close() waits for writes in flight; later calls do nothing', async () => {
    const store = await openStore();
    const entries = Array.from({ length: 10 }, (_, i) => response(`http://a/w/${i}`, '', Buffer.alloc(20_000, i)));
    for (const entry of entries) void store.put(entry);
    await store.close();
    assert.equal(entryFiles().length, entries.length);
    assert.deepEqual(readdirSync(path.join(dir, 'tmp')), []);

    await store.put(response('http://a/after-close'));
    assert.equal(existsSync(fileOf('http://a/after-close')), false);
    assert.deepEqual(await store.get('http://a/w/1'), []);

    const reopened = await openStore();
    for (const entry of entries) assert.deepEqual(await reopened.get(entry.key), [entry]);
  });

  test('no file handle or timer is left behind by open, get, put, delete and close', async () => {
    const first = await openStore();
    for (let i = 0; i < 10; i++) await first.put(response(`http://a/h/${i}`, '', Buffer.alloc(5_000, i)));
    await first.close();
    writeFileSync(fileOf('http://a/h/garbage'), 'garbage');

    const fdsBefore = openFileDescriptors();
    const store = await openStore(40_000); // reads every header, deletes the garbage, evicts down to the bound
    await store.get('http://a/h/9');
    await store.put(response('http://a/h/new', '', Buffer.alloc(5_000)));
    await store.delete('http://a/h/8');
    await store.deletePrefix('http://a/h/');
    await store.close();
    assert.equal(openFileDescriptors(), fdsBefore);
    assert.ok(!process.getActiveResourcesInfo().includes('Timeout'));
  });
});
