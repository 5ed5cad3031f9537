/**
 * One kept connection to a FastCGI server and the request on it (one at a time: PHP-FPM does not multiplex):
 * writing BEGIN_REQUEST, PARAMS and STDIN, reading STDOUT (the CGI head, then the body, at the handler's pace),
 * STDERR and END_REQUEST, with the response-head and read timeouts. The pool (`pool.ts`) owns the connections.
 */
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { headEnd, MAX_HEAD, parseCgiHead } from './cgi-response.js';
import {
  decodeEndRequest,
  encodeBeginRequest,
  encodeParams,
  encodeStream,
  ProtocolStatus,
  RecordParser,
  RecordType,
  type FcgiRecord,
} from './records.js';

const REQUEST_ID = 1;
const END_OF_STDIN = Buffer.concat(encodeStream(RecordType.Stdin, REQUEST_ID, Buffer.alloc(0)));
const BEGIN_KEEP = encodeBeginRequest(REQUEST_ID, true);
const BEGIN_ONCE = encodeBeginRequest(REQUEST_ID, false);
const DASHES = /-/g;
/** The end of a connected connection no request is on (never handed to a handler nor the pool: made once). */
const IDLE_END = new Error('an idle FastCGI connection ended');
/** Methods a request may be sent again with (RFC 9110 §9.2.2), as undici's. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** The code of an answer whose head is no CGI head (for the error log: `invalid response head`). */
export const INVALID_HEAD = 'PORTICO_FCGI_INVALID_HEAD';

/** Where and how to connect, and the limits of one server's connections. */
export interface FastCgiPoolOptions {
  /** A unix socket path, or else `host` and `port`. */
  readonly socketPath?: string | undefined;
  readonly host?: string | undefined;
  readonly port?: number | undefined;
  /** Connections at most (the upstream's `keepalive`); requests past them wait in order. */
  readonly connections: number;
  /**
   * Ask the server to keep each connection for the next request (FCGI_KEEP_CONN) and reuse it; false: one request
   * per connection, which the server closes after it (nginx's and Caddy's default; safe with `pm.max_requests`).
   */
  readonly keepConn: boolean;
  readonly connectTimeout: number;
  /** Idle kept connections close after this. */
  readonly idleTimeout: number;
  /** From the request sent to the response head. */
  readonly headersTimeout: number;
  /** Between two reads of the response. */
  readonly bodyTimeout: number;
  /** What the script wrote to stderr (PHP's warnings and errors), with the script's name; for the error log. */
  readonly onStderr?: ((text: string, script: string) => void) | undefined;
}

/** An error of the transport with the code undici would give (the proxy classifies errors by code). */
export class FastCgiError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** An undici handler as the proxy's `Attempt` and undici's own `request()` are: the callbacks a connection calls. */
export type Handler = Dispatcher.DispatchHandler & {
  onConnect?(abort: (err?: Error) => void): void;
  onHeaders?(status: number, rawHeaders: Buffer[], resume: () => void, statusText?: string): boolean;
  onData?(chunk: Buffer): boolean;
  onComplete?(trailers: string[] | null): void;
  onError?(err: Error): void;
};

/** A request and its handler, queued or on a connection. */
export interface Pending {
  readonly opts: Dispatcher.DispatchOptions;
  readonly handler: Handler;
  /** Times sent again, after kept connections lost it unanswered (each such loss ends a connection: bounded). */
  resent?: number;
}

/**
 * The CGI variables of a request: the handler's list, where a name starting with an upper-case letter is a CGI
 * variable and any other (a request field's name, lower case) is sent as `HTTP_NAME`; for a request that has no
 * REQUEST_METHOD (an active check), the few variables a FastCGI server needs, from its method and path.
 */
export function paramsOf(opts: Dispatcher.DispatchOptions): { params: string[]; script: string } {
  const headers = opts.headers;
  let list: readonly string[];
  if (Array.isArray(headers)) list = headers as string[];
  else {
    const flat: string[] = [];
    if (headers !== null && headers !== undefined && typeof headers === 'object') {
      for (const [name, value] of Object.entries(headers as Record<string, string | string[] | undefined>)) {
        if (value !== undefined) flat.push(name, Array.isArray(value) ? value.join(', ') : value);
      }
    }
    list = flat;
  }
  const params: string[] = [];
  let script = '';
  let method = false;
  for (let i = 0; i + 1 < list.length; i += 2) {
    const name = list[i]!;
    const first = name.charCodeAt(0);
    if (first >= 65 && first <= 90) {
      if (name === 'REQUEST_METHOD') method = true;
      else if (name === 'SCRIPT_NAME') script = list[i + 1]!;
      params.push(name, list[i + 1]!);
      continue;
    }
    const cgi = 'HTTP_' + name.toUpperCase().replace(DASHES, '_');
    // httpoxy: a client's `Proxy` field must never become HTTP_PROXY, which CGI programs read as their proxy.
    if (cgi !== 'HTTP_PROXY') params.push(cgi, list[i + 1]!);
  }
  if (!method) {
    const path = opts.path ?? '/';
    const query = path.indexOf('?');
    const scriptName = query === -1 ? path : path.slice(0, query);
    script = scriptName;
    params.push('REQUEST_METHOD', opts.method, 'SCRIPT_NAME', scriptName, 'SCRIPT_FILENAME', scriptName, 'REQUEST_URI', path, 'QUERY_STRING', query === -1 ? '' : path.slice(query + 1));
  }
  return { params, script };
}

