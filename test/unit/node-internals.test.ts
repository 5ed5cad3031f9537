/**
 * The Node internals Portico reads (src/connections/node-internals.ts). These tests fail loudly when a Node release
 * renames or reshapes them, so the keep-alive sweeper never falls back silently.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import tls from 'node:tls';
import { spawn } from 'node:child_process';
import {
  CONNECTIONS_SYMBOL,
  listeningHandle,
  PARSER_ON_EXECUTE,
  parserHeaderPairs,
  probePeer,
  queuedInKernelWrite,
  requestsBeingReceived,
  responseOnSocket,
  prepareParserWatch,
  watchParserStops,
  wrappedSocket,
} from '../../src/connections/node-internals.js';
import { createCertificate } from '../../src/tls/self-signed.js';

/**
 * A listening front that hands each connection to `server` with emit('connection'), as Portico's gate does; with
 * `putBack`, it reads the first bytes itself first, then puts them back (as the PROXY reader does).
 */
async function gate(server: http.Server, putBack: boolean): Promise<net.Server> {
  const front = net.createServer((socket) => {
    if (!putBack) return void server.emit('connection', socket);
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      server.emit('connection', socket);
      socket.resume();
    });
  });
  front.listen(0, '127.0.0.1');
  await once(front, 'listening');
  return front;
}

describe('Node internals that the keep-alive sweeper reads', () => {
  test('socket._httpMessage is the response being written, and is cleared once it has finished', async () => {
    let during: unknown;
    let response: http.ServerResponse | undefined;
    const server = http.createServer((_req, res) => {
      response = res;
      during = responseOnSocket(res.socket as net.Socket);
      res.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as net.AddressInfo;
      const agent = new http.Agent({ keepAlive: true });
      const res = await new Promise<http.IncomingMessage>((resolve) => http.get({ port, host: '127.0.0.1', agent }, resolve));
      res.resume();
      await once(res, 'end');
      assert.equal(during, response, `Node ${process.version}: socket._httpMessage is not the ServerResponse any more`);
      const socket = response!.socket ?? (response as unknown as { _socket?: net.Socket })._socket;
      if (socket) assert.notEqual(responseOnSocket(socket)?.writableFinished, false);
      agent.destroy();
    } finally {
      server.close();
    }
  });

  test('the HTTP server keeps its connections list under the symbol "http.server.connections", listing a request being received', async () => {
    const server = http.createServer((_req, res) => res.end());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      await once(client, 'connect');
      assert.ok(
        Object.getOwnPropertySymbols(server).some((symbol) => symbol.description === CONNECTIONS_SYMBOL),
        `Node ${process.version}: no ${CONNECTIONS_SYMBOL} symbol on http.Server`,
      );
      // Half a request head: the parser is inside a request.
      client.write('GET / HTTP/1.1\r\nHost: x\r\n');
      const deadline = Date.now() + 5000;
      let receiving = requestsBeingReceived(server);
      while ((receiving === undefined || receiving.size === 0) && Date.now() < deadline) {
        await new Promise((resolve) => setImmediate(resolve));
        receiving = requestsBeingReceived(server);
      }
      assert.ok(receiving !== undefined, `Node ${process.version}: the connections list has no active() any more`);
      assert.equal(receiving.size, 1, 'the socket with half a head is listed as receiving a request');
    } finally {
      client.destroy();
      server.closeAllConnections();
      server.close();
    }
  });

  test("socket.parser.maxHeaderPairs is the server's maxHeadersCount (in rawHeaders entries) when the connection opened", async () => {
    let seen: number | undefined;
    const server = http.createServer((req, res) => {
      seen = parserHeaderPairs(req.socket);
      res.end();
    });
    server.maxHeadersCount = 7;
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/`);
      await res.arrayBuffer();
      assert.equal(seen, 14, `Node ${process.version}: socket.parser.maxHeaderPairs is not 2 × maxHeadersCount any more`);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  test("bytes read off a socket and put back (unshift) before it is handed to an HTTP server with emit('connection') are parsed first", async () => {
    const server = http.createServer((req, res) => res.end(`served ${req.url}`));
    const front = await gate(server, true);
    try {
      const res = await fetch(`http://127.0.0.1:${(front.address() as net.AddressInfo).port}/x`);
      assert.equal(await res.text(), 'served /x', `Node ${process.version}: bytes put back before the HTTP server took the socket were lost`);
    } finally {
      server.closeAllConnections();
      front.close();
    }
  });

  test('socket._handle.writeQueueSize is the unsent part of a write the peer does not read', async () => {
    let measured: (queued: number) => void;
    const queued = new Promise<number>((resolve) => (measured = resolve));
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.write(Buffer.alloc(32 * 1024 * 1024));
      setTimeout(() => {
        measured(queuedInKernelWrite(socket));
        socket.destroy();
      }, 200);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    client.on('error', () => {});
    client.pause();
    try {
      const left = await queued;
      assert.ok(left > 0, `Node ${process.version}: no writeQueueSize on a socket's handle any more (got ${left})`);
    } finally {
      client.destroy();
      server.close();
    }
  });
});

