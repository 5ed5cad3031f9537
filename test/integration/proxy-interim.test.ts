/**
 * Interim (1xx) and bodiless (204, 304) answers from the app, and the rule that every upstream error path
 * answers the client or cuts its connection: a request never waits forever.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { describe, test } from 'node:test';
import { startOrigin } from './cache-support.js';
import { RawConnection, scopedServers, statusOf } from './proxy-support.js';

const servers = scopedServers();

/** A backend writing raw bytes: `respond` gets each request head (GET, no body) and its 1-based count. */
async function rawBackend(respond: (socket: net.Socket, head: string, n: number) => void): Promise<{ url: string; port: number; requests: string[] }> {
  const requests: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let pending = '';
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      let end: number;
      while ((end = pending.indexOf('\r\n\r\n')) !== -1) {
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        requests.push(head);
        respond(socket, head, requests.length);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.defer(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  const port = (server.address() as net.AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, port, requests };
}

/** A port nothing listens on. */
async function refusedUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

/** Config: each named upstream (one server, no retries) proxied at `/<name>`, cached when listed in `cached`. */
function routesConfig(upstreams: Record<string, string>, cached: readonly string[] = [], cacheOptions = ''): string {
  const ups = Object.entries(upstreams)
    .map(([name, url]) => `  ${name}: { servers: [{ url: "${url}" }], retries: 0 }`)
    .join('\n');
  const routes = Object.keys(upstreams)
    .map((name) =>
      cached.includes(name)
        ? `      - path: /${name}\n        proxy: { upstream: ${name}, cache: { zone: main${cacheOptions} } }`
        : `      - path: /${name}\n        proxy: { upstream: ${name} }`,
    )
    .join('\n');
  return `caches:\n  main: { memory: 4MB, max_object: 1MB }\nupstreams:\n${ups}\nsites:\n  - routes:\n${routes}\n`;
}

/** Sends a raw request (closing the connection after it) and returns all Portico sent until it closed. */
async function exchange(port: number, path: string, version = '1.1', extra = ''): Promise<string> {
  const conn = await RawConnection.open(port);
  try {
    conn.write(`GET ${path} HTTP/${version}\r\nHost: interim.test\r\nConnection: close\r\n${extra}\r\n`);
    assert.ok(await conn.waitClosed(5000), `no complete answer to ${path}: ${JSON.stringify(conn.received.toString('latin1'))}`);
    return conn.received.toString('latin1');
  } finally {
    conn.close();
  }
}

/** Splits what a client received into its response heads (interim ones first) and the final body. */
function heads(text: string): { heads: string[]; body: string } {
  const out: string[] = [];
  let rest = text;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) return { heads: out, body: rest };
    const head = rest.slice(0, end);
    out.push(head);
    rest = rest.slice(end + 4);
    if (statusOf(head) >= 200) return { heads: out, body: rest };
  }
}

function linkLines(head: string): string[] {
  return head.split('\r\n').filter((line) => /^link:/i.test(line)).map((line) => line.slice(5).trim());
}

const LINKS = ['</style.css>; rel=preload; as=style', '</app.js>; rel=preload; as=script'];

/** An app that sends a 103 with LINKS, then its final answer. */
function hinting(body: string, headers: Record<string, string> = {}) {
  return (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeEarlyHints({ link: LINKS }, () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), ...headers });
      res.end(body);
    });
  };
}

