import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { POLICY_NAMES } from '../../src/upstream/policies/index.js';
import { startPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';
import { stallOrDone } from './proxy-support.js';

let a: TestUpstream;
let b: TestUpstream;
before(async () => {
  a = await startUpstream('a');
  b = await startUpstream('b');
});
after(async () => {
  await a.stop();
  await b.stop();
});

for (const policy of POLICY_NAMES) {
  test(`policy ${policy} configured by name serves every request through a real upstream`, async () => {
    const portico = await startPortico(`upstreams:
  app:
    policy: ${policy}
    hash_key: "$request_uri"
    servers: [{ url: "${a.url}" }, { url: "${b.url}" }]
sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`);
    try {
      const seen = new Set<string>();
      for (let i = 0; i < 12; i++) {
        const res = await fetch(`${portico.url}/k${i}`);
        assert.equal(res.status, 200);
        seen.add(await res.text());
      }
      if (policy === 'first') assert.deepEqual([...seen], ['a']);
      if (policy === 'round_robin') assert.deepEqual([...seen].sort(), ['a', 'b']);
    } finally {
      await portico.stop();
    }
  });
}

test('buffer_response reads the whole response from the app server even while the client reads nothing', async () => {
  const size = 16 * 1024 * 1024;
  let finished!: () => void;
  const whole = new Promise<void>((resolve) => (finished = resolve));
  const backend = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
    res.end(Buffer.alloc(size, 7), () => finished());
  });
  const portico = await startPortico(`upstreams:
  app:
    servers: [{ url: "${backend.url}" }]
sites:
  - routes:
      - path: /
        proxy: { upstream: app, buffer_response: 32MB }
`);
  const socket = net.connect(portico.port, '127.0.0.1');
  try {
    socket.pause();
    socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    let timer: NodeJS.Timeout | undefined;
    const held = new Promise<'held'>((resolve) => (timer = setTimeout(() => resolve('held'), 10_000)));
    const outcome = await Promise.race([whole.then(() => 'finished' as const), held]);
    clearTimeout(timer);
    assert.equal(outcome, 'finished', 'the app server was still held by a client that reads nothing (after 10 s)');
  } finally {
    socket.destroy();
    await portico.stop();
    await backend.stop();
  }
});

test('with buffer_response: 0 a client that reads nothing holds the app server back (streaming)', async () => {
  const size = 16 * 1024 * 1024;
  const chunk = Buffer.alloc(64 * 1024, 7);
  let written = 0;
  let finished = false;
  const backend = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
    // Chunk by chunk, respecting backpressure: `written` counts what the socket took.
    const pump = () => {
      while (written < size) {
        written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end(() => (finished = true));
    };
    pump();
  });
  const portico = await startPortico(`upstreams:
  app:
    servers: [{ url: "${backend.url}" }]
sites:
  - routes:
      - path: /
        proxy: { upstream: app, buffer_response: 0 }
`);
  const socket = net.connect(portico.port, '127.0.0.1');
  try {
    socket.pause();
    socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    const outcome = await stallOrDone('the app server', () => written, () => finished);
    assert.equal(outcome, 'stalled', `the app server finished ${written} bytes to a client that read nothing`);
    assert.equal(finished, false);
    assert.ok(written < size, `${written} of ${size} bytes`);
    // It was the client holding it back: once the client reads, the app server finishes.
    let received = 0;
    socket.on('data', (data: Buffer) => (received += data.length));
    socket.resume();
    await stallOrDone('the app server', () => written, () => finished, { quietMs: 5000 }).then((how) => assert.equal(how, 'done'));
    assert.ok(received > 0);
  } finally {
    socket.destroy();
    await portico.stop();
    await backend.stop();
  }
});
