/**
 * A forwarding loop: an upstream server that is this Portico itself (as a DNS record naming it, or a port typed
 * wrong, makes it). Each pass adds `Via: 1.1 portico`; at MAX_PORTICO_HOPS the request is answered 508 (Loop
 * Detected), said once in the error log, instead of each pass making the next until a header outgrows its limit.
 */
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MAX_PORTICO_HOPS } from '../../src/handlers/proxy/prepare.js';
import { Portico } from '../../src/server/portico.js';
import { parseConfig } from '../../src/server/config.js';
import { capturingLogger, freePort } from '../helpers/pebble.js';
import { startUpstream } from '../helpers/upstream.js';

test('an upstream that is this Portico itself: a request, or a WebSocket upgrade, is answered 508 after MAX_PORTICO_HOPS passes, the loop said in the error log; a request with fewer hops is forwarded', async () => {
  const port = await freePort();
  const app = await startUpstream('from the app');
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-loop-'));
  const yaml = `listen: ["127.0.0.1:${port}"]
log: { access: off }
upstreams:
  self: { servers: ["http://127.0.0.1:${port}"], retries: 0 }
  app: { servers: ["${app.url}"] }
sites:
  - routes:
      - path: /app/
        proxy: { upstream: app }
      - path: /
        proxy: { upstream: self }
`;
  const log = capturingLogger();
  const server = new Portico(parseConfig(yaml, path.join(dir, 'portico.yaml'), dir), log.logger);
  await server.start();
  try {
    const started = Date.now();
    const res = await fetch(`http://127.0.0.1:${port}/anything`);
    assert.equal(res.status, 508);
    assert.ok(Date.now() - started < 5000, `answered after ${Date.now() - started} ms`);
    const loops = log.lines.filter((line) => /forwarding loop/.test(line.msg));
    assert.equal(loops.length, 1, 'said once, by the pass that stopped it');
    assert.equal(loops[0]!.hops, MAX_PORTICO_HOPS);
    // A chain of Porticos (and another proxy) shorter than the bound is forwarded; at the bound it is not.
    const via = (n: number): string => ['1.1 nginx', ...Array.from({ length: n }, () => '1.1 portico')].join(', ');
    const ok = await fetch(`http://127.0.0.1:${port}/app/x`, { headers: { via: via(MAX_PORTICO_HOPS - 1) } });
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), 'from the app');
    assert.equal((await fetch(`http://127.0.0.1:${port}/app/x`, { headers: { via: via(MAX_PORTICO_HOPS) } })).status, 508);
    // A WebSocket upgrade loops the same way (its tunnel is not a forwarded request): stopped the same way, at once
    // (the innermost pass answers 508; the one before it reads no 101 and answers 502, as to any app refusing).
    const upgradeStarted = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    socket.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    const [first] = (await once(socket, 'data')) as [Buffer];
    socket.destroy();
    assert.match(first.toString('latin1'), /^HTTP\/1\.1 50[28] /);
    assert.ok(Date.now() - upgradeStarted < 5000, `answered after ${Date.now() - upgradeStarted} ms`);
    assert.equal(log.lines.filter((line) => /forwarding loop/.test(line.msg) && line.url === '/ws').length, 1);
  } finally {
    await server.stop(100);
    await app.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
