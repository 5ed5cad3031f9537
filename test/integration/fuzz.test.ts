/**
 * Property-based fuzzing (fast-check) of a real Portico on a port: request paths through the router and the
 * static handler, header lists through the static handler and the proxy, and request bodies through the proxy,
 * all sent as raw bytes. Properties, for every generated request: the answer is a well-formed HTTP/1.1 status
 * (Portico never closes silently or hangs); a 200 carries only a file inside the static root or a known answer,
 * never the secret file beside the root (nor its marker anywhere in the answer); a body framed correctly reaches
 * the app byte for byte. After every property a canary request is served; across the file no uncaught exception
 * or unhandled rejection happens, and the heap grows by less than a generous bound. Run counts are bounded
 * (a failure prints fast-check's seed and the shrunk counterexample).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { symlinkSync } from 'node:fs';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest, type RawResponse } from '../helpers/raw-client.js';

const SECRET = 'FUZZ-SECRET-MARKER-7f3a';
/** A file whose every byte says where it is, so a range's bytes can be checked. */
const DIGITS = Array.from({ length: 3000 }, (_, i) => String(i % 10)).join('');
const FILES: Record<string, string> = {
  'site/index.html': 'INDEX-PAGE',
  'site/a.txt': 'FILE-A',
  'site/sub/b.txt': 'FILE-B',
  'site/sub/index.html': 'SUB-INDEX',
  'site/digits.txt': DIGITS,
  'secret.txt': SECRET,
  'site-secret.txt': SECRET,
};
/** Every body a 200 from Portico's own routes may carry. */
const KNOWN_BODIES = new Set(['INDEX-PAGE', 'FILE-A', 'FILE-B', 'SUB-INDEX', 'regex', 'ok']);
const RUNS = 250;

/** Statuses Portico may answer with (RFC 9110 registered, as Portico uses them). */
function assertValidAnswer(res: RawResponse, what: string): void {
  assert.ok(res.status >= 200 && res.status <= 599, `${what}: a final HTTP status, got ${res.status} (raw ${JSON.stringify(res.raw.slice(0, 120))})`);
  assert.match(res.raw, /^HTTP\/1\.1 \d{3} [^\r\n]*\r\n/, `${what}: a well-formed status line`);
  assert.ok(!res.raw.includes(SECRET), `${what}: the secret beside the root never appears`);
}

let portico: RunningPortico;
let app: http.Server;
/** What the app answers: the request's method, target, and the length and SHA-256 of its body. */
interface Seen {
  method: string;
  url: string;
  sha: string;
  length: number;
}
const uncaught: unknown[] = [];
const onUncaught = (err: unknown) => void uncaught.push(err);
let gc: (() => void) | undefined;
let heapBefore = 0;

before(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  setFlagsFromString('--expose-gc');
  gc = runInNewContext('gc') as () => void;
  app = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let length = 0;
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      length += chunk.length;
    });
    req.on('end', () => {
      const seen: Seen = { method: req.method!, url: req.url!, sha: hash.digest('hex'), length };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(seen));
    });
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
  portico = await startPortico(
    `listen:
  - { addr: "127.0.0.1:0", header_timeout: 3s, request_timeout: 6s }
sites:
  - routes:
      - path: /
        static: { root: ./site, autoindex: true }
      - path: /api/
        proxy: { url: "${appUrl}", max_body_size: 64KB }
      - path: "~ ^/re/[a-z]+$"
        respond: { body: "regex" }
      - path: = /healthz
        respond: { body: "ok" }
`,
    FILES,
  );
  symlinkSync(path.join(portico.dir, 'secret.txt'), path.join(portico.dir, 'site/link-out'));
  gc();
  heapBefore = process.memoryUsage().heapUsed;
});

after(async () => {
  await portico.stop();
  await new Promise<void>((resolve) => app.close(() => resolve()));
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
});

