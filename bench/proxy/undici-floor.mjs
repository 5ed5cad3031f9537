// The Node floor for a proxy: a bare `http` server that forwards each request with an undici Pool and pipes
// status, headers and body back. No header rebuilding, no retries, no health, no log: nothing a real proxy
// must do beyond the two hops themselves. Portico's target is a fraction of this.
// Usage: node undici-floor.mjs PORT BACKEND_ORIGIN
import http from 'node:http';
import { pipeline } from 'node:stream';
import { Pool } from 'undici';

const [port, origin] = process.argv.slice(2);
const pool = new Pool(origin, { connections: 64, pipelining: 1 });
// Only what must not cross a hop (RFC 9110 §7.6.1); everything else goes through as it came.
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);

function forwardable(headers) {
  const out = {};
  for (const name in headers) if (!HOP.has(name)) out[name] = headers[name];
  return out;
}

http
  .createServer(async function undiciFloor(req, res) {
    try {
      const { statusCode, headers, body } = await pool.request({
        path: req.url,
        method: req.method,
        headers: forwardable(req.headers),
        body: req.method === 'GET' || req.method === 'HEAD' ? null : req,
      });
      res.writeHead(statusCode, forwardable(headers));
      pipeline(body, res, () => {});
    } catch {
      if (!res.headersSent) res.writeHead(502, ['Content-Length', '0']);
      res.end();
    }
  })
  .listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
