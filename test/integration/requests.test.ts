/**
 * Request handling over real sockets: methods, malformed requests, Host rules and site selection, and
 * canonical paths reaching the right route.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest, type RawResponse } from '../helpers/raw-client.js';

/** A keep-alive connection that sends one request at a time and reads one Content-Length-framed answer. */
class Connection {
  readonly #socket: net.Socket;
  #buffer = Buffer.alloc(0);
  #waiting: (() => void) | undefined;
  closed = false;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#waiting?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#waiting?.();
    });
    socket.on('error', () => undefined);
  }

  static open(port: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new Connection(socket)));
      socket.once('error', reject);
    });
  }

  async send(request: string): Promise<{ status: number; head: string; body: string }> {
    this.#socket.write(request);
    for (;;) {
      const text = this.#buffer.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end !== -1) {
        const head = text.slice(0, end);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (text.length >= end + 4 + length) {
          this.#buffer = this.#buffer.subarray(end + 4 + length);
          return { status: Number(head.slice(9, 12)), head, body: text.slice(end + 4, end + 4 + length) };
        }
      }
      if (this.closed) throw new Error('connection closed before a complete answer');
      await new Promise<void>((resolve) => (this.#waiting = resolve));
    }
  }

  close(): void {
    this.#socket.destroy();
  }
}

const get = (target: string, host = 'a.example', extra = '') =>
  `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`;

function raw(request: string | Buffer): Promise<RawResponse> {
  return rawRequest(portico.port, request);
}

let portico: RunningPortico;

before(async () => {
  portico = await startPortico(
    `sites:
  - hosts: ["a.example", "::1", "LOCALHOST"]
    error_pages: { 404: ./errors/404.html }
    routes:
      - path: /app/
        respond: { body: "app route" }
      - path: = /exact
        respond: { body: "exact route" }
      - path: /café/
        respond: { body: "cafe route" }
      - path: ~ \\.php$
        respond: { body: "regex route", status: 403 }
      - path: /
        static: { root: ./pub }
  - hosts: ["b.example"]
    routes:
      - path: /
        respond: { body: "site b" }
  - hosts: ["*.example.com"]
    routes:
      - path: /
        respond: { body: "wildcard site" }
`,
    { 'pub/index.html': 'home', 'pub/file.txt': 'file', 'errors/404.html': '<p>custom not found</p>' },
  );
});
after(() => portico.stop());

describe('methods', () => {
  test('methods other than GET and HEAD on a static route get 405 with Allow: GET, HEAD', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const res = await raw(`${method} /file.txt HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc`);
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.allow, 'GET, HEAD', method);
    }
  });

  test('GET and HEAD on a static route are answered', async () => {
    assert.equal((await raw(get('/file.txt'))).body, 'file');
    const head = await raw(`HEAD /file.txt HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n`);
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '4');
    assert.equal(head.body, '');
  });
});

describe('malformed requests', () => {
  const MALFORMED = [
    'GARBAGE\r\n\r\n',
    'GET / HTTP/9.9\r\nHost: a.example\r\n\r\n',
    'GET / HTTP/1.1\r\nHost a.example\r\n\r\n',
    'GET / HTTP/1.1\r\nBad Header: x\r\nHost: a.example\r\n\r\n',
    'GET /\x01 HTTP/1.1\r\nHost: a.example\r\n\r\n',
    'GET / / HTTP/1.1\r\nHost: a.example\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a.example\r\nContent-Length: abc\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
    'GET /a%00b HTTP/1.1\r\nHost: a.example\r\n\r\n',
    'GET /a%zz HTTP/1.1\r\nHost: a.example\r\n\r\n',
    'GET relative/path HTTP/1.1\r\nHost: a.example\r\n\r\n',
  ];

  test('each malformed request gets 400', async () => {
    for (const request of MALFORMED) {
      const res = await raw(request);
      assert.equal(res.status, 400, JSON.stringify(request));
    }
  });

  test('a malformed request on one socket does not disturb a keep-alive connection on another', async () => {
    const conn = await Connection.open(portico.port);
    try {
      const first = await conn.send('GET /file.txt HTTP/1.1\r\nHost: a.example\r\n\r\n');
      assert.equal(first.body, 'file');
      for (const request of MALFORMED.slice(0, 4)) assert.equal((await raw(request)).status, 400);
      const second = await conn.send('GET /index.html HTTP/1.1\r\nHost: a.example\r\n\r\n');
      assert.equal(second.status, 200);
      assert.equal(second.body, 'home');
      assert.equal(conn.closed, false);
    } finally {
      conn.close();
    }
  });

  test('pipelined requests are answered in order on one connection', async () => {
    const res = await rawRequest(
      portico.port,
      'GET /file.txt HTTP/1.1\r\nHost: a.example\r\n\r\n' +
        'GET /index.html HTTP/1.1\r\nHost: a.example\r\n\r\n' +
        'GET /app/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n',
      { responses: 3 },
    );
    const bodies = res.raw.split(/HTTP\/1\.1 200 OK\r\n/).slice(1).map((part) => part.slice(part.indexOf('\r\n\r\n') + 4));
    assert.deepEqual(bodies, ['file', 'home', 'app route']);
  });

  test('a keep-alive connection serves several requests in a row', async () => {
    const conn = await Connection.open(portico.port);
    try {
      for (let i = 0; i < 5; i++) assert.equal((await conn.send('GET /file.txt HTTP/1.1\r\nHost: a.example\r\n\r\n')).body, 'file');
    } finally {
      conn.close();
    }
  });
});

