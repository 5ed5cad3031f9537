/**
 * What a slow client has not taken yet of one answer, held by Portico so that the app server is read at its own
 * pace, not the client's (nginx's `proxy_buffering`). A spool starts when the client's connection first refuses
 * more (`write()` said false): until then every chunk went straight through, so a client that keeps up gets the
 * head and first bytes with no delay and costs nothing here. From then on chunks queue in order: in memory up to
 * `memory` bytes, then appended to one temporary file (reused from its start whenever the client has caught up),
 * and go out as the client drains them. Past `limit` bytes held, `push()` says false and the upstream waits for
 * the client again (nginx when `proxy_max_temp_file_size` is reached). A client that goes away releases it all.
 */
import type { ClientResponse } from '../../http/context.js';
import type { TempFile, TempSpace } from '../../http/temp-file.js';

/** Largest piece read back from the file at once. */
const READ_CHUNK = 64 * 1024;

/** How much one answer may hold, and where. */
export interface SpoolLimits {
  /** Bytes held in all (memory and file); past them the upstream waits for the client. */
  readonly limit: number;
  /** Bytes held in memory before the rest goes to the file. */
  readonly memory: number;
  /** Where the temporary files go, and their bound in all: once it is reached, answers go at their client's pace. */
  readonly space: TempSpace;
}

/** The queue between a fast upstream and a slow client, for one answer. */
export class ResponseSpool {
  readonly #res: ClientResponse;
  readonly #o: SpoolLimits;
  readonly #resume: (() => void) | null;
  readonly #onError: (err: Error) => void;
  /** Chunks in memory; they all come before the file's. */
  #memory: Buffer[] = [];
  #memoryBytes = 0;
  #file: TempFile | undefined;
  /** Chunks waiting to be appended to the file. */
  #toFile: Buffer[] = [];
  #appending = false;
  /** Where the client's next bytes are read from the file. */
  #fileRead = 0;
  #reading = false;
  /** Bytes held: memory, waiting for the file, and in the file unread. */
  #held = 0;
  #waitingDrain = true;
  #paused = false;
  #ended = false;
  #released = false;

  /** Counts the bytes handed to the client's connection (the request's `bytesSent`, which the access log reports). */
  readonly #counter: { bytesSent: number };
  /** Bytes waiting to be appended to the file, counted in the space's `pending` meanwhile. */
  #toFileBytes = 0;

