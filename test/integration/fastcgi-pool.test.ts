/**
 * The FastCGI connection pool (`upstream/fastcgi/pool.ts`) against Debian's real php-fpm: requests through it as
 * through any undici dispatcher, connections kept and reused, PHP's stderr reported with the script, a streamed
 * request body, a missing socket as a connect error, a restarted FPM reached on a new connection.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { FastCgiPool, type FastCgiPoolOptions } from '../../src/upstream/fastcgi/pool.js';
import { encodeStream, RecordParser, RecordType } from '../../src/upstream/fastcgi/records.js';
import { PhpFpm } from '../helpers/php-fpm.js';
import { haveTool } from '../helpers/tools.js';

const fpmInstalled = haveTool('php-fpm8.2') || process.env.CI === 'true';

describe('FastCGI pool against php-fpm', { skip: fpmInstalled ? false : 'php-fpm8.2 is not installed (on CI it is: .ci/run installs php8.2-fpm)' }, () => {
  let fpm: PhpFpm;
  const stderr: Array<{ text: string; script: string }> = [];
  const pools: FastCgiPool[] = [];
  const pool = (options: Partial<FastCgiPoolOptions> = {}): FastCgiPool => {
    const made = new FastCgiPool({
      socketPath: fpm.socket,
      connections: 2,
      keepConn: true,
      connectTimeout: 2000,
      idleTimeout: 10_000,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
      onStderr: (text, script) => stderr.push({ text, script }),
      ...options,
    });
    pools.push(made);
    return made;
  };
  const script = (name: string): string => path.join(fpm.dir, name);
  const cgi = (file: string, extra: string[] = []): string[] => ['REQUEST_METHOD', 'GET', 'SCRIPT_FILENAME', script(file), 'SCRIPT_NAME', `/${file}`, 'REQUEST_URI', `/${file}`, 'QUERY_STRING', '', ...extra];

  before(async () => {
    // Each kept connection holds an FPM worker until it closes (FCGI_KEEP_CONN): one worker per pool made here.
    fpm = await PhpFpm.start({ workers: 8 });
    writeFileSync(script('hello.php'), '<?php header("X-Pid: " . getmypid()); http_response_code(201); echo "hello ", $_SERVER["REQUEST_METHOD"];');
    writeFileSync(script('warn.php'), '<?php error_log("something odd"); echo "ok";');
    writeFileSync(script('length.php'), '<?php echo strlen(file_get_contents("php://input"));');
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.destroy()));
    await fpm.close();
  });

  test('a request gets PHP status, headers and body, and sequential requests reuse one kept connection', async () => {
    const p = pool();
    for (let i = 0; i < 5; i++) {
      const res = await p.request({ path: '/hello.php', method: 'GET', headers: cgi('hello.php') });
      assert.equal(res.statusCode, 201);
      assert.match(String(res.headers['x-pid']), /^\d+$/);
      assert.equal(await res.body.text(), 'hello GET');
    }
    assert.equal(p.size, 1);
  });

  test("PHP's stderr is reported with the script's name, and the answer still comes", async () => {
    const res = await pool().request({ path: '/warn.php', method: 'GET', headers: cgi('warn.php') });
    assert.equal(await res.body.text(), 'ok');
    assert.ok(stderr.some((line) => line.script === '/warn.php' && line.text.includes('something odd')), JSON.stringify(stderr));
  });

  test('a streamed request body of 1 MB reaches the script whole as STDIN records', async () => {
    const size = 1024 * 1024;
    const body = Readable.from((function* () {
      for (let sent = 0; sent < size; sent += 100_000) yield Buffer.alloc(Math.min(100_000, size - sent), 0x61);
    })());
    const res = await pool().request({ path: '/length.php', method: 'POST', headers: [...cgi('length.php'), 'CONTENT_LENGTH', String(size)].map((v) => v.replace(/^GET$/, 'POST')), body });
    assert.equal(await res.body.text(), String(size));
  });

  test('a missing socket fails the request as a connect error (ENOENT), and the pool holds no connection', async () => {
    const p = pool({ socketPath: path.join(fpm.dir, 'none.sock') });
    await assert.rejects(p.request({ path: '/hello.php', method: 'GET', headers: cgi('hello.php') }), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
    assert.equal(p.size, 0);
  });

  test('after php-fpm restarts, the next request is sent on a new connection', async () => {
    const p = pool();
    const first = await p.request({ path: '/hello.php', method: 'GET', headers: cgi('hello.php') });
    await first.body.text();
    await fpm.stop();
    await fpm.restart();
    // The kept connection was closed by the old master's exit; the pool dropped it when it closed.
    const res = await p.request({ path: '/hello.php', method: 'GET', headers: cgi('hello.php') });
    assert.equal(res.statusCode, 201);
    assert.equal(await res.body.text(), 'hello GET');
  });

  test("an active check's request (method and path only, reset: true) gets the pool's ping.path answer and leaves no connection", async () => {
    const p = pool();
    const res = await p.request({ path: '/fpm-ping', method: 'GET', headers: { host: 'localhost', 'user-agent': 'Portico-health-check' }, reset: true });
    assert.equal(res.statusCode, 200);
    assert.equal(await res.body.text(), 'pong');
    assert.equal(p.size, 0);
  });

  /**
   * A php-fpm of two workers with nap.php (10 ms a request), and `nap` asking it through a pool of `connections`
   * kept ones (3 s for a head); the php-fpm stopped after `body`.
   */
  const twoWorkers = async (connections: number, options: Partial<FastCgiPoolOptions>, body: (nap: () => Promise<string>) => Promise<void>): Promise<void> => {
    const small = await PhpFpm.start({ workers: 2 });
    try {
      writeFileSync(path.join(small.dir, 'nap.php'), '<?php usleep(10000); echo "rested";');
      const params = ['REQUEST_METHOD', 'GET', 'SCRIPT_FILENAME', path.join(small.dir, 'nap.php'), 'SCRIPT_NAME', '/nap.php', 'REQUEST_URI', '/nap.php', 'QUERY_STRING', ''];
      const p = pool({ socketPath: small.socket, connections, headersTimeout: 3000, ...options });
      await body(async () => (await p.request({ path: '/nap.php', method: 'GET', headers: params })).body.text());
    } finally {
      await small.close();
    }
  };

  test('more connections than FPM workers: kept connections never starve the ones waiting in the listen queue', async () => {
    // Six connections for two workers: without care, two kept connections would hold both workers for good.
    await twoWorkers(6, {}, async (nap) => {
      const answers: string[] = [];
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          for (let i = 0; i < 8; i++) answers.push(await nap());
        }),
      );
      assert.equal(answers.length, 48);
      assert.ok(answers.every((text) => text === 'rested'));
    });
  });

  test('kept connections left idle while another connection waits for a worker are closed once it has waited 50 ms', async () => {
    // Three requests at once for two workers: two are answered and their kept connections go idle (the third had
    // waited less than 50 ms then), still holding both workers. No request ends after that to close one: the pool
    // must look again when the third has waited long enough, or it waits until its timeout.
    await twoWorkers(3, { idleTimeout: 60_000 }, async (nap) => {
      const started = Date.now();
      assert.deepEqual(await Promise.all([nap(), nap(), nap()]), ['rested', 'rested', 'rested']);
      assert.ok(Date.now() - started < 2500, `answered after ${Date.now() - started} ms`);
    });
  });

  test('close waits for no request and leaves no connection', async () => {
    const p = pool();
    await (await p.request({ path: '/hello.php', method: 'GET', headers: cgi('hello.php') })).body.text();
    await p.close();
    assert.equal(p.size, 0);
  });
});

