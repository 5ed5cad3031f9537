/**
 * Flow control and backpressure over HTTP/2: a client that stops reading (its stream paused, so its window
 * closes) keeps Portico from reading further — of a 100 MB file, or of a 100 MB answer from the upstream. The
 * body is not buffered in Portico's memory, and all of it arrives once the client reads again.
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { closeSync, openSync, ftruncateSync, readdirSync, readlinkSync } from 'node:fs';
import { constants as h2constants } from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { connectH2, startPorticoH2, type RunningH2 } from '../helpers/h2.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const SIZE = 100 * 1024 * 1024;
/** What Portico may hold for one paused 100 MB answer: windows, stream buffers, read-ahead, with slack for GC. */
const GROWTH_CAP = 40 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'y');

/** Memory that a buffered body would show in: the heap and Buffers outside it. */
function held(): number {
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** Resolves once `stream` has delivered at least `bytes` (then pauses it: the client stops reading). */
function readThenPause(stream: ClientHttp2Stream, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = 0;
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received >= bytes) {
        stream.off('data', onData);
        stream.pause();
        resolve(received);
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

/** Reads the rest of `stream` and resolves with the total byte count. */
function readRest(stream: ClientHttp2Stream, already: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = already;
    stream.on('data', (chunk: Buffer) => (received += chunk.length));
    stream.once('end', () => resolve(received));
    stream.once('error', reject);
    stream.resume();
  });
}

/**
 * Samples Portico's memory for `ms` after the client paused (the measurement window: a backpressure bug would
 * read on at disk or loopback speed, hundreds of MB a second, and show within it); returns the largest growth.
 */
async function growthWhilePaused(baseline: number, ms: number): Promise<number> {
  let worst = 0;
  const until = Date.now() + ms;
  for (let i = 0; i < 100 && Date.now() < until; i++) {
    await new Promise((resolve) => setTimeout(resolve, ms / 20));
    worst = Math.max(worst, held() - baseline);
  }
  return worst;
}

async function checkPausedDownload(t: TestContext, client: ClientHttp2Session, headers: Record<string, string>): Promise<void> {
  global.gc?.();
  const baseline = held();
  const stream = client.request({ ':authority': 'a.example', ...headers });
  const status = new Promise<number>((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))));
  const first = await readThenPause(stream, 256 * 1024);
  assert.equal(await status, 200);
  const growth = await growthWhilePaused(baseline, 1000);
  t.diagnostic(`paused after ${first} bytes; memory growth while paused ${(growth / 1048576).toFixed(1)} MB (cap ${GROWTH_CAP / 1048576} MB)`);
  assert.ok(growth < GROWTH_CAP, `memory grew ${growth} bytes while the client read nothing`);
  const total = await readRest(stream, first);
  assert.equal(total, SIZE, 'the whole body arrives once the client reads again');
}

describe('HTTP/2 flow control and backpressure', () => {
  let portico: RunningH2;
  let backend: TestUpstream;
  let client: ClientHttp2Session;
  /** Emits 'aborted' (with the bytes sent) when an answer of the app server is cut before its end. */
  const appEvents = new EventEmitter();

  before(async () => {
    backend = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': SIZE });
      let sent = 0;
      res.once('close', () => {
        if (!res.writableFinished) appEvents.emit('aborted', sent);
      });
      // The app respects its own socket's backpressure, so whatever piles up does so in Portico.
      const pump = () => {
        while (sent < SIZE) {
          sent += CHUNK.length;
          if (!res.write(CHUNK)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    portico = await startPorticoH2(
      `upstreams:
  app: { servers: [{ url: "${backend.url}" }], retries: 0 }
sites:
  - hosts: [a.example]
    routes:
      - path: /files/
        static: { root: ./public, compress: false }
      - path: /big
        proxy: { upstream: app }
`,
      { 'public/files/.keep': '' },
    );
    // A 100 MB file without writing 100 MB: a sparse file reads as zeros.
    const fd = openSync(path.join(portico.dir, 'public/files/big.bin'), 'w');
    ftruncateSync(fd, SIZE);
    closeSync(fd);
    client = await connectH2(portico.origin, { settings: { initialWindowSize: 65_535 } });
  });

  after(async () => {
    client?.close();
    await portico?.stop();
    await backend?.stop();
  });

  test('a paused client of a 100 MB static file: Portico stops reading the file, memory stays bounded, then all of it arrives', async (t) => {
    await checkPausedDownload(t, client, { ':path': '/files/big.bin' });
  });

  test('a client that resets its stream mid-download: the file is closed and the upstream request aborted', async (t) => {
    if (process.platform !== 'linux') return t.skip('counts open files through /proc/self/fd');
    const openBig = () => readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).endsWith('big.bin');
      } catch {
        return false;
      }
    }).length;
    const stream = client.request({ ':authority': 'a.example', ':path': '/files/big.bin' });
    await readThenPause(stream, 256 * 1024);
    assert.equal(openBig(), 1, 'the file is open while it is sent');
    const upstreamStream = client.request({ ':authority': 'a.example', ':path': '/big' });
    await readThenPause(upstreamStream, 256 * 1024);
    const aborted = once(appEvents, 'aborted');
    stream.close(h2constants.NGHTTP2_CANCEL);
    upstreamStream.close(h2constants.NGHTTP2_CANCEL);
    // Bounded wait for Portico to react to the resets (events on its side are not visible from here).
    let open = 1;
    for (let i = 0; i < 100 && open > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      open = openBig();
    }
    assert.equal(open, 0, 'the file is closed after the reset');
    const [sentByApp] = (await aborted) as [number];
    t.diagnostic(`the app server's answer was cut after ${sentByApp} of ${SIZE} bytes`);
    assert.ok(sentByApp < SIZE / 2, 'the upstream request is aborted, not read to its end');
  });

  test('a paused client of a 100 MB proxied answer: Portico stops reading the upstream, memory stays bounded, then all of it arrives', async (t) => {
    await checkPausedDownload(t, client, { ':path': '/big' });
  });
});
