/**
 * A private scratch file for what does not fit in memory (a request body being buffered, the part of an answer
 * a slow client has not taken yet). Created 0600 in the given folder (made 0700 when missing) with a name never
 * used before, and unlinked as soon as it is open: the open descriptor keeps the data readable for as long as
 * Portico needs it, and nothing is left on disk whatever happens afterwards — the request ends, fails, its client
 * goes away, or Portico itself is killed with SIGKILL. Data is written and read at explicit positions, so the
 * same file can be re-read from the start for each attempt of a retried request while nothing else moves.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';

/** Largest piece read at once by `stream()`: fewer trips to the thread pool for a body sent upstream. */
const READ_CHUNK = 256 * 1024;

/**
 * Where temporary files go, and how many bytes all of them may hold at once (`temp_files.max_size`). One per running
 * config (scope: process; a reload's runtime starts its own while the old one drains): each answer and body is
 * bounded on its own (`buffer_response`, `max_body_size`), and this bounds their sum, so that many slow clients
 * cannot fill the disk. Past it, answers go at their client's pace and request bodies are refused with 503.
 */
export class TempSpace {
  /** Bytes held in this space's files now. */
  used = 0;
  /** Bytes on their way to a file (queued behind a write): counted against the bound as if written. */
  pending = 0;
  constructor(
    readonly dir: string,
    readonly max: number,
  ) {}

  /** Whether `more` bytes would pass the bound. */
  wouldExceed(more: number): boolean {
    return this.used + this.pending + more > this.max;
  }

  /** A new temporary file in this space. */
  create(): Promise<TempFile> {
    return TempFile.create(this.dir, this);
  }
}

/** An open, already unlinked, temporary file. */
export class TempFile {
  readonly #handle: FileHandle;
  readonly #space: TempSpace | undefined;
  /** Where the next append goes; also the length of the data (after `reset()`, what was written since). */
  #size = 0;
  #closed: Promise<void> | undefined;

  private constructor(handle: FileHandle, space: TempSpace | undefined) {
    this.#handle = handle;
    this.#space = space;
  }

  /** Creates a temporary file in `dir` (which is made, 0700, when missing), its bytes counted in `space`. */
  static async create(dir: string, space?: TempSpace): Promise<TempFile> {
    const name = path.join(dir, `portico-${process.pid}-${randomBytes(8).toString('hex')}.tmp`);
    let handle: FileHandle;
    try {
      handle = await open(name, 'wx+', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(dir, { recursive: true, mode: 0o700 });
      handle = await open(name, 'wx+', 0o600);
    }
    try {
      await unlink(name);
    } catch (err) {
      // Not unlinkable while open would leave a file behind: refuse to use it rather than leak it.
      await handle.close();
      throw err;
    }
    return new TempFile(handle, space);
  }

  /** Bytes written (since the last `reset()`). */
  get size(): number {
    return this.#size;
  }

  /** Appends a chunk; calls must not overlap (each waits for the one before). */
  async append(chunk: Buffer): Promise<void> {
    const at = this.#size;
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await this.#handle.write(chunk, done, chunk.length - done, at + done);
      done += bytesWritten;
    }
    this.#size = at + chunk.length;
    if (this.#space !== undefined) this.#space.used += chunk.length;
  }

  /** Appends chunks in one write where the system allows (writev); calls must not overlap. */
  async appendAll(chunks: readonly Buffer[]): Promise<void> {
    if (chunks.length === 1) return this.append(chunks[0]!);
    let total = 0;
    for (const chunk of chunks) total += chunk.length;
    const { bytesWritten } = await this.#handle.writev(chunks as Buffer[], this.#size);
    this.#size += bytesWritten;
    if (this.#space !== undefined) this.#space.used += bytesWritten;
    // A short write (rare for a file): the rest goes the plain way.
    if (bytesWritten < total) await this.append(Buffer.concat(chunks as Buffer[], total).subarray(bytesWritten));
  }

  /** Reads `length` bytes at `position` (fewer only at the end of the data). */
  async read(position: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#handle.read(buffer, done, length - done, position + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done === length ? buffer : buffer.subarray(0, done);
  }

  /** Starts writing from the beginning again (what was written is no longer needed); the space is reused. */
  reset(): void {
    if (this.#space !== undefined) this.#space.used -= this.#size;
    this.#size = 0;
  }

  /**
   * A new stream of the whole data, from the first byte. Its own positional reads, not `createReadStream()`: a
   * FileHandle's stream closes the handle when destroyed (an attempt that failed), whatever `autoClose` says.
   */
  stream(): Readable {
    const end = this.#size;
    let at = 0;
    const file = this;
    return new Readable({
      highWaterMark: READ_CHUNK,
      read() {
        if (at >= end) return void this.push(null);
        const length = Math.min(READ_CHUNK, end - at);
        file.read(at, length).then(
          (buffer) => {
            if (buffer.length !== length) return void this.destroy(new Error('the temporary file ended early'));
            at += length;
            this.push(buffer);
          },
          (err: Error) => this.destroy(err),
        );
      },
    });
  }

  /** Closes the file (its data is gone with it); later calls return the same promise. */
  close(): Promise<void> {
    if (this.#closed === undefined && this.#space !== undefined) this.#space.used -= this.#size;
    this.#closed ??= this.#handle.close().catch(() => undefined);
    return this.#closed;
  }
}