/** Portico still answers an ordinary request. */
async function canary(): Promise<void> {
  const res = await rawRequest(portico.port, `GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(res.status, 200);
  assert.equal(res.body, 'ok');
}

function count(statuses: Map<number, number>, status: number): void {
  statuses.set(status, (statuses.get(status) ?? 0) + 1);
}

function send(bytes: Buffer | string): Promise<RawResponse> {
  return rawRequest(portico.port, bytes, { timeoutMs: 8000 });
}

/** Pieces of hostile paths: traversal in its encodings, separators, NUL, overlong UTF-8, names in and beside the root. */
const pathPiece = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('..', '.', '%2e%2e', '%2E%2e', '.%2e', '%2e.', '%252e%252e', '%2f', '%2F', '%5c', '%5C', '\\', '%00', '%c0%ae', '%c0%af', '%e0%80%ae', '%c1%9c', '%ef%bc%8e', '%25', '%', '%zz', '%2', ';', '..;', 'secret.txt', 'site-secret.txt', 'site', 'a.txt', 'sub', 'b.txt', 'link-out', 'index.html', '', '%ff', 'é', '~', '*', '?', '#', 're', 'api', 'healthz') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 6 }).map((s) => s.replace(/[\r\n ]/g, '')) },
);
const separator = fc.constantFrom('/', '/', '/', '//', '\\', '/./', '%2f', '/../');
const hostilePath = fc.oneof(
  { weight: 9, arbitrary: fc.array(fc.tuple(separator, pathPiece), { maxLength: 10 }).map((parts) => '/' + parts.map(([sep, piece]) => piece + sep).join('')) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 20_000 }).map((n) => '/' + 'a/'.repeat(n)) },
);

describe('fuzzing', () => {
  test(`hostile paths (${RUNS} runs): every answer a valid status, a 200 only with a file inside the root, never the secret`, async (t) => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(hostilePath, async (target) => {
        const res = await send(Buffer.from(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`, 'utf8'));
        assertValidAnswer(res, target);
        count(statuses, res.status);
        // A 200 is a file inside the root, a listing of a folder inside it, a fixed answer, or the app's echo.
        if (res.status === 200 && !res.body.includes('<title>Index of ') && !res.body.includes('{"method":')) {
          assert.ok(KNOWN_BODIES.has(res.body), `200 for ${JSON.stringify(target)} carries a known body, got ${JSON.stringify(res.body.slice(0, 80))}`);
        }
      }),
      { numRuns: RUNS },
    );
    t.diagnostic(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
    // The generator reaches both sides: files served and attacks refused (else the property checks little).
    assert.ok((statuses.get(200) ?? 0) > 0 && (statuses.get(400) ?? 0) > 0 && (statuses.get(404) ?? 0) > 0);
    await canary();
  });

  test(`hostile paths on HEAD, OPTIONS and POST (${RUNS} runs): valid statuses, never the secret`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('HEAD', 'OPTIONS', 'POST', 'DELETE', 'PROPFIND'), hostilePath, async (method, target) => {
        const res = await send(Buffer.from(`${method} ${target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`, 'utf8'));
        assertValidAnswer(res, `${method} ${target}`);
      }),
      { numRuns: RUNS },
    );
    await canary();
  });

  /** A field name: mostly a token, sometimes any printable or odd byte. */
  const fieldName = fc.oneof(
    { weight: 4, arbitrary: fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,24}$/) },
    { weight: 1, arbitrary: fc.constantFrom('Host', 'Content-Length', 'Transfer-Encoding', 'Connection', 'Expect', 'Upgrade', 'Range', 'If-None-Match', 'Accept-Encoding', 'X-Forwarded-For', 'Forwarded', 'Cookie', 'Authorization', 'TE', 'Trailer', 'Via', 'Proxy-Connection', 'Keep-Alive') },
    { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 12 }).map((s) => s.replace(/[\r\n]/g, '')) },
  );
  /** A field value: printable text, odd bytes (NUL, DEL, latin1), sometimes one bare CR or LF inside. */
  const fieldValue = fc
    .tuple(fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom('', '', '', '\r', '\n', '\0'), fc.nat(40))
    .map(([text, odd, at]) => {
      const clean = text.replace(/[\r\n]/g, '');
      const i = Math.min(at, clean.length);
      return clean.slice(0, i) + odd + clean.slice(i);
    });
  const fieldList = fc.oneof(
    { weight: 5, arbitrary: fc.array(fc.tuple(fieldName, fieldValue), { maxLength: 12 }) },
    { weight: 1, arbitrary: fc.integer({ min: 90, max: 140 }).map((n) => Array.from({ length: n }, (_, i): [string, string] => [`X-F${i}`, 'v'])) },
  );

  test(`odd header names and values, and many headers (${RUNS} runs), through the static handler and the proxy: valid statuses, Portico keeps serving`, async (t) => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/a.txt', '/api/h', '/sub/', '/re/abc'), fieldList, async (target, fields) => {
        const head = fields.map(([name, value]) => `${name}: ${value}\r\n`).join('');
        // A field list that carries its own Content-Length or Transfer-Encoding might promise a body: none comes,
        // so the request would wait for it; those two are sent with an empty body's value instead.
        const safe = head.replace(/^(content-length|transfer-encoding):[^\r\n]*\r\n/gim, '');
        const res = await send(Buffer.from(`GET ${target} HTTP/1.1\r\nHost: x\r\n${safe}\r\n`, 'latin1'));
        assertValidAnswer(res, `${target} with ${JSON.stringify(safe.slice(0, 200))}`);
        count(statuses, res.status);
      }),
      { numRuns: RUNS },
    );
    t.diagnostic(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.ok((statuses.get(200) ?? 0) > 0 && (statuses.get(400) ?? 0) > 0 && (statuses.get(431) ?? 0) > 0, 'served, refused and too many fields all happen');
    await canary();
  });

  /** Range values: well-formed, odd and hostile (huge, negative, reversed, many, empty, other units). */
  const rangeValue = fc.oneof(
    fc
      .array(
        fc.oneof(
          fc.tuple(fc.nat(4000), fc.nat(4000)).map(([a, b]) => `${a}-${b}`),
          fc.nat(4000).map((a) => `${a}-`),
          fc.nat(4000).map((b) => `-${b}`),
          fc.constantFrom('', '-', '--1', '1--2', '99999999999999999999-', '-0', '0-0', ' 1-2', '1-2 ', 'a-b', '0x1-2'),
        ),
        { minLength: 1, maxLength: 20 },
      )
      .map((specs) => `bytes=${specs.join(',')}`),
    fc.constantFrom('bytes=', 'bytes', 'items=0-1', 'bytes =0-1', 'BYTES=0-1', 'bytes=0-1;x'),
  );

  test(`hostile Range values (${RUNS} runs) on a static file: 200, 206 or 416, and a 206 carries exactly the bytes it names`, async (t) => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(rangeValue, fc.constantFrom('', 'If-Range: "x"\r\n', 'Accept-Encoding: gzip, br\r\n'), async (range, extra) => {
        const res = await send(`GET /digits.txt HTTP/1.1\r\nHost: x\r\nRange: ${range}\r\n${extra}\r\n`);
        assertValidAnswer(res, range);
        assert.ok([200, 206, 416].includes(res.status), `${range} → ${res.status}`);
        count(statuses, res.status);
        const single = /^bytes (\d+)-(\d+)\/3000$/.exec(res.headers['content-range'] ?? '');
        if (res.status === 206 && single !== null && res.headers['content-encoding'] === undefined) {
          assert.equal(res.body, DIGITS.slice(Number(single[1]), Number(single[2]) + 1), `the bytes of ${single[0]}`);
        }
        if (res.status === 200 && res.headers['content-encoding'] === undefined) assert.equal(res.body, DIGITS);
      }),
      { numRuns: RUNS },
    );
    t.diagnostic(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.ok((statuses.get(200) ?? 0) > 0 && (statuses.get(206) ?? 0) > 0 && (statuses.get(416) ?? 0) > 0, 'whole, partial and unsatisfiable all happen');
    await canary();
  });

  /** A body and how it is framed: by its length, or chunked in random pieces (with or without extensions). */
  const framedBody = fc.record({
    method: fc.constantFrom('POST', 'PUT', 'PATCH', 'DELETE', 'GET'),
    body: fc.uint8Array({ maxLength: 6000 }),
    framing: fc.constantFrom('length', 'chunked', 'chunked-ext'),
    cuts: fc.array(fc.nat(6000), { maxLength: 6 }),
  });

  function frame({ method, body, framing, cuts }: { method: string; body: Uint8Array; framing: string; cuts: number[] }): Buffer {
    const data = Buffer.from(body);
    if (framing === 'length') return Buffer.concat([Buffer.from(`${method} /api/body HTTP/1.1\r\nHost: x\r\nContent-Length: ${data.length}\r\n\r\n`), data]);
    const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
    const parts: Buffer[] = [Buffer.from(`${method} /api/body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`)];
    let at = 0;
    for (const point of [...points, data.length]) {
      if (point <= at) continue;
      const ext = framing === 'chunked-ext' ? ';n=v' : '';
      parts.push(Buffer.from(`${(point - at).toString(16)}${ext}\r\n`), data.subarray(at, point), Buffer.from('\r\n'));
      at = point;
    }
    parts.push(Buffer.from('0\r\n\r\n'));
    return Buffer.concat(parts);
  }

  test(`request bodies (${RUNS} runs), by length or chunked in random pieces, reach the app byte for byte through the proxy`, async () => {
    await fc.assert(
      fc.asyncProperty(framedBody, async (spec) => {
        const res = await send(frame(spec));
        assertValidAnswer(res, `${spec.method} ${spec.framing} ${spec.body.length} bytes`);
        assert.equal(res.status, 200);
        const seen = JSON.parse(res.body.replace(/^[0-9a-f]+\r\n|\r\n0\r\n\r\n$/g, '')) as Seen;
        assert.equal(seen.length, spec.body.length, 'the app got the whole body');
        assert.equal(seen.sha, createHash('sha256').update(spec.body).digest('hex'), 'byte for byte');
        assert.equal(seen.method, spec.method);
      }),
      { numRuns: RUNS },
    );
    await canary();
  });

  test(`bodies over max_body_size, and bodies sent to the static handler (${RUNS / 5} runs): 413 or 405, Portico keeps serving`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 64 * 1024 + 1, max: 200 * 1024 }), fc.boolean(), fc.constantFrom('/api/big', '/a.txt'), async (size, chunked, target) => {
        const head = chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${size}`;
        const payload = chunked ? `${size.toString(16)}\r\n${'x'.repeat(size)}\r\n0\r\n\r\n` : 'x'.repeat(size);
        const res = await send(`POST ${target} HTTP/1.1\r\nHost: x\r\n${head}\r\n\r\n${payload}`);
        assertValidAnswer(res, `${size} bytes to ${target}`);
        assert.equal(res.status, target === '/a.txt' ? 405 : 413);
      }),
      { numRuns: RUNS / 5 },
    );
    await canary();
  });

  test('no uncaught exception or unhandled rejection happened, and the heap stayed bounded (< 64 MB growth after GC)', async (t) => {
    await canary();
    gc?.();
    const growth = process.memoryUsage().heapUsed - heapBefore;
    t.diagnostic(`heap ${(heapBefore / 1048576).toFixed(1)} MB before, growth ${(growth / 1048576).toFixed(1)} MB after every property and a GC`);
    assert.deepEqual(uncaught, []);
    assert.ok(growth < 64 * 1024 * 1024, `heap grew by ${(growth / 1048576).toFixed(1)} MB`);
  });
});