/** What a connection needs of its pool. */
export interface ConnectionOwner {
  readonly options: FastCgiPoolOptions;
  /** The connection is free again (its request ended well). */
  released(connection: Connection): void;
  /** The connection ended; `connectError` when it failed before it opened. */
  lost(connection: Connection, connectError: Error | undefined): void;
  /** Sends a request again on a new connection (this one lost it before any answer). */
  resend(pending: Pending): void;
}

/** One kept connection and the request on it, if any. */
export class Connection {
  readonly socket: Socket;
  readonly #pool: ConnectionOwner;
  readonly #parser: RecordParser;
  #pending: Pending | undefined = undefined;
  #script = '';
  /** Response bytes before the end of the head. */
  #head: Buffer | undefined = undefined;
  #headDone = false;
  #timer: NodeJS.Timeout | undefined = undefined;
  #connected = false;
  #closed = false;
  /** The server has sent something on this connection: a worker took it (it is not waiting in the listen queue). */
  #answered = false;
  /** When the request on it now was sent (ms since the epoch). */
  #sentAt = 0;
  /** Requests this connection has completed: a later one rides a kept connection. */
  #served = 0;
  /** The server has sent something for the request on it now. */
  #replied = false;
  /** The handler said stop (onData returned false); resumed by its `resume`. */
  #paused = false;
  /** The answer has no body (204, 304, HEAD): what the script wrote after its head is dropped, as undici does. */
  #bodyless = false;
  /** Body bytes still due by the script's Content-Length (-1: none declared; the body ends with the request). */
  #due = -1;

