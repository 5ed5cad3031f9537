/**
 * What an app server is told about a request, over real sockets (issue 16): the host as the cache key holds it —
 * a client's spelling of the Host (case, a trailing dot, a default or empty port, leading zeros) never reaches
 * the app nor a stored page, and a port the client names is part of the key — over HTTP/1.1 and HTTP/2; what a
 * trusted proxy forwards of another host or scheme, and the host under a key without `$host`, keyed too; the other
 * forwarding fields (X-Forwarded-Port/-Prefix, X-Original-URL, …) dropped from a peer that is not trusted and keyed
 * from one that is, and method overrides dropped from a GET; and the Cookie fields HTTP/2 splits, joined into the
 * one line HTTP/1.1 allows, empty ones skipped.
 */
import assert from 'node:assert/strict';
import type { ClientHttp2Session } from 'node:http2';
import { describe, test } from 'node:test';
import { connectH2, h2Request, startPorticoH2 } from '../helpers/h2.js';
import { rawRequest } from '../helpers/raw-client.js';
import { startRecordingBackend } from '../helpers/recording-backend.js';
import { scopedServers } from './proxy-support.js';

const { portico, upstream, defer } = scopedServers();

/** An app whose cacheable page names the Host, X-Forwarded-Host and Forwarded it was built for. */
function echoHostApp() {
  return upstream((req, res) => {
    res.setHeader('Cache-Control', 'max-age=60');
    res.end(`built for ${req.headers.host} xfh=${req.headers['x-forwarded-host']} fwd=${req.headers.forwarded?.replace(/^.*;host=/, '')}`);
  });
}

const cachedSite = (app: string, host: string) => `caches: { main: { memory: 1MB } }
sites:
  - hosts: [${host}]
    routes:
      - path: /c/
        proxy: { upstream: app, cache: { zone: main } }
      - path: /named/
        proxy: { upstream: app, host: backend.internal, cache: { zone: main } }
upstreams:
  app:
    servers: [{ url: "${app}" }]
`;

const plainPage = (host: string) => `built for ${host} xfh=${host} fwd="${host}"`;

