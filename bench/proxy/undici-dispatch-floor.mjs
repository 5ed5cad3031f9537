// A tighter Node floor than undici-floor.mjs: the same pass-through on undici's low-level `dispatch()` with a
// plain handler object (no Readable body, no promise per request), which is also how Portico forwards. It
// shows how much of the two hops is Node and undici themselves. Not a target of the benchmark: for reference.
// Usage: node undici-dispatch-floor.mjs PORT BACKEND_ORIGIN
import http from 'node:http';
import { Pool } from 'undici';

const [port, origin] = process.argv.slice(2);
const pool = new Pool(origin, { connections: 64, pipelining: 1 });
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);

function requestHeaders(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
  return out;
}

class PassThrough {
  constructor(res) {
    this.res = res;
  }
  onConnect() {}
  onHeaders(statusCode, rawHeaders, resume) {
    const headers = [];
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i].toString('latin1');
      if (!HOP.has(name.toLowerCase())) headers.push(name, rawHeaders[i + 1].toString('latin1'));
    }
    this.res.writeHead(statusCode, headers);
    this.res.on('drain', resume);
    return true;
  }
  onData(chunk) {
    return this.res.write(chunk);
  }
  onComplete() {
    this.res.end();
  }
  onError() {
    if (!this.res.headersSent) this.res.writeHead(502, ['Content-Length', '0']);
    this.res.end();
  }
}

http
  .createServer(function undiciDispatchFloor(req, res) {
    pool.dispatch({ path: req.url, method: req.method, headers: requestHeaders(req.rawHeaders), body: null }, new PassThrough(res));
  })
  .listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
