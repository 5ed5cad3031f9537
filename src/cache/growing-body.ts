/**
 * A response body that is still arriving, readable by any number of clients at once: each reader first gets
 * the chunks already in, then every new one, so a collapsed miss streams the first response to every waiter
 * without waiting for it to finish. The chunks are kept, so the complete body can be stored afterwards — until
 * `release()` (the body turned out too large to store): from then on a chunk is dropped once every reader has
 * passed it, so a long response does not pile up in memory, and no new reader may join; `holdsOver` then tells
 * the writer when the readers have fallen too far behind, and when they have caught up again (each reader has its
 * own spool first, so a slow client paces the writer only once its own `buffer_response` is full).
 */

type Listener = (chunk: Buffer | null, err?: Error) => void;

/** One reader: where it is (absolute chunk index). */
interface Reader {
  at: number;
}

/** A growing, multi-reader body. */
export class GrowingBody {
  /** The chunks kept: all of them, or after `release()` those some reader has yet to pass. */
  readonly chunks: Buffer[] = [];
  /** Bytes pushed in all (released ones included). */
  bytes = 0;
  done = false;
  error: Error | undefined;
  readonly #listeners = new Set<Listener>();
  /** Where each reader is (absolute chunk index), for releasing what all have passed. */
  readonly #positions = new Set<Reader>();
  /** Absolute index of `chunks[0]`. */
  #dropped = 0;
  #retain = true;
  /** Bytes in `chunks`. */
  #held = 0;
  /** The writer waiting for the readers to catch up (see `holdsOver`). */
  #catchUp: { limit: number; resume: () => void } | null = null;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    this.#held += chunk.length;
    for (const listener of this.#listeners) listener(chunk);
    this.#trim();
  }

  end(): void {
    this.done = true;
    for (const listener of this.#listeners) listener(null);
    this.#listeners.clear();
  }

  fail(err: Error): void {
    this.error = err;
    this.done = true;
    for (const listener of this.#listeners) listener(null, err);
    this.#listeners.clear();
  }

  /** Whether a new reader can still get the whole body. */
  get joinable(): boolean {
    return this.#retain;
  }

  /** Readers still reading. */
  get readers(): number {
    return this.#positions.size;
  }

  /** Bytes kept now: all of them, or after `release()` those some reader has yet to pass. */
  get held(): number {
    return this.#held;
  }

  /**
   * After `release()`: whether more than `limit` bytes are kept for readers behind; if so, `resume` is called once
   * they are down to `limit` again (the readers passed them, or left). Always false while the body is kept whole.
   */
  holdsOver(limit: number, resume: () => void): boolean {
    if (this.#retain || this.#held <= limit) return false;
    this.#catchUp = { limit, resume };
    return true;
  }

  /** Stops keeping the whole body: it will not be stored, and only the current readers still need it. */
  release(): void {
    this.#retain = false;
    this.#trim();
  }

  /** The whole body, once done (not after `release()`). */
  concat(): Buffer {
    if (!this.#retain) throw new Error('the body was released');
    return Buffer.concat(this.chunks, this.bytes);
  }

  #trim(): void {
    if (this.#retain) return;
    let lowest = this.#dropped + this.chunks.length;
    for (const position of this.#positions) lowest = Math.min(lowest, position.at);
    if (lowest > this.#dropped) {
      for (const chunk of this.chunks.splice(0, lowest - this.#dropped)) this.#held -= chunk.length;
      this.#dropped = lowest;
    }
    const catchUp = this.#catchUp;
    if (catchUp !== null && this.#held <= catchUp.limit) {
      this.#catchUp = null;
      catchUp.resume();
    }
  }

  /**
   * Feeds a reader: replays what arrived, then follows. `write` returns false for backpressure; the reader then
   * resumes on its `drain`. Resolves when the body ended; rejects when it failed, when it was released, or when
   * `signal` aborts (the reader left: it stops holding chunks back at once).
   */
  pipeTo(write: (chunk: Buffer) => boolean, waitDrain: () => Promise<void>, signal?: AbortSignal): Promise<void> {
    if (!this.#retain) return Promise.reject(new Error('the body was released'));
    if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
    return new Promise<void>((resolve, reject) => {
      const position: Reader = { at: 0 };
      let pumping = false;
      let finished = false;
      const finish = (err?: Error) => {
        if (finished) return;
        finished = true;
        signal?.removeEventListener('abort', onAbort);
        this.#positions.delete(position);
        this.#listeners.delete(listener);
        this.#trim();
        if (err === undefined) resolve();
        else reject(err);
      };
      const onAbort = () => finish(signal!.reason as Error);
      const pump = async () => {
        if (pumping || finished) return;
        pumping = true;
        while (!finished && position.at < this.#dropped + this.chunks.length) {
          const chunk = this.chunks[position.at - this.#dropped]!;
          position.at++;
          // Once released, what this reader passed may go now: only a reader that was at the front frees anything
          // (so the scan over every reader runs once per chunk dropped, not per chunk per reader).
          if (!this.#retain && position.at - 1 === this.#dropped) this.#trim();
          if (!write(chunk)) await waitDrain();
        }
        pumping = false;
        if (finished) return;
        this.#trim();
        if (this.error !== undefined) finish(this.error);
        else if (this.done) finish();
      };
      const listener: Listener = () => void pump().catch(finish);
      if (this.done && this.error === undefined && this.chunks.length === 0) return resolve();
      this.#positions.add(position);
      if (!this.done) this.#listeners.add(listener);
      signal?.addEventListener('abort', onAbort, { once: true });
      void pump().catch(finish);
    });
  }
}