describe('cache poisoning through Host variants', () => {
  test('Host variants of one site (case, trailing dot, default or empty port, 0080, absolute form) reach the app as the key holds the host, and a plain request later gets that page', async () => {
    const app = await echoHostApp();
    const server = await portico(cachedSite(app.url, 'good.example'));
    const variants: Array<[string, string]> = [
      ['GOOD.EXAMPLE', ''],
      ['good.example.', ''],
      ['good.example:80', ''],
      ['good.example:', ''],
      ['Good.Example:0080', ''],
      ['evil.example', 'http://Good.Example.:80'],
    ];
    for (const [i, [host, absolute]] of variants.entries()) {
      const path = `/c/v${i}`;
      const first = await rawRequest(server.port, `GET ${absolute}${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      assert.equal(first.status, 200, host);
      assert.equal(first.body, plainPage('good.example'), `the app saw the normalised host for ${host}`);
      const plain = await rawRequest(server.port, `GET ${path} HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n`);
      assert.equal(plain.body, plainPage('good.example'), host);
      assert.match(plain.headers['cache-status'] ?? '', /hit/, `one stored page for ${host} and the plain host`);
    }
  });

  test('a port the client names (good.example:6666) reaches the app and keys the page apart: a plain request never gets it', async () => {
    const app = await echoHostApp();
    const server = await portico(cachedSite(app.url, 'good.example'));
    const ported = await rawRequest(server.port, 'GET /c/p HTTP/1.1\r\nHost: Good.Example:06666\r\nConnection: close\r\n\r\n');
    assert.equal(ported.body, plainPage('good.example:6666'));
    const plain = await rawRequest(server.port, 'GET /c/p HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n');
    assert.equal(plain.body, plainPage('good.example'));
    assert.doesNotMatch(plain.headers['cache-status'] ?? '', /hit/);
    // The ported page is stored too, for the clients naming that port.
    const again = await rawRequest(server.port, 'GET /c/p HTTP/1.1\r\nHost: good.example:6666\r\nConnection: close\r\n\r\n');
    assert.equal(again.body, plainPage('good.example:6666'));
    assert.match(again.headers['cache-status'] ?? '', /hit/);
  });

  test('proxy.host set by the operator is sent as Host; X-Forwarded-Host and Forwarded still say the normalised host', async () => {
    const app = await echoHostApp();
    const server = await portico(cachedSite(app.url, 'good.example'));
    const first = await rawRequest(server.port, 'GET /named/x HTTP/1.1\r\nHost: GOOD.example.:80\r\nConnection: close\r\n\r\n');
    assert.equal(first.body, 'built for backend.internal xfh=good.example fwd="good.example"');
  });

  test('over HTTP/2, :authority variants reach the app as the key holds the host, and a plain request later gets that page', async () => {
    const app = await echoHostApp();
    const server = await startPorticoH2(cachedSite(app.url, 'localhost'));
    defer(() => server.stop());
    const client: ClientHttp2Session = await connectH2(server.origin);
    defer(() => void client.close());
    for (const [i, authority] of ['LOCALHOST', 'localhost.', 'localhost:443', 'Localhost:0443'].entries()) {
      const path = `/c/h${i}`;
      const first = await h2Request(client, { ':path': path, ':authority': authority });
      assert.equal(first.body.toString(), plainPage('localhost'), authority);
      const plain = await h2Request(client, { ':path': path, ':authority': 'localhost' });
      assert.equal(plain.body.toString(), plainPage('localhost'), authority);
      assert.match(String(plain.headers['cache-status']), /hit/, authority);
    }
  });
});

/** An app whose cacheable page names every forwarded host and scheme it was told, as a link builder reads them. */
function echoForwardedApp() {
  return upstream((req, res) => {
    res.setHeader('Cache-Control', 'max-age=60');
    res.end(`xfh=${req.headers['x-forwarded-host']} xfp=${req.headers['x-forwarded-proto']} fwd=${req.headers.forwarded}`);
  });
}

/** A GET of `path` for good.example from 127.0.0.1 (a trusted proxy when the config says so), with extra fields. */
const viaBalancer = (port: number, path: string, fields = '') =>
  rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: good.example\r\n${fields}Connection: close\r\n\r\n`);

const trustedSite = (app: string) => `trusted_proxies: ["127.0.0.1"]
${cachedSite(app, 'good.example')}`;

describe('cache poisoning through a trusted proxy\'s forwarded host and scheme', () => {
  test('a forwarded X-Forwarded-Host (evil.example) keys the page apart: a request without it never gets the page built for it', async () => {
    const app = await echoForwardedApp();
    const server = await portico(trustedSite(app.url));
    const evil = await viaBalancer(server.port, '/c/xfh', 'X-Forwarded-Host: evil.example\r\n');
    assert.match(evil.body, /^xfh=evil\.example /);
    const plain = await viaBalancer(server.port, '/c/xfh');
    assert.match(plain.body, /^xfh=good\.example /);
    assert.doesNotMatch(plain.headers['cache-status'] ?? '', /hit/);
    // Stored for the clients that forward the same host, spelled any way: the app is told its canonical form.
    const again = await viaBalancer(server.port, '/c/xfh', 'X-Forwarded-Host: Evil.Example.:80\r\n');
    assert.match(again.body, /^xfh=evil\.example /);
    assert.match(again.headers['cache-status'] ?? '', /hit/);
  });

  test('X-Forwarded-Proto http and https key apart, and one that says what the listener is shares the plain key', async () => {
    const app = await echoForwardedApp();
    const server = await portico(trustedSite(app.url));
    const https = await viaBalancer(server.port, '/c/xfp', 'X-Forwarded-Proto: https\r\n');
    assert.match(https.body, / xfp=https /);
    const http = await viaBalancer(server.port, '/c/xfp', 'X-Forwarded-Proto: http\r\n');
    assert.match(http.body, / xfp=http /);
    assert.doesNotMatch(http.headers['cache-status'] ?? '', /hit/);
    const plain = await viaBalancer(server.port, '/c/xfp');
    assert.match(plain.body, / xfp=http /);
    assert.match(plain.headers['cache-status'] ?? '', /hit/, 'the listener is http: the same page');
    // Spelled any way, it is told (and keyed) in lower case.
    const httpsAgain = await viaBalancer(server.port, '/c/xfp', 'X-Forwarded-Proto: HTTPS\r\n');
    assert.match(httpsAgain.body, / xfp=https /);
    assert.match(httpsAgain.headers['cache-status'] ?? '', /hit/);
  });

  test('a forwarded Forwarded host= or proto= keys the page apart; its for= does not', async () => {
    const app = await echoForwardedApp();
    const server = await portico(trustedSite(app.url));
    const evil = await viaBalancer(server.port, '/c/fwd', 'Forwarded: for=192.0.2.1;host=evil.example;proto=https\r\n');
    assert.match(evil.body, /fwd=for=192\.0\.2\.1;host=evil\.example;proto=https, /);
    const plain = await viaBalancer(server.port, '/c/fwd');
    assert.match(plain.body, /fwd=for=127\.0\.0\.1;proto=http;host="good\.example"$/);
    assert.doesNotMatch(plain.headers['cache-status'] ?? '', /hit/);
    const otherClient = await viaBalancer(server.port, '/c/fwd', 'Forwarded: for=198.51.100.7;host=evil.example;proto=https\r\n');
    assert.match(otherClient.headers['cache-status'] ?? '', /hit/, 'another client through the same balancer shares the page');
  });

  test('from a peer that is not trusted, forwarded fields are replaced and key nothing: the page is shared', async () => {
    const app = await echoForwardedApp();
    const server = await portico(cachedSite(app.url, 'good.example'));
    const first = await viaBalancer(server.port, '/c/untrusted', 'X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nForwarded: host=evil.example\r\n');
    assert.equal(first.body, 'xfh=good.example xfp=http fwd=for=127.0.0.1;proto=http;host="good.example"');
    const plain = await viaBalancer(server.port, '/c/untrusted');
    assert.match(plain.headers['cache-status'] ?? '', /hit/);
  });
});

/** The forwarding fields apps read to build links, pick a scheme or rewrite the target (besides X-Forwarded-For/-Proto/-Host). */
const FORWARDING_FIELDS: Array<[string, string]> = [
  ['X-Forwarded-Port', '6666'],
  ['X-Forwarded-Prefix', '/evil'],
  ['X-Forwarded-Scheme', 'https'],
  ['X-Forwarded-Ssl', 'on'],
  ['Front-End-Https', 'on'],
  ['X-Url-Scheme', 'https'],
  ['X-Scheme', 'https'],
  ['X-Host', 'evil.example'],
  ['X-Forwarded-Server', 'evil.example'],
  ['X-Forwarded-Uri', '/admin'],
  ['X-Forwarded-Method', 'DELETE'],
  ['X-Original-URL', '/admin'],
  ['X-Rewrite-URL', '/admin'],
  ['X-Forwarded-Client-Cert', 'Hash=0;Subject="CN=admin"'],
  ['X-Forwarded-Tls-Client-Cert', 'MIIB'],
  ['X-Forwarded-Tls-Client-Cert-Info', 'Subject%3D%22CN%3Dadmin%22'],
];
const FORWARDING_NAMES = FORWARDING_FIELDS.map(([name]) => name.toLowerCase());

/** An app whose cacheable page lists every forwarding field (and method override) it was told, in order. */
function echoFieldsApp() {
  return upstream((req, res) => {
    res.setHeader('Cache-Control', 'max-age=60');
    const told = [...FORWARDING_NAMES, 'x-http-method-override', 'x-http-method', 'x-method-override']
      .filter((name) => req.headers[name] !== undefined)
      .map((name) => `${name}=${String(req.headers[name])}`);
    res.end(`${req.method} ${told.join(' ')}`);
  });
}

const fieldLines = (fields: ReadonlyArray<[string, string]>) => fields.map(([name, value]) => `${name}: ${value}\r\n`).join('');

describe('forwarding fields beyond X-Forwarded-For/-Proto/-Host', () => {
  test('from a peer that is not trusted, X-Forwarded-Port/-Prefix/-Scheme/-Ssl, X-Original-URL, X-Rewrite-URL and the rest never reach the app, and Portico adds no X-Forwarded-Port of its own', async () => {
    const app = await echoFieldsApp();
    const server = await portico(cachedSite(app.url, 'good.example'));
    const spoofed = await viaBalancer(server.port, '/c/spoof', fieldLines(FORWARDING_FIELDS));
    assert.equal(spoofed.body, 'GET ');
    const plain = await viaBalancer(server.port, '/c/spoof');
    assert.equal(plain.body, 'GET ');
    assert.match(plain.headers['cache-status'] ?? '', /hit/, 'one page for both: nothing of the spoofed request reached it');
    const ported = await rawRequest(server.port, 'GET /c/port HTTP/1.1\r\nHost: good.example:06666\r\nX-Forwarded-Port: 80\r\nConnection: close\r\n\r\n');
    assert.equal(ported.body, 'GET ');
  });

  test('from a trusted proxy, they reach the app as it sent them and key the page apart; X-Forwarded-Server and a port that says what the request does not', async () => {
    const app = await echoFieldsApp();
    const server = await portico(trustedSite(app.url));
    const expected = `GET ${FORWARDING_FIELDS.map(([name, value]) => `${name.toLowerCase()}=${value}`).join(' ')}`;
    const forwarded = await viaBalancer(server.port, '/c/all', fieldLines(FORWARDING_FIELDS));
    assert.equal(forwarded.body, expected);
    const plain = await viaBalancer(server.port, '/c/all');
    assert.equal(plain.body, 'GET ');
    assert.doesNotMatch(plain.headers['cache-status'] ?? '', /hit/);
    // Each field on its own keys apart (X-Forwarded-Server names the hop, as Forwarded for= does: it does not).
    for (const [i, [name, value]] of FORWARDING_FIELDS.entries()) {
      const path = `/c/one${i}`;
      const told = await viaBalancer(server.port, path, `${name}: ${value}\r\n`);
      assert.match(told.body, new RegExp(`${name.toLowerCase()}=`), name);
      const again = await viaBalancer(server.port, path, `${name}: ${value}\r\n`);
      assert.match(again.headers['cache-status'] ?? '', /hit/, `${name}: the same value shares the page`);
      const without = await viaBalancer(server.port, path);
      if (name === 'X-Forwarded-Server') assert.match(without.headers['cache-status'] ?? '', /hit/, name);
      else assert.doesNotMatch(without.headers['cache-status'] ?? '', /hit/, `${name} keys the page apart`);
    }
    // A balancer telling the port the request names anyway (80 on this plain listener) shares the plain page.
    const samePort = await viaBalancer(server.port, '/c/all', 'X-Forwarded-Port: 80\r\n');
    assert.match(samePort.headers['cache-status'] ?? '', /hit/);
    // Without its own X-Forwarded-Port, the app is told none: Portico makes none up.
    const https = await viaBalancer(server.port, '/c/proto', 'X-Forwarded-Proto: https\r\n');
    assert.equal(https.body, 'GET ');
    // Its own, naming the port of what it forwarded of host and scheme, passes (and shares that page: it says
    // nothing the page could differ by).
    const told = await viaBalancer(server.port, '/c/proto-told', 'X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n');
    assert.equal(told.body, 'GET x-forwarded-port=443');
    const same = await viaBalancer(server.port, '/c/proto-told', 'X-Forwarded-Proto: https\r\n');
    assert.match(same.headers['cache-status'] ?? '', /hit/);
  });

  test('a method override (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override) never reaches the app on a GET or HEAD, and does on a POST', async () => {
    const app = await echoFieldsApp();
    const server = await portico(cachedSite(app.url, 'good.example'));
    const overrides = 'X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\n';
    const get = await viaBalancer(server.port, '/c/m', overrides);
    assert.equal(get.body, 'GET ');
    const post = await rawRequest(server.port, `POST /c/m HTTP/1.1\r\nHost: good.example\r\n${overrides}Content-Length: 0\r\nConnection: close\r\n\r\n`);
    assert.equal(post.body, 'POST x-http-method-override=DELETE x-http-method=DELETE x-method-override=DELETE');
  });
});

describe('a cache key without $host', () => {
  test('key "$request_uri" on a wildcard site: a.example.com and b.example.com never share a page the app built for one', async () => {
    const app = await echoHostApp();
    const server = await portico(`caches: { main: { memory: 1MB } }
sites:
  - hosts: ["*.example.com"]
    routes:
      - path: /
        proxy: { upstream: app, cache: { zone: main, key: "$request_uri" } }
upstreams:
  app:
    servers: [{ url: "${app.url}" }]
`);
    const a = await rawRequest(server.port, 'GET /k HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n');
    assert.equal(a.body, plainPage('a.example.com'));
    const b = await rawRequest(server.port, 'GET /k HTTP/1.1\r\nHost: b.example.com\r\nConnection: close\r\n\r\n');
    assert.equal(b.body, plainPage('b.example.com'));
    const aAgain = await rawRequest(server.port, 'GET /k HTTP/1.1\r\nHost: A.example.com.\r\nConnection: close\r\n\r\n');
    assert.equal(aAgain.body, plainPage('a.example.com'));
    assert.match(aAgain.headers['cache-status'] ?? '', /hit/);
  });
});

/** An h2 Portico proxying everything to a recording backend, and a client session to it. */
async function h2ToRecordingBackend() {
  const backend = await startRecordingBackend();
  defer(() => backend.stop());
  const server = await startPorticoH2(`sites:
  - routes:
      - path: /
        proxy: { url: "${backend.url}" }
`);
  defer(() => server.stop());
  const client = await connectH2(server.origin);
  defer(() => void client.close());
  return { backend, client };
}

describe('HTTP/2 cookies', () => {
  test('several cookie fields of an h2 request reach the app as one Cookie line joined with "; " (RFC 9113 §8.2.3)', async () => {
    const { backend, client } = await h2ToRecordingBackend();
    const answer = await h2Request(client, { ':path': '/jar', ':authority': 'localhost', cookie: ['a=1', 'b=2', 'c=3'] });
    assert.equal(answer.status, 200);
    const seen = backend.requests.find((request) => request.target === '/jar')!;
    const cookies = seen.fields.filter(([name]) => name.toLowerCase() === 'cookie');
    assert.deepEqual(cookies.map(([, value]) => value), ['a=1; b=2; c=3']);
  });

  test('empty cookie crumbs of an h2 request add no stray "; " to the Cookie line the app gets', async () => {
    const { backend, client } = await h2ToRecordingBackend();
    for (const [path, crumbs, joined] of [
      ['/trail', ['a=1', ''], 'a=1'],
      ['/lead', ['', 'a=1', '', 'b=2'], 'a=1; b=2'],
    ] as const) {
      const answer = await h2Request(client, { ':path': path, ':authority': 'localhost', cookie: [...crumbs] });
      assert.equal(answer.status, 200);
      const seen = backend.requests.find((request) => request.target === path)!;
      const cookies = seen.fields.filter(([name]) => name.toLowerCase() === 'cookie');
      assert.deepEqual(cookies.map(([, value]) => value), [joined], path);
    }
  });
});


