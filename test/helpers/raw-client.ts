/**
 * A raw-socket HTTP client for requests no well-behaved client would send (bad targets, duplicate Host,
 * smuggling attempts). Sends the bytes as given and returns everything the server wrote until it closed or
 * went quiet.
 */
import net from 'node:net';

/** A parsed response head, plus the raw text of everything received. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  raw: string;
  /** Whether the server closed the connection. */
  closed: boolean;
}

/** Sends `request` (CRLFs included) to 127.0.0.1:port; resolves after close or `quietMs` of silence. */
export function rawRequest(port: number, request: string | Buffer, quietMs = 300): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(parseRaw(Buffer.concat(chunks).toString('latin1'), closed));
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(finish, quietMs);
    };
    socket.on('connect', () => {
      socket.write(request);
      arm();
    });
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      arm();
    });
    socket.on('end', () => {
      closed = true;
      finish();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET') {
        closed = true;
        finish();
      } else reject(err);
    });
  });
}

function parseRaw(raw: string, closed: boolean): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  const head = end === -1 ? raw : raw.slice(0, end);
  const lines = head.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status, headers, body: end === -1 ? '' : raw.slice(end + 4), raw, closed };
}
