/**
 * Claims of docs/operations.md ("Logs") about the access log's `json` format: one line per request that any JSON
 * parser reads back, whatever bytes a client put in the request target, User-Agent or Referer. The log is read after
 * `stop()`, which flushes it (no waiting for the once-a-second flush).
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { makeTree, startPortico, type RunningPortico } from '../helpers/portico.js';
import { RawConnection } from './proxy-support.js';

/** Starts Portico with a JSON access log in its own folder (it outlives `stop()`, which removes the config's). */
async function withJsonLog(): Promise<{ portico: RunningPortico; logFile: string; cleanup: () => Promise<void>; stop: () => Promise<void> }> {
  const logDir = makeTree();
  const logFile = path.join(logDir, 'access.log');
  const portico = await startPortico(`log: { access: ${JSON.stringify(logFile)}, format: json }
sites:
  - routes:
      - path: /
        respond: { body: "ok" }
`);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await portico.stop();
  };
  return {
    portico,
    logFile,
    stop,
    cleanup: async () => {
      await stop();
      rmSync(logDir, { recursive: true, force: true });
    },
  };
}

/** Sends one request made of raw bytes and waits for its 2-byte "ok" answer. */
async function send(port: number, head: Buffer): Promise<void> {
  const conn = await RawConnection.open(port);
  try {
    conn.write(head);
    const received = await conn.until((r) => r.includes('\r\n\r\nok'), 10_000);
    assert.match(received.toString('latin1'), /^HTTP\/1\.1 200 /);
  } finally {
    conn.close();
  }
}

function request(target: string, headers: Array<[string, Buffer | string]>): Buffer {
  const parts: Buffer[] = [Buffer.from(`GET ${target} HTTP/1.1\r\nHost: log.test\r\n`, 'latin1')];
  for (const [name, value] of headers) parts.push(Buffer.from(`${name}: `), Buffer.isBuffer(value) ? value : Buffer.from(value, 'latin1'), Buffer.from('\r\n'));
  parts.push(Buffer.from('Connection: close\r\n\r\n'));
  return Buffer.concat(parts);
}

function readLines(file: string): Array<Record<string, unknown>> {
  const text = readFileSync(file, 'utf8');
  assert.ok(text.endsWith('\n'), 'the last line is complete');
  return text
    .slice(0, -1)
    .split('\n')
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch (err) {
        throw new Error(`not JSON: ${JSON.stringify(line)} (${(err as Error).message})`);
      }
    });
}

test('json access log: quotes, backslashes and a tab in the target, User-Agent and Referer give one line per request that JSON.parse turns back into the exact values', async () => {
  const { portico, logFile, cleanup, stop } = await withJsonLog();
  try {
    // Node's parser refuses raw control characters other than the tab in header values (400, never logged), and
    // any raw byte ≥ 0x80 in the target: those are the hardest values a request can carry into the log.
    const target = '/log/a"b\\c%C3%A9?q="x"&back=\\\\&end=}';
    const userAgent = 'Mozilla "quoted" \\back\\slash\\\ttab\t"}{\\u0041';
    const referer = 'http://ref.example/"x"\\y?z=\t1\\n';
    await send(portico.port, request(target, [['User-Agent', userAgent], ['Referer', referer]]));
    await send(portico.port, request('/second', []));
    await stop(); // flushes the log
    const lines = readLines(logFile);
    assert.equal(lines.length, 2, 'one line per request');
    const [first, second] = lines;
    assert.equal(first!.uri, target);
    assert.equal(first!.user_agent, userAgent);
    assert.equal(first!.referer, referer);
    assert.equal(first!.method, 'GET');
    assert.equal(first!.status, 200);
    assert.equal(first!.host, 'log.test');
    assert.equal(second!.uri, '/second');
    assert.equal(second!.user_agent, undefined, 'an absent header is absent, not "-"');
  } finally {
    await cleanup();
  }
});

test('json access log: bytes that are not UTF-8 in User-Agent are kept byte for byte (read back as latin1), UTF-8 in Referer as text', async () => {
  const { portico, logFile, cleanup, stop } = await withJsonLog();
  try {
    const userAgent = Buffer.concat([Buffer.from('agent "é" '), Buffer.from('✓ 日本', 'utf8'), Buffer.from([0xe9, 0xff])]);
    const referer = Buffer.from('http://ref.example/ça', 'utf8');
    await send(portico.port, request('/bytes', [['User-Agent', userAgent], ['Referer', referer]]));
    await stop();
    const [line] = readLines(logFile);
    assert.deepEqual(Buffer.from(line!.user_agent as string, 'latin1'), userAgent);
    assert.equal(line!.referer, referer.toString('utf8'));
  } finally {
    await cleanup();
  }
});

test(
  'json access log: UTF-8 text in User-Agent and Referer reads back from JSON.parse as the same text',
  async () => {
    const { portico, logFile, cleanup, stop } = await withJsonLog();
    try {
      await send(portico.port, request('/utf8', [['User-Agent', Buffer.from('agent é ✓ 日本', 'utf8')], ['Referer', Buffer.from('http://ref.example/ça', 'utf8')]]));
      await stop();
      const [line] = readLines(logFile);
      assert.equal(line!.user_agent, 'agent é ✓ 日本');
      assert.equal(line!.referer, 'http://ref.example/ça');
    } finally {
      await cleanup();
    }
  },
);
