/**
 * Test helpers for gRPC: a test service (messages are raw bytes, so no .proto is needed) served by a real
 * @grpc/grpc-js server on port 0, and a client of it through Portico's TLS listener.
 */
import * as grpc from '@grpc/grpc-js';
import { selfSignedCert, startPorticoH2, type CertPair, type RunningH2 } from './h2.js';

const raw = { requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };

/** The test service: Echo (unary), Count (server streaming), Sum (client streaming), Chat (bidi), Hang (never answers). */
export const testService: grpc.ServiceDefinition = {
  echo: { path: '/portico.Test/Echo', requestStream: false, responseStream: false, ...raw },
  count: { path: '/portico.Test/Count', requestStream: false, responseStream: true, ...raw },
  sum: { path: '/portico.Test/Sum', requestStream: true, responseStream: false, ...raw },
  chat: { path: '/portico.Test/Chat', requestStream: true, responseStream: true, ...raw },
  hang: { path: '/portico.Test/Hang', requestStream: false, responseStream: false, ...raw },
};

/** A test client (its methods named as in `testService`). */
export type TestClient = grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientUnaryCall & grpc.ClientReadableStream<Buffer> & grpc.ClientWritableStream<Buffer> & grpc.ClientDuplexStream<Buffer, Buffer>>;

/** What a running app server saw. */
export interface GrpcApp {
  server: grpc.Server;
  port: number;
  name: string;
  /** Calls to Hang in progress, and a promise per call for its cancellation. */
  hanging: grpc.ServerUnaryCall<Buffer, Buffer>[];
  /** Resolves with each Hang call as it arrives. */
  nextHang(): Promise<grpc.ServerUnaryCall<Buffer, Buffer>>;
  calls: number;
  /** grpc.health.v1.Health/Check calls answered. */
  healthChecks: number;
  /** Health status answered by grpc.health.v1.Health/Check (1 SERVING, 2 NOT_SERVING). */
  health: number;
  stop(): Promise<void>;
}

/** Max message size both ways for the tests (a 4 MB message plus framing). */
export const MAX_MESSAGE = 8 * 1024 * 1024;

/** The gRPC health checking protocol's Check, with the status encoded by hand (field 1, varint). */
const healthService: grpc.ServiceDefinition = {
  check: { path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false, ...raw },
};

/**
 * Starts a grpc-js app server on 127.0.0.1 (`port` 0: any) named `name` (its answers say it); with `tls`, over
 * TLS with that certificate (ALPN h2), else in plain text (h2c).
 */
export async function startGrpcApp(name: string, port = 0, tls?: CertPair): Promise<GrpcApp> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': MAX_MESSAGE, 'grpc.max_send_message_length': MAX_MESSAGE });
  const waiters: Array<(call: grpc.ServerUnaryCall<Buffer, Buffer>) => void> = [];
  const app: GrpcApp = {
    server,
    port: 0,
    name,
    hanging: [],
    calls: 0,
    healthChecks: 0,
    health: 1,
    nextHang: () => new Promise((resolve) => waiters.push(resolve)),
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
  server.addService(testService, {
    echo(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      app.calls++;
      const text = call.request.length < 100 ? call.request.toString() : '';
      if (text === 'fail') return callback({ code: grpc.status.INVALID_ARGUMENT, details: 'bad input: fail' });
      const trailer = new grpc.Metadata();
      trailer.set('x-served-by', name);
      const deadline = call.getDeadline();
      const reply = text === 'deadline' ? Buffer.from(String((deadline instanceof Date ? deadline.getTime() : deadline) - Date.now())) : text === '' ? call.request : Buffer.from(`${name}:${text}`);
      // `slow:MS`: the answer (and with it the head: grpc-js sends both at once) after MS milliseconds.
      const slow = /^slow:(\d+)$/.exec(text);
      if (slow !== null) return void setTimeout(() => callback(null, reply, trailer), Number(slow[1]));
      callback(null, reply, trailer);
    },
    count(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      const n = Number(call.request.toString());
      for (let i = 0; i < n; i++) call.write(Buffer.from(`${name}:${i}`));
      call.end();
    },
    sum(call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      let bytes = 0;
      let messages = 0;
      call.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        messages++;
      });
      call.on('end', () => callback(null, Buffer.from(`${messages} messages, ${bytes} bytes`)));
    },
    chat(call: grpc.ServerDuplexStream<Buffer, Buffer>) {
      call.on('data', (chunk: Buffer) => call.write(Buffer.from(`${name} heard ${chunk.toString()}`)));
      call.on('end', () => call.end());
    },
    hang(call: grpc.ServerUnaryCall<Buffer, Buffer>) {
      app.hanging.push(call);
      waiters.shift()?.(call);
    },
  });
  server.addService(healthService, {
    check(_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      app.healthChecks++;
      callback(null, Buffer.from([0x08, app.health]));
    },
  });
  app.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      `127.0.0.1:${port}`,
      tls === undefined ? grpc.ServerCredentials.createInsecure() : grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }]),
      (err, bound) => (err === null ? resolve(bound) : reject(err)),
    ),
  );
  return app;
}

/**
 * A client of the test service (or of `service`) through Portico's TLS listener at 127.0.0.1:`port` (trusting
 * the test certificate).
 */
export async function grpcClient(port: number, options: grpc.ChannelOptions = {}, service = testService): Promise<TestClient> {
  const { cert } = await selfSignedCert();
  const Client = grpc.makeGenericClientConstructor(service, 'Test');
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(cert)), {
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
    ...options,
  }) as unknown as TestClient;
}

/** The test service with every method's path under `prefix` (for a route that strips it). */
export function testServiceUnder(prefix: string): grpc.ServiceDefinition {
  return Object.fromEntries(Object.entries(testService).map(([name, method]) => [name, { ...method, path: prefix + method.path }]));
}

/** A unary call as a promise: the answer and the trailers, or the error (with its gRPC `code`). */
export function unary(client: TestClient, method: string, request: Buffer, options: grpc.CallOptions = {}): Promise<{ reply: Buffer; trailers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let trailers = new grpc.Metadata();
    const call = (client[method] as unknown as (r: Buffer, m: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: Buffer) => void) => grpc.ClientUnaryCall)(
      request,
      new grpc.Metadata(),
      options,
      (err, reply) => (err !== null ? reject(err) : setImmediate(() => resolve({ reply: reply!, trailers }))),
    );
    call.on('status', (status: grpc.StatusObject) => (trailers = status.metadata));
  });
}

/** One app server, Portico in front of it, and the clients a test made (closed by `stop`). */
export class GrpcSetup {
  app: GrpcApp | undefined;
  portico!: RunningH2;
  readonly #clients: TestClient[] = [];

  /** Starts the app, then Portico from the YAML `config` makes of the app's port (`http2`: the listener's setting). */
  async start(config: (port: number) => string, http2?: string): Promise<void> {
    this.app = await startGrpcApp('app');
    this.portico = await startPorticoH2(config(this.app.port), {}, http2);
  }

  /** A client whose calls go under `prefix`. */
  async under(prefix: string): Promise<TestClient> {
    const client = await grpcClient(this.portico.port, {}, testServiceUnder(prefix));
    this.#clients.push(client);
    return client;
  }

  /** Closes the clients, then stops Portico and the app. */
  async stop(): Promise<void> {
    for (const client of this.#clients) client.close();
    await this.portico?.stop();
    await this.app?.stop();
  }
}
