// The floor for `bench -- workers`: a bare Node http server answering 1 KiB, in one process or as node:cluster
// workers (a shared socket, as Portico on Node 20; reusePort on Node >= 22.12 when FLOOR_REUSEPORT=1). It tells
// what spreading a fixed request rate over N processes costs by itself, Portico aside.
//
// Usage: node floor.mjs PORT WORKERS
import cluster from 'node:cluster';
import http from 'node:http';

const [port, workers] = process.argv.slice(2).map(Number);
const BODY = Buffer.from('x'.repeat(1023) + '\n');
const reusePort = process.env.FLOOR_REUSEPORT === '1';

function serve() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': BODY.length });
    res.end(BODY);
  });
  server.listen(reusePort ? { port, host: '127.0.0.1', reusePort: true, exclusive: true } : { port, host: '127.0.0.1' }, () => {
    if (cluster.isWorker) process.send('ready');
    else process.stderr.write(`floor serving on ${port}\n`);
  });
}

if (workers <= 1) serve();
else if (cluster.isPrimary) {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let ready = 0;
  for (let i = 0; i < workers; i++) {
    cluster.fork().on('message', () => {
      if (++ready === workers) process.stderr.write(`floor serving on ${port} with ${workers} workers\n`);
    });
  }
  process.on('SIGTERM', () => {
    for (const worker of Object.values(cluster.workers)) worker.kill();
    process.exit(0);
  });
} else serve();
