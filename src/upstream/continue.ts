/**
 * Skips an unsolicited `100 Continue` from an app server (RFC 9110 §15.2: a client must parse and may ignore
 * 1xx answers it did not expect). undici's HTTP/1.1 parser refuses any 100 and drops the connection, which
 * would turn the exchange into a 502; this connector wrapper cuts 100 heads out of the bytes that start each
 * response, before undici reads them. Other 1xx heads pass through (the proxy handles them).
 *
 * It costs two small functions per connection (not per request): a write that marks "a response may start
 * now" when a request head goes out, and a read that looks at the first bytes after it. A 100 head split across
 * two reads is not recognised (undici then refuses it as before).
 */
import type { Socket } from 'node:net';
import type { buildConnector } from 'undici';

const HEAD_END = '\r\n\r\n';

/** Whether `chunk` holds a 1xx status line at `at`: `HTTP/x.y 1dd `. */
function interimAt(chunk: Buffer, at: number): boolean {
  return chunk.length - at >= 13 && chunk[at] === 0x48 && chunk[at + 4] === 0x2f && chunk[at + 9] === 0x31;
}

/** Whether the 1xx status line at `at` is a 100. */
function continueAt(chunk: Buffer, at: number): boolean {
  return chunk[at + 10] === 0x30 && chunk[at + 11] === 0x30 && (chunk[at + 12] === 0x20 || chunk[at + 12] === 0x0d);
}

/** The chunk without its leading 100 heads; `state.interimOnly` is set when the chunk held interim heads only. */
export function withoutContinue(chunk: Buffer, state: { interimOnly: boolean }): Buffer {
  let at = 0;
  let start = 0;
  let kept: Buffer[] | undefined;
  while (interimAt(chunk, at)) {
    const end = chunk.indexOf(HEAD_END, at, 'latin1');
    if (end === -1) break;
    if (continueAt(chunk, at)) {
      (kept ??= []).push(chunk.subarray(start, at));
      start = end + 4;
    }
    at = end + 4;
  }
  state.interimOnly = at === chunk.length;
  if (kept === undefined) return chunk;
  kept.push(chunk.subarray(start));
  return Buffer.concat(kept);
}

/** Makes a connected socket skip unsolicited 100 heads at the start of each response. */
function skipContinueOn(socket: Socket): void {
  const read = socket.read;
  const write = socket.write;
  // Set by a request head (undici writes it as a string; chunked framing strings start with CR).
  const state = { fresh: false, interimOnly: false };
  socket.write = function writeMarked(this: Socket, data: unknown, encoding?: unknown, cb?: unknown): boolean {
    if (typeof data === 'string' && data.charCodeAt(0) !== 13) state.fresh = true;
    return (write as (...args: unknown[]) => boolean).call(this, data, encoding, cb);
  } as Socket['write'];
  socket.read = function readSkipping(this: Socket, size?: number): Buffer | null {
    const chunk = read.call(this, size) as Buffer | null;
    if (!state.fresh || chunk === null || typeof chunk === 'string') return chunk;
    const out = withoutContinue(chunk, state);
    // Only interim heads so far: the final head starts the next read.
    state.fresh = state.interimOnly;
    return out;
  };
}

/** Wraps an undici connector so that its connections skip unsolicited 100 Continue heads. */
export function skippingContinue(connector: buildConnector.connector): buildConnector.connector {
  return function connectSkippingContinue(options, callback) {
    connector(options, (err, socket) => {
      if (err == null && socket != null) skipContinueOn(socket as Socket);
      (callback as (err: Error | null, socket: unknown) => void)(err, socket);
    });
  } as buildConnector.connector;
}
