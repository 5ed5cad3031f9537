/**
 * Request collapsing over real sockets: concurrent misses for one key become one origin request whose body
 * streams to every waiter as it arrives; a response that may not be shared (private, no-store, Set-Cookie,
 * Authorization, another Vary variant) is never given to a waiter, who asks the origin itself; and the key is
 * then hit-for-miss, so the next burst is not serialised behind a leader. A leader's client that reads slowly
 * (or not at all) holds back no one: the fetch goes at the app's pace, and the leader reads like any waiter.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { cacheConfig, cacheStatus, get, type Origin, startOrigin } from './cache-support.js';
import { trackServerSockets, waitFor } from './proxy-support.js';

const ORIGIN_DELAY = 300;

let origin: Origin;
let portico: RunningPortico;
const serverSockets = trackServerSockets();

before(async () => {
  origin = await startOrigin();
  portico = await startPortico(cacheConfig(origin.url));
});

after(async () => {
  serverSockets.stop();
  await portico?.stop();
  await origin?.stop();
});

/** Answers after ORIGIN_DELAY with the request's X-Secret echoed in the body, and the given fields. */
function slowEcho(headers: (secret: string) => Record<string, string>) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const secret = String(req.headers['x-secret'] ?? req.headers.authorization ?? 'none');
    setTimeout(() => {
      const body = `secret=${secret}`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, ...headers(secret) });
      res.end(body);
    }, ORIGIN_DELAY);
  };
}

/** `count` concurrent GETs, each with its own secret in `header`; checks every client got its own back. */
async function burstOfSecrets(path: string, count: number, header = 'x-secret', format = (s: string) => s): Promise<number> {
  const started = Date.now();
  const secrets = Array.from({ length: count }, (_, i) => `${path}-client-${i}-${Math.random().toString(36).slice(2)}`);
  const responses = await Promise.all(secrets.map((secret) => get(portico.port, path, { [header]: format(secret) })));
  responses.forEach((res, i) => {
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), `secret=${format(secrets[i]!)}`, `client ${i} got another client's response`);
  });
  return Date.now() - started;
}

describe('collapsing a cold key', () => {
  test('100 concurrent clients: the origin sees 1 request, every client gets the full body', async () => {
    const body = 'x'.repeat(50_000);
    origin.on('/cold', (_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': body.length });
        res.end(body);
      }, ORIGIN_DELAY);
    });
    const responses = await Promise.all(Array.from({ length: 100 }, () => get(portico.port, '/cold')));
    assert.equal(origin.seen('/cold').length, 1);
    for (const res of responses) {
      assert.equal(res.status, 200);
      assert.equal(res.body.length, body.length);
      assert.equal(res.body.toString(), body);
    }
    const statuses = responses.map(cacheStatus);
    assert.equal(statuses.filter((s) => s === 'Portico; fwd=uri-miss; fwd-status=200; stored').length, 1);
    // The others waited for the leader; on a loaded machine a late one may come after it and be a plain hit.
    const collapsed = statuses.filter((s) => s === 'Portico; fwd=uri-miss; collapsed').length;
    assert.equal(collapsed + statuses.filter((s) => s.startsWith('Portico; hit;')).length, 99);
    assert.ok(collapsed > 50, `only ${collapsed} collapsed`);
  });

  test('the body streams to a waiter before it ends', async () => {
    let releaseSecondHalf!: () => void;
    const secondHalf = new Promise<void>((resolve) => (releaseSecondHalf = resolve));
    origin.on('/stream', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': 10 });
      res.write('first');
      void secondHalf.then(() => res.end('-last'));
    });
    const leader = get(portico.port, '/stream');
    await waitFor('the leader to reach the origin', () => origin.seen('/stream').length === 1);
    const waiter = streamingGet(portico.port, '/stream');
    // The waiter must see the first half while the origin still holds the second one back.
    await waitFor('the first half at the waiter', () => waiter.received() === 'first', 3000);
    assert.match(await waiter.cacheStatus, /collapsed/);
    releaseSecondHalf();
    assert.equal(await waiter.done, 'first-last');
    assert.equal((await leader).body.toString(), 'first-last');
    assert.equal(origin.seen('/stream').length, 1);
  });
});

