// The showcase's gRPC app server (greeter.proto), which Portico starts itself (upstreams.greeter in
// examples/portico.yaml: spawn with protocol h2c) and proxies at https://localhost:8443 over HTTP/2. It speaks
// HTTP/2 without TLS on 127.0.0.1:$PORT and answers the gRPC health check. By hand: PORT=50051 node server.mjs
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
const load = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(path.join(here, file), { keepCase: true }));
const { greet } = load('greeter.proto');
const health = load('health.proto').grpc.health.v1;
const port = Number(process.env.PORT ?? 50051);
const slot = process.env.PORTICO_SLOT ?? `greeter-${port}`;

const server = new grpc.Server();
server.addService(greet.Greeter.service, {
  sayHello(call, callback) {
    const name = call.request.name.trim();
    if (name === '') return callback({ code: grpc.status.INVALID_ARGUMENT, details: 'name is empty' });
    callback(null, { message: `Hello, ${name}!`, served_by: slot });
  },
  countdown(call) {
    let left = Math.min(Math.max(call.request.count || 3, 1), 100);
    const tick = setInterval(() => {
      call.write({ message: `${call.request.name || 'you'}: ${left}`, served_by: slot });
      if (--left === 0) {
        clearInterval(tick);
        call.end();
      }
    }, 100);
    call.on('cancelled', () => clearInterval(tick));
  },
});
server.addService(health.Health.service, { check: (_call, callback) => callback(null, { status: 'SERVING' }) });
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) throw err;
  console.log(`greeter ${slot} on 127.0.0.1:${port}`);
});
// SIGTERM (a deploy, a stop): calls in flight finish, new ones go to the other instance.
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
