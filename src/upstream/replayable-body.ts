/**
 * A streamed request body that can be sent again from its start while no more than its first `limit` bytes have
 * been read: the one replay mechanism of the request path. The proxy wraps a gRPC call's body in one (limit:
 * `retry_buffer`) so that a call that never reached an app goes to another server; the HTTP/2 transport uses
 * the same body (or wraps any other streamed body, limit 64 KB) to send a request again on another stream of the
 * same server when the first stream was refused unprocessed (REFUSED_STREAM, past a GOAWAY's last stream id).
 *
 * The HTTP/2 transport has it write each reading straight into the stream (`sendTo`), with no stream object
 * between (a PassThrough and a pipe per call cost about 12 % of a unary gRPC call's CPU, bench/RESULTS.md);
 * `stream()` gives a reading as a Readable, for undici's HTTP/1.1 dispatchers.
 */
import { PassThrough, type Readable } from 'node:stream';
import { PorticoError } from '../errors.js';

/** Where a reading is written: an HTTP/2 stream (or the PassThrough of `stream()`). */
export interface BodyTarget {
  write(chunk: Buffer): boolean;
  end(): void;
  once(event: 'drain', listener: () => void): unknown;
}

/** What a `ReplayableBody` also watches: the body's size (`sizeLimit`, with what to do past it). */
export interface BodyLimit {
  readonly sizeLimit: number;
  readonly onExceeded: () => void;
}

const NO_LIMIT: BodyLimit = { sizeLimit: Infinity, onExceeded: () => undefined };

/**
 * A streamed body whose first `limit` bytes are kept: each reading starts with what was kept and goes on with the
 * rest as it arrives. Past `limit`, it can no longer be read again (`replayable` false), as any streamed body. The
 * client's body is counted here against `sizeLimit` (a chunked body's `max_body_size`), which spares a Transform.
 */
export class ReplayableBody {
  #kept: Buffer[] | null = [];
  #keptBytes = 0;
  #received = 0;
  #ended = false;
  /** Why the body can no longer be read (the client left, it passed its size limit, the source failed). */
  #error: Error | undefined = undefined;
  #target: BodyTarget | undefined = undefined;
  #onError: ((err: Error) => void) | undefined = undefined;
  /** The last reading `stream()` made (destroyed when another begins). */
  #readable: PassThrough | undefined = undefined;
  #listening = false;
  /** A reading has begun (before it, what arrives is read ahead: kept whole, up to `limit`). */
  #begun = false;
  readonly #bodyLimit: BodyLimit;

  constructor(
    readonly source: Readable,
    readonly limit: number,
    bodyLimit: BodyLimit = NO_LIMIT,
  ) {
    this.#bodyLimit = bodyLimit;
  }

  /** Whether everything read so far was kept: a new reading gives the whole body. */
  get replayable(): boolean {
    return this.#kept !== null;
  }

  /** A new reading of the body as a Readable, for one attempt; the previous reading gets nothing more. */
  stream(): Readable {
    const out = new PassThrough();
    // The body's failure (past max_body_size: the 413 is already answered; the client gone) may come after the
    // attempt let go of this reading: an 'error' with no listener would end the process. Its reader has its own.
    out.on('error', () => undefined);
    this.sendTo(out, (err) => out.destroy(err));
    this.#readable = out;
    return out;
  }

  /**
   * Starts a new reading into `target`, what was kept first; the previous reading's target gets nothing more.
   * `onError` is told when the body cannot be read to its end (never from inside this call).
   */
  sendTo(target: BodyTarget, onError: (err: Error) => void): void {
    const previous = this.#readable;
    if (previous !== undefined) {
      this.#readable = undefined;
      previous.destroy();
    }
    this.#begun = true;
    this.#target = target;
    this.#onError = onError;
    if (this.#kept !== null) for (const chunk of this.#kept) target.write(chunk);
    // Read ahead past `limit` (its last chunk): sent whole this once, but no longer kept for another reading.
    if (this.#keptBytes > this.limit) this.#kept = null;
    if (this.#error !== undefined) {
      const err = this.#error;
      process.nextTick(() => this.#onError === onError && onError(err));
      return;
    }
    if (this.#ended) return void target.end();
    this.#listen();
    this.source.resume();
  }

  /**
   * Starts reading before the first reading is asked for (the HTTP/2 transport may wait for a stream): what
   * arrives is kept, up to `limit`, so that the request's HEADERS, its body and its end can leave together.
   */
  readAhead(): void {
    if (this.#begun || this.#error !== undefined || this.#ended) return;
    this.#listen();
    if (this.#keptBytes < this.limit) this.source.resume();
  }

  #listen(): void {
    if (this.#listening) return;
    this.#listening = true;
    this.source.on('data', (chunk: Buffer) => this.#data(chunk));
    this.source.once('end', () => {
      this.#ended = true;
      this.#target?.end();
    });
    this.source.once('error', (err) => this.#fail(err));
    this.source.once('close', () => {
      if (!this.#ended) this.#fail(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the request body'));
    });
  }

  /** `target` is gone (its stream closed): nothing more is read for it until another reading starts. */
  detach(target: BodyTarget): void {
    if (this.#target !== target) return;
    this.#target = undefined;
    this.#onError = undefined;
    if (!this.#ended && this.#error === undefined) this.source.pause();
  }

  readonly #resume = (): void => {
    if (this.#target !== undefined && this.#error === undefined) this.source.resume();
  };

  #fail(err: Error): void {
    if (this.#error !== undefined || this.#ended) return;
    this.#error = err;
    this.#kept = null;
    const onError = this.#onError;
    this.#target = undefined;
    this.#onError = undefined;
    onError?.(err);
  }

  #data(chunk: Buffer): void {
    if (this.#error !== undefined) return;
    this.#received += chunk.length;
    if (this.#received > this.#bodyLimit.sizeLimit) {
      // The 413 goes out with Connection: close; the rest of the body is read and dropped.
      this.#bodyLimit.onExceeded();
      this.#fail(new PorticoError('PORTICO_PAYLOAD_TOO_LARGE', 'request body too large'));
      return void this.source.resume();
    }
    if (!this.#begun) {
      // Read ahead: kept whole (the first reading needs all of it), paused once `limit` is reached.
      this.#kept!.push(chunk);
      this.#keptBytes += chunk.length;
      if (this.#keptBytes >= this.limit) this.source.pause();
      return;
    }
    if (this.#kept !== null) {
      this.#keptBytes += chunk.length;
      if (this.#keptBytes <= this.limit) this.#kept.push(chunk);
      else this.#kept = null;
    }
    const target = this.#target;
    if (target === undefined) return void this.source.pause();
    // A 'drain' listener only when the reader is full: a unary call's body never needs one.
    if (!target.write(chunk)) {
      this.source.pause();
      target.once('drain', this.#resume);
    }
  }
}
