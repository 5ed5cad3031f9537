/**
 * A reload swaps configs without failing what the previous one took: a request whose body is still arriving when
 * the swap happens is forwarded with the previous config's upstream when its last byte is in, and logged in its
 * access log. (Request buffering made that window as long as the slowest upload.)
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { startPortico } from '../helpers/portico.js';
import { openTempFiles } from '../helpers/temp-files.js';
import { waitFor } from './proxy-support.js';

test('an upload still arriving at a reload is answered by the app and logged, not failed with 502', async () => {
  const received: number[] = [];
  const app = http.createServer((req, res) => {
    let bytes = 0;
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
    req.once('end', () => {
      received.push(bytes);
      res.end(`got ${bytes}`);
    });
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const text = (body: string, port = 0) =>
    `listen: ["127.0.0.1:${port}"]\nlog: { access: ./access.log }\nupstreams:\n  app: { servers: ["http://127.0.0.1:${(app.address() as AddressInfo).port}"] }\n` +
    `sites:\n  - routes:\n      - path: /new\n        respond: { status: 200, body: "${body}" }\n      - path: /\n        proxy: { upstream: app }\n`;
  const running = await startPortico(text('one'));
  const socket = net.connect(running.port, '127.0.0.1');
  let answer = '';
  socket.on('data', (data: Buffer) => (answer += data.toString('latin1')));
  try {
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const size = 200 * 1024;
    socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`);
    socket.write(Buffer.alloc(size / 2, 'a'));
    // Half of it is in Portico (past request_buffer_memory: in a temporary file) when the reload swaps configs.
    await waitFor('the body to be spilled to a temporary file', () => openTempFiles().length === 1, 5000);
    await running.server.reload(parseConfig(text('two', running.port), path.join(running.dir, 'portico.yaml'), running.dir));
    assert.equal(await (await fetch(`${running.url}/new`)).text(), 'two', 'the new config serves');
    socket.write(Buffer.alloc(size / 2, 'b'));
    await waitFor('the answer', () => answer.includes(`got ${size}`) || /^HTTP\/1\.1 5/.test(answer), 10_000);
    assert.match(answer, /^HTTP\/1\.1 200/, answer.slice(0, 200));
    assert.deepEqual(received, [size]);
    // Written by the previous config's access log, flushed when it closes once drained.
    const logFile = path.join(running.dir, 'access.log');
    const logged = () => existsSync(logFile) && /"POST \/upload HTTP\/1\.1" 200 /.test(readFileSync(logFile, 'utf8'));
    await waitFor('the request in the previous config\'s access log', logged, 5000);
  } finally {
    socket.destroy();
    await running.stop();
    await new Promise<void>((resolve) => app.close(() => resolve()));
  }
});
