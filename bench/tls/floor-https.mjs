// The HTTPS floor: a bare `node:https` server answering the file's bytes from a Buffer, with the headers a static
// server must send. Usage: node floor-https.mjs PORT DOCROOT CERT KEY FILE...
import { readFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';

const [port, docroot, cert, key, ...files] = process.argv.slice(2);
const answers = new Map(
  files.map((name) => {
    const body = readFileSync(path.join(docroot, name));
    return ['/' + name, { body, headers: ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(body.length)] }];
  }),
);

https
  .createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
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
