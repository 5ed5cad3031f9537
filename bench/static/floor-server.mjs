// The Node floor: a bare `http` server answering each file's bytes from a Buffer, with the headers a static
// server must send. No static server on Node can beat this by much; Portico's target is a fraction of it.
// Usage: node floor-server.mjs PORT DOCROOT FILE...
import { readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const [port, docroot, ...files] = process.argv.slice(2);
const answers = new Map(
  files.map((name) => {
    const body = readFileSync(path.join(docroot, name));
    const headers = ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(body.length)];
    // FLOOR_HEADERS=portico: the header set Portico must send for a file (validators, ranges, Vary, Server), to
    // tell the cost of those fields from the cost of Portico's own request path.
    if (process.env.FLOOR_HEADERS === 'portico') {
      const mtime = statSync(path.join(docroot, name)).mtimeMs;
      headers.push('Accept-Ranges', 'bytes', 'ETag', `"${Math.floor(mtime).toString(16)}-${body.length.toString(16)}"`);
      headers.push('Last-Modified', new Date(mtime).toUTCString(), 'Vary', 'Accept-Encoding', 'Server', 'Portico');
    }
    return ['/' + name, { body, headers }];
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
