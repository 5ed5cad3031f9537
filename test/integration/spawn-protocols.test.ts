/**
 * App servers Portico starts that do not speak HTTP/1.1: PHP-FPM pools (FastCGI) behind a `php` route, and gRPC
 * apps (HTTP/2 without TLS, `spawn.protocol: h2c`). Each instance is made ready by the upstream's own check in
 * what it speaks (FPM's ping path over FastCGI; the gRPC health checking protocol), then takes traffic.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { grpcClient, unary, type TestClient } from '../helpers/grpc.js';
import { startPorticoH2, type RunningH2 } from '../helpers/h2.js';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { portRange } from '../helpers/supervise.js';
import { requireTool, toolPath } from '../helpers/tools.js';
import { httpRequest } from './proxy-support.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const GRPC_APP = path.join(repo, 'test/fixtures/grpc-app.mjs');
const STAND_IN = path.join(repo, 'examples/fpm/stand-in.mjs');

const running: Array<RunningPortico | RunningH2> = [];
after(async () => {
  for (const portico of running) await portico.stop();
});

/** A php-fpm master config whose pool listens on the port Portico gives the instance ($PORT, read by php-fpm itself). */
function fpmConf(): string {
  return `[global]
error_log = fpm.log
daemonize = no

[www]
listen = 127.0.0.1:\${PORT}
pm = static
pm.max_children = 2
ping.path = /fpm-ping
clear_env = yes
env[SLOT] = $PORTICO_SLOT
`;
}

/** Portico (TLS + HTTP/2 listener) running two spawned gRPC instances (h2c, gRPC health checks) on `/`, and a client. */
async function spawnedGrpc(ports: number, spawnExtra = ''): Promise<{ portico: RunningH2; client: TestClient }> {
  const portico = await startPorticoH2(`
upstreams:
  grpc:
    spawn: { command: ["node", ${JSON.stringify(GRPC_APP)}], instances: 2, ports: ${portRange(ports).text}, protocol: h2c, health_timeout: 20s${spawnExtra} }
    health: { type: grpc, interval: 300ms }
sites:
  - routes:
      - { path: /, proxy: { upstream: grpc } }
`);
  running.push(portico);
  return { portico, client: await grpcClient(portico.port) };
}

describe('spawned app servers speaking FastCGI or HTTP/2', () => {
  test('spawned PHP-FPM pools behind a php route: each is made ready by a FastCGI check of its ping path, and both serve', async (t) => {
    if (!requireTool(t, 'php-fpm8.2')) return;
    const range = portRange(4);
    const argv = [toolPath('php-fpm8.2')!, '-F', '-n', '-y', 'fpm.conf', '-p', '.', ...(process.getuid?.() === 0 ? ['-R'] : [])];
    const portico = await startPortico(
      `
upstreams:
  php:
    spawn: { command: ${JSON.stringify(argv)}, cwd: ./fpm, instances: 2, ports: ${range.text}, stop_signal: SIGQUIT, health_timeout: 20s }
    health: { path: /fpm-ping, interval: 300ms }
sites:
  - routes:
      - { path: /, php: { root: ./www, upstream: php } }
`,
      { 'fpm/fpm.conf': fpmConf(), 'www/index.php': '<?php header("X-Slot: " . getenv("SLOT")); echo "php says hi\\n";' },
    );
    running.push(portico);
    const slots = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const res = await httpRequest(portico.port, '/anything');
      assert.equal(res.status, 200, res.body.toString());
      assert.equal(res.body.toString(), 'php says hi\n');
      slots.add(String(res.headers['x-slot']));
    }
    assert.deepEqual([...slots].sort(), ['php#1', 'php#2']);
  });

  test("the showcase's FastCGI stand-in (examples/fpm/stand-in.mjs, run where php-fpm is missing) passes FastCGI readiness checks and answers a php route with the CGI variables it got", async () => {
    const range = portRange(4);
    const portico = await startPortico(
      `
upstreams:
  php:
    protocol: fastcgi
    spawn: { command: ["node", ${JSON.stringify(STAND_IN)}], instances: 1, ports: ${range.text}, health_timeout: 20s }
    health: { path: /fpm-ping, interval: 300ms }
sites:
  - routes:
      - { path: /, php: { root: ./www, upstream: php } }
`,
      { 'www/index.php': '<?php echo "never read";' },
    );
    running.push(portico);
    for (const body of [undefined, 'name=Ada']) {
      const res = await httpRequest(portico.port, '/hello/world?x=1', body === undefined ? {} : { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      assert.equal(res.status, 200, res.body.toString());
      assert.equal(res.headers['x-served-by'], 'php#1');
      assert.match(res.body.toString(), /PHP-FPM is not installed on this machine/);
      assert.match(res.body.toString(), /<th>REQUEST_URI<\/th><td>\/hello\/world\?x=1<\/td>/);
      assert.match(res.body.toString(), new RegExp(`<th>REQUEST_METHOD</th><td>${body === undefined ? 'GET' : 'POST'}</td>`));
    }
  });

  test('spawned gRPC apps with spawn.protocol h2c: made ready by gRPC health checks, both answer calls through Portico', async () => {
    const { client } = await spawnedGrpc(4);
    try {
      const servers = new Set<string>();
      for (let i = 0; i < 8; i++) {
        const { reply } = await unary(client, 'echo', Buffer.from('hi'));
        servers.add(reply.toString());
      }
      assert.deepEqual([...servers].sort(), ['grpc#1:hi', 'grpc#2:hi']);
    } finally {
      client.close();
    }
  });

  test('portico deploy of spawned gRPC instances while server-streaming calls run: every call completes (the old instances drain their streams), and later calls reach the new ones', async (t) => {
    const { portico, client } = await spawnedGrpc(6, ', stop_timeout: 10s');
    try {
      /** One Count call of `n` messages: resolves with how many came, rejects on a gRPC error. */
      const count = (n: number): Promise<number> =>
        new Promise((resolve, reject) => {
          const call = client.count(Buffer.from(String(n)));
          let got = 0;
          call.on('data', () => got++);
          call.on('error', reject);
          call.on('end', () => resolve(got));
        });
      let stop = false;
      const results: Array<PromiseSettledResult<number>> = [];
      // Four callers, each call after the last, until the deploy is done (bounded: at most 400 calls each).
      const callers = Array.from({ length: 4 }, async () => {
        for (let i = 0; i < 400 && !stop; i++) {
          const [result] = await Promise.allSettled([count(200)]);
          results.push(result!);
        }
      });
      const report = await portico.server.operations.deploy('grpc');
      stop = true;
      await Promise.all(callers);
      t.diagnostic(`${results.length} calls during the deploy: ${JSON.stringify(report).slice(0, 300)}`);
      const failed = results.filter((r) => r.status === 'rejected' || r.value !== 200);
      assert.ok(results.length >= 8, `calls ran during the deploy: ${results.length}`);
      assert.deepEqual(failed.map((r) => (r.status === 'rejected' ? String(r.reason) : `got ${r.value} of 200`)), [], `${failed.length} of ${results.length} calls failed`);
      const done = report as { ok: boolean; report: { slots: Array<{ oldPid: number; newPid: number }> } };
      assert.equal(done.ok, true, JSON.stringify(report));
      assert.equal(done.report.slots.filter((slot) => slot.newPid !== slot.oldPid).length, 2, 'both instances replaced');
      const { reply } = await unary(client, 'echo', Buffer.from('after'));
      assert.match(reply.toString(), /^grpc#[12]:after$/);
    } finally {
      client.close();
    }
  });
});
