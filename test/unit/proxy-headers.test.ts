/**
 * The proxy's header rules as pure functions: what goes to the app server (buildRequestHeaders), what comes
 * back to the client (filterResponseHeaders), and how the app's own URLs are mapped back (rewriteLocation).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NOT_FORWARDED, readForwarded } from '../../src/http/forwarded.js';
import { buildRequestHeaders, filterResponseHeaders, porticoHops, rewriteLocation, type ForwardInfo, type ResponseFilter } from '../../src/upstream/headers.js';

function info(overrides: Partial<ForwardInfo> = {}): ForwardInfo {
  return {
    rawHeaders: ['Host', 'www.example.com', 'Accept', '*/*'],
    peer: '192.0.2.10',
    clientIp: '192.0.2.10',
    trusted: false,
    forwarded: NOT_FORWARDED,
    scheme: 'https',
    host: 'www.example.com',
    upstreamHost: 'www.example.com',
    setHeaders: new Map(),
    method: 'GET',
    httpVersion: '1.1',
    underscores: false,
    dropAuthorization: false,
    requestId: 'r1',
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    keepTracestate: true,
    ...overrides,
  };
}

/** The flat header list as lower-cased name → values, in order. */
function fields(flat: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i]!.toLowerCase();
    out.set(name, [...(out.get(name) ?? []), flat[i + 1]!]);
  }
  return out;
}

function one(flat: readonly string[], name: string): string | undefined {
  const values = fields(flat).get(name);
  assert.ok(values === undefined || values.length === 1, `${name} appears ${values?.length} times: ${JSON.stringify(values)}`);
  return values?.[0];
}

describe('readForwarded: what a trusted proxy forwards, as the app is told it and the cache keys it', () => {
  test('nothing forwarded: the shared empty view, no key suffix', () => {
    assert.equal(readForwarded(['Host', 'a.example', 'Accept', '*/*'], 'a.example', 'http'), NOT_FORWARDED);
    assert.equal(readForwarded(['X-Forwarded-Host', '  '], 'a.example', 'http'), NOT_FORWARDED);
  });

  test('what says the request itself (its canonical authority, the listener scheme) adds nothing to the key', () => {
    const view = readForwarded(['X-Forwarded-Host', 'A.Example.:80', 'x-forwarded-proto', 'HTTP', 'Forwarded', 'for=192.0.2.1;host="a.example";proto=http'], 'a.example', 'http');
    assert.equal(view.host, 'a.example');
    assert.equal(view.proto, 'http');
    assert.equal(view.keySuffix, '');
  });

  test('another host or scheme is told in canonical form and keyed as told; Forwarded host=/proto= as written, for= never', () => {
    const view = readForwarded(['X-Forwarded-Host', 'Evil.Example:0443', 'X-Forwarded-Proto', 'HTTPS', 'Forwarded', 'for=192.0.2.1;host=Evil.example, for="[2001:db8::1]";proto=https'], 'a.example', 'http');
    assert.equal(view.host, 'evil.example');
    assert.equal(view.proto, 'https');
    assert.equal(view.elements, 'for=192.0.2.1;host=Evil.example, for="[2001:db8::1]";proto=https');
    assert.equal(view.keySuffix, '\0xfh=evil.example\0xfp=https\0fwd=host=Evil.example;proto=https');
    const otherClient = readForwarded(['X-Forwarded-Host', 'evil.example', 'X-Forwarded-Proto', 'https', 'Forwarded', 'for=198.51.100.7;host=Evil.example, for=10.0.0.1;proto=https'], 'a.example', 'http');
    assert.equal(otherClient.keySuffix, view.keySuffix);
  });

  test('a list or an invalid X-Forwarded-Host is sent as it came and keyed so; a quoted Forwarded value keeps its quotes', () => {
    const view = readForwarded(['X-Forwarded-Host', 'a.example, lb.internal', 'Forwarded', 'host="x;host=y"'], 'a.example', 'http');
    assert.equal(view.host, 'a.example, lb.internal');
    assert.equal(view.keySuffix, '\0xfh=a.example, lb.internal\0fwd=host="x;host=y"');
  });
});

