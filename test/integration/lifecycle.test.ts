import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startPortico } from '../helpers/portico.js';
import { startUpstream } from '../helpers/upstream.js';
import { waitFor } from './proxy-support.js';

/** Resource kinds that would keep a process alive (timers, sockets, servers, file handles). */
function liveResources(): string[] {
  return process.getActiveResourcesInfo().filter((kind) => kind !== 'TTYWrap');
}

test('stop() leaves no timer, socket or server behind (static, proxy with health checks and retries)', async () => {
  const backend = await startUpstream('hello');
  const baseline = liveResources().length;
  const portico = await startPortico(
    `upstreams:
  app:
    servers: [{ url: "${backend.url}" }]
    health: { path: /, interval: 50ms, timeout: 200ms }
    try_duration: 1s
sites:
  - routes:
      - path: /api/
        proxy: { upstream: app }
      - path: /
        static: { root: ./public }
`,
    { 'public/index.html': 'hi', 'public/big.bin': Buffer.alloc(3 * 1024 * 1024) },
  );
  for (let i = 0; i < 5; i++) {
    assert.equal(await (await fetch(`${portico.url}/api/x`)).text(), 'hello');
    assert.equal(await (await fetch(`${portico.url}/`)).text(), 'hi');
  }
  assert.equal((await (await fetch(`${portico.url}/big.bin`)).arrayBuffer()).byteLength, 3 * 1024 * 1024);
  // The health checker has run a few rounds (a timer armed between them).
  const checks = () => backend.requests.filter((r) => r.headers['user-agent'] === 'Portico-health-check').length;
  await waitFor('three health checks', () => checks() >= 3, 5000, 5);
  await portico.stop();
  await backend.stop();
  // fetch's own keep-alive sockets to Portico are closed by Portico's stop; their handles go once the loop has
  // seen the close.
  await waitFor('the resources to be released', () => liveResources().length <= baseline - 1, 2000, 5).catch(() => undefined);
  assert.ok(liveResources().length <= baseline - 1, `still alive after stop: ${liveResources().join(', ')}`);
});

test('reload swaps in a new config without closing the listener, and a bad config is never applied', async () => {
  const portico = await startPortico(
    `sites:
  - routes:
      - path: /
        respond: { body: "one" }
`,
  );
  try {
    assert.equal(await (await fetch(portico.url)).text(), 'one');
    const { parseConfig } = await import('../../src/server/config.js');
    const next = parseConfig(`listen: ["127.0.0.1:0"]\nlog: { access: off }\nsites:\n  - routes:\n      - path: /\n        respond: { body: "two" }\n`, `${portico.dir}/next.yaml`, portico.dir);
    await portico.server.reload(next);
    assert.equal(await (await fetch(portico.url)).text(), 'two');
    assert.throws(() => parseConfig('sites: [{ routes: [{ path: /, respond: { bogus: 1 } }] }]', `${portico.dir}/bad.yaml`, portico.dir));
    assert.equal(await (await fetch(portico.url)).text(), 'two');
  } finally {
    await portico.stop();
  }
});

test('a reload that keeps a cache zone keeps its contents (a hit after SIGHUP-style reload)', async () => {
  const backend = await startUpstream((_req, res) => {
    res.writeHead(200, { 'cache-control': 'max-age=60' });
    res.end('cached');
  });
  const yaml = (body: string) => `listen: ["127.0.0.1:0"]
log: { access: off }
caches:
  main: { memory: 1MB }
upstreams:
  app:
    servers: [{ url: "${backend.url}" }]
sites:
  - routes:
      - path: /healthz
        respond: { body: "${body}" }
      - path: /
        proxy: { upstream: app, cache: { zone: main } }
`;
  const portico = await startPortico(yaml('one'));
  try {
    const first = await fetch(`${portico.url}/x`);
    assert.match(first.headers.get('cache-status') ?? '', /fwd=uri-miss/);
    await first.text();
    const { parseConfig } = await import('../../src/server/config.js');
    await portico.server.reload(parseConfig(yaml('two'), `${portico.dir}/next.yaml`, portico.dir));
    assert.equal(await (await fetch(`${portico.url}/healthz`)).text(), 'two');
    const second = await fetch(`${portico.url}/x`);
    assert.match(second.headers.get('cache-status') ?? '', /^Portico; hit/);
    assert.equal(await second.text(), 'cached');
    assert.equal(backend.requests.length, 1);
  } finally {
    await portico.stop();
    await backend.stop();
  }
});
