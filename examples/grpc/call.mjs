// Calls the showcase's gRPC service through Portico (https://localhost:8443, HTTP/2 with the certificate
// `npm start` made): node examples/grpc/call.mjs [NAME] [COUNT]. SayHello once, then a Countdown stream.
// --plaintext: over http://127.0.0.1:8080 instead, HTTP/2 without TLS (the listener's `http2: true`).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
const { greet } = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(here, 'greeter.proto'), { keepCase: true }));
const plaintext = process.argv.includes('--plaintext');
const [name = 'Portico', count = '3'] = process.argv.slice(2).filter((arg) => arg !== '--plaintext');
const target = process.env.PORTICO_GRPC ?? (plaintext ? '127.0.0.1:8080' : 'localhost:8443');
const credentials = plaintext ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(readFileSync(path.join(here, '../var/dev/cert.pem')));
const client = new greet.Greeter(target, credentials);

const deadline = () => new Date(Date.now() + 5000);
client.sayHello({ name }, { deadline: deadline() }, (err, reply) => {
  if (err) {
    console.error(`SayHello failed: ${grpc.status[err.code]} (${err.code}): ${err.details}`);
    process.exitCode = 1;
    return client.close();
  }
  console.log(`SayHello: ${reply.message} (from ${reply.served_by})`);
  const stream = client.countdown({ name, count: Number(count) }, { deadline: deadline() });
  stream.on('data', (r) => console.log(`Countdown: ${r.message} (from ${r.served_by})`));
  stream.on('error', (e) => {
    console.error(`Countdown failed: ${grpc.status[e.code]} (${e.code}): ${e.details}`);
    process.exitCode = 1;
  });
  stream.on('end', () => client.close());
});
