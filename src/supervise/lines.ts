/**
 * An instance's output as lines: a byte stream is cut at newlines (UTF-8 decoded across chunk borders), each line
 * bounded in length, so that one app that never writes a newline cannot grow Portico's memory.
 */
import { StringDecoder } from 'node:string_decoder';

/** Splits a byte stream into lines of at most `maxLength` characters; what a longer line has beyond that is dropped. */
export class LineSplitter {
  readonly #decoder = new StringDecoder('utf8');
  readonly #maxLength: number;
  readonly #onLine: (line: string) => void;
  #pending = '';
  /** A line was cut: what is left of it up to its newline is dropped. */
  #discarding = false;

  constructor(maxLength: number, onLine: (line: string) => void) {
    this.#maxLength = maxLength;
    this.#onLine = onLine;
  }

  /** Feeds a chunk of the stream. */
  push(chunk: Buffer): void {
    this.#feed(this.#decoder.write(chunk));
  }

  /** The stream ended: a last line without its newline is given too. */
  end(): void {
    this.#feed(this.#decoder.end());
    if (this.#pending !== '') this.#emit(this.#pending);
    this.#pending = '';
    this.#discarding = false;
  }

  #feed(text: string): void {
    let start = 0;
    while (start < text.length) {
      const nl = text.indexOf('\n', start);
      const end = nl === -1 ? text.length : nl;
      if (!this.#discarding) {
        const room = this.#maxLength - this.#pending.length;
        this.#pending += text.slice(start, start + Math.min(end - start, room));
        if (end - start > room) {
          this.#emit(`${this.#pending} [line cut at ${this.#maxLength} characters]`);
          this.#pending = '';
          this.#discarding = true;
        }
      }
      if (nl === -1) return;
      if (this.#discarding) this.#discarding = false;
      else this.#emit(this.#pending);
      this.#pending = '';
      start = nl + 1;
    }
  }

  #emit(line: string): void {
    this.#onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
  }
}

/** The last `size` lines seen (a crashed instance's stderr tail). */
export class LineTail {
  readonly #size: number;
  readonly #lines: string[] = [];

  constructor(size: number) {
    this.#size = size;
  }

  /** Remembers a line, forgetting the oldest past `size`. */
  add(line: string): void {
    this.#lines.push(line);
    if (this.#lines.length > this.#size) this.#lines.shift();
  }

  /** The remembered lines, oldest first. */
  lines(): string[] {
    return [...this.#lines];
  }
}