describe('a leader that goes away', () => {
  test('the leader\'s client disconnects mid-body: the waiters still get the whole response, and it is stored', async () => {
    let releaseSecondHalf!: () => void;
    const secondHalf = new Promise<void>((resolve) => (releaseSecondHalf = resolve));
    origin.on('/leader-gone', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': 10 });
      res.write('first');
      void secondHalf.then(() => res.end('-last'));
    });
    const leader = streamingGet(portico.port, '/leader-gone');
    await waitFor('the leader to get the first half', () => leader.received() === 'first');
    const waiter = streamingGet(portico.port, '/leader-gone');
    await waitFor('the first half at the waiter', () => waiter.received() === 'first');
    const leaderPort = leader.localPort();
    leader.abort();
    await assert.rejects(leader.done);
    // Portico has seen the leader's connection close before the origin goes on.
    await serverSockets.closed(leaderPort, portico.port);
    releaseSecondHalf();
    assert.equal(await waiter.done, 'first-last');
    const after = await get(portico.port, '/leader-gone');
    assert.equal(after.body.toString(), 'first-last');
    assert.equal(origin.seen('/leader-gone').length, 1);
  });

  test('a response that is neither stored nor shared: the client leaving aborts the origin request', async () => {
    let originClosed = false;
    origin.on('/gone-private', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'private', 'content-length': 10 });
      res.write('first');
      res.on('close', () => (originClosed = true));
    });
    const client = streamingGet(portico.port, '/gone-private');
    await waitFor('the first half at the client', () => client.received() === 'first');
    client.abort();
    await assert.rejects(client.done);
    await waitFor('the origin request to be aborted', () => originClosed);
  });
});

describe('a leader whose client does not read', () => {
  test('a 12 MB answer: a collapsed waiter gets it whole within 5 s while the leader reads nothing; the app is asked once; the leader then gets it whole too', async (t) => {
    // A route whose own buffering for a slow client is small (64KB): before, the leader's full buffer paused the
    // fetch for the waiters too.
    const own = await startPortico(`caches:
  big: { memory: 48MB, max_object: 16MB }
upstreams:
  origin: { servers: [{ url: "${origin.url}" }], retries: 0 }
sites:
  - routes:
      - path: /
        proxy: { upstream: origin, buffer_response: 64KB, response_buffer_memory: 64KB, cache: { zone: big } }
`);
    t.after(() => own.stop());
    const body = randomBytes(12 * 1024 * 1024 * 0.75).toString('base64');
    let releaseRest!: () => void;
    const rest = new Promise<void>((resolve) => (releaseRest = resolve));
    origin.on('/paused-leader', (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain', 'content-length': body.length });
      res.write(body.slice(0, 1000));
      void rest.then(() => res.end(body.slice(1000)));
    });
    // The leader: a raw connection that reads nothing (paused before anything arrives).
    const leader = net.connect(own.port, '127.0.0.1');
    leader.pause();
    t.after(() => leader.destroy());
    // The Host names the port as the waiter's does: a named port is part of the cache key.
    leader.write(`GET /paused-leader HTTP/1.1\r\nHost: 127.0.0.1:${own.port}\r\nConnection: close\r\n\r\n`);
    await waitFor('the leader to reach the origin', () => origin.seen('/paused-leader').length === 1);
    const waiter = streamingGet(own.port, '/paused-leader');
    await waitFor('the first bytes at the waiter', () => waiter.received().length === 1000);
    assert.match(await waiter.cacheStatus, /collapsed/);
    releaseRest();
    const started = Date.now();
    const whole = await Promise.race([
      waiter.done,
      new Promise<string>((_resolve, reject) => setTimeout(() => reject(new Error(`the waiter had ${waiter.received().length} of ${body.length} bytes after 5 s`)), 5000).unref()),
    ]);
    assert.equal(whole.length, body.length);
    assert.ok(whole === body, 'the waiter got the body intact');
    assert.ok(Date.now() - started < 5000);
    assert.equal(origin.seen('/paused-leader').length, 1);
    // Stored: the next client is a hit.
    const after = await get(own.port, '/paused-leader');
    assert.match(cacheStatus(after), /^Portico; hit/);
    // The leader reads at last, and gets the whole answer.
    const chunks: Buffer[] = [];
    leader.on('data', (chunk: Buffer) => chunks.push(chunk));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the leader\'s answer did not end within 5 s')), 5000);
      leader.once('close', () => (clearTimeout(timer), resolve()));
      leader.resume();
    });
    const received = Buffer.concat(chunks).toString('latin1');
    const headEnd = received.indexOf('\r\n\r\n');
    assert.match(received.slice(0, headEnd), /^HTTP\/1\.1 200 /);
    assert.equal(received.length - headEnd - 4, body.length);
    assert.ok(received.slice(headEnd + 4) === body, 'the leader got the body intact');
    assert.equal(origin.seen('/paused-leader').length, 1);
  });
});

