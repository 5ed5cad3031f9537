/**
 * What an app server is told about a request, over real sockets (issue 16): the host as the cache key holds it —
 * a client's spelling of the Host (case, a trailing dot, a default or empty port, leading zeros) never reaches
 * the app nor a stored page, and a port the client names is part of the key — over HTTP/1.1 and HTTP/2; and the
 * Cookie fields HTTP/2 splits, joined into the one line HTTP/1.1 allows.
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

describe('HTTP/2 cookies', () => {
  test('several cookie fields of an h2 request reach the app as one Cookie line joined with "; " (RFC 9113 §8.2.3)', async () => {
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
    const answer = await h2Request(client, { ':path': '/jar', ':authority': 'localhost', cookie: ['a=1', 'b=2', 'c=3'] });
    assert.equal(answer.status, 200);
    const seen = backend.requests.find((request) => request.target === '/jar')!;
    const cookies = seen.fields.filter(([name]) => name.toLowerCase() === 'cookie');
    assert.deepEqual(cookies.map(([, value]) => value), ['a=1; b=2; c=3']);
  });
});


