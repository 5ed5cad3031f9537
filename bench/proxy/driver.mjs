// The proxy benchmark (issue 3), run through bench/proxy.sh: Portico forwarding a 13-byte answer of a Node app
// server, against the Node floor (http + undici Pool), node-http-proxy, nginx and HAProxy. The loop, pinning
// and tables are in bench/proxy/harness.mjs.
import { run, runScenario } from './harness.mjs';
import { CONTENDERS, verify } from './contenders.mjs';

run(async () => {
  await runScenario({
    name: 'proxy',
    contenders: CONTENDERS,
    items: [{ label: '13 B', path: '/' }],
    tools: { nginx: 'nginx -v', haproxy: 'haproxy -v' },
    packages: ['undici', 'http-proxy'],
    verify,
    ratios: [
      { label: 'Portico / Node floor (undici)', a: 'portico', b: 'undici' },
      { label: 'Portico / tighter floor (undici dispatch)', a: 'portico', b: 'undici-dispatch' },
      { label: 'Portico / node-http-proxy', a: 'portico', b: 'http-proxy' },
      { label: 'Portico / nginx', a: 'portico', b: 'nginx' },
      { label: 'Portico / HAProxy', a: 'portico', b: 'haproxy' },
      { label: 'Portico / Portico base (BENCH_BASE)', a: 'portico', b: 'portico-base' },
    ],
    targets: [
      { text: 'Portico ≥ 0.8× Node floor (undici)', a: 'portico', b: 'undici', item: '13 B', min: 0.8 },
      { text: 'Portico ≥ 1.3× node-http-proxy', a: 'portico', b: 'http-proxy', item: '13 B', min: 1.3 },
    ],
  });
});
