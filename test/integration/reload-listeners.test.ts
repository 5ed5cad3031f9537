/**
 * A reload and the listen addresses: new ones are bound before anything is swapped (a port in use fails the
 * reload and the old config keeps serving, unchanged), removed ones close, kept ones take the new limits.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { describe, test } from 'node:test';
import { PorticoError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { startPortico } from '../helpers/portico.js';

function config(dir: string, listen: string[], body: string, extra = ''): ReturnType<typeof parseConfig> {
  const text = `listen: [${listen.map((l) => JSON.stringify(l)).join(', ')}]\nlog: { access: off }\n${extra}sites:\n  - routes:\n      - path: /\n        respond: { body: "${body}" }\n`;
  return parseConfig(text, `${dir}/next.yaml`, dir);
}

async function freePortHeld(): Promise<net.Server> {
  const holder = net.createServer();
  holder.listen(0, '127.0.0.1');
  await once(holder, 'listening');
  return holder;
}

async function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

describe('reload and listen addresses', () => {
  test('a reload whose new listen address is in use fails with PORTICO_LISTEN_FAILED, and the old config keeps serving unchanged', async () => {
    const portico = await startPortico('sites:\n  - routes:\n      - path: /\n        respond: { body: "one" }\n');
    const holder = await freePortHeld();
    try {
      const busy = (holder.address() as net.AddressInfo).port;
      await assert.rejects(
        portico.server.reload(config(portico.dir, ['127.0.0.1:0', `127.0.0.1:${busy}`], 'two')),
        (err: unknown) => err instanceof PorticoError && err.code === 'PORTICO_LISTEN_FAILED' && /address already in use/.test(err.message),
      );
      assert.equal(await (await fetch(portico.url)).text(), 'one');
      assert.equal(portico.server.addresses.length, 1);
    } finally {
      holder.close();
      await portico.stop();
    }
  });

  test('a reload binds a newly listed address and closes one no longer listed', async () => {
    const portico = await startPortico('sites:\n  - routes:\n      - path: /\n        respond: { body: "one" }\n');
    const holder = await freePortHeld();
    const port = (holder.address() as net.AddressInfo).port;
    holder.close();
    await once(holder, 'close');
    try {
      await portico.server.reload(config(portico.dir, ['127.0.0.1:0', `127.0.0.1:${port}`], 'two'));
      assert.equal(await (await fetch(portico.url)).text(), 'two');
      assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), 'two');
      await portico.server.reload(config(portico.dir, [`127.0.0.1:${port}`], 'three'));
      assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), 'three');
      assert.equal(await refused(portico.port), true, 'the address no longer listed was closed');
    } finally {
      await portico.stop();
    }
  });

  test('a kept address takes the reloaded max_header_size for new connections', async () => {
    const portico = await startPortico('listen: [{ addr: "127.0.0.1:0", max_header_size: 16KB }]\nsites:\n  - routes:\n      - path: /\n        respond: { body: "one" }\n');
    const big = 'x'.repeat(6000);
    try {
      assert.equal((await fetch(portico.url, { headers: { 'x-big': big, connection: 'close' } })).status, 200);
      await portico.server.reload(
        parseConfig(`listen: [{ addr: "127.0.0.1:0", max_header_size: 4KB }]\nlog: { access: off }\nsites:\n  - routes:\n      - path: /\n        respond: { body: "two" }\n`, `${portico.dir}/n.yaml`, portico.dir),
      );
      const res = await fetch(portico.url, { headers: { 'x-big': big, connection: 'close' } });
      assert.equal(res.status, 431);
    } finally {
      await portico.stop();
    }
  });
});

describe('reload and live connections', () => {
  test('a reload that lowers max_requests_per_conn below what a kept-alive connection already had answers its next request with Connection: close (no hang)', async () => {
    const portico = await startPortico('listen: [{ addr: "127.0.0.1:0", max_requests_per_conn: 100 }]\nsites:\n  - routes:\n      - path: /\n        respond: { body: "one" }\n');
    const socket = net.connect(portico.port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    const answers = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer ${n} in 10 s: ${received}`)), 10_000);
        const check = () => {
          if ((received.match(/HTTP\/1\.1 200/g) ?? []).length >= n) {
            clearTimeout(timer);
            socket.off('data', check);
            resolve();
          }
        };
        socket.on('data', check);
        check();
      });
    try {
      await once(socket, 'connect');
      socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n');
      await answers(2);
      await portico.server.reload(
        parseConfig('listen: [{ addr: "127.0.0.1:0", max_requests_per_conn: 1 }]\nlog: { access: off }\nsites:\n  - routes:\n      - path: /\n        respond: { body: "two" }\n', `${portico.dir}/n.yaml`, portico.dir),
      );
      socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      await answers(3);
      assert.match(received.slice(received.lastIndexOf('HTTP/1.1 200')), /\r\nConnection: close\r\n/i);
      await once(socket, 'close');
    } finally {
      socket.destroy();
      await portico.stop();
    }
  });

  test('a reload that removes an address with an open WebSocket tunnel resolves without waiting for the tunnel, and stop() cuts it', async () => {
    const app = http.createServer();
    app.on('upgrade', (_req, socket: net.Socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.on('data', (d) => socket.write(d));
      socket.on('error', () => socket.destroy());
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const appUrl = `http://127.0.0.1:${(app.address() as net.AddressInfo).port}`;
    const site = `sites:\n  - routes:\n      - path: /\n        proxy: { url: "${appUrl}" }\n`;
    const portico = await startPortico(site);
    const client = net.connect(portico.port, '127.0.0.1');
    try {
      await once(client, 'connect');
      client.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
      const [first] = (await once(client, 'data')) as [Buffer];
      assert.match(first.toString('latin1'), /^HTTP\/1\.1 101 /);
      const started = Date.now();
      await portico.server.reload(parseConfig(`listen: ["127.0.0.2:0"]\nlog: { access: off }\n${site}`, `${portico.dir}/n.yaml`, portico.dir));
      assert.ok(Date.now() - started < 5000, `the reload took ${Date.now() - started} ms`);
      assert.equal(client.destroyed, false, 'the tunnel is still open: it drains within the grace period');
      const closed = once(client, 'close');
      await portico.server.stop(100);
      await closed;
    } finally {
      client.destroy();
      app.close();
      await portico.stop().catch(() => undefined);
    }
  });

  test('failed reloads leave no sweeper timer or listening socket behind', async () => {
    const portico = await startPortico('sites:\n  - routes:\n      - path: /\n        respond: { body: "one" }\n');
    const holder = await freePortHeld();
    const busy = (holder.address() as net.AddressInfo).port;
    const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
    try {
      const before = timers();
      for (let i = 0; i < 5; i++) {
        await assert.rejects(portico.server.reload(config(portico.dir, ['127.0.0.1:0', '127.0.0.2:0', `127.0.0.1:${busy}`], 'two')));
      }
      // The listeners that did bind are closed (their sweepers stop once they have): wait for the loop to settle.
      const deadline = Date.now() + 5000;
      while (timers() > before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.ok(timers() <= before, `timers before ${before}, after ${timers()}`);
      assert.equal(await (await fetch(portico.url)).text(), 'one');
    } finally {
      holder.close();
      await portico.stop();
    }
  });
});
