/**
 * A small raw HTTP/2 client for abuse and smuggling tests: writes any frame (RFC 9113 §4–6), including ones a
 * real client would never send, and reads the server's frames back. Header blocks are HPACK literals without
 * indexing and without Huffman coding (RFC 7541 §6.2.2), so any name or value — CR/LF, upper case, `:`-fields
 * out of order — goes out as written.
 */
import net from 'node:net';
import tls from 'node:tls';
import { selfSignedCert } from './h2.js';

/** Frame types (RFC 9113 §6). */
export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
/** Flags. */
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
/** Error codes (RFC 9113 §7). */
export const ERROR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, CANCEL: 8, ENHANCE_YOUR_CALM: 11, HTTP_1_1_REQUIRED: 13 } as const;

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** One frame's bytes. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte's high bits from `mask`. */
function hpackInt(value: number, n: number, mask = 0): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([mask | value]);
  const bytes = [mask | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** A header block of literal fields, never indexed, never Huffman-coded. */
export function headerBlock(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0x00]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v);
  }
  return Buffer.concat(parts);
}

/** A GET request's fields for `path` on `authority`. */
export function getFields(path: string, authority = 'a.example', method = 'GET'): Array<[string, string]> {
  return [
    [':method', method],
    [':scheme', 'https'],
    [':authority', authority],
    [':path', path],
  ];
}

/** A frame the server sent. */
export interface ReceivedFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A raw h2 connection over TLS (ALPN h2), or plain (prior knowledge), that sends the preface and an empty SETTINGS on open. */
export class RawH2 {
  readonly frames: ReceivedFrame[] = [];
  /** The GOAWAY's error code, once one came. */
  goaway: number | undefined;
  /** Whether the server sent its SETTINGS (it speaks HTTP/2 on this connection). */
  settings = false;
  /** PING ACKs received: one answers a PING the test sent after the frames it wants read first. */
  pingAcks = 0;
  closed = false;
  #buffer: Buffer = Buffer.alloc(0);
  #waiters: Array<() => void> = [];

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  /** Opens a connection to `port` on 127.0.0.1. */
  static async open(port: number): Promise<RawH2> {
    const { cert } = await selfSignedCert();
    const socket = tls.connect({ host: '127.0.0.1', port, ca: cert, servername: 'localhost', ALPNProtocols: ['h2'] });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', () => resolve());
      socket.once('error', reject);
    });
    const raw = new RawH2(socket);
    raw.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
    return raw;
  }

  /**
   * Opens a plain connection to `port` on 127.0.0.1 and speaks HTTP/2 by prior knowledge. `split`: the preface's
   * first `split` bytes go out alone, the rest after the server had a moment to read them (a slow client).
   */
  static async openCleartext(port: number, split = 0): Promise<RawH2> {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const raw = new RawH2(socket);
    if (split > 0) {
      await raw.write(PREFACE.subarray(0, split));
      await raw.until(() => false, 50);
    }
    await raw.write(Buffer.concat([PREFACE.subarray(split), frame(FRAME.SETTINGS, 0, 0)]));
    return raw;
  }

  /** Writes bytes; resolves when the socket takes more (so a flood keeps only a bounded amount queued). */
  write(bytes: Buffer): Promise<void> {
    if (this.closed || this.socket.destroyed) return Promise.resolve();
    if (this.socket.write(bytes)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.once('drain', done);
      this.socket.once('close', done);
    });
  }

  /** HEADERS (+ CONTINUATION none) for a request on `streamId`. */
  headers(streamId: number, fields: ReadonlyArray<readonly [string, string]>, endStream = true): Buffer {
    return frame(FRAME.HEADERS, FLAG.END_HEADERS | (endStream ? FLAG.END_STREAM : 0), streamId, headerBlock(fields));
  }

  /** Resolves when `predicate` holds for what arrived, or false when the connection closed first / `ms` passed. */
  async until(predicate: () => boolean, ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!predicate()) {
      if (this.closed || Date.now() >= deadline) return predicate();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  /** The server's answer on a stream: `status` from the first HEADERS (static-table statuses), or the reset code. */
  outcome(streamId: number): { status?: number; reset?: number } | undefined {
    for (const f of this.frames) {
      if (f.streamId !== streamId) continue;
      if (f.type === FRAME.RST_STREAM) return { reset: f.payload.readUInt32BE(0) };
      if (f.type === FRAME.HEADERS) return { status: statusOf(f.payload, f.flags) };
    }
    return undefined;
  }

  /** Resolves with the stream's outcome (see `outcome`), or a GOAWAY / close of the whole connection. */
  async answer(streamId: number, ms = 5000): Promise<{ status?: number; reset?: number; goaway?: number; closed?: boolean }> {
    await this.until(() => this.outcome(streamId) !== undefined || this.goaway !== undefined, ms);
    return this.outcome(streamId) ?? (this.goaway !== undefined ? { goaway: this.goaway } : { closed: this.closed });
  }

  close(): void {
    this.socket.destroy();
  }

  #read(chunk: Buffer): void {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    while (this.#buffer.length >= 9) {
      const length = this.#buffer.readUIntBE(0, 3);
      if (this.#buffer.length < 9 + length) break;
      const f: ReceivedFrame = {
        type: this.#buffer[3]!,
        flags: this.#buffer[4]!,
        streamId: this.#buffer.readUInt32BE(5) & 0x7fffffff,
        payload: this.#buffer.subarray(9, 9 + length),
      };
      this.#buffer = this.#buffer.subarray(9 + length);
      // The first GOAWAY's code: a server may send a second one as it closes.
      if (f.type === FRAME.GOAWAY) this.goaway ??= f.payload.readUInt32BE(4);
      if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) this.settings = true;
      if (f.type === FRAME.PING && (f.flags & FLAG.ACK) !== 0) this.pingAcks++;
      // Keep what tests read; DATA and the flood's ACKs would only fill memory.
      if (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM || f.type === FRAME.GOAWAY) this.frames.push(f);
    }
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

