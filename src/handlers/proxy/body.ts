/**
 * Request bodies on their way upstream: read whole (in memory, or past a threshold in a temporary file) before
 * an app server is chosen, or streamed under a size limit.
 */
import type { ClientRequest } from '../../http/context.js';
import { Transform, type Readable } from 'node:stream';
import { PorticoError } from '../../errors.js';
import { TempFile, type TempSpace } from '../../http/temp-file.js';

// A gRPC call's body (never read whole: it may be a bidirectional stream) keeps its first retry_buffer bytes.
export { ReplayableBody } from '../../upstream/replayable-body.js';

/** Reads a whole small body of a known length; `null` when the client sent less and closed. */
export function readBody(req: ClientRequest, length: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
    });
    req.once('end', () => resolve(received === length ? Buffer.concat(chunks, received) : null));
    req.once('error', () => resolve(null));
    req.once('close', () => {
      if (!req.complete) resolve(null);
    });
  });
}

/** Counts a streamed (chunked) body and stops it at `limit`. */
export function limitBody(req: ClientRequest, limit: number, onExceeded: () => void): Readable {
  // A pass-through, not a 'data' listener on `req`: a listener would switch `req` to flowing mode and every chunk
  // arriving before undici starts reading the body would be lost.
  let received = 0;
  const limited = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      if (received <= limit) return callback(null, chunk);
      // The 413 goes out with Connection: close; Node discards the rest of the body when it closes the socket.
      onExceeded();
      req.unpipe(limited);
      req.resume();
      callback(new PorticoError('PORTICO_PAYLOAD_TOO_LARGE', 'request body too large'));
    },
  });
  // Not `pipeline()`: that would destroy `req`, and with it the socket the 413 is written to.
  req.pipe(limited);
  req.once('error', (err) => limited.destroy(err));
  req.once('close', () => {
    if (!req.complete) limited.destroy(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the request body'));
  });
  return limited;
}

/** A request body read whole into a temporary file: re-readable from its start for each attempt. */
export class SpooledBody {
  constructor(
    readonly file: TempFile,
    /** Its length in bytes (sent upstream as Content-Length). */
    readonly length: number,
  ) {}

  /** A fresh stream of the whole body, for one attempt. */
  stream(): Readable {
    return this.file.stream();
  }

  /** Releases the file (nothing is left on disk: it was unlinked when created). */
  close(): Promise<void> {
    return this.file.close();
  }
}

/** Where and how much of a request body `bufferBody` keeps. */
export interface BodyBuffering {
  /** Bytes kept in memory; past them the body goes to a temporary file. */
  readonly memory: number;
  /** Where the temporary files go, and their bound in all. */
  readonly space: TempSpace;
}

/**
 * What `bufferBody` made of a body: all of it, or why not (`broken`: the client closed or sent less; `busy`: the
 * temporary files of all requests and answers are at their bound, `temp_files.max_size`).
 */
export type BufferedBody = Buffer | SpooledBody | 'too-large' | 'broken' | 'busy' | { error: Error };

/**
 * Reads a whole body of any length before anything is sent upstream: in memory up to `memory` bytes, else into a
 * temporary file, stopping at `limit` (`too-large`; the rest is left unread for the 413). `declared` is the
 * Content-Length (-1 when chunked or unknown): a body that ends shorter is `broken`. The file is closed here
 * unless it is handed over in the SpooledBody.
 */
export function bufferBody(req: ClientRequest, declared: number, limit: number, options: BodyBuffering): Promise<BufferedBody> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    /** Bytes in `chunks` not yet handed to the file (once spilling). */
    let pending = 0;
    let file: TempFile | undefined;
    let writing = false;
    let paused = false;
    let ended = false;
    let settled = false;
    const settle = (value: BufferedBody) => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      chunks.length = 0;
      if (!(value instanceof SpooledBody) && !writing) void file?.close();
      resolve(value);
    };
    const complete = () => {
      if (declared >= 0 && bytes !== declared) return settle('broken');
      settle(file === undefined ? Buffer.concat(chunks, bytes) : new SpooledBody(file, bytes));
    };
    // Writes what arrived meanwhile in one call each time (fewer, larger writes: each one is a trip to the thread
    // pool); the client keeps sending while a write runs, up to `memory` bytes waiting, then it is paused.
    const spill = async () => {
      file ??= await options.space.create();
      while (chunks.length > 0 && !settled) {
        const batch = chunks.splice(0);
        pending = 0;
        await file.appendAll(batch);
      }
    };
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > limit) return settle('too-large');
      chunks.push(chunk);
      if (file === undefined && bytes <= options.memory) return;
      pending += chunk.length;
      if (options.space.wouldExceed(pending)) return settle('busy');
      if (pending > options.memory && !paused) {
        paused = true;
        req.pause();
      }
      if (writing) return;
      writing = true;
      spill().then(
        () => {
          writing = false;
          if (settled) return void file?.close();
          if (ended) return complete();
          if (paused) {
            paused = false;
            req.resume();
          }
        },
        (err: Error) => {
          writing = false;
          void file?.close();
          settle({ error: err });
        },
      );
    };
    req.on('data', onData);
    req.once('end', () => {
      ended = true;
      if (!writing) complete();
    });
    req.once('error', () => settle('broken'));
    req.once('close', () => {
      if (!req.complete) settle('broken');
    });
  });
}