  constructor(pool: ConnectionOwner, socket: Socket) {
    this.#pool = pool;
    this.socket = socket;
    this.#parser = new RecordParser((record) => this.#onRecord(record));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.#answered = true;
      this.#replied = true;
      try {
        this.#parser.push(chunk);
      } catch (err) {
        this.#fail(new FastCgiError('UND_ERR_SOCKET', `FastCGI protocol error: ${(err as Error).message}`));
      }
    });
    socket.on('error', (err) => this.#fail(err));
    // 'end' (the server's FIN) comes before 'close': a connection the server is closing must not take a request.
    // The error is made only when a request is there to get it: an Error's stack costs, and every connection closes.
    const ended = (): void => this.#fail(this.#pending === undefined && this.#connected ? IDLE_END : new FastCgiError('UND_ERR_SOCKET', 'the FastCGI server closed the connection'));
    socket.on('end', ended);
    socket.on('close', ended);
  }

  /**
   * Since when (ms since the epoch) a request waits on this connection, which no worker has answered yet: it may
   * be in the server's listen queue, behind workers that each hold one of this pool's kept connections (see
   * `FastCgiPool.released`); undefined when none waits so.
   */
  get unansweredSince(): number | undefined {
    return this.#pending !== undefined && !this.#answered ? this.#sentAt : undefined;
  }

  /** The connection is open: sends `pending`. */
  connected(): void {
    this.#connected = true;
  }

  /** Sends one request on this connection. */
  send(pending: Pending): void {
    this.#pending = pending;
    this.#sentAt = Date.now();
    this.#replied = false;
    this.#head = undefined;
    this.#headDone = false;
    this.#paused = false;
    this.socket.ref();
    const { params, script } = paramsOf(pending.opts);
    this.#script = script;
    try {
      // Only ever this request's: an attempt may call its abort after the request ended here (its client left
      // while Portico still held the answer), when the connection already carries another request.
      pending.handler.onConnect?.((err) => {
        if (this.#pending === pending) this.#abort(err);
      });
    } catch (err) {
      return this.#fail(err as Error);
    }
    // Aborted from inside onConnect (the client left meanwhile).
    if (this.#pending !== pending) return;
    this.#arm(this.#pool.options.headersTimeout, 'UND_ERR_HEADERS_TIMEOUT', 'no FastCGI response head in time');
    this.socket.cork();
    this.socket.write(this.#pool.options.keepConn ? BEGIN_KEEP : BEGIN_ONCE);
    for (const part of encodeParams(REQUEST_ID, params)) this.socket.write(part);
    const body = pending.opts.body;
    if (body === null || body === undefined || (typeof body === 'string' && body.length === 0)) {
      this.socket.write(END_OF_STDIN);
      this.socket.uncork();
      return;
    }
    if (typeof body === 'string' || Buffer.isBuffer(body) || body instanceof Uint8Array) {
      const bytes = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      for (const part of encodeStream(RecordType.Stdin, REQUEST_ID, bytes)) this.socket.write(part);
      // The empty record ends the stream (FastCGI 1.0 §5.3): PHP stops at CONTENT_LENGTH, other apps read to it.
      this.socket.write(END_OF_STDIN);
      this.socket.uncork();
      return;
    }
    this.socket.uncork();
    void this.#stream(pending, body as Readable);
  }

  /** Sends a streamed body as STDIN records at the socket's pace. */
  async #stream(pending: Pending, body: Readable): Promise<void> {
    try {
      for await (const chunk of body) {
        if (this.#pending !== pending) return void body.destroy();
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
        if (bytes.length === 0) continue;
        let ok = true;
        for (const part of encodeStream(RecordType.Stdin, REQUEST_ID, bytes)) ok = this.socket.write(part);
        if (!ok) await this.#drained();
      }
      if (this.#pending === pending) this.socket.write(END_OF_STDIN);
    } catch (err) {
      if (this.#pending === pending) this.#fail(err as Error);
    }
  }

  /** Resolves when the socket can take more, or has closed (both listeners go: a long upload waits many times). */
  #drained(): Promise<void> {
    const socket = this.socket;
    return new Promise<void>((resolve) => {
      const done = (): void => {
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      socket.on('drain', done);
      socket.on('close', done);
    });
  }

  #arm(ms: number, code: string, message: string): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = ms > 0 ? setTimeout(() => this.#fail(new FastCgiError(code, `${message} (${ms}ms)`)), ms) : undefined;
  }

  #onRecord(record: FcgiRecord): void {
    const pending = this.#pending;
    if (pending === undefined || record.requestId !== REQUEST_ID) return;
    if (record.type === RecordType.Stdout) return this.#stdout(pending, record.content);
    if (record.type === RecordType.Stderr) {
      if (record.content.length > 0) this.#pool.options.onStderr?.(record.content.toString('utf8'), this.#script);
      return;
    }
    if (record.type !== RecordType.EndRequest) return;
    let status: number = ProtocolStatus.RequestComplete;
    try {
      status = decodeEndRequest(record.content).protocolStatus;
    } catch (err) {
      return this.#fail(new FastCgiError('UND_ERR_SOCKET', (err as Error).message));
    }
    if (status !== ProtocolStatus.RequestComplete) {
      const why = status === ProtocolStatus.Overloaded ? 'overloaded' : status === ProtocolStatus.CantMultiplex ? 'cannot multiplex' : 'unknown role';
      return this.#fail(new FastCgiError('UND_ERR_SOCKET', `the FastCGI server refused the request: ${why}`));
    }
    if (!this.#headDone) {
      // A script that ended before a whole head: what came is the head (PHP always ends its head; others may not).
      const head = this.#head ?? Buffer.alloc(0);
      if (!this.#deliverHead(pending, head.length === 0 ? undefined : head, Buffer.alloc(0))) return;
    }
    // Less than its Content-Length: an answer that would look complete to nobody (the client waits for the rest).
    if (this.#due > 0 && !this.#bodyless) {
      return this.#fail(new FastCgiError('UND_ERR_RES_CONTENT_LENGTH_MISMATCH', `the FastCGI response ended ${this.#due} bytes short of its Content-Length`));
    }
    this.#finish(pending);
  }

  #stdout(pending: Pending, content: Buffer): void {
    if (content.length === 0) return;
    if (this.#headDone) {
      // Records read in the same chunk as the one that paused come while paused: the timeout waits for resume.
      if (!this.#paused) this.#arm(this.#pool.options.bodyTimeout, 'UND_ERR_BODY_TIMEOUT', 'the FastCGI response stalled');
      if (this.#bodyless) return;
      const body = this.#framed(content);
      if (body.length > 0 && pending.handler.onData?.(body) === false) this.#pause();
      return;
    }
    const bytes = this.#head === undefined ? content : Buffer.concat([this.#head, content]);
    const end = headEnd(bytes);
    if (end === -1) {
      if (bytes.length > MAX_HEAD) return this.#fail(new FastCgiError('UND_ERR_HEADERS_OVERFLOW', 'FastCGI response head too large'));
      this.#head = bytes;
      return;
    }
    this.#head = undefined;
    this.#deliverHead(pending, bytes.subarray(0, end), bytes.subarray(end));
  }

  /** Hands the head (and the body bytes after it) to the handler; false when the request failed instead. */
  #deliverHead(pending: Pending, head: Buffer | undefined, rest: Buffer): boolean {
    const parsed = head === undefined ? undefined : parseCgiHead(head);
    if (parsed === undefined) {
      this.#fail(new FastCgiError(INVALID_HEAD, head === undefined ? 'the FastCGI server sent no response' : 'the FastCGI response head is not a CGI head'));
      return false;
    }
    this.#headDone = true;
    this.#bodyless = parsed.status === 204 || parsed.status === 304 || pending.opts.method === 'HEAD';
    this.#due = parsed.contentLength;
    this.#arm(this.#pool.options.bodyTimeout, 'UND_ERR_BODY_TIMEOUT', 'the FastCGI response stalled');
    const resume = (): void => {
      if (this.#paused && this.#pending === pending) {
        this.#paused = false;
        this.#arm(this.#pool.options.bodyTimeout, 'UND_ERR_BODY_TIMEOUT', 'the FastCGI response stalled');
        this.socket.resume();
      }
    };
    pending.handler.onHeaders?.(parsed.status, parsed.rawHeaders, resume);
    if (this.#pending !== pending) return false;
    const body = this.#bodyless ? rest.subarray(0, 0) : this.#framed(rest);
    if (body.length > 0 && pending.handler.onData?.(body) === false) this.#pause();
    return this.#pending === pending;
  }

  /**
   * What of `content` the answer's Content-Length still takes: bytes past it are dropped (as nginx does), never
   * sent on where the client would read them as the start of its next answer.
   */
  #framed(content: Buffer): Buffer {
    if (this.#due < 0) return content;
    const body = content.length <= this.#due ? content : content.subarray(0, this.#due);
    this.#due -= body.length;
    return body;
  }

  /** The handler said stop (a slow client): reading waits, and so does the read timeout (PHP is not idle), as undici's. */
  #pause(): void {
    if (this.#paused || this.#pending === undefined) return;
    this.#paused = true;
    this.socket.pause();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #finish(pending: Pending): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending = undefined;
    this.#served++;
    if (this.#paused) {
      this.#paused = false;
      this.socket.resume();
    }
    // A request that asked for a connection of its own (an active check's `reset`) leaves none behind; without
    // FCGI_KEEP_CONN the server closes it anyway.
    if ((pending.opts as { reset?: boolean }).reset === true || !this.#pool.options.keepConn) this.close();
    else this.#pool.released(this);
    pending.handler.onComplete?.([]);
  }

  /** The handler gave up (client gone, intercepted answer): the connection is dropped, FPM sees it close. */
  #abort(err: Error | undefined): void {
    this.#fail(err ?? new FastCgiError('UND_ERR_ABORTED', 'request aborted'));
  }

  /** Ends the connection; the request on it, if any, fails with `err`. */
  #fail(err: Error): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const pending = this.#pending;
    this.#pending = undefined;
    if (!this.#closed) {
      this.#closed = true;
      this.socket.destroy();
      this.#pool.lost(this, pending === undefined && !this.#connected ? err : undefined);
    }
    if (pending === undefined) return;
    if (this.#stale(pending, err)) {
      pending.resent = (pending.resent ?? 0) + 1;
      return this.#pool.resend(pending);
    }
    pending.handler.onError?.(err);
  }

  /**
   * Whether `err` is a kept connection's end under an idempotent request that got no answer: a PHP-FPM worker that
   * ends after a request (pm.max_requests, a graceful reload) sends END_REQUEST, then its FIN, and discards what
   * comes meanwhile, so a request written into that gap was never run. Sent again on a new connection, as nginx
   * gives a failed cached connection an extra try; a non-idempotent one is not (nginx neither), nor a streamed body.
   */
  #stale(pending: Pending, err: Error): boolean {
    // Each time, another kept connection ended (several workers may end at once): never more than there are.
    if (this.#served === 0 || this.#replied || (pending.resent ?? 0) > this.#pool.options.connections || !IDEMPOTENT.has(pending.opts.method)) return false;
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'UND_ERR_SOCKET' && code !== 'ECONNRESET' && code !== 'EPIPE') return false;
    const body = pending.opts.body;
    return body === null || body === undefined || typeof body === 'string' || Buffer.isBuffer(body) || body instanceof Uint8Array;
  }

  /** Closes an idle connection. */
  close(): void {
    // No request gets the error, and a connected one's end is no connect error: no Error (and its stack) is made.
    if (this.#pending === undefined) this.#fail(this.#connected ? IDLE_END : new FastCgiError('UND_ERR_CLOSED', 'closed'));
  }

  /** Cuts the connection and its request. */
  destroy(err: Error): void {
    this.#fail(err);
  }
}

