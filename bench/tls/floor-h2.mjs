// The HTTP/2 floor: a bare `node:http2` secure server on the compat (req, res) API — the API Portico's handlers use
// — answering the file's bytes from a Buffer, its head as an object (that API's usual form). HTTP/1.1 is allowed
// too, so the readiness check (an https GET) works. Usage: node floor-h2.mjs PORT DOCROOT CERT KEY FILE...
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { floorHandler } from './floor-answers.mjs';

const [port, docroot, cert, key, ...files] = process.argv.slice(2);
http2
  .createSecureServer({ cert: readFileSync(cert), key: readFileSync(key), allowHTTP1: true }, floorHandler(docroot, files, (body) => ({ 'content-type': 'text/plain; charset=utf-8', 'content-length': String(body.length) })))
  .listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
