/**
 * gRPC through Portico: @grpc/grpc-js clients over Portico's TLS listener (HTTP/2), @grpc/grpc-js app servers
 * behind it on h2c://. Every call kind, statuses and trailers both ways, deadlines, cancellation both ways, a
 * 4 MB message, Portico's own errors as gRPC statuses, and two app servers with one restarted under load.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { after, before, describe, test } from 'node:test';
import { grpcClient, startGrpcApp, unary, type GrpcApp, type TestClient } from '../helpers/grpc.js';
import { startPorticoH2, type RunningH2 } from '../helpers/h2.js';
import { within } from '../helpers/within.js';

describe('gRPC through Portico', () => {
  let app: GrpcApp;
  let a: GrpcApp;
  let b: GrpcApp;
  let portico: RunningH2;
  let client: TestClient;

  before(async () => {
    app = await startGrpcApp('app');
    a = await startGrpcApp('a');
    b = await startGrpcApp('b');
    portico = await startPorticoH2(`
upstreams:
  grpc:
    servers: ["h2c://127.0.0.1:${app.port}"]
  pair:
    servers: ["h2c://127.0.0.1:${a.port}", "h2c://127.0.0.1:${b.port}"]
    passive: { max_fails: 1, fail_timeout: 2s }
  down:
    servers: ["h2c://127.0.0.1:1"]
sites:
  - routes:
      - { path: /portico.Test/Hang, proxy: { upstream: grpc, buffer_response: 0 } }
      - { path: /portico.Test/Count, proxy: { upstream: pair } }
      - { path: /portico.Test/Sum, max_body_size: 16KB, proxy: { upstream: grpc } }
      - { path: /grpc.health.v1.Health/, proxy: { upstream: down } }
      - { path: /, proxy: { upstream: grpc } }
`);
    client = await grpcClient(portico.port);
  });

  after(async () => {
    client?.close();
    await portico?.stop();
    await Promise.all([app?.stop(), a?.stop(), b?.stop()]);
  });

  test('a unary call goes to the app and back, with the app trailers (custom metadata) passed on', async () => {
    const { reply, trailers } = await unary(client, 'echo', Buffer.from('hello'));
    assert.equal(reply.toString(), 'app:hello');
    assert.deepEqual(trailers.get('x-served-by'), ['app']);
  });

  test('a server-streaming call delivers every message in order', async () => {
    const messages: string[] = [];
    const call = client.count!(Buffer.from('5'));
    for await (const message of call as AsyncIterable<Buffer>) messages.push(message.toString());
    assert.equal(messages.length, 5);
    assert.match(messages[0]!, /^[ab]:0$/);
    assert.deepEqual(messages.map((m) => m.split(':')[1]), ['0', '1', '2', '3', '4']);
  });

  test('a client-streaming call sends every message before the one answer', async () => {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const call = (client.sum as unknown as (cb: (err: grpc.ServiceError | null, r?: Buffer) => void) => grpc.ClientWritableStream<Buffer>)((err, r) =>
        err !== null ? reject(err) : resolve(r!),
      );
      for (let i = 0; i < 10; i++) call.write(Buffer.alloc(1000, i));
      call.end();
    });
    assert.equal(reply.toString(), '10 messages, 10000 bytes');
  });

  test('a client-streaming call past the route max_body_size ends RESOURCE_EXHAUSTED, and the route answers the next call', async () => {
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      const call = (client.sum as unknown as (cb: (err: grpc.ServiceError | null) => void) => grpc.ClientWritableStream<Buffer>)((e) => resolve(e!));
      call.on('error', () => undefined);
      for (let i = 0; i < 40; i++) call.write(Buffer.alloc(1000, i));
      call.end();
    });
    assert.equal(err?.code, grpc.status.RESOURCE_EXHAUSTED);
    // The route still answers: the next call within the limit is summed.
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const call = (client.sum as unknown as (cb: (err: grpc.ServiceError | null, r?: Buffer) => void) => grpc.ClientWritableStream<Buffer>)((e, r) => (e !== null ? reject(e) : resolve(r!)));
      call.write(Buffer.alloc(1000));
      call.end();
    });
    assert.equal(reply.toString(), '1 messages, 1000 bytes');
  });

  test('a bidirectional call streams both ways without buffering: each answer comes before the next message is sent', async () => {
    const call = client.chat!() as unknown as grpc.ClientDuplexStream<Buffer, Buffer>;
    const heard: string[] = [];
    const next = (): Promise<string> => within('the next chat answer', new Promise((resolve) => call.once('data', (d: Buffer) => resolve(d.toString()))));
    for (const word of ['one', 'two', 'three']) {
      const answer = next();
      call.write(Buffer.from(word));
      heard.push(await answer);
    }
    call.end();
    await within('the chat to end', new Promise((resolve) => call.on('status', resolve)));
    assert.deepEqual(heard, ['app heard one', 'app heard two', 'app heard three']);
  });

  test('an error status with a message from the app reaches the client as it was sent', async () => {
    const err = (await unary(client, 'echo', Buffer.from('fail')).then(
      () => assert.fail('the call succeeded'),
      (e: unknown) => e,
    )) as grpc.ServiceError;
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(err.details, 'bad input: fail');
  });

  test('grpc-timeout is passed on to the app (as what is left of the deadline)', async () => {
    const { reply } = await unary(client, 'echo', Buffer.from('deadline'), { deadline: Date.now() + 2000 });
    const left = Number(reply.toString());
    assert.ok(left > 0 && left <= 2000, `the app saw ${left} ms left`);
  });

  test('a deadline that expires at the app ends the call DEADLINE_EXCEEDED and cancels the app handler', async () => {
    const arrived = app.nextHang();
    const failed = unary(client, 'hang', Buffer.from('x'), { deadline: Date.now() + 300 }).then(
      () => assert.fail('the call succeeded'),
      (e: unknown) => e as grpc.ServiceError,
    );
    const call = await within('the call to reach the app', arrived);
    const cancelled = within('the app to see the call cancelled', new Promise((resolve) => (call.cancelled ? resolve(true) : call.once('cancelled', () => resolve(true)))));
    assert.equal((await failed).code, grpc.status.DEADLINE_EXCEEDED);
    assert.equal(await cancelled, true);
  });

  test('a client cancel reaches the app as a cancelled call (RST_STREAM passed on)', async () => {
    const arrived = app.nextHang();
    const outcome = new Promise<grpc.ServiceError>((resolve) => {
      const c = (client.hang as unknown as (r: Buffer, cb: (err: grpc.ServiceError | null) => void) => grpc.ClientUnaryCall)(Buffer.from('x'), (err) => resolve(err!));
      void arrived.then(() => c.cancel());
    });
    const call = await within('the call to reach the app', arrived);
    await within('the app to see the cancel', new Promise((resolve) => (call.cancelled ? resolve(true) : call.once('cancelled', () => resolve(true)))));
    assert.equal((await outcome).code, grpc.status.CANCELLED);
  });

  test('a 4 MB message goes to the app and back whole', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
    const { reply } = await unary(client, 'echo', big, { deadline: Date.now() + 20_000 });
    assert.equal(reply.length, big.length);
    assert.ok(reply.equals(big));
  });

  test("Portico's own error towards a gRPC client is a gRPC status (UNAVAILABLE), not an HTML page", async () => {
    const Health = grpc.makeGenericClientConstructor(
      { check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, requestSerialize: (x: Buffer) => x, requestDeserialize: (x: Buffer) => x, responseSerialize: (x: Buffer) => x, responseDeserialize: (x: Buffer) => x } },
      'Health',
    );
    const { cert } = await import('../helpers/h2.js').then((m) => m.selfSignedCert());
    const health = new Health(`127.0.0.1:${portico.port}`, grpc.credentials.createSsl(Buffer.from(cert)), { 'grpc.ssl_target_name_override': 'localhost' });
    try {
      const err = await new Promise<grpc.ServiceError>((resolve) =>
        (health as unknown as { check: (r: Buffer, cb: (e: grpc.ServiceError | null) => void) => void }).check(Buffer.alloc(0), (e) => resolve(e!)),
      );
      assert.equal(err.code, grpc.status.UNAVAILABLE);
      assert.match(err.details, /502 Bad Gateway \(Portico\)/);
    } finally {
      health.close();
    }
  });

  test('two app servers balanced, one restarted under load: no call fails', async () => {
    let ok = 0;
    const failures: string[] = [];
    const servedBy = new Set<string>();
    let running = true;
    const worker = async (): Promise<void> => {
      for (let i = 0; running && i < 10_000; i++) {
        const messages: string[] = [];
        try {
          const call = client.count!(Buffer.from('2'));
          for await (const message of call as AsyncIterable<Buffer>) messages.push(message.toString());
          assert.equal(messages.length, 2);
          servedBy.add(messages[0]!.split(':')[0]!);
          ok++;
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const workers = Array.from({ length: 4 }, () => worker());
    const waitFor = async (what: string, cond: () => boolean): Promise<void> => {
      for (let i = 0; i < 500 && !cond(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.ok(cond(), what);
    };
    await waitFor('calls to be answered by both servers', () => servedBy.has('a') && servedBy.has('b'));
    const port = a.port;
    // A graceful stop (GOAWAY, the calls in flight finish), then the same port again.
    await within('a to stop', a.stop());
    const before = ok;
    await waitFor('calls to go on while a is down', () => ok > before + 20);
    a = await startGrpcApp('a2', port);
    servedBy.clear();
    await waitFor('the restarted a to answer again', () => servedBy.has('a2'));
    running = false;
    await within('the load to end', Promise.all(workers), 10_000);
    assert.deepEqual(failures, []);
    assert.ok(ok > 50, `${ok} calls`);
  });
});