/** HPACK static-table indexes of `:status` values (RFC 7541 Appendix A). */
const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };

/**
 * The `:status` of a response head, when the server sent it as the first field (servers do): indexed from the
 * static table, or a literal with the static name `:status` and a plain 3-digit value. 0 when not decodable here
 * (a Huffman-coded value).
 */
function statusOf(block: Buffer, flags: number): number {
  let at = 0;
  if (flags & 0x8) at += 1 + block[0]!; // PADDED
  if (flags & 0x20) at += 5; // PRIORITY
  const first = block[at]!;
  if (first & 0x80) return STATIC_STATUS[first & 0x7f] ?? 0;
  // Literal with indexed name (with incremental indexing 01xxxxxx, or without / never 0000xxxx, 0001xxxx).
  const nameIndex = first & 0x40 ? first & 0x3f : first & 0x0f;
  if (nameIndex < 8 || nameIndex > 14) return 0;
  const lengthByte = block[at + 1]!;
  if (lengthByte & 0x80) return huffmanDigits(block.subarray(at + 2, at + 2 + (lengthByte & 0x7f)));
  return Number(block.subarray(at + 2, at + 2 + lengthByte).toString('latin1'));
}

/** Decodes a Huffman-coded string of digits (RFC 7541 Appendix B: '0'-'2' are 5 bits, '3'-'9' 6 bits). */
function huffmanDigits(bytes: Buffer): number {
  let bits = '';
  for (const b of bytes) bits += b.toString(2).padStart(8, '0');
  const five: Record<string, string> = { '00000': '0', '00001': '1', '00010': '2' };
  const six: Record<string, string> = { '011001': '3', '011010': '4', '011011': '5', '011100': '6', '011101': '7', '011110': '8', '011111': '9' };
  let out = '';
  let i = 0;
  while (out.length < 3 && i + 5 <= bits.length) {
    const d5 = five[bits.slice(i, i + 5)];
    if (d5 !== undefined) {
      out += d5;
      i += 5;
      continue;
    }
    const d6 = six[bits.slice(i, i + 6)];
    if (d6 === undefined) return 0;
    out += d6;
    i += 6;
  }
  return Number(out);
}
