/**
 * Regression tests from the review of gRPC through Portico (issue 20): @grpc/grpc-js clients over Portico's TLS
 * listener, @grpc/grpc-js app servers behind it on h2c://.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { grpcClient, startGrpcApp, unary, type GrpcApp, type TestClient } from '../helpers/grpc.js';
import { startPorticoH2, type RunningH2 } from '../helpers/h2.js';

describe('gRPC review regressions', () => {
  let app: GrpcApp;
  let portico: RunningH2;
  let client: TestClient;

  before(async () => {
    app = await startGrpcApp('app');
    portico = await startPorticoH2(`
upstreams:
  grpc:
    servers: ["h2c://127.0.0.1:${app.port}"]
sites:
  - routes:
      - { path: /, proxy: { upstream: grpc } }
`);
    client = await grpcClient(portico.port);
  });

  after(async () => {
    client?.close();
    await portico?.stop();
    await app?.stop();
  });

  test('a deadline 30 days away (past a timer\'s 24.8 days) is not taken as passed: the call succeeds', async () => {
    // (grpc-js's own server reads so long a deadline wrongly, as it does from a direct client: not checked here.)
    const { reply } = await unary(client, 'echo', Buffer.from('x'), { deadline: Date.now() + 30 * 24 * 3600 * 1000 });
    assert.equal(reply.toString(), 'app:x');
  });

  test('a deadline of 3 days is passed on as what is left of it (past 8 digits of ms, the most grpc-timeout holds: in seconds)', async () => {
    const days3 = 3 * 24 * 3600 * 1000;
    const { reply } = await unary(client, 'echo', Buffer.from('deadline'), { deadline: Date.now() + days3 });
    const left = Number(reply.toString());
    assert.ok(left > days3 - 120_000 && left <= days3, `the app saw ${left} ms left`);
  });
});
