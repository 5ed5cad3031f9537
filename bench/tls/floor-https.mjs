// The HTTPS floor: a bare `node:https` server answering the file's bytes from a Buffer, with the headers a static
// server must send. Usage: node floor-https.mjs PORT DOCROOT CERT KEY FILE...
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { floorHandler } from './floor-answers.mjs';

const [port, docroot, cert, key, ...files] = process.argv.slice(2);
https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, floorHandler(docroot, files, (body) => ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(body.length)])).listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
