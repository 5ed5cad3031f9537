// The gRPC app server of the gRPC benchmark: @grpc/grpc-js, one unary method (Echo, raw bytes), on an insecure
// port (behind the proxies) and a TLS port (the direct row). Prints "ready" once both are bound.
//   node app.mjs INSECURE_PORT TLS_PORT CERT_FILE KEY_FILE
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

const [insecurePort, tlsPort, certFile, keyFile] = process.argv.slice(2);
const raw = { requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b };
const service = { echo: { path: '/bench.Echo/Echo', requestStream: false, responseStream: false, ...raw } };
const server = new grpc.Server();
server.addService(service, { echo: (call, callback) => callback(null, call.request) });
const bind = (address, credentials) => new Promise((resolve, reject) => server.bindAsync(address, credentials, (err, port) => (err ? reject(err) : resolve(port))));
await bind(`127.0.0.1:${insecurePort}`, grpc.ServerCredentials.createInsecure());
await bind(`127.0.0.1:${tlsPort}`, grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(certFile), private_key: readFileSync(keyFile) }]));
console.log('ready');
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