describe('Host and site selection', () => {
  test('HTTP/1.1 without Host is 400', async () => {
    assert.equal((await raw('GET / HTTP/1.1\r\nConnection: close\r\n\r\n')).status, 400);
  });

  test('two Host headers are 400, whether equal or different', async () => {
    assert.equal((await raw('GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n')).status, 400);
    assert.equal((await raw('GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\nConnection: close\r\n\r\n')).status, 400);
  });

  test('a Host with user-info or a bad port is 400', async () => {
    assert.equal((await raw(get('/', 'user@a.example'))).status, 400);
    assert.equal((await raw(get('/', 'a.example:http'))).status, 400);
  });

  test('the Host header selects the site', async () => {
    assert.equal((await raw(get('/', 'a.example'))).body, 'home');
    assert.equal((await raw(get('/', 'b.example'))).body, 'site b');
  });

  test("an absolute-form target's authority wins over Host", async () => {
    const res = await raw('GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
    assert.equal(res.status, 200);
    assert.equal(res.body, 'site b');
    const back = await raw('GET http://a.example:8080/file.txt HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n');
    assert.equal(back.body, 'file');
  });

  test('Host matching is case-insensitive and ignores the port', async () => {
    assert.equal((await raw(get('/file.txt', 'A.EXAMPLE:8080'))).body, 'file');
    assert.equal((await raw(get('/file.txt', 'localhost'))).body, 'file');
    assert.equal((await raw(get('/file.txt', 'a.example.'))).body, 'file');
  });

  test('an IPv6 literal Host ([::1]:8080) matches a site listing ::1', async () => {
    assert.equal((await raw(get('/file.txt', '[::1]:8080'))).body, 'file');
    assert.equal((await raw(get('/file.txt', '[::1]'))).body, 'file');
  });

  test('*.example.com matches a.example.com and a.b.example.com but not example.com', async () => {
    assert.equal((await raw(get('/', 'a.example.com'))).body, 'wildcard site');
    assert.equal((await raw(get('/', 'a.b.example.com'))).body, 'wildcard site');
    assert.equal((await raw(get('/', 'example.com'))).status, 421);
  });

  test('no matching site and no default site gives 421', async () => {
    assert.equal((await raw(get('/', 'unknown.org'))).status, 421);
    assert.equal((await raw('GET / HTTP/1.0\r\n\r\n')).status, 421, 'HTTP/1.0 without Host has no site either');
  });
});

describe('error pages', () => {
  test("a site's custom error page is sent with the error status, and HEAD gets no body", async () => {
    const res = await raw(get('/missing.txt'));
    assert.equal(res.status, 404);
    assert.equal(res.body, '<p>custom not found</p>');
    assert.equal(res.headers['content-length'], String(res.body.length));
    const head = await raw('HEAD /missing.txt HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
    assert.equal(head.status, 404);
    assert.equal(head.body, '');
  });

  test('another site keeps the generic error page, which reveals nothing but the status', async () => {
    const res = await raw(get('/', 'unknown.org'));
    assert.equal(res.status, 421);
    assert.match(res.body, /421 Misdirected Request/);
    assert.doesNotMatch(res.body, /custom|\/tmp|at .*\.js/);
  });
});

describe('canonical paths reach their route', () => {
  test('/%61pp/, //app/, /x/../app/ and /app/./ all reach the route of /app/', async () => {
    for (const target of ['/app/', '/%61pp/', '//app/', '/x/../app/', '/app/./', '/%2e/app/', '/x/%2E%2E/app/']) {
      const res = await raw(get(target));
      assert.equal(res.status, 200, target);
      assert.equal(res.body, 'app route', target);
    }
  });

  test('/app, //app and /x/../app are redirected to /app/ with the query kept, never to //...', async () => {
    for (const target of ['/app', '//app', '/x/../app', '/%61pp']) {
      const res = await raw(get(`${target}?q=1`));
      assert.equal(res.status, 301, target);
      assert.equal(res.headers.location, '/app/?q=1', target);
    }
  });

  test('an exact route matches only its path; a regex route matches canonical paths', async () => {
    assert.equal((await raw(get('/exact'))).body, 'exact route');
    assert.equal((await raw(get('/%65xact'))).body, 'exact route');
    assert.equal((await raw(get('/exact/'))).status, 404);
    assert.equal((await raw(get('/a/b.php'))).body, 'regex route');
    assert.equal((await raw(get('/a/b%2ephp'))).body, 'regex route');
  });

  test('a route written with non-ASCII characters (/café/) is reached by its percent-encoded UTF-8 form', async () => {
    assert.equal((await raw(get('/caf%C3%A9/menu'))).body, 'cafe route');
    assert.equal((await raw(get('/caf%c3%a9/menu'))).body, 'cafe route');
    // Raw bytes >= 0x80 on the request line are refused by the HTTP parser itself.
    assert.equal((await raw(Buffer.from(get('/café/menu'), 'utf8'))).status, 400);
  });

  test('OPTIONS * is answered with Allow; other methods with * are 400', async () => {
    const options = await raw('OPTIONS * HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
    assert.equal(options.status, 204);
    assert.match(options.headers.allow ?? '', /GET/);
    assert.equal((await raw('GET * HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n')).status, 400);
  });
});
