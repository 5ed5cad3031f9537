/**
 * gRPC calls through routes with Portico's other features: a cache (passed through uncached, trailers intact),
 * rate_limit, basic_auth and access rules (gRPC statuses, never pages), compress (never applied to gRPC), and the
 * access log line of a call.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { after, before, describe, test } from 'node:test';
import { grpcClient, startGrpcApp, testServiceUnder, unary, type GrpcApp, type TestClient } from '../helpers/grpc.js';
import { startPorticoH2, type RunningH2 } from '../helpers/h2.js';

/** bcrypt of "secret" (cost 4: fast in tests). */
const ALICE = '$2b$04$5I11Jyr6m5nSg9QdTZECx.lAAx/1yi3Cj7mwUsNX/G4isreFBOijy';

/** The error of a call that must fail. */
async function failure(call: Promise<unknown>): Promise<grpc.ServiceError> {
  return (await call.then(
    () => assert.fail('the call succeeded'),
    (e: unknown) => e,
  )) as grpc.ServiceError;
}

describe('gRPC through routes with cache, limits, auth and compression', () => {
  let app: GrpcApp;
  let portico: RunningH2;
  const clients: TestClient[] = [];
  const under = async (prefix: string): Promise<TestClient> => {
    const client = await grpcClient(portico.port, {}, testServiceUnder(prefix));
    clients.push(client);
    return client;
  };

  before(async () => {
    app = await startGrpcApp('app');
    portico = await startPorticoH2(`
caches: { main: { memory: 16MB } }
upstreams:
  grpc: { servers: ["h2c://127.0.0.1:${app.port}"] }
sites:
  - routes:
      - { path: /cache/, proxy: { upstream: grpc, strip_prefix: true, cache: { zone: main, default_ttl: 1m } } }
      - { path: /rate/, rate_limit: { rate: 1/h, burst: 1 }, proxy: { upstream: grpc, strip_prefix: true } }
      - path: /auth/
        basic_auth: { realm: R, users: [{ user: alice, hash: "${ALICE}" }] }
        proxy: { upstream: grpc, strip_prefix: true }
      - { path: /deny/, access: [{ deny: all }], proxy: { upstream: grpc, strip_prefix: true } }
      - { path: /gz/, compress: { breach_safe: true, min_size: 1, types: ["application/*"] }, proxy: { upstream: grpc, strip_prefix: true } }
      - { path: /, proxy: { upstream: grpc } }
`);
  });

  after(async () => {
    for (const client of clients) client.close();
    await portico?.stop();
    await app?.stop();
  });

  test('a unary call on a cached route passes through uncached, with its trailers (status and metadata) intact', async () => {
    const client = await under('/cache');
    for (const word of ['one', 'two']) {
      const { reply, trailers } = await unary(client, 'echo', Buffer.from(word));
      assert.equal(reply.toString(), `app:${word}`);
      assert.deepEqual(trailers.get('x-served-by'), ['app']);
    }
    const before = app.calls;
    await unary(client, 'echo', Buffer.from('one'));
    assert.equal(app.calls, before + 1, 'the same call again reached the app (nothing was served from the cache)');
    const err = await failure(unary(client, 'echo', Buffer.from('fail')));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(err.details, 'bad input: fail');
  });

  test('a server-streaming call on a cached route delivers every message and ends OK', async () => {
    const client = await under('/cache');
    const messages: string[] = [];
    const call = client.count!(Buffer.from('3'));
    for await (const message of call as AsyncIterable<Buffer>) messages.push(message.toString());
    assert.deepEqual(messages, ['app:0', 'app:1', 'app:2']);
  });

  test('past rate_limit a call gets UNAVAILABLE (14, as Envoy answers a 429) with a gRPC message, not a page', async () => {
    const client = await under('/rate');
    await unary(client, 'echo', Buffer.from('first'));
    const err = await failure(unary(client, 'echo', Buffer.from('second')));
    assert.equal(err.code, grpc.status.UNAVAILABLE);
    assert.equal(err.details, '429 Too Many Requests (Portico)');
  });

  test('basic_auth: a call without credentials gets UNAUTHENTICATED (16); with them it reaches the app', async () => {
    const client = await under('/auth');
    const err = await failure(unary(client, 'echo', Buffer.from('x')));
    assert.equal(err.code, grpc.status.UNAUTHENTICATED);
    assert.equal(err.details, '401 Unauthorized (Portico)');
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Basic ${Buffer.from('alice:secret').toString('base64')}`);
    const reply = await new Promise<Buffer>((resolve, reject) =>
      (client.echo as unknown as (r: Buffer, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => void)(Buffer.from('in'), metadata, (e, r) => (e === null ? resolve(r!) : reject(e))),
    );
    assert.equal(reply.toString(), 'app:in');
  });

  test('an access rule that denies gets PERMISSION_DENIED (7), not a page', async () => {
    const client = await under('/deny');
    const err = await failure(unary(client, 'echo', Buffer.from('x')));
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.equal(err.details, '403 Forbidden (Portico)');
  });

  test('compress never encodes a gRPC answer, even for a client that accepts gzip: the large message arrives whole', async () => {
    const client = await under('/gz');
    const big = Buffer.alloc(200_000, 'a');
    const metadata = new grpc.Metadata();
    metadata.set('accept-encoding', 'gzip');
    let headers: grpc.Metadata | undefined;
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const call = (client.echo as unknown as (r: Buffer, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => grpc.ClientUnaryCall)(big, metadata, (e, r) => (e === null ? resolve(r!) : reject(e)));
      call.on('metadata', (m: grpc.Metadata) => (headers = m));
    });
    assert.ok(reply.equals(big));
    assert.deepEqual(headers?.get('content-encoding'), []);
  });
});
