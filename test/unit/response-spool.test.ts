import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, test } from 'node:test';
import type { ClientResponse } from '../../src/http/context.js';
import { ResponseSpool } from '../../src/handlers/proxy/response-spool.js';
import { TempSpace } from '../../src/http/temp-file.js';
import { canWatchTempFiles, openTempFiles } from '../helpers/temp-files.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portico-spool-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const KB = 1024;

/** A slow client: a stream with a small buffer, read only as far as the test allows. */
function slowClient(): { res: ClientResponse; received: Buffer[]; take(bytes: number): Promise<void>; ended: Promise<void> } {
  const stream = new PassThrough({ highWaterMark: 16 * KB });
  const received: Buffer[] = [];
  let budget = 0;
  let done: (() => void) | undefined;
  const ended = new Promise<void>((resolve) => stream.once('end', resolve));
  const pull = () => {
    while (budget > 0) {
      const chunk = stream.read() as Buffer | null;
      if (chunk === null) return;
      received.push(chunk);
      budget -= chunk.length;
    }
    done?.();
  };
  stream.on('readable', pull);
  void ended.then(() => done?.());
  return {
    res: stream as unknown as ClientResponse,
    received,
    ended,
    take(bytes: number) {
      budget = bytes;
      return new Promise<void>((resolve) => {
        done = resolve;
        pull();
      });
    },
  };
}

test('chunks go out whole and in order through memory, the file, and memory again after the client caught up', async () => {
  const client = slowClient();
  // The spool starts as ClientSink starts it: after a write said false.
  assert.equal(client.res.write(Buffer.alloc(32 * KB, 0)), false);
  const sent: Buffer[] = [Buffer.alloc(32 * KB, 0)];
  let resumed = 0;
  const spool = new ResponseSpool(client.res, { limit: 4 * 1024 * KB, memory: 64 * KB, space: new TempSpace(dir, 1024 * 1024 * KB) }, () => resumed++, (err) => assert.fail(err));
  const push = (bytes: number) => {
    const chunk = randomBytes(bytes);
    sent.push(chunk);
    return spool.push(chunk);
  };
  for (let i = 0; i < 40; i++) assert.equal(push(20 * KB), true);
  if (canWatchTempFiles) {
    // Opening the file is asynchronous: wait for it (bounded), as for its closing below.
    for (let i = 0; i < 200 && openTempFiles().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(openTempFiles().length, 1, 'past 64KB in memory, the rest went to a file');
  }
  await client.take(832 * KB);
  assert.equal(spool.held, 0, 'the client caught up');
  // Caught up: small chunks are held in memory again, then the file is reused.
  for (let i = 0; i < 3; i++) push(10 * KB);
  for (let i = 0; i < 20; i++) push(30 * KB);
  assert.ok(spool.held > 0);
  spool.end();
  await client.take(Infinity);
  await client.ended;
  assert.ok(Buffer.concat(client.received).equals(Buffer.concat(sent)), 'every byte, in order');
  assert.equal(resumed, 0, 'never past the limit: the upstream was never paused');
  if (canWatchTempFiles) {
    for (let i = 0; i < 200 && openTempFiles().length > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(openTempFiles().length, 0, 'the end released the file');
  }
});

test('past the limit push() says false, and the upstream is resumed once the client has taken enough', async () => {
  const client = slowClient();
  client.res.write(Buffer.alloc(32 * KB));
  let resumed = 0;
  const spool = new ResponseSpool(client.res, { limit: 256 * KB, memory: 64 * KB, space: new TempSpace(dir, 1024 * 1024 * KB) }, () => resumed++, (err) => assert.fail(err));
  let accepted = 0;
  while (spool.push(Buffer.alloc(32 * KB))) accepted++;
  assert.equal(accepted, 8, 'held up to the limit');
  assert.equal(resumed, 0);
  await client.take(128 * KB);
  await new Promise((resolve) => setImmediate(resolve));
  for (let i = 0; i < 50 && resumed === 0; i++) await client.take(16 * KB);
  assert.equal(resumed, 1);
  spool.release();
  if (canWatchTempFiles) {
    // Closing is asynchronous: wait for it (bounded).
    for (let i = 0; i < 100 && openTempFiles().length > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(openTempFiles().length, 0, 'release() closes the file');
  }
});

test('temp_files.max_size: once the files of all answers hold it, push() says false under the answer\'s own limit; the upstream resumes only when this client took all', async () => {
  const space = new TempSpace(dir, 128 * KB);
  const client = slowClient();
  client.res.write(Buffer.alloc(32 * KB));
  let resumed = 0;
  const spool = new ResponseSpool(client.res, { limit: 4 * 1024 * KB, memory: 32 * KB, space }, () => resumed++, (err) => assert.fail(err));
  let accepted = 0;
  // Bounded: without the space's bound it would accept up to its 4 MB limit.
  for (let i = 0; i < 200 && spool.push(Buffer.alloc(32 * KB)); i++) {
    accepted++;
    // Let the file be written, so that the space sees what it holds.
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.ok(accepted < 20, `stopped at the space's bound (${accepted} chunks accepted)`);
  assert.ok(space.used >= 128 * KB, `the space is full (${space.used} bytes)`);
  for (let i = 0; i < 100 && resumed === 0; i++) await client.take(32 * KB);
  assert.equal(resumed, 1, 'resumed once the client had taken everything');
  assert.equal(spool.held, 0);
  spool.release();
  for (let i = 0; i < 100 && space.used > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(space.used, 0, 'the space is given back when the file is reset or closed');
});

test('chunks on their way to the file count against temp_files.max_size at once: a burst cannot overshoot it', () => {
  const space = new TempSpace(dir, 128 * KB);
  const client = slowClient();
  client.res.write(Buffer.alloc(32 * KB));
  const spool = new ResponseSpool(client.res, { limit: 4 * 1024 * KB, memory: 32 * KB, space }, () => undefined, (err) => assert.fail(err));
  let accepted = 0;
  // All in one tick, as an app's burst arrives: no write to the file has finished yet.
  for (let i = 0; i < 200 && spool.push(Buffer.alloc(32 * KB)); i++) accepted++;
  assert.ok(accepted * 32 * KB <= 32 * KB + 128 * KB + 32 * KB, `held at most memory + the space + one chunk (accepted ${accepted} chunks)`);
  spool.release();
  assert.equal(space.pending, 0, 'what was on its way to the file is given back on release');
});

test('the bytes counted as sent are those handed to the client\'s connection, not those taken from the app', async () => {
  const client = slowClient();
  // The spool starts as ClientSink starts it: after a write (counted by the sink itself) said false.
  assert.equal(client.res.write(Buffer.alloc(32 * KB)), false);
  const counter = { bytesSent: 32 * KB };
  const spool = new ResponseSpool(client.res, { limit: 4 * 1024 * KB, memory: 64 * KB, space: new TempSpace(dir, 1024 * 1024 * KB) }, () => undefined, (err) => assert.fail(err), counter);
  for (let i = 0; i < 16; i++) spool.push(Buffer.alloc(32 * KB));
  await client.take(64 * KB);
  const received = client.received.reduce((sum, chunk) => sum + chunk.length, 0);
  assert.ok(counter.bytesSent < 16 * 32 * KB, `not everything taken from the app counts (${counter.bytesSent})`);
  assert.ok(counter.bytesSent >= received, `what the client got counts (${counter.bytesSent} >= ${received})`);
  spool.release();
});
