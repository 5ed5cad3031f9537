/**
 * Real backend servers for proxy tests: Node http servers on 127.0.0.1 port 0 whose behaviour a test supplies.
 * They can be stopped and started again on the same port, as an app server is during a deploy.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** A test backend. */
export interface TestUpstream {
  url: string;
  port: number;
  /** Requests seen, in order. */
  requests: Array<{ method: string; url: string; headers: IncomingMessage['headers']; body: string }>;
  /** Stops listening and cuts open connections. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  restart(): Promise<void>;
  server: http.Server;
}

/** Handler of a test backend; the body is read in full beforehand and passed in. */
export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

/** Starts a backend; by default it answers 200 with `name` as the body. */
export async function startUpstream(handler: UpstreamHandler | string = 'ok', port = 0): Promise<TestUpstream> {
  const requests: TestUpstream['requests'] = [];
  const handle: UpstreamHandler =
    typeof handler === 'string'
      ? (_req, res) => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end(handler);
        }
      : handler;
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      requests.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      handle(req, res, body);
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const listen = (p: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(port);
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}`,
    port: bound,
    requests,
    server,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
    restart: () => listen(bound),
  };
}

/** Closes an HTTP server a test made itself: its open connections are cut, and it resolves once it stopped listening. */
export function closeHttpServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise<void>((resolve) => server.close(() => resolve()));
}
