import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { startPortico } from '../helpers/portico.js';

test('a request head not complete within header_timeout gets 408 and the connection is closed (slowloris)', async () => {
  const portico = await startPortico(`listen:
  - { addr: "127.0.0.1:0", header_timeout: 500ms }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
  try {
    const started = Date.now();
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(portico.port, '127.0.0.1', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\nX-Slow: '));
      let data = '';
      socket.on('data', (chunk) => (data += chunk.toString()));
      socket.on('close', () => resolve(data));
      socket.on('error', reject);
      setTimeout(() => {
        socket.destroy();
        resolve(data);
      }, 4000);
    });
    const elapsed = Date.now() - started;
    assert.match(reply, /^HTTP\/1\.1 408 /);
    assert.ok(elapsed < 2500, `closed after ${elapsed} ms`);
  } finally {
    await portico.stop();
  }
});

test('a request head larger than max_header_size gets 431', async () => {
  const portico = await startPortico(`listen:
  - { addr: "127.0.0.1:0", max_header_size: 2KB }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
  try {
    const res = await fetch(portico.url, { headers: { 'x-big': 'a'.repeat(4096) } });
    assert.equal(res.status, 431);
  } finally {
    await portico.stop();
  }
});