describe('interim answers from the app', () => {
  test('a 103 Early Hints reaches an HTTP/1.1 client with its Link fields, then the final answer', async () => {
    const app = await servers.upstream(hinting('final'));
    const server = await servers.portico(routesConfig({ hints: app.url }));
    const got = heads(await exchange(server.port, '/hints'));
    assert.equal(got.heads.length, 2, `expected a 103 then the final head:\n${got.heads.join('\n--\n')}`);
    assert.equal(statusOf(got.heads[0]!), 103);
    assert.deepEqual(linkLines(got.heads[0]!).flatMap((v) => v.split(/,\s*(?=<)/)), LINKS);
    assert.equal(statusOf(got.heads[1]!), 200);
    assert.equal(got.body, 'final');
  });

  test('an HTTP/1.0 client gets no 103, only the final answer', async () => {
    const app = await servers.upstream(hinting('final'));
    const server = await servers.portico(routesConfig({ hints: app.url }));
    const text = await exchange(server.port, '/hints', '1.0');
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(text, / 103 /);
    assert.ok(text.endsWith('\r\n\r\nfinal'));
  });

  test('a 102 Processing is dropped and the final answer served', async () => {
    const app = await servers.upstream((_req, res) => {
      res.writeProcessing();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 4 });
      res.end('done');
    });
    const server = await servers.portico(routesConfig({ slow: app.url }));
    const got = heads(await exchange(server.port, '/slow'));
    assert.deepEqual(got.heads.map(statusOf), [200]);
    assert.equal(got.body, 'done');
  });

  test('an interim answer carrying Content-Length is still followed by the final answer', async () => {
    const app = await rawBackend((socket) => {
      socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 5\r\n\r\n');
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const server = await servers.portico(routesConfig({ odd: app.url }));
    const got = heads(await exchange(server.port, '/odd'));
    assert.deepEqual(got.heads.map(statusOf), [103, 200]);
    assert.deepEqual(linkLines(got.heads[0]!), ['</a.css>; rel=preload']);
    assert.equal(got.body, 'ok');
  });

  test('an unsolicited 100 Continue from the app is skipped and the final answer served', async () => {
    const app = await rawBackend((socket) => {
      socket.write('HTTP/1.1 100 Continue\r\n\r\n');
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nafter');
    });
    const server = await servers.portico(routesConfig({ cont: app.url }));
    // Twice: the second request reuses the app connection, and its answer starts with a 100 again.
    for (let i = 0; i < 2; i++) {
      const got = heads(await exchange(server.port, '/cont'));
      assert.deepEqual(got.heads.map(statusOf), [200]);
      assert.equal(got.body, 'after');
    }
    assert.equal(app.requests.length, 2);
  });

  test('a 100 Continue between a 103 and the final answer is skipped, the 103 passed on', async () => {
    const app = await rawBackend((socket) => {
      socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const server = await servers.portico(routesConfig({ mixed: app.url }));
    const got = heads(await exchange(server.port, '/mixed'));
    assert.deepEqual(got.heads.map(statusOf), [103, 200]);
    assert.equal(got.body, 'ok');
  });

  test('a body that starts like a 100 Continue head is passed on intact', async () => {
    const body = 'HTTP/1.1 100 Continue\r\n\r\nthis is the body';
    const app = await rawBackend((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`, () => setImmediate(() => socket.write(body)));
    });
    const server = await servers.portico(routesConfig({ lookalike: app.url }));
    const got = heads(await exchange(server.port, '/lookalike'));
    assert.deepEqual(got.heads.map(statusOf), [200]);
    assert.equal(got.body, body);
  });

  test('a cached route passes the 103 of a miss to its client and stores the final answer', async () => {
    const origin = await startOrigin();
    servers.defer(() => origin.stop());
    origin.on('/cached/page', hinting('stored', { 'cache-control': 'max-age=60' }));
    const server = await servers.portico(routesConfig({ cached: origin.url }, ['cached']));
    const first = heads(await exchange(server.port, '/cached/page'));
    assert.deepEqual(first.heads.map(statusOf), [103, 200]);
    assert.equal(first.body, 'stored');
    const second = heads(await exchange(server.port, '/cached/page'));
    assert.deepEqual(second.heads.map(statusOf), [200]);
    assert.match(second.heads[0]!, /cache-status: Portico; hit/i);
    assert.equal(second.body, 'stored');
    assert.equal(origin.seen('/cached/page').length, 1);
  });
});

/** A raw backend answering every request with `status` and a Content-Length it never sends a body for. */
function bodilessWithLength(status: number, reason: string, extra = ''): (socket: net.Socket) => void {
  return (socket) => socket.write(`HTTP/1.1 ${status} ${reason}\r\nContent-Length: 42\r\nETag: "v1"\r\n${extra}\r\n`);
}

describe('bodiless answers that carry Content-Length', () => {
  test('a 304 with Content-Length reaches the client of a conditional GET on an uncached route', async () => {
    const app = await rawBackend(bodilessWithLength(304, 'Not Modified'));
    const server = await servers.portico(routesConfig({ plain: app.url }));
    const got = heads(await exchange(server.port, '/plain', '1.1', 'If-None-Match: "v1"\r\n'));
    assert.deepEqual(got.heads.map(statusOf), [304]);
    assert.match(got.heads[0]!, /etag: "v1"/i);
    assert.equal(got.body, '');
  });

  test('a 204 with Content-Length reaches the client as an empty answer', async () => {
    const app = await rawBackend(bodilessWithLength(204, 'No Content'));
    const server = await servers.portico(routesConfig({ empty: app.url }));
    const got = heads(await exchange(server.port, '/empty'));
    assert.deepEqual(got.heads.map(statusOf), [204]);
    assert.equal(got.body, '');
  });

  for (const collapse of [true, false]) {
    test(`a revalidation answered 304 with Content-Length refreshes the stored answer, and later requests are answered (collapse: ${collapse})`, async () => {
      const app = await rawBackend((socket, head, n) => {
        if (n === 1) {
          socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=0\r\nETag: "v1"\r\nContent-Length: 6\r\n\r\nstored');
          return;
        }
        assert.match(head, /if-none-match: "v1"/i);
        bodilessWithLength(304, 'Not Modified', 'Cache-Control: max-age=0\r\n')(socket);
      });
      const server = await servers.portico(routesConfig({ reval: app.url }, ['reval'], `, collapse: ${collapse}`));
      for (let i = 0; i < 3; i++) {
        const got = heads(await exchange(server.port, '/reval'));
        assert.deepEqual(got.heads.map(statusOf), [200], `request ${i + 1}`);
        assert.equal(got.body, 'stored', `request ${i + 1}`);
        if (i > 0) assert.match(got.heads[0]!, /fwd-status=304/i);
      }
      assert.equal(app.requests.length, 3);
    });
  }
});

describe('every upstream error path answers the client', () => {
  test('each error path gets an answer or a cut connection within a bounded time', async () => {
    const refused = await refusedUrl();
    const resetBeforeHead = await rawBackend((socket) => socket.resetAndDestroy());
    const resetMidBody = await rawBackend((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial', () => socket.resetAndDestroy());
    });
    const closedMidBody = await rawBackend((socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial'));
    const malformed = await rawBackend((socket) => socket.write('HTTP/1.1 2x0 Nope\r\nbroken header line\r\n\r\n'));
    const garbage = await rawBackend((socket) => socket.end('this is not http\r\n\r\n'));
    const notModified = await rawBackend(bodilessWithLength(304, 'Not Modified'));
    const noContent = await rawBackend(bodilessWithLength(204, 'No Content'));
    let stored = false;
    const revalidated = await rawBackend((socket) => {
      if (!stored) {
        stored = true;
        socket.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=0\r\nETag: "v1"\r\nContent-Length: 2\r\n\r\nok');
      } else bodilessWithLength(304, 'Not Modified')(socket);
    });
    const cachedReset = await rawBackend((socket) => socket.resetAndDestroy());
    const cachedMidBody = await rawBackend((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\npartial', () => socket.resetAndDestroy());
    });
    const interim = await rawBackend((socket) => {
      socket.write('HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n');
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const upstreams = {
      refused,
      resetbeforehead: resetBeforeHead.url,
      resetmidbody: resetMidBody.url,
      closedmidbody: closedMidBody.url,
      malformed: malformed.url,
      garbage: garbage.url,
      notmodified: notModified.url,
      nocontent: noContent.url,
      revalidated: revalidated.url,
      cachedreset: cachedReset.url,
      cachedmidbody: cachedMidBody.url,
      interim: interim.url,
    };
    const server = await servers.portico(routesConfig(upstreams, ['revalidated', 'cachedreset', 'cachedmidbody'], ', collapse: false'));
    const outcome = (path: string, headers: Record<string, string> = {}) =>
      new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => {
          req.destroy();
          reject(new Error(`${path}: no answer and no cut within 5 s`));
        }, 5000);
        const req = http.get({ host: '127.0.0.1', port: server.port, path, headers, agent: false }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            clearTimeout(timer);
            // The body's size only for a success (error pages vary).
            resolve(`answered ${res.statusCode}${res.statusCode! < 300 && chunks.length > 0 ? ` ${Buffer.concat(chunks).length}B` : ''}`);
          });
          res.on('aborted', () => {
            clearTimeout(timer);
            resolve('cut');
          });
          res.on('error', () => {
            clearTimeout(timer);
            resolve('cut');
          });
        });
        req.on('error', () => {
          clearTimeout(timer);
          resolve('cut');
        });
      });
    const results: Record<string, string> = {};
    for (const name of Object.keys(upstreams)) {
      // The cached revalidation: the first request stores, the second revalidates (and the third must not hang).
      if (name === 'revalidated') {
        for (let i = 1; i <= 3; i++) results[`${name}#${i}`] = await outcome(`/${name}`);
      } else results[name] = await outcome(`/${name}`, name === 'notmodified' ? { 'if-none-match': '"v1"' } : {});
    }
    assert.deepEqual(results, {
      refused: 'answered 502',
      resetbeforehead: 'answered 502',
      resetmidbody: 'cut',
      closedmidbody: 'cut',
      malformed: 'answered 502',
      garbage: 'answered 502',
      notmodified: 'answered 304',
      nocontent: 'answered 204',
      'revalidated#1': 'answered 200 2B',
      'revalidated#2': 'answered 200 2B',
      'revalidated#3': 'answered 200 2B',
      cachedreset: 'answered 502',
      cachedmidbody: 'cut',
      interim: 'answered 200 2B',
    });
  });
});
