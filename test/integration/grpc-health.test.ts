/**
 * `health: { type: grpc }`: the gRPC health checking protocol against real @grpc/grpc-js servers. A server that
 * answers NOT_SERVING is taken out of the balance, and comes back once it answers SERVING again.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { grpcClient, startGrpcApp, unary, type GrpcApp, type TestClient } from '../helpers/grpc.js';
import { startPorticoH2, type RunningH2 } from '../helpers/h2.js';
import { parseConfig } from '../../src/server/config.js';
import { probeSlot } from '../../src/upstream/health/active.js';

describe('gRPC health checks', () => {
  let a: GrpcApp;
  let b: GrpcApp;
  let portico: RunningH2;
  let client: TestClient;

  before(async () => {
    a = await startGrpcApp('a');
    b = await startGrpcApp('b');
    portico = await startPorticoH2(`
upstreams:
  pair:
    servers: ["h2c://127.0.0.1:${a.port}", "h2c://127.0.0.1:${b.port}"]
    health: { type: grpc, interval: 50ms, timeout: 1s, rise: 1, fall: 1 }
sites:
  - routes:
      - { path: /, proxy: { upstream: pair } }
`);
    client = await grpcClient(portico.port);
  });

  after(async () => {
    client?.close();
    await portico?.stop();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  /** Calls until `n` answers in a row came from `names` only (bounded); returns how many calls that took. */
  async function untilOnly(names: string[], n: number): Promise<number> {
    let row = 0;
    for (let i = 1; i <= 2000; i++) {
      const { reply } = await unary(client, 'echo', Buffer.from('who'));
      row = names.includes(reply.toString().split(':')[0]!) ? row + 1 : 0;
      if (row >= n) return i;
      if (i % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.fail(`never ${n} answers in a row from ${names.join(', ')}`);
  }

  test('a server answering NOT_SERVING is taken out, and is back once SERVING again', async () => {
    await untilOnly(['a', 'b'], 4);
    a.health = 2;
    await untilOnly(['b'], 30);
    a.health = 1;
    // Round robin over both again: some answer from a within a bounded number of calls.
    let fromA = false;
    for (let i = 0; i < 2000 && !fromA; i++) {
      fromA = (await unary(client, 'echo', Buffer.from('who'))).reply.toString().startsWith('a:');
      if (i % 20 === 19) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(fromA, true);
  });

  test('the checks call grpc.health.v1.Health/Check on each server, each on a new connection', async () => {
    const before = [a.healthChecks, b.healthChecks];
    for (let i = 0; i < 200 && (a.healthChecks <= before[0]! + 2 || b.healthChecks <= before[1]! + 2); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(a.healthChecks > before[0]! + 2 && b.healthChecks > before[1]! + 2, `checks: a ${a.healthChecks}, b ${b.healthChecks}`);
  });
});

describe('gRPC health check answers', () => {
  test('a check whose answer is larger than 64 KB fails without reading it all (a HealthCheckResponse is a few bytes)', async () => {
    let written = 0;
    const app = http2.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/grpc' });
      // 8 MB offered at the client's pace: a reader that gives up stops it early.
      const chunk = Buffer.alloc(64 * 1024, 1);
      const more = (): void => {
        while (written < 8 * 1024 * 1024) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      res.on('error', () => undefined);
      more();
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    const port = (app.address() as AddressInfo).port;
    try {
      const config = parseConfig(`upstreams:\n  g:\n    spawn: { command: ["true"], ports: 3001-3010, protocol: h2c }\n    health: { type: grpc }\nsites: [{ routes: [{ path: /, proxy: { upstream: g } }] }]\n`, 'portico.yaml', process.cwd());
      const failure = await probeSlot(config.upstreams.g!, port, 5000);
      assert.match(String(failure), /^an answer over 65536 bytes/);
      assert.ok(written < 8 * 1024 * 1024, `the server was stopped early (${written} bytes written)`);
    } finally {
      app.close();
    }
  });
});
