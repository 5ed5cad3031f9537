// The HTTP/2 floor: a bare `node:http2` secure server on the compat (req, res) API — the API Portico's handlers use
// — answering the file's bytes from a Buffer. HTTP/1.1 is allowed too, so the readiness check (an https GET) works.
// Usage: node floor-h2.mjs PORT DOCROOT CERT KEY FILE...
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';

const [port, docroot, cert, key, ...files] = process.argv.slice(2);
const answers = new Map(
  files.map((name) => {
    const body = readFileSync(path.join(docroot, name));
    return ['/' + name, { body, headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(body.length) } }];
  }),
);

http2
  .createSecureServer({ cert: readFileSync(cert), key: readFileSync(key), allowHTTP1: true }, (req, res) => {
    const answer = answers.get(req.url);
    if (answer === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, answer.headers);
    res.end(answer.body);
  })
  .listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
