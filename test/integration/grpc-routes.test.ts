/**
 * gRPC calls through routes with Portico's other features: a cache (passed through uncached, trailers intact),
 * rate_limit, basic_auth and access rules (gRPC statuses, never pages), compress (never applied to gRPC), and the
 * access log line of a call (with its grpc-status).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { after, before, describe, test } from 'node:test';
import { GrpcSetup, unary, type TestClient } from '../helpers/grpc.js';
import { connectH2, h2Request, startPorticoH2, type RunningH2 } from '../helpers/h2.js';
import { eventually } from '../helpers/supervise.js';

/** bcrypt of "secret" (cost 4: fast in tests). */
const ALICE = '$2b$04$5I11Jyr6m5nSg9QdTZECx.lAAx/1yi3Cj7mwUsNX/G4isreFBOijy';

/** The error of a call that must fail. */
async function failure(call: Promise<unknown>): Promise<grpc.ServiceError> {
  return (await call.then(
    () => assert.fail('the call succeeded'),
    (e: unknown) => e,
  )) as grpc.ServiceError;
}

/** The enclosing describe's gRPC app and Portico (`config` given the app's port): started before its tests, stopped after. */
function describedSetup(config: (port: number) => string): { setup: GrpcSetup; under: (prefix: string) => Promise<TestClient> } {
  const setup = new GrpcSetup();
  before(() => setup.start(config));
  after(() => setup.stop());
  return { setup, under: (prefix) => setup.under(prefix) };
}

