/**
 * What every compressing part of Portico shares (static files and the `compress` middleware): the default
 * levels, the smallest body worth compressing, the streaming encoders, and the header rules that go with an
 * encoded answer (`Vary: Accept-Encoding` merged into what is there, a weakened ETag).
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { Encoding } from './negotiate.js';
import { oneWriteText } from './send.js';

/**
 * Brotli quality for on-the-fly compression: 4 is fast with a good ratio (ngx_brotli's default is 6); Node's
 * default 11 is far too slow for anything made per request.
 */
export const BROTLI_QUALITY = 4;
/** gzip level for on-the-fly compression (nginx's default is 1, Caddy's 5; 6 is zlib's balance). */
export const GZIP_LEVEL = 6;
/** Smaller bodies are not worth compressing: the framing costs more than it saves. */
export const MIN_COMPRESS_SIZE = 256;

/** An encoding that changes the bytes. */
export type ContentEncoding = Exclude<Encoding, 'identity'>;

/** Levels of the two encoders. */
export interface EncoderLevels {
  readonly brotliQuality: number;
  readonly gzipLevel: number;
}

/** The default levels (the constants above). */
export const DEFAULT_LEVELS: EncoderLevels = Object.freeze({ brotliQuality: BROTLI_QUALITY, gzipLevel: GZIP_LEVEL });

/** A streaming encoder (zlib's Transform) for an encoding; `sizeHint` (bytes, when known) helps brotli size its window. */
export function createEncoder(encoding: ContentEncoding, levels: EncoderLevels, sizeHint?: number): zlib.BrotliCompress | zlib.Gzip {
  if (encoding === 'gzip') return zlib.createGzip({ level: levels.gzipLevel });
  const params: Record<number, number> = { [zlib.constants.BROTLI_PARAM_QUALITY]: levels.brotliQuality };
  if (sizeHint !== undefined) params[zlib.constants.BROTLI_PARAM_SIZE_HINT] = sizeHint;
  return zlib.createBrotliCompress({ params });
}

/**
 * The flush that pushes out everything written so far without ending the stream (for event streams): a sync
 * flush for gzip (a full flush would also reset the dictionary and cost ratio), brotli's own flush operation.
 */
export function flushKind(encoding: ContentEncoding): number {
  return encoding === 'gzip' ? zlib.constants.Z_SYNC_FLUSH : zlib.constants.BROTLI_OPERATION_FLUSH;
}

/**
 * One `Vary` value from the values a response carries (any number of fields, each a list): `Accept-Encoding`
 * added unless present, duplicates dropped (case-insensitively, first spelling kept); `*` stays `*` alone.
 */
export function varyWithAcceptEncoding(values: readonly string[]): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const value of values) {
    for (const part of value.split(',')) {
      const name = part.trim();
      if (name === '') continue;
      if (name === '*') return '*';
      const lower = name.toLowerCase();
      if (seen.has(lower)) continue;
      seen.add(lower);
      out.push(name);
    }
  }
  if (!seen.has('accept-encoding')) out.push('Accept-Encoding');
  return out.join(', ');
}

/**
 * The ETag of an encoded form of a representation: the same tag made weak (RFC 9110 §8.8.3: the encoded bytes
 * differ, so it may not claim strong equality with the identity form, which keeps the strong tag; a weak
 * comparison, as If-None-Match uses, still matches both).
 */
export function weakETag(etag: string): string {
  return etag.startsWith('W/') ? etag : `W/${etag}`;
}

const gzipWhole = promisify(zlib.gzip);
const brotliWhole = promisify(zlib.brotliCompress);

/** Largest whole body whose encodings are kept (larger ones are encoded as they stream, each time). */
export const WHOLE_MEMO_MAX = 1024 * 1024;

/**
 * Encodings made of whole bodies held in memory, by body and then by encoding and level. Keyed weakly: they
 * live exactly as long as the body they were made from (a stored cache entry, a file held in memory), and the
 * body is immutable, so an encoding made once stays right.
 */
const wholeEncodings = new WeakMap<Buffer, Map<string, WholeEncoding | Promise<WholeEncoding>>>();

/** An encoding of a whole body: its bytes, and their one-write text form when small (see `oneWriteText`). */
export interface WholeEncoding {
  readonly body: Buffer;
  readonly text: string | undefined;
}

/**
 * The encoding of a whole in-memory body, made once (off the main thread, by zlib's pool) and then shared by
 * every answer that sends that body: a Buffer when made, else the promise of it (concurrent callers share it).
 */
export function encodeWhole(body: Buffer, encoding: ContentEncoding, levels: EncoderLevels): WholeEncoding | Promise<WholeEncoding> {
  let forBody = wholeEncodings.get(body);
  if (forBody === undefined) {
    forBody = new Map();
    wholeEncodings.set(body, forBody);
  }
  const key = encoding === 'br' ? `br${levels.brotliQuality}` : `gzip${levels.gzipLevel}`;
  let made = forBody.get(key);
  if (made === undefined) {
    const work =
      encoding === 'br'
        ? brotliWhole(body, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: levels.brotliQuality, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: body.length } })
        : gzipWhole(body, { level: levels.gzipLevel });
    const map = forBody;
    made = work.then(
      (out) => {
        const ready: WholeEncoding = { body: out, text: oneWriteText(out) };
        map.set(key, ready);
        return ready;
      },
      (err: unknown) => {
        map.delete(key);
        throw err;
      },
    );
    forBody.set(key, made);
  }
  return made;
}
