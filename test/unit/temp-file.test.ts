import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { TempFile } from '../../src/http/temp-file.js';
import { canWatchTempFiles, openTempFiles } from '../helpers/temp-files.js';

const root = mkdtempSync(path.join(tmpdir(), 'portico-temp-file-'));
after(() => rmSync(root, { recursive: true, force: true }));

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

test('a temporary file is created 0600 in a folder made 0700, and unlinked at once: the folder stays empty', { skip: !canWatchTempFiles }, async () => {
  const dir = path.join(root, 'made', 'tmp');
  const file = await TempFile.create(dir);
  try {
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(dir), [], 'nothing on disk under a name');
    const open = openTempFiles();
    assert.equal(open.length, 1);
    assert.equal(path.dirname(open[0]!.path), dir);
    assert.equal(open[0]!.mode, 0o600);
    assert.equal(open[0]!.deleted, true, 'unlinked while open: a kill -9 of Portico leaves nothing either');
  } finally {
    await file.close();
  }
  assert.equal(openTempFiles().length, 0, 'closing releases the descriptor');
});

test('what is appended reads back whole, by position and as a fresh stream each time (one per attempt)', async () => {
  const file = await TempFile.create(root);
  try {
    const a = Buffer.alloc(100_000, 'a');
    const b = Buffer.alloc(70_000, 'b');
    await file.append(a);
    await file.append(b);
    assert.equal(file.size, 170_000);
    assert.deepEqual(await file.read(99_990, 20), Buffer.concat([Buffer.alloc(10, 'a'), Buffer.alloc(10, 'b')]));
    const whole = Buffer.concat([a, b]);
    assert.ok((await collect(file.stream())).equals(whole));
    assert.ok((await collect(file.stream())).equals(whole), 'a second stream starts from the first byte again');
    // An attempt that failed destroys its stream mid-way: the file stays open for the next one.
    const cut = file.stream();
    await new Promise<void>((resolve) => cut.once('data', () => resolve()));
    cut.destroy();
    await new Promise((resolve) => cut.once('close', resolve));
    assert.ok((await collect(file.stream())).equals(whole), 'a stream after a destroyed one reads the whole data');
  } finally {
    await file.close();
  }
});

test('after reset() the file is written from its start again and reads only what was written since', async () => {
  const file = await TempFile.create(root);
  try {
    await file.append(Buffer.from('first content'));
    file.reset();
    assert.equal(file.size, 0);
    assert.equal((await collect(file.stream())).length, 0);
    await file.append(Buffer.from('next'));
    assert.equal((await collect(file.stream())).toString(), 'next');
  } finally {
    await file.close();
  }
});

test('a folder that cannot be made is an error, and no descriptor is left open', async () => {
  const blocker = path.join(root, 'a-file');
  writeFileSync(blocker, 'x');
  await assert.rejects(TempFile.create(path.join(blocker, 'tmp')), { code: 'ENOTDIR' });
  if (canWatchTempFiles) assert.equal(openTempFiles().length, 0);
});

test('close() twice is harmless', async () => {
  const file = await TempFile.create(root);
  await file.close();
  await file.close();
});
