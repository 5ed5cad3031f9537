// sirv (production mode, its defaults plus ETags) behind a plain `http` server, as its README shows.
// Usage: node sirv-server.mjs PORT DOCROOT
import http from 'node:http';
import sirv from 'sirv';

const [port, docroot] = process.argv.slice(2);
const serve = sirv(docroot, { etag: true });
http
  .createServer(function sirvServer(req, res) {
    serve(req, res, () => {
      res.writeHead(404).end();
    });
  })
  .listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
