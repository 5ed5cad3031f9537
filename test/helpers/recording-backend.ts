/**
 * A raw-socket app server that records every byte it receives, for request-smuggling tests. It frames what it
 * reads strictly by RFC 9112 (a request line, CRLF-terminated fields, then a chunked body, a Content-Length body
 * or none) and answers each complete request with a fixed `200 ok`. What a test asserts on is the record: every
 * request parsed from the bytes (with its fields and decoded body), and any bytes left over that do not make a
 * complete, well-formed request — which is what a smuggled or desynchronised request would look like.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

/** One request as the backend framed it. */
export interface RecordedRequest {
  method: string;
  target: string;
  version: string;
  /** Field lines as received: [name, value] with the value trimmed of OWS. */
  fields: Array<[string, string]>;
  /** The body, decoded from its framing (chunks joined). */
  body: string;
  /** The framing the backend used: `chunked`, `length` or `none`. */
  framing: 'chunked' | 'length' | 'none';
}

/** A recording backend on 127.0.0.1. */
export interface RecordingBackend {
  port: number;
  url: string;
  /** Every request parsed, in order of completion, over all connections. */
  requests: RecordedRequest[];
  /** Everything received, per connection, as latin1 text. */
  received(): string[];
  /**
   * Bytes received that are not (yet) a complete request, on connections still open: what a later byte could
   * complete into a request nobody sent. Malformed input included.
   */
  leftovers(): string[];
  /** Incomplete requests on connections the sender closed (an aborted body): they can never be completed. */
  abandoned(): string[];
  /** Connections on which the bytes could not be framed at all (each with the reason). */
  malformed: string[];
  /**
   * Resolves true once no open connection holds bytes of an incomplete request (they were completed, or their
   * connection closed), false if some still do after `timeoutMs`.
   */
  settled(timeoutMs?: number): Promise<boolean>;
  /** Resolves once some connection has received `text` (a request's first bytes, say). */
  waitForBytes(text: string): Promise<void>;
  /** Resolves once a request whose target is `target` has been recorded. */
  waitFor(target: string): Promise<RecordedRequest>;
  /** Forgets what was recorded so far (open connections keep their unparsed bytes). */
  reset(): void;
  stop(): Promise<void>;
}

const ANSWER = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok';

type Parsed = { request: RecordedRequest; end: number } | { more: true } | { error: string };

/** Frames one request starting at `from`, strictly. */
function parseRequest(text: string, from: number): Parsed {
  const headEnd = text.indexOf('\r\n\r\n', from);
  if (headEnd === -1) return text.length - from > 1 << 20 ? { error: 'head too long' } : { more: true };
  const head = text.slice(from, headEnd);
  if (/[\0\n\r]/.test(head.replace(/\r\n/g, ''))) return { error: 'bare CR, LF or NUL in the head' };
  const lines = head.split('\r\n');
  const start = /^([A-Z]+) (\S+) (HTTP\/1\.[01])$/.exec(lines[0]!);
  if (start === null) return { error: `bad request line ${JSON.stringify(lines[0])}` };
  const fields: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    const field = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (field === null) return { error: `bad field line ${JSON.stringify(line)}` };
    fields.push([field[1]!, field[2]!]);
  }
  const values = (name: string) => fields.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
  const te = values('transfer-encoding');
  const cl = values('content-length');
  const base = { method: start[1]!, target: start[2]!, version: start[3]!, fields };
  let at = headEnd + 4;
  if (te.length > 0) {
    if (cl.length > 0) return { error: 'both Content-Length and Transfer-Encoding' };
    if (te.join(',').toLowerCase().replace(/\s/g, '') !== 'chunked') return { error: `Transfer-Encoding ${te.join(', ')}` };
    let body = '';
    for (;;) {
      const lineEnd = text.indexOf('\r\n', at);
      if (lineEnd === -1) return { more: true };
      const sizeLine = /^([0-9a-fA-F]{1,8})(;.*)?$/.exec(text.slice(at, lineEnd));
      if (sizeLine === null) return { error: `bad chunk size ${JSON.stringify(text.slice(at, lineEnd))}` };
      const size = parseInt(sizeLine[1]!, 16);
      at = lineEnd + 2;
      if (size === 0) {
        // Trailer section, then the empty line.
        for (;;) {
          const next = text.indexOf('\r\n', at);
          if (next === -1) return { more: true };
          if (next === at) return { request: { ...base, body, framing: 'chunked' }, end: next + 2 };
          at = next + 2;
        }
      }
      if (text.length < at + size + 2) return { more: true };
      body += text.slice(at, at + size);
      if (text.slice(at + size, at + size + 2) !== '\r\n') return { error: 'chunk data not followed by CRLF' };
      at += size + 2;
    }
  }
  if (cl.length > 0) {
    if (cl.length > 1 || !/^\d+$/.test(cl[0]!)) return { error: `Content-Length ${cl.join(', ')}` };
    const length = Number(cl[0]);
    if (text.length < at + length) return { more: true };
    return { request: { ...base, body: text.slice(at, at + length), framing: 'length' }, end: at + length };
  }
  return { request: { ...base, body: '', framing: 'none' }, end: at };
}

