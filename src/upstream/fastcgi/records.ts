/**
 * The FastCGI record layer (FastCGI 1.0 specification, as PHP-FPM speaks it): encoding the records a web server
 * sends (BEGIN_REQUEST, PARAMS with their name-value pairs, STDIN, ABORT_REQUEST) and a streaming parser of the
 * records an application sends back (STDOUT, STDERR, END_REQUEST), whatever way the bytes are split across
 * reads. No socket here: the connection pool (`pool.ts`) owns those. Written here because no maintained Node
 * FastCGI client exists (`fastcgi-client` 0.2 is abandoned, `fastcgi-stream` only frames records and
 * `node-phpfpm` wraps the former).
 */

/** Protocol version 1, the only one. */
export const FCGI_VERSION = 1;
/** Record header length. */
export const HEADER_LENGTH = 8;
/** Largest content of one record (its length is 16 bits). */
export const MAX_CONTENT = 65535;

/** Record types (spec §8). */
export const RecordType = {
  BeginRequest: 1,
  AbortRequest: 2,
  EndRequest: 3,
  Params: 4,
  Stdin: 5,
  Stdout: 6,
  Stderr: 7,
  Data: 8,
  GetValues: 9,
  GetValuesResult: 10,
  UnknownType: 11,
} as const;

/** The responder role, the only one a web server in front of PHP uses. */
export const ROLE_RESPONDER = 1;
/** BEGIN_REQUEST flag: the application keeps the connection open after the request. */
export const FLAG_KEEP_CONN = 1;

/** END_REQUEST protocol statuses (spec §5.5). */
export const ProtocolStatus = {
  RequestComplete: 0,
  CantMultiplex: 1,
  Overloaded: 2,
  UnknownRole: 3,
} as const;

/** One record's header and content, as the parser hands it over. */
export interface FcgiRecord {
  readonly type: number;
  readonly requestId: number;
  /** The content, without padding (a view into the bytes read when they held the record whole). */
  readonly content: Buffer;
}

/** What END_REQUEST carries. */
export interface EndRequest {
  readonly appStatus: number;
  readonly protocolStatus: number;
}

/** Padding that takes `length` to a multiple of 8, as the spec recommends and PHP-FPM does. */
export function paddingFor(length: number): number {
  return (8 - (length & 7)) & 7;
}

const PADDING = Buffer.alloc(8);

/** The header of a record of `type` with `length` content bytes and `padding` after them. */
export function recordHeader(type: number, requestId: number, length: number, padding: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_LENGTH);
  header[0] = FCGI_VERSION;
  header[1] = type;
  header.writeUInt16BE(requestId, 2);
  header.writeUInt16BE(length, 4);
  header[6] = padding;
  header[7] = 0;
  return header;
}

/**
 * A stream's content as records of at most MAX_CONTENT bytes each, padded to 8; an empty `content` gives the
 * empty record that ends a stream (PARAMS, STDIN).
 */
export function encodeStream(type: number, requestId: number, content: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let offset = 0;
  do {
    const length = Math.min(MAX_CONTENT, content.length - offset);
    const padding = paddingFor(length);
    parts.push(recordHeader(type, requestId, length, padding));
    if (length > 0) parts.push(content.subarray(offset, offset + length));
    if (padding > 0) parts.push(PADDING.subarray(0, padding));
    offset += length;
  } while (offset < content.length);
  return parts;
}

/** BEGIN_REQUEST for the responder role; `keepConn` asks the application to keep the connection. */
export function encodeBeginRequest(requestId: number, keepConn: boolean): Buffer {
  const record = Buffer.alloc(HEADER_LENGTH + 8);
  recordHeader(RecordType.BeginRequest, requestId, 8, 0).copy(record);
  record.writeUInt16BE(ROLE_RESPONDER, 8);
  record[10] = keepConn ? FLAG_KEEP_CONN : 0;
  return record;
}

/** ABORT_REQUEST: the client left; the application ends the request with END_REQUEST. */
export function encodeAbortRequest(requestId: number): Buffer {
  return recordHeader(RecordType.AbortRequest, requestId, 0, 0);
}

/**
 * Name-value pairs (a flat list: name, value, name, value…) as PARAMS content, before framing. Each string is
 * taken as bytes, one per character (latin1), as Node gives header values: a caller with Unicode text (a file
 * name) passes its UTF-8 bytes that way. One buffer, written in place (this runs for every request).
 */
export function encodeNameValuePairs(pairs: readonly string[]): Buffer {
  // Built as one latin1 string (lengths as characters) and written once: one native call, not two per pair.
  let text = '';
  const count = pairs.length & ~1;
  for (let i = 0; i < count; i += 2) {
    const name = pairs[i]!;
    const value = pairs[i + 1]!;
    text += lengthChars(name.length) + lengthChars(value.length) + name + value;
  }
  return Buffer.from(text, 'latin1');
}