describe('Node internals that the TLS stage reads', () => {
  test('a server-side TLS socket made from an accepted socket keeps it as _parent', async () => {
    const pair = await createCertificate({ names: ['localhost'] });
    const secure = tls.createServer({ cert: pair.cert, key: pair.key });
    let accepted: net.Socket | undefined;
    const front = net.createServer((socket) => {
      accepted = socket;
      secure.emit('connection', socket);
    });
    front.listen(0, '127.0.0.1');
    await once(front, 'listening');
    try {
      const handshake = once(secure, 'secureConnection') as Promise<[tls.TLSSocket]>;
      const client = tls.connect({ port: (front.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false });
      client.on('error', () => undefined);
      const [socket] = await handshake;
      assert.equal(wrappedSocket(socket), accepted, `Node ${process.version}: tlsSocket._parent is not the accepted socket any more`);
      client.destroy();
      socket.destroy();
    } finally {
      front.close();
    }
  });

  test('socket._handle has readStop()/readStart() and a reading flag: probePeer restarts reading, the socket goes on, and a peer close is seen', async () => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'connection');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      const [socket] = (await accepted) as [net.Socket];
      socket.on('error', () => undefined);
      const handle = (socket as net.Socket & { _handle: { reading?: unknown } })._handle;
      assert.equal(handle.reading, true, `Node ${process.version}: a reading socket's handle has no reading flag`);
      assert.equal(probePeer(socket), true, `Node ${process.version}: socket._handle has no readStop/readStart`);
      const data = once(socket, 'data');
      client.write('after the probe');
      assert.equal(String((await data)[0]), 'after the probe');
      const closed = once(socket, 'close');
      client.destroy();
      let timer: NodeJS.Timeout | undefined;
      const seen = await Promise.race([closed.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 5000)))]);
      clearTimeout(timer);
      assert.ok(seen, "the peer's close is seen");
    } finally {
      client.destroy();
      server.close();
    }
  });
});

