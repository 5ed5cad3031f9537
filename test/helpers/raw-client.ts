/**
 * A raw-socket HTTP client for requests no well-behaved client would send (bad targets, duplicate Host,
 * smuggling attempts). Sends the bytes as given and reads the answers by their HTTP/1.1 framing (RFC 9112 §6.3):
 * interim 1xx heads are skipped, a final answer ends after its Content-Length, its last chunk and trailers, or
 * at close; answers to HEAD and 204/304 have no body. When the last answer expected says `Connection: close`,
 * the client also waits for the server to close, so that anything written after it is seen too.
 */
import net from 'node:net';

/** A parsed response head, plus the raw text of everything received. */
export interface RawResponse {
  /** Status of the first final (non-1xx) answer; 0 when none came. */
  status: number;
  /** Fields of that answer, names lower-cased. */
  headers: Record<string, string>;
  /** Everything after that answer's head, as received (chunked framing and any later answers included). */
  body: string;
  raw: string;
  /** Whether the server closed the connection. */
  closed: boolean;
}

export interface RawRequestOptions {
  /** Final answers to read (one per request sent, for pipelined requests); default 1. */
  responses?: number;
  /** Give up (reject, with what was received) after this long; default 10 s. */
  timeoutMs?: number;
  /** A slow client: read nothing for this long after sending (the server's send buffers fill), then read on. */
  stallMs?: number;
}

interface Head {
  status: number;
  headers: Record<string, string>;
  /** Offset of the first byte after the head. */
  end: number;
}

function parseHead(text: string, from: number): Head | undefined {
  const end = text.indexOf('\r\n\r\n', from);
  if (end === -1) return undefined;
  const lines = text.slice(from, end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status, headers, end: end + 4 };
}

/** End offset of a chunked body starting at `from`, or undefined while incomplete. */
function chunkedEnd(text: string, from: number): number | undefined {
  let at = from;
  for (;;) {
    const lineEnd = text.indexOf('\r\n', at);
    if (lineEnd === -1) return undefined;
    const size = parseInt(text.slice(at, lineEnd).split(';')[0]!.trim(), 16);
    if (Number.isNaN(size)) throw new Error(`raw client: bad chunk size line ${JSON.stringify(text.slice(at, lineEnd))}`);
    if (size === 0) {
      // Trailer fields, then an empty line.
      let line = lineEnd + 2;
      for (;;) {
        const next = text.indexOf('\r\n', line);
        if (next === -1) return undefined;
        if (next === line) return next + 2;
        line = next + 2;
      }
    }
    at = lineEnd + 2 + size + 2;
    if (text.length < at) return undefined;
  }
}

type Progress = { kind: 'more' } | { kind: 'done'; close: boolean } | { kind: 'until-close' };

/**
 * Walks the answers in `text`: how far the expected `responses` final answers are complete. Answers to a HEAD
 * request (the method of the first request line) have no body.
 */
function progress(text: string, head: boolean, responses: number): Progress {
  let at = 0;
  let finals = 0;
  for (;;) {
    const parsed = parseHead(text, at);
    if (parsed === undefined) return { kind: 'more' };
    const { status, headers } = parsed;
    at = parsed.end;
    if (status >= 100 && status < 200 && status !== 101) continue;
    finals++;
    let end: number | undefined;
    if (status === 101) return { kind: 'done', close: false };
    if (head || status === 204 || status === 304) end = at;
    else if (/(^|,)\s*chunked\s*$/i.test(headers['transfer-encoding'] ?? '')) end = chunkedEnd(text, at);
    else if (headers['content-length'] !== undefined) end = at + Number(headers['content-length']);
    else return { kind: 'until-close' };
    if (end === undefined || text.length < end) return { kind: 'more' };
    at = end;
    if (finals >= responses) return { kind: 'done', close: /(^|,)\s*close\s*(,|$)/i.test(headers.connection ?? '') };
  }
}

/**
 * Sends `request` (CRLFs included) to 127.0.0.1:port and resolves once the expected answers are complete (and,
 * if the last says `Connection: close`, the server closed), or when the server closes or resets the connection.
 */
export function rawRequest(port: number, request: string | Buffer, options: RawRequestOptions = {}): Promise<RawResponse> {
  const responses = options.responses ?? 1;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const head = /^HEAD /.test(Buffer.from(request).subarray(0, 5).toString('latin1'));
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    let settled = false;
    const text = () => Buffer.concat(chunks).toString('latin1');
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(parseRaw(text(), closed));
    };
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(new Error(`raw client: no complete answer within ${timeoutMs} ms; received ${JSON.stringify(text().slice(0, 400))}`));
    }, timeoutMs);
    socket.on('connect', () => {
      socket.write(request);
      if (options.stallMs === undefined) return;
      socket.pause();
      setTimeout(() => socket.resume(), options.stallMs);
    });
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      let state: Progress;
      try {
        state = progress(text(), head, responses);
      } catch (err) {
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        return reject(err as Error);
      }
      // With `Connection: close` the server is about to close: wait for that, and for anything it still writes.
      if (state.kind === 'done' && !state.close) finish();
    });
    socket.on('end', () => {
      closed = true;
      finish();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
        closed = true;
        finish();
      } else if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(err);
      }
    });
  });
}

function parseRaw(raw: string, closed: boolean): RawResponse {
  let at = 0;
  for (;;) {
    const parsed = parseHead(raw, at);
    if (parsed === undefined) return { status: 0, headers: {}, body: '', raw, closed };
    if (parsed.status >= 100 && parsed.status < 200 && parsed.status !== 101) {
      at = parsed.end;
      continue;
    }
    return { status: parsed.status, headers: parsed.headers, body: raw.slice(parsed.end), raw, closed };
  }
}
