/** RequestContext.onClientGone over a real socket: a hook registered after the client left still runs. */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { test } from 'node:test';
import { RequestContext } from '../../src/http/context.js';

test('onClientGone registered after the client already went away runs at once (no close event will come)', async () => {
  let ran = false;
  let arrived!: () => void;
  const requestArrived = new Promise<void>((resolve) => (arrived = resolve));
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const server = http.createServer((req, res) => {
    arrived();
    res.once('close', () => {
      // The response closed unfinished; a handler that only now asks to hear about it must still be told.
      const ctx = new RequestContext(req, res, 'http', 0);
      ctx.onClientGone(() => (ran = true));
      resolveDone();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
  await requestArrived;
  socket.destroy();
  await done;
  server.close();
  assert.equal(ran, true);
});
