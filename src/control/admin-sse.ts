/**
 * One Server-Sent Events answer (the dashboard's `/events`, a job's `/jobs/{id}/events`), bounded: a client that
 * does not read while events pile up past `maxBuffered` bytes is cut, never held in memory without end.
 */
import type { ServerResponse } from 'node:http';

/** Bytes an event stream may hold unsent before its client is cut. */
export const SSE_MAX_BUFFERED = 1024 * 1024;

/** A Server-Sent Events stream over one response. */
export class EventStream {
  readonly #res: ServerResponse;
  readonly #maxBuffered: number;
  #closed = false;
  readonly #onClose: Array<() => void> = [];

  /** Starts the stream on `res` (status 200 and the event-stream headers). */
  constructor(res: ServerResponse, maxBuffered = SSE_MAX_BUFFERED) {
    this.#res = res;
    this.#maxBuffered = maxBuffered;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'x-accel-buffering': 'no',
    });
    // How long the browser's EventSource waits before it reconnects.
    res.write('retry: 2000\n\n');
    res.once('close', () => this.#close());
  }

  /** Whether the stream has ended (its client left, was cut, or `end` was called). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Runs `listener` once the stream has ended. */
  onClose(listener: () => void): void {
    if (this.#closed) listener();
    else this.#onClose.push(listener);
  }

  /** Sends one event (its data as JSON on one line); a client too slow to keep up is cut. */
  send(event: string, data: unknown): void {
    if (this.#closed) return;
    if (this.#res.writableLength > this.#maxBuffered) {
      this.#res.destroy();
      this.#close();
      return;
    }
    this.#res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  /** Ends the stream. */
  end(): void {
    if (this.#closed) return;
    this.#res.end();
    this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const listener of this.#onClose.splice(0)) listener();
  }
}
