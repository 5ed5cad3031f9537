import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { POLICY_NAMES } from '../../src/upstream/policies/index.js';
import { startPortico } from '../helpers/portico.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

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
  let finishedAt = 0;
  const backend = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
    res.end(Buffer.alloc(size, 7), () => (finishedAt = Date.now()));
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
    const started = Date.now();
    socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    while (finishedAt === 0 && Date.now() - started < 3000) await new Promise((r) => setTimeout(r, 25));
    assert.ok(finishedAt !== 0, 'the app server was still held by a client that reads nothing');
  } finally {
    socket.destroy();
    await portico.stop();
    await backend.stop();
  }
});

test('without buffer_response a client that reads nothing holds the app server back (streaming)', async () => {
  const size = 16 * 1024 * 1024;
  let finished = false;
  const backend = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
    res.end(Buffer.alloc(size, 7), () => (finished = true));
  });
  const portico = await startPortico(`upstreams:
  app:
    servers: [{ url: "${backend.url}" }]
sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`);
  const socket = net.connect(portico.port, '127.0.0.1');
  try {
    socket.pause();
    socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(finished, false);
  } finally {
    socket.destroy();
    await portico.stop();
    await backend.stop();
  }
});