describe('buildRequestHeaders', () => {
  test('Authorization is forwarded unless basic_auth consumed it (dropAuthorization)', () => {
    const rawHeaders = ['Host', 'a', 'Authorization', 'Basic YTpi', 'Accept', '*/*'];
    assert.deepEqual(fields(buildRequestHeaders(info({ rawHeaders }))).get('authorization'), ['Basic YTpi']);
    const dropped = fields(buildRequestHeaders(info({ rawHeaders, dropAuthorization: true })));
    assert.equal(dropped.get('authorization'), undefined);
    assert.deepEqual(dropped.get('accept'), ['*/*']);
  });

  test('an untrusted peer: forwarding headers are rebuilt from the peer alone', () => {
    const out = buildRequestHeaders(
      info({
        rawHeaders: [
          'Host', 'www.example.com',
          'X-Forwarded-For', '6.6.6.6',
          'X-Forwarded-Proto', 'http',
          'X-Forwarded-Host', 'evil.example',
          'X-Real-IP', '6.6.6.6',
          'Forwarded', 'for=6.6.6.6',
        ],
      }),
    );
    assert.equal(one(out, 'x-forwarded-for'), '192.0.2.10');
    assert.equal(one(out, 'x-real-ip'), '192.0.2.10');
    assert.equal(one(out, 'x-forwarded-proto'), 'https');
    assert.equal(one(out, 'x-forwarded-host'), 'www.example.com');
    assert.equal(one(out, 'forwarded'), 'for=192.0.2.10;proto=https;host="www.example.com"');
    assert.equal(one(out, 'host'), 'www.example.com');
  });

  test('a trusted peer: X-Forwarded-For and Forwarded are appended to, its proto and host kept (as readForwarded gives them)', () => {
    const rawHeaders = [
      'Host', 'www.example.com',
      'X-Forwarded-For', '203.0.113.5',
      'x-forwarded-for', '10.0.0.1',
      'X-Forwarded-Proto', 'http',
      'X-Forwarded-Host', 'shop.example',
      'Forwarded', 'for=203.0.113.5;proto=http',
    ];
    const out = buildRequestHeaders(
      info({
        trusted: true,
        forwarded: readForwarded(rawHeaders, 'www.example.com', 'http'),
        peer: '10.0.0.2',
        clientIp: '203.0.113.5',
        rawHeaders,
        scheme: 'http',
      }),
    );
    assert.equal(one(out, 'x-forwarded-for'), '203.0.113.5, 10.0.0.1, 10.0.0.2');
    assert.equal(one(out, 'x-real-ip'), '203.0.113.5');
    assert.equal(one(out, 'x-forwarded-proto'), 'http');
    assert.equal(one(out, 'x-forwarded-host'), 'shop.example');
    assert.equal(one(out, 'forwarded'), 'for=203.0.113.5;proto=http, for=10.0.0.2;proto=http;host="www.example.com"');
  });

  test('an IPv6 peer is quoted and bracketed in Forwarded (RFC 7239 §6)', () => {
    const out = buildRequestHeaders(info({ peer: '2001:db8::1', clientIp: '2001:db8::1' }));
    assert.match(one(out, 'forwarded')!, /^for="\[2001:db8::1\]";proto=https/);
    assert.equal(one(out, 'x-forwarded-for'), '2001:db8::1');
  });

  test('hop-by-hop fields, the fields Connection names, Expect and Proxy-* are dropped', () => {
    const out = buildRequestHeaders(
      info({
        rawHeaders: [
          'Host', 'a',
          'Connection', 'keep-alive, X-Secret',
          'connection', 'x-other',
          'X-Secret', '1',
          'X-Other', '2',
          'Keep-Alive', 'timeout=5',
          'TE', 'trailers',
          'Trailer', 'X-T',
          'Transfer-Encoding', 'chunked',
          'Upgrade', 'h2c',
          'HTTP2-Settings', 'AAA',
          'Proxy-Authorization', 'Basic x',
          'Proxy-Connection', 'keep-alive',
          'Expect', '100-continue',
          'Content-Length', '5',
          'X-Kept', 'yes',
        ],
      }),
    );
    const names = [...fields(out).keys()];
    for (const gone of ['connection', 'x-secret', 'x-other', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings', 'proxy-authorization', 'proxy-connection', 'expect']) {
      assert.ok(!names.includes(gone), `${gone} was forwarded`);
    }
    assert.equal(one(out, 'x-kept'), 'yes');
    assert.equal(one(out, 'content-length'), '5');
  });

  test('Via is appended to what the client sent, with the client protocol version', () => {
    assert.equal(one(buildRequestHeaders(info({ rawHeaders: ['Via', '1.1 cdn'], httpVersion: '1.0' })), 'via'), '1.1 cdn, 1.0 portico');
    assert.equal(one(buildRequestHeaders(info()), 'via'), '1.1 portico');
  });

  test('a configured Host replaces the client one; X-Forwarded-Host still names the client one', () => {
    const out = buildRequestHeaders(info({ upstreamHost: 'backend.local' }));
    assert.equal(one(out, 'host'), 'backend.local');
    assert.equal(one(out, 'x-forwarded-host'), 'www.example.com');
  });

  test('set_headers replace what the client sent', () => {
    const out = buildRequestHeaders(info({ rawHeaders: ['Host', 'a', 'X-App', 'client'], setHeaders: new Map([['x-app', 'portico']]) }));
    assert.deepEqual(fields(out).get('x-app'), ['portico']);
  });

  test('set_headers replace a rebuilt forwarding header rather than adding a second one (regression)', () => {
    const out = buildRequestHeaders(info({ setHeaders: new Map([['x-real-ip', '198.51.100.1'], ['x-forwarded-proto', 'https']]), scheme: 'http' }));
    assert.deepEqual(fields(out).get('x-real-ip'), ['198.51.100.1']);
    assert.deepEqual(fields(out).get('x-forwarded-proto'), ['https']);
  });

  test('a quote or backslash in the Host cannot break out of the Forwarded host parameter', () => {
    const out = buildRequestHeaders(info({ host: 'a"b\\c' }));
    assert.match(one(out, 'forwarded')!, /;host="abc"$/);
  });

  test('without a Host there is no X-Forwarded-Host and no host parameter', () => {
    const out = buildRequestHeaders(info({ host: '', upstreamHost: '' }));
    assert.equal(fields(out).get('x-forwarded-host'), undefined);
    assert.equal(one(out, 'forwarded'), 'for=192.0.2.10;proto=https');
  });
});

describe('filterResponseHeaders', () => {
  const filter = (overrides: Partial<ResponseFilter> = {}): ResponseFilter => ({
    hide: new Set(),
    serverHeader: 'Portico',
    rewriteLocation: (value) => value.replace('http://app:3000', 'https://www.example.com'),
    ...overrides,
  });
  const raw = (...pairs: string[]) => pairs.map((p) => Buffer.from(p, 'latin1'));

  test("hop-by-hop fields and the app's Server and X-Powered-By are dropped; Portico's Server is added", () => {
    const out = filterResponseHeaders(
      raw(
        'Server', 'gunicorn',
        'X-Powered-By', 'PHP/8',
        'Connection', 'X-Hop, close',
        'X-Hop', '1',
        'Keep-Alive', 'timeout=5',
        'Transfer-Encoding', 'chunked',
        'Trailer', 'X-Sum',
        'Upgrade', 'h2c',
        'Proxy-Authenticate', 'Basic',
        'Content-Type', 'text/plain',
      ),
      filter(),
    );
    assert.deepEqual(out, ['Content-Type', 'text/plain', 'Server', 'Portico']);
  });

  test('hide_headers are dropped whatever their case; an empty serverHeader sends no Server', () => {
    const out = filterResponseHeaders(raw('X-Debug', '1', 'x-runtime', '3ms', 'ETag', '"a"'), filter({ hide: new Set(['x-debug', 'x-runtime']), serverHeader: '' }));
    assert.deepEqual(out, ['ETag', '"a"']);
  });

  test('repeated fields (Set-Cookie) stay separate and in order; plain strings work as well as Buffers', () => {
    const out = filterResponseHeaders(['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'], filter({ serverHeader: '' }));
    assert.deepEqual(out, ['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2']);
  });

  test('Location and the URL in Refresh are rewritten; other fields are not', () => {
    const out = filterResponseHeaders(
      raw('Location', 'http://app:3000/x', 'Refresh', '5; URL=http://app:3000/y', 'Link', '<http://app:3000/z>'),
      filter({ serverHeader: '' }),
    );
    assert.deepEqual(out, ['Location', 'https://www.example.com/x', 'Refresh', '5; URL=https://www.example.com/y', 'Link', '<http://app:3000/z>']);
  });
});

describe('rewriteLocation', () => {
  const origins = ['http://127.0.0.1:3000', 'http://127.0.0.1:3001'];
  const client = 'https://www.example.com';

  test('the base path of the server URL becomes the stripped route prefix', () => {
    assert.equal(rewriteLocation('http://127.0.0.1:3000/base/x?y=1', origins, '/base', client, '/api'), 'https://www.example.com/api/x?y=1');
    assert.equal(rewriteLocation('http://127.0.0.1:3001/base', origins, '/base', client, '/api'), 'https://www.example.com/api/');
    assert.equal(rewriteLocation('http://127.0.0.1:3000/base?q', origins, '/base', client, '/api'), 'https://www.example.com/api/?q');
  });

  test('without a base path or prefix only the origin changes', () => {
    assert.equal(rewriteLocation('http://127.0.0.1:3001/x#top', origins, '', client, ''), 'https://www.example.com/x#top');
    assert.equal(rewriteLocation('http://127.0.0.1:3000', origins, '', client, ''), 'https://www.example.com/');
  });

  test('a URL outside the base path (also /basement for /base) only loses the app origin, not gains the route prefix', () => {
    assert.equal(rewriteLocation('http://127.0.0.1:3000/basement', origins, '/base', client, '/api'), 'https://www.example.com/basement');
    assert.equal(rewriteLocation('http://127.0.0.1:3000/other/x', origins, '/base', client, '/api'), 'https://www.example.com/other/x');
  });

  test('other origins, a longer port and relative URLs are left alone', () => {
    assert.equal(rewriteLocation('https://example.org/x', origins, '', client, ''), 'https://example.org/x');
    assert.equal(rewriteLocation('http://127.0.0.1:30000/x', origins, '', client, ''), 'http://127.0.0.1:30000/x');
    assert.equal(rewriteLocation('/relative', origins, '/base', client, '/api'), '/relative');
  });
});

describe('underscores in header names (nginx underscores_in_headers)', () => {
  test('fields whose names contain _ are dropped by default, so X_Forwarded_For and X-Real_IP cannot spoof what CGI-style apps read', () => {
    const out = fields(buildRequestHeaders(info({ rawHeaders: ['Host', 'h', 'X_Forwarded_For', '6.6.6.6', 'X-Real_IP', '6.6.6.6', 'X-Custom', 'kept'] })));
    assert.equal(out.has('x_forwarded_for'), false);
    assert.equal(out.has('x-real_ip'), false);
    assert.deepEqual(out.get('x-custom'), ['kept']);
    assert.deepEqual(out.get('x-forwarded-for'), ['192.0.2.10']);
  });

  test('underscores_in_headers: true passes them through', () => {
    const out = fields(buildRequestHeaders(info({ underscores: true, rawHeaders: ['Host', 'h', 'X_Custom_Token', 'abc'] })));
    assert.deepEqual(out.get('x_custom_token'), ['abc']);
  });
});

test('porticoHops counts the Via entries Portico added (1.1 or 2, any case), in one field or several, and no other proxy\'s', () => {
  assert.equal(porticoHops(undefined), 0);
  assert.equal(porticoHops('1.1 nginx'), 0);
  assert.equal(porticoHops('1.1 portico'), 1);
  assert.equal(porticoHops('1.1 portico, 2 Portico,1.1 varnish (Varnish/7.1), HTTP/1.1 portico-edge, 1.0 fred'), 2);
  assert.equal(porticoHops(['1.1 portico', '1.1 portico, 1.1 portico']), 3);
});
