/**
 * A response body that is still arriving, readable by any number of clients at once: each reader first gets
 * the chunks already in, then every new one, so a collapsed miss streams the first response to every waiter
 * without waiting for it to finish. The chunks are kept, so the complete body can be stored afterwards.
 */

type Listener = (chunk: Buffer | null, err?: Error) => void;

/** A growing, multi-reader body. */
export class GrowingBody {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  done = false;
  error: Error | undefined;
  readonly #listeners = new Set<Listener>();

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    for (const listener of this.#listeners) listener(chunk);
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

  /** The whole body, once done. */
  concat(): Buffer {
    return Buffer.concat(this.chunks, this.bytes);
  }

  /**
   * Feeds a reader: replays what arrived, then follows. `write` returns false for backpressure; the reader then
   * resumes on its `drain`. Resolves when the body ended; rejects when it failed.
   */
  pipeTo(write: (chunk: Buffer) => boolean, waitDrain: () => Promise<void>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let index = 0;
      let pumping = false;
      const pump = async () => {
        if (pumping) return;
        pumping = true;
        while (index < this.chunks.length) {
          if (!write(this.chunks[index++]!)) await waitDrain();
        }
        pumping = false;
        if (this.error !== undefined) reject(this.error);
        else if (this.done) resolve();
      };
      if (this.done && this.error === undefined && this.chunks.length === 0) return resolve();
      const listener: Listener = () => void pump().catch(reject);
      if (!this.done) this.#listeners.add(listener);
      void pump().catch(reject);
    });
  }
}