  /** Starts holding for `res`, whose last write said false; `resume` restarts a paused upstream. */
  constructor(res: ClientResponse, limits: SpoolLimits, resume: (() => void) | null, onError: (err: Error) => void, counter = { bytesSent: 0 }) {
    this.#res = res;
    this.#counter = counter;
    this.#o = limits;
    this.#resume = resume;
    this.#onError = onError;
    res.on('drain', this.#onDrain);
    res.once('close', this.release);
  }

  /** Bytes held for the client now. */
  get held(): number {
    return this.#held;
  }

  /** Takes the next chunk of the answer; false when past the limit (the upstream waits for `resume`). */
  push(chunk: Buffer): boolean {
    if (this.#released) return true;
    if (this.#held === 0 && !this.#waitingDrain) {
      this.#counter.bytesSent += chunk.length;
      if (!this.#res.write(chunk)) this.#waitingDrain = true;
      return true;
    }
    this.#held += chunk.length;
    if (!this.#fileBacklog() && this.#memoryBytes + chunk.length <= this.#o.memory) {
      this.#memory.push(chunk);
      this.#memoryBytes += chunk.length;
    } else {
      this.#toFile.push(chunk);
      this.#toFileBytes += chunk.length;
      this.#o.space.pending += chunk.length;
      this.#append();
    }
    if (this.#held <= this.#o.limit && !this.#o.space.wouldExceed(0)) return true;
    this.#paused = true;
    return false;
  }

  /** The answer is complete: the response ends once the client has taken what is held. */
  end(): void {
    this.#ended = true;
    this.#pump();
  }

  /** Drops everything held and closes the file (the client went away, or the answer failed). */
  readonly release = (): void => {
    if (this.#released) return;
    this.#released = true;
    this.#memory = [];
    this.#toFile = [];
    this.#o.space.pending -= this.#toFileBytes;
    this.#toFileBytes = 0;
    this.#held = 0;
    this.#res.off('drain', this.#onDrain);
    this.#res.off('close', this.release);
    // A paused upstream would wait for a resume that cannot come: the forward's client-gone abort ends it, or,
    // when the answer failed, the response was destroyed, which does the same.
    void this.#file?.close();
  };

  #fileBacklog(): boolean {
    return this.#toFile.length > 0 || this.#appending || (this.#file !== undefined && this.#fileRead < this.#file.size);
  }

  readonly #onDrain = (): void => {
    this.#waitingDrain = false;
    this.#pump();
  };

  /** Writes what is held while the client takes it: memory first, then the file, then the end. */
  #pump(): void {
    if (this.#released || this.#reading) return;
    while (!this.#waitingDrain) {
      const chunk = this.#memory.shift();
      if (chunk !== undefined) {
        this.#memoryBytes -= chunk.length;
        this.#held -= chunk.length;
        this.#counter.bytesSent += chunk.length;
        if (!this.#res.write(chunk)) this.#waitingDrain = true;
        continue;
      }
      const file = this.#file;
      if (file !== undefined && this.#fileRead < file.size) return this.#readFile(file);
      break;
    }
    // With the space full (other answers hold it), the upstream resumes only once this client took all: its pace.
    if (this.#paused && this.#held <= this.#o.limit && (this.#held === 0 || !this.#o.space.wouldExceed(0))) {
      this.#paused = false;
      this.#resume?.();
    }
    if (this.#ended && this.#held === 0) {
      this.release();
      this.#res.end();
    }
  }

  #readFile(file: TempFile): void {
    this.#reading = true;
    const at = this.#fileRead;
    const length = Math.min(READ_CHUNK, file.size - at);
    file.read(at, length).then(
      (buffer) => {
        this.#reading = false;
        if (this.#released) return;
        if (buffer.length !== length) return this.#fail(new Error('the temporary file ended early'));
        this.#fileRead += length;
        this.#held -= length;
        // Caught up with everything written: the next spill starts again at the file's beginning.
        if (this.#fileRead === file.size && !this.#appending && this.#toFile.length === 0) {
          file.reset();
          this.#fileRead = 0;
        }
        this.#counter.bytesSent += buffer.length;
        if (!this.#res.write(buffer)) this.#waitingDrain = true;
        this.#pump();
      },
      (err: Error) => {
        this.#reading = false;
        this.#fail(err);
      },
    );
  }

  #append(): void {
    if (this.#appending) return;
    this.#appending = true;
    this.#appendAll().then(
      () => this.#pump(),
      (err: Error) => {
        this.#appending = false;
        this.#fail(err);
      },
    );
  }

  async #appendAll(): Promise<void> {
    if (this.#file === undefined) {
      const file = await this.#o.space.create();
      if (this.#released) return void file.close();
      this.#file = file;
    }
    while (this.#toFile.length > 0 && !this.#released) {
      const batch = this.#toFile.splice(0);
      let bytes = 0;
      for (const chunk of batch) bytes += chunk.length;
      // From waiting to written: counted in `used` by the file once the append is done.
      this.#toFileBytes -= bytes;
      this.#o.space.pending -= bytes;
      await this.#file.appendAll(batch);
      // What is written may go out while the next batch is appended.
      this.#pump();
    }
    // In the same tick as the loop's last check: a chunk pushed from now on starts a new round, none is left behind.
    this.#appending = false;
  }

  #fail(err: Error): void {
    if (this.#released) return;
    this.release();
    this.#onError(err);
  }
}