/** A name-value length as the characters of its bytes (spec §3.4: one byte below 128, else four, high bit set). */
function lengthChars(length: number): string {
  if (length < 128) return String.fromCharCode(length);
  return String.fromCharCode(((length >>> 24) & 0x7f) | 0x80, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff);
}

/** Decodes PARAMS (or GET_VALUES_RESULT) content back into a flat name/value list; throws on a truncated pair. */
export function decodeNameValuePairs(content: Buffer): string[] {
  const pairs: string[] = [];
  let offset = 0;
  const readLength = (): number => {
    if (offset >= content.length) throw new Error('truncated name-value pair');
    if (content[offset]! < 128) return content[offset++]!;
    if (offset + 4 > content.length) throw new Error('truncated name-value pair');
    const length = content.readUInt32BE(offset) & 0x7fffffff;
    offset += 4;
    return length;
  };
  while (offset < content.length) {
    const nameLength = readLength();
    const valueLength = readLength();
    if (offset + nameLength + valueLength > content.length) throw new Error('truncated name-value pair');
    pairs.push(content.toString('latin1', offset, offset + nameLength), content.toString('latin1', offset + nameLength, offset + nameLength + valueLength));
    offset += nameLength + valueLength;
  }
  return pairs;
}

/**
 * The whole PARAMS stream of a request: its pairs in records, then the empty record that ends it. Past one
 * record (64 KB: long cookies, a long URL), each record holds whole pairs: PHP-FPM decodes each PARAMS record on
 * its own and drops the connection on a pair cut between two (nginx refuses such a request). Only a pair longer
 * than a record is cut, as the spec's stream allows.
 */
export function encodeParams(requestId: number, pairs: readonly string[]): Buffer[] {
  const content = encodeNameValuePairs(pairs);
  const parts = content.length === 0 ? [] : content.length <= MAX_CONTENT ? encodeStream(RecordType.Params, requestId, content) : encodeWholePairs(requestId, content);
  parts.push(...encodeStream(RecordType.Params, requestId, Buffer.alloc(0)));
  return parts;
}

/** PARAMS content of more than one record, cut only between pairs (see `encodeParams`). */
function encodeWholePairs(requestId: number, content: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  let offset = 0;
  const length = (): number => {
    if (content[offset]! < 128) return content[offset++]!;
    const value = content.readUInt32BE(offset) & 0x7fffffff;
    offset += 4;
    return value;
  };
  while (offset < content.length) {
    const pairStart = offset;
    const nameLength = length();
    const valueLength = length();
    const pairEnd = offset + nameLength + valueLength;
    if (pairEnd - start > MAX_CONTENT && pairStart > start) {
      parts.push(...encodeStream(RecordType.Params, requestId, content.subarray(start, pairStart)));
      start = pairStart;
    }
    offset = pairEnd;
  }
  parts.push(...encodeStream(RecordType.Params, requestId, content.subarray(start)));
  return parts;
}

/** Decodes END_REQUEST content; throws when it is shorter than the spec's 8 bytes. */
export function decodeEndRequest(content: Buffer): EndRequest {
  if (content.length < 8) throw new Error(`END_REQUEST of ${content.length} bytes`);
  return { appStatus: content.readUInt32BE(0), protocolStatus: content[4]! };
}

/**
 * A streaming record parser: `push` the bytes as they are read, in any split, and it calls `onRecord` for each
 * whole record (padding skipped). A record that spans reads is gathered; one that lies whole in a read is a view
 * of it (no copy). Throws on a version other than 1, which means the stream is not FastCGI or lost its framing.
 */
export class RecordParser {
  readonly #onRecord: (record: FcgiRecord) => void;
  /** Bytes of an incomplete record held from earlier reads. */
  #held: Buffer | undefined = undefined;

  constructor(onRecord: (record: FcgiRecord) => void) {
    this.#onRecord = onRecord;
  }

  /** Whether part of a record is held (a connection that ends now ended in the middle of one). */
  get midRecord(): boolean {
    return this.#held !== undefined;
  }

  /** Parses what `chunk` completes; the rest is held for the next push. */
  push(chunk: Buffer): void {
    let data = this.#held === undefined ? chunk : Buffer.concat([this.#held, chunk]);
    this.#held = undefined;
    let offset = 0;
    while (data.length - offset >= HEADER_LENGTH) {
      if (data[offset] !== FCGI_VERSION) throw new Error(`FastCGI record of version ${data[offset]}`);
      const length = data.readUInt16BE(offset + 4);
      const total = HEADER_LENGTH + length + data[offset + 6]!;
      if (data.length - offset < total) break;
      const type = data[offset + 1]!;
      const requestId = data.readUInt16BE(offset + 2);
      const content = data.subarray(offset + HEADER_LENGTH, offset + HEADER_LENGTH + length);
      offset += total;
      this.#onRecord({ type, requestId, content });
    }
    if (offset < data.length) {
      // Copied: the caller may reuse its buffer, and a view would pin a large read for a few bytes.
      data = data.subarray(offset);
      this.#held = Buffer.from(data);
    }
  }
}