describe('Node internals that the HTTP/1 listener reads', () => {
  // An HTTP server without an 'upgrade' listener reads every upgrade as a plain request, as Portico does for the
  // upgrades it declines, while llhttp still takes it for one. Its malformed body: a short count, no 'clientError'.
  const DECLINED = 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nnot-a-chunk-size\r\n\r\n';

  for (const way of ['read by the parser off the socket (kOnExecute)', "given to parser.execute() from 'data' events (bytes put back with unshift)"]) {
    test(`a declined upgrade's malformed chunked body stops the parser short, and watchParserStops says so: ${way}`, async () => {
      assert.equal(typeof PARSER_ON_EXECUTE, 'number', `Node ${process.version}: _http_common has no HTTPParser.kOnExecute any more`);
      const stops: string[] = [];
      const clientErrors: string[] = [];
      let installed: boolean | undefined;
      let stopped: () => void;
      const seen = new Promise<void>((resolve) => (stopped = resolve));
      // As Portico's listener: the part that must come first at the connection, the watch itself for a declined
      // upgrade only, while its head is parsed (its 'request' event).
      let prepared: boolean | undefined;
      const server = http.createServer((req) => {
        if (req.headers.upgrade === 'h2c') {
          installed = watchParserStops(req, (stoppedIn) => {
            stops.push(stoppedIn.url ?? '');
            req.socket.destroy();
            stopped();
          });
        }
        req.resume();
      });
      server.on('connection', (socket: net.Socket) => {
        prepared = prepareParserWatch(socket);
      });
      server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
        clientErrors.push(String(err.code));
        socket.destroy();
      });
      const front = await gate(server, !way.startsWith('read'));
      const client = net.connect((front.address() as net.AddressInfo).port, '127.0.0.1');
      client.on('error', () => undefined);
      let timer: NodeJS.Timeout | undefined;
      try {
        client.write(DECLINED);
        const result = await Promise.race([seen.then(() => 'stopped'), new Promise<string>((resolve) => (timer = setTimeout(() => resolve('nothing in 5 s'), 5000)))]);
        assert.equal(prepared, true, `Node ${process.version}: the parser has no execute()/getCurrentBuffer()/kOnExecute callback any more`);
        assert.equal(installed, true, `Node ${process.version}: the parser has no execute()/getCurrentBuffer()/kOnExecute callback any more`);
        assert.equal(result, 'stopped', `Node ${process.version}: no short count seen (clientError: ${clientErrors.join() || 'none'})`);
        assert.deepEqual(stops, ['/x']);
        assert.deepEqual(clientErrors, [], 'Node itself still reports no error for it (if it does now, the watch can go)');
      } finally {
        clearTimeout(timer);
        client.destroy();
        server.closeAllConnections();
        front.close();
      }
    });
  }

  test('a valid chunked body behind a declined upgrade, in pieces, is not taken for a stop', async () => {
    let installed: boolean | undefined;
    const stops: string[] = [];
    const server = http.createServer((req, res) => {
      installed = watchParserStops(req, (stoppedIn) => stops.push(stoppedIn.url ?? ''));
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk));
      req.on('end', () => res.end(`got ${body}`));
    });
    server.on('connection', (socket: net.Socket) => {
      prepareParserWatch(socket);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      client.write('POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n5\r\nhel');
      await new Promise((resolve) => setImmediate(resolve));
      const answer = once(client, 'data');
      client.write('lo\r\n0\r\n\r\n');
      assert.match(String((await answer)[0]), /got hello/);
      assert.equal(installed, true);
      assert.deepEqual(stops, []);
    } finally {
      client.destroy();
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('Node internals that an upgrade reads', () => {
  test("server._handle of a listening net.Server is a raw TCP handle: sent over IPC as is, another process listens on it with listen(handle) and accepts on the same port", async () => {
    const server = net.createServer((socket) => socket.end('parent'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const handle = listeningHandle(server);
    assert.equal(handle?.constructor.name, 'TCP');
    // The child listens on the handle it got and answers "child"; the parent then stops accepting.
    const child = spawn(
      process.execPath,
      ['-e', "const net = require('node:net'); process.once('message', (m, h) => { const s = net.createServer((c) => c.end('child')); s.listen(h, () => process.send('listening')); });"],
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
    );
    try {
      child.send('socket', handle as net.Server);
      const [message] = (await once(child, 'message')) as [string];
      assert.equal(message, 'listening');
      await new Promise<void>((resolve) => server.close(() => resolve()));
      assert.equal(listeningHandle(server), undefined);
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1');
        let text = '';
        socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
      });
      assert.equal(answer, 'child', 'the port still accepts, in the other process');
    } finally {
      child.kill();
      await once(child, 'exit');
    }
  });
});
