/**
 * A streamed request body that can be sent again from its start while no more than its first `limit` bytes have
 * been read: the one replay mechanism of the request path. The proxy wraps a gRPC call's body in one (limit:
 * `retry_buffer`) so that a call that never reached an app goes to another server; the HTTP/2 transport uses
 * the same body (or wraps any other streamed body, limit 64 KB) to send a request again on another stream of the
 * same server when the first stream was refused unprocessed (REFUSED_STREAM, past a GOAWAY's last stream id).
 */
import { PassThrough, type Readable } from 'node:stream';

/** One reading of a replayable body, which it knows (so the HTTP/2 transport can ask for another). */
class BodyReading extends PassThrough {
  constructor(readonly origin: ReplayableBody) {
    super();
  }
}

/**
 * A streamed body whose first `limit` bytes are kept: each `stream()` is a new reading that starts with what was
 * kept and goes on with the rest as it arrives. Past `limit`, it can no longer be read again (`replayable`
 * false), as any streamed body.
 */
export class ReplayableBody {
  #kept: Buffer[] | null = [];
  #keptBytes = 0;
  #ended = false;
  #current: BodyReading | undefined = undefined;
  #listening = false;

  constructor(
    readonly source: Readable,
    readonly limit: number,
  ) {}

  /** The replayable body that `reading` is a reading of (undefined: another kind of stream). */
  static of(reading: Readable): ReplayableBody | undefined {
    return reading instanceof BodyReading ? reading.origin : undefined;
  }

  /** Whether everything read so far was kept: a new `stream()` gives the whole body. */
  get replayable(): boolean {
    return this.#kept !== null;
  }

  /** A new reading of the body for one attempt; the previous one's reader gets nothing more. */
  stream(): Readable {
    const previous = this.#current;
    if (previous !== undefined) {
      this.#current = undefined;
      previous.destroy();
    }
    const out = new BodyReading(this);
    // The body's failure (past max_body_size: the 413 is already answered; the client gone) may come after the
    // attempt let go of this reading: an 'error' with no listener would end the process. Its reader has its own.
    out.on('error', () => undefined);
    this.#current = out;
    if (this.#kept !== null) for (const chunk of this.#kept) out.write(chunk);
    if (this.#ended) {
      out.end();
      return out;
    }
    out.on('drain', () => {
      if (this.#current === out) this.source.resume();
    });
    if (!this.#listening) {
      this.#listening = true;
      this.source.on('data', (chunk: Buffer) => this.#data(chunk));
      this.source.once('end', () => {
        this.#ended = true;
        this.#current?.end();
      });
      this.source.once('error', (err) => this.#current?.destroy(err));
    }
    this.source.resume();
    return out;
  }

  #data(chunk: Buffer): void {
    if (this.#kept !== null) {
      this.#keptBytes += chunk.length;
      if (this.#keptBytes <= this.limit) this.#kept.push(chunk);
      else this.#kept = null;
    }
    const out = this.#current;
    if (out === undefined || out.destroyed) return void this.source.pause();
    if (!out.write(chunk)) this.source.pause();
  }
}
