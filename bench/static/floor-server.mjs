// The Node floor: a bare `http` server answering each file's bytes from a Buffer, with the headers a static
// server must send. No static server on Node can beat this by much; Portico's target is a fraction of it.
// Usage: node floor-server.mjs PORT DOCROOT FILE...
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const [port, docroot, ...files] = process.argv.slice(2);
const answers = new Map(
  files.map((name) => {
    const body = readFileSync(path.join(docroot, name));
    return ['/' + name, { body, headers: ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(body.length)] }];
  }),
);

http
  .createServer(function floor(req, res) {
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