describe('a collapsed waiter that does not read, on an answer released past max_object', () => {
  /**
   * A leader and two collapsed waiters on a chunked (no Content-Length) storable answer of 12 MB, with max_object
   * 256KB: released (not stored) once it outgrows max_object. One waiter reads the head and first bytes, then
   * nothing. Returns what the paused one got once it reads again (its connection closed by then or at the end).
   */
  async function pausedWaiter(t: { after(fn: () => unknown): void }, path: string, buffering: string, listen = ''): Promise<{ body: string; received: string }> {
    const own = await startPortico(`${listen}caches:
  small: { memory: 48MB, max_object: 256KB }
upstreams:
  origin: { servers: [{ url: "${origin.url}" }], retries: 0 }
sites:
  - routes:
      - path: /
        proxy: { upstream: origin, ${buffering}, cache: { zone: small } }
`);
    t.after(() => own.stop());
    const body = randomBytes(12 * 1024 * 1024 * 0.75).toString('base64');
    let releaseRest!: () => void;
    const rest = new Promise<void>((resolve) => (releaseRest = resolve));
    origin.on(path, (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' });
      res.write(body.slice(0, 1000));
      void rest.then(() => res.end(body.slice(1000)));
    });
    const leader = streamingGet(own.port, path);
    await waitFor('the leader to reach the origin', () => origin.seen(path).length === 1);
    const waiter = streamingGet(own.port, path);
    // The paused waiter: reads its head and the first bytes, then nothing.
    const paused = net.connect(own.port, '127.0.0.1');
    t.after(() => paused.destroy());
    const chunks: Buffer[] = [];
    const onData = (chunk: Buffer) => chunks.push(chunk);
    paused.on('data', onData);
    let closed = false;
    paused.on('close', () => (closed = true));
    // send_timeout ends a reader that takes nothing with a TCP reset. Reading on after it, Node 20 sees the reset as
    // the end of the stream and Node 24 as a read error (ECONNRESET): either is the close this test waits for.
    const unexpected: Error[] = [];
    paused.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNRESET') unexpected.push(err);
    });
    paused.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${own.port}\r\nConnection: close\r\n\r\n`);
    await waitFor('the first bytes at the waiter', () => waiter.received().length === 1000);
    await waitFor('the first bytes at the paused waiter', () => Buffer.concat(chunks).toString('latin1').includes(body.slice(0, 1000)));
    paused.pause();
    paused.off('data', onData);
    assert.match(Buffer.concat(chunks).toString('latin1'), /\r\nCache-Status: [^\r]*collapsed/i);
    assert.match(await waiter.cacheStatus, /collapsed/);
    releaseRest();
    const started = Date.now();
    const within = (what: string, reader: ReturnType<typeof streamingGet>) =>
      Promise.race([
        reader.done,
        new Promise<string>((_resolve, reject) => setTimeout(() => reject(new Error(`${what} had ${reader.received().length} of ${body.length} bytes after 10 s`)), 10_000).unref()),
      ]);
    const [leaderBody, waiterBody] = await Promise.all([within('the leader', leader), within('the other waiter', waiter)]);
    assert.ok(leaderBody === body, 'the leader got the body intact');
    assert.ok(waiterBody === body, 'the other waiter got the body intact');
    assert.ok(Date.now() - started < 10_000);
    assert.equal(origin.seen(path).length, 1, 'the app is asked once');
    // The paused waiter reads again: whatever it gets ends with its connection closed.
    paused.on('data', onData);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the paused waiter\'s connection did not close within 10 s')), 10_000);
      if (closed) return (clearTimeout(timer), resolve());
      paused.once('close', () => (clearTimeout(timer), resolve()));
      paused.resume();
    });
    assert.deepEqual(unexpected, [], 'the paused waiter saw no error other than the reset');
    return { body, received: Buffer.concat(chunks).toString('latin1') };
  }

  /** The body of a raw chunked answer (`received`: head and body as sent), and whether its last chunk came. */
  function dechunk(received: string): { text: string; complete: boolean } {
    let at = received.indexOf('\r\n\r\n') + 4;
    let text = '';
    for (;;) {
      const lineEnd = received.indexOf('\r\n', at);
      if (lineEnd === -1) return { text, complete: false };
      const size = parseInt(received.slice(at, lineEnd), 16);
      if (size === 0) return { text, complete: true };
      if (lineEnd + 2 + size > received.length) return { text: text + received.slice(lineEnd + 2), complete: false };
      text += received.slice(lineEnd + 2, lineEnd + 2 + size);
      at = lineEnd + 2 + size + 2;
    }
  }

  test('its own spool holds what it has not taken (buffer_response): the leader and the other waiter get 12 MB promptly, the app is asked once, and the paused one gets it all later', async (t) => {
    const { body, received } = await pausedWaiter(t, '/released-spooled', 'buffer_response: 32MB, response_buffer_memory: 256KB');
    const { text, complete } = dechunk(received);
    assert.ok(complete, 'the paused waiter\'s answer ended with its last chunk');
    assert.equal(text.length, body.length);
    assert.ok(text === body, 'the paused waiter got the body intact');
  });

  test('once its spool is full, the fetch waits for it (never cutting a reader that is only slower) until send_timeout ends it; then the leader and the other waiter get 12 MB and the app is asked once', async (t) => {
    // A reader that was merely slower than the app is never cut: past its own 1MB spool and max_object the fetch
    // waits for it, as one client's answer does once its buffer_response is full; one that takes nothing is ended by
    // send_timeout (1s here), and the others go on.
    const { body, received } = await pausedWaiter(
      t,
      '/released-paced',
      'buffer_response: 1MB, response_buffer_memory: 256KB',
      'listen: [{ addr: "127.0.0.1:0", send_timeout: 1s }]\n',
    );
    const { text, complete } = dechunk(received);
    assert.ok(!complete, 'the paused waiter\'s answer is visibly incomplete');
    assert.ok(text.length < body.length, `the paused waiter got ${text.length} of ${body.length} bytes`);
    assert.ok(body.startsWith(text), 'what it got is the start of the body');
  });
});

describe('responses that may not be shared never reach a waiter', () => {
  test('Cache-Control: private: every client gets its own secret; then hit-for-miss is not serialised', async () => {
    origin.on('/private', slowEcho(() => ({ 'cache-control': 'private, max-age=60' })));
    await burstOfSecrets('/private', 20);
    assert.equal(origin.seen('/private').length, 20);
    // Hit-for-miss: 10 concurrent requests run side by side, not one after the other (10 × 300 ms).
    const elapsed = await burstOfSecrets('/private', 10);
    assert.ok(elapsed < 4 * ORIGIN_DELAY, `10 requests took ${elapsed} ms`);
    assert.equal(origin.seen('/private').length, 30);
  });

  test('no-store: every client gets its own secret', async () => {
    origin.on('/no-store', slowEcho(() => ({ 'cache-control': 'no-store' })));
    await burstOfSecrets('/no-store', 20);
    assert.equal(origin.seen('/no-store').length, 20);
  });

  test('Set-Cookie (with public): every client gets its own secret and its own cookie', async () => {
    origin.on('/cookie', slowEcho((secret) => ({ 'cache-control': 'public, max-age=60', 'set-cookie': `sid=${secret}` })));
    const secrets = Array.from({ length: 20 }, (_, i) => `cookie-${i}`);
    const responses = await Promise.all(secrets.map((secret) => get(portico.port, '/cookie', { 'x-secret': secret })));
    responses.forEach((res, i) => {
      assert.equal(res.body.toString(), `secret=${secrets[i]}`);
      assert.deepEqual(res.headers['set-cookie'], [`sid=${secrets[i]}`]);
    });
  });

  test('requests with Authorization are never collapsed nor given a shared response', async () => {
    origin.on('/auth', slowEcho(() => ({ 'cache-control': 'max-age=60' })));
    const elapsed = await burstOfSecrets('/auth', 20, 'authorization', (s) => `Bearer ${s}`);
    assert.equal(origin.seen('/auth').length, 20);
    assert.ok(elapsed < 4 * ORIGIN_DELAY, `20 requests took ${elapsed} ms`);
  });

  test('Vary on a field the waiters differ in: each waiter asks the origin and gets its own variant', async () => {
    origin.on('/vary', slowEcho(() => ({ 'cache-control': 'max-age=60', vary: 'X-Secret' })));
    await burstOfSecrets('/vary', 20);
    assert.equal(origin.seen('/vary').length, 20);
  });

  test('a waiter whose Vary value matches the leader\'s shares its response', async () => {
    origin.on('/vary-same', slowEcho(() => ({ 'cache-control': 'max-age=60', vary: 'X-Secret' })));
    const responses = await Promise.all(Array.from({ length: 10 }, () => get(portico.port, '/vary-same', { 'x-secret': 'same' })));
    for (const res of responses) assert.equal(res.body.toString(), 'secret=same');
    assert.equal(origin.seen('/vary-same').length, 1);
  });
});

/** A GET whose body can be watched while it arrives. */
function streamingGet(
  port: number,
  path: string,
): { received(): string; cacheStatus: Promise<string>; done: Promise<string>; abort(): void; localPort(): number } {
  let text = '';
  let request!: http.ClientRequest;
  let setStatus!: (value: string) => void;
  const cacheStatusValue = new Promise<string>((resolve) => (setStatus = resolve));
  const done = new Promise<string>((resolve, reject) => {
    const req = (request = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      setStatus(String(res.headers['cache-status']));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve(text));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    }));
    req.on('error', reject);
  });
  return { received: () => text, cacheStatus: cacheStatusValue, done, abort: () => request.destroy(), localPort: () => request.socket!.localPort! };
}