/**
 * A FastCGI app on 127.0.0.1:0 written with the record layer: `onRecord` sees each record of a connection and
 * may answer with `answer(text)` (STDOUT, its end, END_REQUEST of request 1). Resolves once it listens.
 */
async function rawFastCgiApp(onRecord: (socket: net.Socket, record: { type: number; content: Buffer }, answer: (text: string) => void) => void): Promise<{ app: net.Server; port: number }> {
  const app = net.createServer((socket) => {
    const answer = (text: string): void => {
      const out = Buffer.from(text);
      socket.write(Buffer.concat([...encodeStream(RecordType.Stdout, 1, out), ...encodeStream(RecordType.Stdout, 1, Buffer.alloc(0)), ...encodeStream(RecordType.EndRequest, 1, Buffer.alloc(8))]));
    };
    const parser = new RecordParser((record) => onRecord(socket, record, answer));
    socket.on('data', (chunk: Buffer) => parser.push(chunk));
    socket.on('error', () => socket.destroy());
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  return { app, port: (app.address() as net.AddressInfo).port };
}

describe('FastCGI pool against an app that reads STDIN to its end', () => {
  test('a request body given whole (a Buffer, as a buffered request is) ends its STDIN stream with the empty record, so the app answers', async () => {
    // As Go's net/http/fcgi or Python's flup: the body is read until the empty STDIN record (FastCGI 1.0 §5.3).
    const seen: number[] = [];
    const stdin = new Map<net.Socket, number>();
    const { app, port } = await rawFastCgiApp((socket, { type, content }, answer) => {
      if (type !== RecordType.Stdin) return;
      if (content.length > 0) return void stdin.set(socket, (stdin.get(socket) ?? 0) + content.length);
      const read = stdin.get(socket) ?? 0;
      stdin.delete(socket);
      seen.push(read);
      answer(`Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nread ${read}`);
    });
    const pool = new FastCgiPool({ host: '127.0.0.1', port, connections: 1, keepConn: true, connectTimeout: 2000, idleTimeout: 10_000, headersTimeout: 3000, bodyTimeout: 3000 });
    try {
      for (const body of [Buffer.from('name=Ada'), 'name=Ada', Readable.from([Buffer.from('name='), Buffer.from('Ada')])]) {
        const res = await pool.request({ path: '/form.php', method: 'POST', headers: ['REQUEST_METHOD', 'POST', 'CONTENT_LENGTH', '8', 'SCRIPT_NAME', '/form.php'], body });
        assert.equal(await res.body.text(), 'read 8');
      }
      assert.deepEqual(seen, [8, 8, 8]);
    } finally {
      await pool.destroy();
      app.close();
    }
  });
});

describe('FastCGI pool without FCGI_KEEP_CONN (keepConn false, the default of a FastCGI upstream)', () => {
  test('each request asks for no kept connection and gets a connection of its own, closed after its answer', async () => {
    const begins: number[] = [];
    let connections = 0;
    let open = 0;
    const counted = new WeakSet<net.Socket>();
    const { app, port } = await rawFastCgiApp((socket, { type, content }, answer) => {
      if (!counted.has(socket)) {
        counted.add(socket);
        connections++;
        open++;
        socket.on('close', () => open--);
      }
      if (type === RecordType.BeginRequest) begins.push(content[2]!);
      if (type !== RecordType.Stdin || content.length > 0) return;
      answer('Content-Type: text/plain\r\n\r\nok');
      // As PHP-FPM does when FCGI_KEEP_CONN is not set: the connection ends with the request.
      if ((begins.at(-1)! & 1) === 0) socket.end();
    });
    const pool = new FastCgiPool({ host: '127.0.0.1', port, connections: 2, keepConn: false, connectTimeout: 2000, idleTimeout: 10_000, headersTimeout: 3000, bodyTimeout: 3000 });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await pool.request({ path: '/x.php', method: 'GET', headers: ['REQUEST_METHOD', 'GET', 'SCRIPT_NAME', '/x.php'] });
        assert.equal(await res.body.text(), 'ok');
      }
      assert.deepEqual(begins, [0, 0, 0], 'no BEGIN_REQUEST asked to keep its connection');
      assert.equal(connections, 3, 'a connection per request');
      for (let i = 0; i < 100 && (open > 0 || pool.size > 0); i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(open, 0, 'none left open on the app');
      assert.equal(pool.size, 0, 'none held by the pool');
    } finally {
      await pool.destroy();
      app.close();
    }
  });
});

describe('FastCGI pool with kept connections under load', () => {
  test('16 requests at a time on 4 kept connections reuse them: a new connection whose first request PHP still runs does not make the others close', async () => {
    let connections = 0;
    const counted = new WeakSet<net.Socket>();
    const { app, port } = await rawFastCgiApp((socket, { type, content }, answer) => {
      if (!counted.has(socket)) {
        counted.add(socket);
        connections++;
      }
      // Each request takes the app a moment, as a PHP script does.
      if (type === RecordType.Stdin && content.length === 0) setTimeout(() => answer('Content-Type: text/plain\r\n\r\nok'), 2);
    });
    const pool = new FastCgiPool({ host: '127.0.0.1', port, connections: 4, keepConn: true, connectTimeout: 2000, idleTimeout: 10_000, headersTimeout: 3000, bodyTimeout: 3000 });
    try {
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let i = 0; i < 25; i++) {
            const res = await pool.request({ path: '/x.php', method: 'GET', headers: ['REQUEST_METHOD', 'GET', 'SCRIPT_NAME', '/x.php'] });
            assert.equal(await res.body.text(), 'ok');
          }
        }),
      );
      // 400 requests: 4 connections, a few more at most if the machine stalls one past STARVING_MS (was ~200).
      assert.ok(connections <= 8, `${connections} connections opened for 400 requests`);
    } finally {
      await pool.destroy();
      app.close();
    }
  });
});
