/**
 * The pure parts of request ids, trace context and access-log templates (http/request-identity.ts,
 * http/log-template.ts, upstream/headers.ts, log/tracing.ts), and docs/operations.md's "Access log" list kept
 * equal to the code's.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { RequestContext, type ClientRequest, type ClientResponse } from '../../src/http/context.js';
import { NOT_FORWARDED } from '../../src/http/forwarded.js';
import { cacheResult, checkLogTemplate, compileLogTemplate, LOG_TEMPLATE_VARIABLES } from '../../src/http/log-template.js';
import { isSafeRequestId, newRequestId, parseTraceparent, randomHex } from '../../src/http/request-identity.js';
import { tracesUrl } from '../../src/log/tracing.js';
import { buildRequestHeaders, type ForwardInfo } from '../../src/upstream/headers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function context(headers: Record<string, string> = {}, url = '/a?b=1'): RequestContext {
  const req = {
    method: 'GET',
    url,
    httpVersion: '1.1',
    httpVersionMajor: 1,
    httpVersionMinor: 1,
    headers,
    rawHeaders: Object.entries(headers).flat(),
    socket: { remoteAddress: '192.0.2.7' },
    complete: true,
  } as unknown as ClientRequest;
  const ctx = new RequestContext(req, {} as ClientResponse, 'http', 0);
  ctx.path = '/a';
  ctx.query = 'b=1';
  ctx.host = 'a.example';
  return ctx;
}

describe('request ids', () => {
  test('a new id is 32 hex digits, the same per-process prefix, and never repeats', () => {
    const ids = Array.from({ length: 1000 }, () => newRequestId());
    for (const id of ids) assert.match(id, /^[0-9a-f]{32}$/);
    assert.equal(new Set(ids).size, 1000);
    assert.equal(new Set(ids.map((id) => id.slice(0, 20))).size, 1);
  });

  test('a client id is safe only as 1 to 128 characters of [A-Za-z0-9._-]', () => {
    for (const ok of ['a', 'A-b_c.9', 'x'.repeat(128), '0af7651916cd43dd']) assert.equal(isSafeRequestId(ok), true, ok);
    for (const bad of ['', 'x'.repeat(129), 'a b', 'a,b', 'é', 'a\tb', '../x;y']) assert.equal(isSafeRequestId(bad), false, bad);
  });

  test('random hex comes in the asked length, different each time', () => {
    const a = randomHex(16);
    const b = randomHex(16);
    assert.match(a, /^[0-9a-f]{32}$/);
    assert.notEqual(a, b);
    // Past the 4 KB pool: refilled, still random.
    const many = new Set(Array.from({ length: 600 }, () => randomHex(8)));
    assert.equal(many.size, 600);
  });
});

describe('traceparent', () => {
  test('a valid version-00 value is read; its sampled flag is bit 0 of the flags', () => {
    assert.deepEqual(parseTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'), {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      parentId: 'b7ad6b7169203331',
      sampled: true,
    });
    assert.equal(parseTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02')?.sampled, false);
  });

  test('a later version is read by its first four fields; version 00 must be exactly 55 characters', () => {
    assert.equal(parseTraceparent('01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future')?.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(parseTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future'), undefined);
  });

  test('invalid values are refused: ff, all-zero ids, upper case, short, not a string', () => {
    for (const bad of [
      'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      '00-00000000000000000000000000000000-b7ad6b7169203331-01',
      '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01',
      '00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01',
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331',
      '00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    ]) {
      assert.equal(parseTraceparent(bad), undefined, bad);
    }
    assert.equal(parseTraceparent(undefined), undefined);
    assert.equal(parseTraceparent(['a', 'b']), undefined);
  });

  test('a context passes a valid traceparent unchanged and keeps tracestate; starts an unsampled one otherwise', () => {
    const valid = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const passed = context({ traceparent: valid });
    assert.equal(passed.traceparent, valid);
    assert.equal(passed.traceStateKept, true);
    const started = context({ traceparent: 'nonsense' });
    assert.match(started.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    assert.equal(started.traceStateKept, false);
    // Worked out once.
    assert.equal(started.traceparent, started.traceparent);
  });
});

describe('the headers sent upstream', () => {
  function info(overrides: Partial<ForwardInfo>): ForwardInfo {
    return {
      rawHeaders: ['Host', 'a', 'X-Request-Id', 'client', 'traceparent', 'client-tp', 'tracestate', 'v=1'],
      peer: '192.0.2.1',
      clientIp: '192.0.2.1',
      trusted: false,
      forwarded: NOT_FORWARDED,
      scheme: 'http',
      host: 'a',
      upstreamHost: 'a',
      setHeaders: new Map(),
      method: 'GET',
      httpVersion: '1.1',
      underscores: false,
      dropAuthorization: false,
      requestId: 'portico-id',
      traceparent: 'portico-tp',
      keepTracestate: true,
      ...overrides,
    };
  }
  function values(out: string[], name: string): string[] {
    return out.filter((_v, i) => i % 2 === 1 && out[i - 1]!.toLowerCase() === name);
  }

  test("X-Request-Id and traceparent are the request's own, once; tracestate passes only when kept", () => {
    const out = buildRequestHeaders(info({}));
    assert.deepEqual(values(out, 'x-request-id'), ['portico-id']);
    assert.deepEqual(values(out, 'traceparent'), ['portico-tp']);
    assert.deepEqual(values(out, 'tracestate'), ['v=1']);
    assert.deepEqual(values(buildRequestHeaders(info({ keepTracestate: false })), 'tracestate'), []);
  });

  test('set_headers wins over both', () => {
    const out = buildRequestHeaders(info({ setHeaders: new Map([['x-request-id', 'set'], ['traceparent', 'set-tp']]) }));
    assert.deepEqual(values(out, 'x-request-id'), ['set']);
    assert.deepEqual(values(out, 'traceparent'), ['set-tp']);
  });
});

describe('access-log templates', () => {
  test('values are escaped as nginx does, empty ones written -, ${name} delimits a name', () => {
    const ctx = context({ 'user-agent': 'a "b"\\c', referer: '' });
    ctx.status = 200;
    ctx.requestId = 'rid';
    const line = compileLogTemplate('$status ${status}x "$http_user_agent" [$http_referer] $request_id $upstream_addr $cache_status $remote_user')(ctx);
    assert.equal(line, '200 200x "a \\x22b\\x22\\x5cc" [-] rid - - -');
  });

  test('json escaping writes values as inside a JSON string, so a JSON template stays JSON', () => {
    const ctx = context({ 'user-agent': 'a "b"\n\u00e9' });
    ctx.status = 404;
    const line = compileLogTemplate('{"s":$status,"ua":"$http_user_agent","u":"$request_uri"}', 'json')(ctx);
    assert.deepEqual(JSON.parse(line), { s: 404, ua: 'a "b"\n\u00e9', u: '/a?b=1' });
  });

  test('$remote_user is the Basic user name sent; $request is the request line', () => {
    const ctx = context({ authorization: `Basic ${Buffer.from('bob:secret').toString('base64')}` });
    assert.equal(compileLogTemplate('$remote_user "$request" $server_protocol')(ctx), 'bob "GET /a?b=1 HTTP/1.1" HTTP/1.1');
  });

  test('an unknown variable is reported with the list; known ones, prefixes included, pass', () => {
    assert.match(checkLogTemplate('$status $bogus')!, /unknown variable \$bogus.*\$request_id/);
    assert.match(checkLogTemplate('$toString')!, /\$toString/);
    assert.equal(checkLogTemplate('$status $http_x_y $cookie_s $arg_q $header_a ${request_time}'), undefined);
  });

  test('cache results read as nginx names them', () => {
    assert.equal(cacheResult(''), '');
    assert.equal(cacheResult('hit'), 'HIT');
    assert.equal(cacheResult('hit; ttl=3; detail=stale-while-revalidate'), 'UPDATING');
    assert.equal(cacheResult('fwd=miss'), 'MISS');
    assert.equal(cacheResult('fwd=miss; collapsed'), 'MISS');
    assert.equal(cacheResult('fwd=stale; fwd-status=304'), 'REVALIDATED');
    assert.equal(cacheResult('fwd=stale; fwd-status=200'), 'EXPIRED');
    assert.equal(cacheResult('fwd=stale; fwd-status=502; detail=stale-if-error'), 'STALE');
    assert.equal(cacheResult('fwd=request'), 'BYPASS');
    assert.equal(cacheResult('fwd=method'), 'BYPASS');
  });

  test('docs/operations.md, "Access log", lists every variable of the code, and no other', () => {
    const text = readFileSync(path.join(root, 'docs/operations.md'), 'utf8');
    const section = text.slice(text.indexOf('## Access log'), text.indexOf('## Request ids and traces'));
    const documented = new Set(Array.from(section.matchAll(/^\| `(\$[a-zA-Z0-9_]+)`(?:, `(\$[a-zA-Z0-9_]+)`)? \|/gm), (m) => [m[1]!, m[2]]).flat().filter((v) => v !== undefined));
    assert.deepEqual([...documented].sort(), [...LOG_TEMPLATE_VARIABLES].sort());
  });
});

describe('tracing', () => {
  test('an OTLP URL without a path gets /v1/traces; one with a path is kept', () => {
    assert.equal(tracesUrl('http://c:4318'), 'http://c:4318/v1/traces');
    assert.equal(tracesUrl('http://c:4318/custom/traces'), 'http://c:4318/custom/traces');
  });
});