/**
 * Starts a recording backend on 127.0.0.1, port 0. `answer` gives the bytes to write for a request (default: a
 * fixed `200 ok`), for tests of what Portico does with a misbehaving app's answers.
 */
export async function startRecordingBackend(answer: (request: RecordedRequest) => string = () => ANSWER): Promise<RecordingBackend> {
  const requests: RecordedRequest[] = [];
  const malformed: string[] = [];
  const connections: Array<{ all: string; pending: string; open: boolean; broken: boolean }> = [];
  const sockets = new Set<net.Socket>();
  let waiters: Array<{ target: string; resolve: (r: RecordedRequest) => void }> = [];
  /** Called after every change of a connection's state (data, close). */
  const watchers = new Set<() => void>();
  const changed = () => {
    for (const watcher of [...watchers]) watcher();
  };
  const unsettled = () => connections.some((conn) => conn.open && conn.pending !== '');
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const conn = { all: '', pending: '', open: true, broken: false };
    socket.on('close', () => {
      sockets.delete(socket);
      conn.open = false;
      changed();
    });
    socket.on('error', () => socket.destroy());
    connections.push(conn);
    socket.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      conn.all += text;
      conn.pending += text;
      if (!conn.broken) frame();
      changed();
    });
    function frame(): void {
      for (;;) {
        const parsed = parseRequest(conn.pending, 0);
        if ('more' in parsed) return;
        if ('error' in parsed) {
          conn.broken = true;
          malformed.push(parsed.error);
          socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          return;
        }
        conn.pending = conn.pending.slice(parsed.end);
        requests.push(parsed.request);
        socket.write(answer(parsed.request), 'latin1');
        waiters = waiters.filter((waiter) => {
          if (waiter.target !== parsed.request.target) return true;
          waiter.resolve(parsed.request);
          return false;
        });
      }
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    malformed,
    received: () => connections.map((conn) => conn.all),
    leftovers: () => connections.filter((conn) => conn.open && conn.pending !== '').map((conn) => conn.pending),
    abandoned: () => connections.filter((conn) => !conn.open && conn.pending !== '').map((conn) => conn.pending),
    settled(timeoutMs = 5000) {
      if (!unsettled()) return Promise.resolve(true);
      return new Promise((resolve) => {
        const done = (value: boolean) => {
          clearTimeout(timer);
          watchers.delete(watch);
          resolve(value);
        };
        const watch = () => {
          if (!unsettled()) done(true);
        };
        const timer = setTimeout(() => done(false), timeoutMs);
        watchers.add(watch);
      });
    },
    waitForBytes(text) {
      const arrived = () => connections.some((conn) => conn.all.includes(text));
      if (arrived()) return Promise.resolve();
      return new Promise((resolve) => {
        const watch = () => {
          if (!arrived()) return;
          watchers.delete(watch);
          resolve();
        };
        watchers.add(watch);
      });
    },
    waitFor(target) {
      const seen = requests.find((request) => request.target === target);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ target, resolve }));
    },
    reset() {
      requests.length = 0;
      malformed.length = 0;
      for (const conn of connections) conn.all = '';
      // Closed connections are done with: their abandoned bytes were reported to the case that left them.
      for (let i = connections.length - 1; i >= 0; i--) if (!connections[i]!.open) connections.splice(i, 1);
    },
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
