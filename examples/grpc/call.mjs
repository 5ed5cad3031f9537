// Calls the showcase's gRPC service through Portico (https://localhost:8443, HTTP/2 with the certificate
// `npm start` made): node examples/grpc/call.mjs [NAME] [COUNT]. SayHello once, then a Countdown stream.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
const { greet } = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(here, 'greeter.proto'), { keepCase: true }));
const target = process.env.PORTICO_GRPC ?? 'localhost:8443';
const ca = readFileSync(path.join(here, '../var/dev/cert.pem'));
const client = new greet.Greeter(target, grpc.credentials.createSsl(ca));
const name = process.argv[2] ?? 'Portico';
const count = Number(process.argv[3] ?? 3);

const deadline = () => new Date(Date.now() + 5000);
client.sayHello({ name }, { deadline: deadline() }, (err, reply) => {
  if (err) {
    console.error(`SayHello failed: ${grpc.status[err.code]} (${err.code}): ${err.details}`);
    process.exitCode = 1;
    return client.close();
  }
  console.log(`SayHello: ${reply.message} (from ${reply.served_by})`);
  const stream = client.countdown({ name, count }, { deadline: deadline() });
  stream.on('data', (r) => console.log(`Countdown: ${r.message} (from ${r.served_by})`));
  stream.on('error', (e) => {
    console.error(`Countdown failed: ${grpc.status[e.code]} (${e.code}): ${e.details}`);
    process.exitCode = 1;
  });
  stream.on('end', () => client.close());
});