describe('gRPC through routes with cache, limits, auth and compression', () => {
  const { setup, under } = describedSetup(
    (port) => `
caches: { main: { memory: 16MB } }
upstreams:
  grpc: { servers: ["h2c://127.0.0.1:${port}"] }
sites:
  - routes:
      - { path: /cache/, proxy: { upstream: grpc, strip_prefix: true, cache: { zone: main, default_ttl: 1m } } }
      - { path: /rate/, rate_limit: { rate: 1/h, burst: 1 }, proxy: { upstream: grpc, strip_prefix: true } }
      - path: /auth/
        basic_auth: { realm: R, users: [{ user: alice, hash: "${ALICE}" }] }
        proxy: { upstream: grpc, strip_prefix: true }
      - { path: /deny/, access: [{ deny: all }], proxy: { upstream: grpc, strip_prefix: true } }
      - { path: /small/, max_body_size: 2KB, proxy: { upstream: grpc, strip_prefix: true } }
      - { path: /gz/, compress: { breach_safe: true, min_size: 1, types: ["application/*"] }, proxy: { upstream: grpc, strip_prefix: true } }
      - { path: /, proxy: { upstream: grpc } }
`,
  );

  test('a unary call on a cached route passes through uncached, with its trailers (status and metadata) intact', async () => {
    const client = await under('/cache');
    for (const word of ['one', 'two']) {
      const { reply, trailers } = await unary(client, 'echo', Buffer.from(word));
      assert.equal(reply.toString(), `app:${word}`);
      assert.deepEqual(trailers.get('x-served-by'), ['app']);
    }
    const before = setup.app!.calls;
    await unary(client, 'echo', Buffer.from('one'));
    assert.equal(setup.app!.calls, before + 1, 'the same call again reached the app (nothing was served from the cache)');
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

  test('a client-streaming call past max_body_size gets RESOURCE_EXHAUSTED (8), and Portico goes on serving', async () => {
    const client = await under('/small');
    const err = await failure(
      new Promise<Buffer>((resolve, reject) => {
        const call = (client.sum as unknown as (cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => grpc.ClientWritableStream<Buffer>)((e, r) => (e === null ? resolve(r!) : reject(e)));
        for (let i = 0; i < 10; i++) call.write(Buffer.alloc(1000, i));
        call.end();
      }),
    );
    assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED, err.details);
    assert.equal(err.details, '413 Content Too Large (Portico)');
    const { reply } = await unary(client, 'echo', Buffer.from('still'));
    assert.equal(reply.toString(), 'app:still');
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

describe('the access log, metrics and status of gRPC calls', () => {
  const { setup, under } = describedSetup(
    (port) => `
log: { access: ./access.log, template: "$request_uri $status $grpc_status" }
admin: {}
upstreams:
  grpc: { servers: ["h2c://127.0.0.1:${port}"] }
  down: { servers: ["h2c://127.0.0.1:1"] }
sites:
  - routes:
      - { path: /deny/, access: [{ deny: all }], proxy: { upstream: grpc, strip_prefix: true } }
      - { path: /down/, proxy: { upstream: down, strip_prefix: true } }
      - { path: /, proxy: { upstream: grpc } }
`,
  );

  test("the access log line of a call shows its grpc-status: the app's (in trailers), and Portico's own (Trailers-Only)", async () => {
    await unary(await under(''), 'echo', Buffer.from('logged'));
    await failure(unary(await under(''), 'echo', Buffer.from('fail')));
    await failure(unary(await under('/deny'), 'echo', Buffer.from('x')));
    await failure(unary(await under('/down'), 'echo', Buffer.from('x')));
    const log = path.join(setup.portico.dir, 'access.log');
    const lines = await eventually(() => {
      const logged = readFileSync(log, 'utf8').split('\n').filter((l) => l !== '');
      return logged.length >= 4 ? logged : undefined;
    }, 'four calls in the access log');
    assert.deepEqual(lines, ['/portico.Test/Echo 200 0', '/portico.Test/Echo 200 3', '/deny/portico.Test/Echo 403 7', '/down/portico.Test/Echo 502 14']);
  });

  test('metrics and the status report count the calls of each route by grpc-status, and show the h2c servers with their connections', async () => {
    const report = await eventually(async () => {
      const r = await setup.portico.server.statusReport();
      return r.routes.some((route) => route.id === '*/down/' && route.requests > 0) ? r : undefined;
    }, 'the calls counted');
    const grpc = Object.fromEntries(report.routes.filter((route) => route.grpc !== undefined).map((route) => [route.id, route.grpc]));
    assert.deepEqual(grpc, { '*/deny/': { '7': 1 }, '*/down/': { '14': 1 }, '*/': { '0': 1, '3': 1 } });
    const servers = Object.fromEntries(report.upstreams.map((u) => [u.name, u.servers.map((s) => [s.protocol, s.http2?.connections])]));
    assert.deepEqual(servers, { grpc: [['h2c', 1]], down: [['h2c', 0]] });
    const text = (await setup.portico.server.metricsText()).body;
    for (const line of ['portico_grpc_requests_total{route="*/",grpc_status="0"} 1', 'portico_grpc_requests_total{route="*/",grpc_status="3"} 1', 'portico_grpc_requests_total{route="*/deny/",grpc_status="7"} 1', 'portico_grpc_requests_total{route="*/down/",grpc_status="14"} 1']) {
      assert.ok(text.includes(line), `${line} in:\n${text.split('\n').filter((l) => l.includes('grpc')).join('\n')}`);
    }
  });
});

describe('the JSON access log of gRPC calls', () => {
  const setup = new GrpcSetup();
  after(() => setup.stop());

  test('a call\'s line has grpc_status; a line of another request has none', async () => {
    await setup.start(
      (port) => `
log: { access: ./access.log, format: json }
upstreams:
  grpc: { servers: ["h2c://127.0.0.1:${port}"] }
sites:
  - routes:
      - { path: /hello, respond: { body: "hi" } }
      - { path: /, proxy: { upstream: grpc } }
`,
    );
    await failure(unary(await setup.under(''), 'echo', Buffer.from('fail')));
    const session = await connectH2(setup.portico.origin);
    try {
      await h2Request(session, { ':path': '/hello' });
    } finally {
      session.close();
    }
    const log = path.join(setup.portico.dir, 'access.log');
    const lines = await eventually(() => {
      const parsed = readFileSync(log, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
      return parsed.length >= 2 ? parsed : undefined;
    }, 'two lines in the access log');
    assert.deepEqual(lines.map((l) => [l.uri, l.grpc_status]), [['/portico.Test/Echo', '3'], ['/hello', undefined]]);
  });
});
