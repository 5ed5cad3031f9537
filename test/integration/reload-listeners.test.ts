/**
 * A reload and the listen addresses: new ones are bound before anything is swapped (a port in use fails the
 * reload and the old config keeps serving, unchanged), removed ones close, kept ones take the new limits.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
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
