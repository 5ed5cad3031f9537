// node-http-proxy (npm `http-proxy`) as its README shows it, with a keep-alive agent (without one it sends
// `Connection: close` upstream and opens a connection per request).
// Usage: node http-proxy-server.mjs PORT BACKEND_ORIGIN
import http from 'node:http';
import httpProxy from 'http-proxy';

const [port, origin] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const proxy = httpProxy.createProxyServer({ target: origin, agent });
proxy.on('error', (_err, _req, res) => {
  if (res.headersSent === false) res.writeHead(502, ['Content-Length', '0']);
  res.end();
});
http
  .createServer(function nodeHttpProxy(req, res) {
    proxy.web(req, res);
  })
  .listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
