/**
 * `compress`: br or gzip for what a route's handler sends — proxied answers, cached answers, anything without
 * an encoding of its own — chosen by the client's Accept-Encoding (the one negotiator in `http/negotiate.ts`), as
 * nginx's `gzip on` and Caddy's `encode`. The stage is the innermost, so the cache inside a proxy route keeps
 * what the app sent (identity, with the app's ETag) and the answer is encoded on its way out, per request.
 *
 * It wraps the response's `writeHead`/`write`/`end` (the handlers keep writing to `ctx.res` as always) and decides
 * once, when the head goes out. Never encoded: HEAD, requests with Range (the answer is identity, so byte ranges
 * keep meaning bytes of the identity form), 1xx/204/206/304, `Content-Range`, `Cache-Control: no-transform`, an
 * answer with a `Content-Encoding` already, types not in `types`, and bodies under `min_size` when their length
 * is known. Every answer of the route carries `Vary: Accept-Encoding` (merged into the handler's Vary), and an
 * encoded one (or a 304 for one) has its ETag weakened. Bodies stream through zlib with the response's
 * back-pressure; `text/event-stream` is flushed after every write so each event leaves at once. A body sent
 * whole from memory (a cache hit) is encoded once per stored body and encoding (`encodeWhole`) and that
 * encoding reused by every later hit, so a hit costs about what a hit of identity costs.
 *
 * (The `compression` package does the wrapping for Express, but keeps strong ETags, compresses Range answers,
 * leaves flushing to the app and reads headers through setHeader only, not the flat lists Portico writes.)
 */
import type { OutgoingHttpHeader, OutgoingHttpHeaders } from 'node:http';
import type { BrotliCompress, Gzip } from 'node:zlib';
import { z } from 'zod';
import { size } from '../../config/schema.js';
import {
  BROTLI_QUALITY,
  createEncoder,
  encodeWhole,
  flushKind,
  GZIP_LEVEL,
  MIN_COMPRESS_SIZE,
  varyWithAcceptEncoding,
  weakETag,
  WHOLE_MEMO_MAX,
  type ContentEncoding,
  type EncoderLevels,
  type WholeEncoding,
} from '../../http/compression.js';
import type { ClientResponse, RequestContext } from '../../http/context.js';
import { isCompressible, negotiateEncoding, type Encoding } from '../../http/negotiate.js';
import { defineMiddleware } from '../chain.js';

/** gRPC and gRPC-Web answers (`application/grpc`, `application/grpc-web+proto`, …). */
const GRPC_TYPE = /^\s*application\/grpc/i;
const mediaType = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|\*)$/, 'a media type such as "application/json" or "text/*"')
  .transform((value) => value.toLowerCase());

const options = z.strictObject({
  /** Media types to encode (`type/*` for a whole family); by default, every type mime-db marks compressible (as static files). */
  types: z.array(mediaType).min(1).optional(),
  /** Bodies whose Content-Length is below this are sent as they are (an unknown length is encoded). */
  min_size: size.default(MIN_COMPRESS_SIZE),
  /** Encodings offered, as the client's Accept-Encoding chooses among them (br before gzip on a tie). */
  encodings: z.array(z.enum(['br', 'gzip'])).min(1).default(['br', 'gzip']),
  gzip_level: z.number().int().min(1).max(9).default(GZIP_LEVEL),
  brotli_quality: z.number().int().min(0).max(11).default(BROTLI_QUALITY),
  /**
   * The author's word that this route's answers never hold a secret (a CSRF token, a session id) beside text a
   * client chose (BREACH); without it, `portico check` warns about compress on a proxy route.
   */
  breach_safe: z.boolean().default(false),
});

/** A route's compress settings, resolved once. */
interface Settings {
  readonly available: readonly Encoding[];
  readonly minSize: number;
  readonly levels: EncoderLevels;
  /** Whether a Content-Type value is to be encoded. */
  readonly typeAllowed: (contentType: string) => boolean;
}

function typeMatcher(types: readonly string[] | undefined): (contentType: string) => boolean {
  if (types === undefined) return isCompressible;
  const exact = new Set(types.filter((type) => !type.endsWith('/*')));
  const families = new Set(types.filter((type) => type.endsWith('/*')).map((type) => type.slice(0, -1)));
  return function listedType(contentType) {
    const semi = contentType.indexOf(';');
    const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
    if (exact.has(type)) return true;
    const slash = type.indexOf('/');
    return slash !== -1 && families.has(type.slice(0, slash + 1));
  };
}

const kState = Symbol('portico.compress');
/** One of the response's own methods, called with `this` and the arguments it was given. */
type Native = (this: ClientResponse, ...args: unknown[]) => unknown;
type Callback = (err?: Error | null) => void;
type Wrapped = ClientResponse & { [kState]: ResponseCompression };

/**
 * The head's fields while they are decided on: the flat list given to writeHead, plus any set earlier with
 * setHeader (an error page's), which Node merges in. Edits go to where the field is.
 */
class HeadFields {
  constructor(
    readonly list: string[],
    readonly res: ClientResponse,
  ) {}

  get(name: string): string | undefined {
    const list = this.list;
    for (let i = 0; i < list.length; i += 2) if (list[i]!.length === name.length && list[i]!.toLowerCase() === name) return list[i + 1];
    const set = this.res.getHeader(name);
    return set === undefined ? undefined : Array.isArray(set) ? set.join(', ') : String(set);
  }

  /** Every value of a field, from both places. */
  all(name: string): string[] {
    const out: string[] = [];
    const list = this.list;
    for (let i = 0; i < list.length; i += 2) if (list[i]!.length === name.length && list[i]!.toLowerCase() === name) out.push(list[i + 1]!);
    const set = this.res.getHeader(name);
    if (set !== undefined) out.push(...(Array.isArray(set) ? set : [String(set)]));
    return out;
  }

  remove(name: string): void {
    const list = this.list;
    for (let i = list.length - 2; i >= 0; i -= 2) if (list[i]!.length === name.length && list[i]!.toLowerCase() === name) list.splice(i, 2);
    if (this.res.hasHeader(name)) this.res.removeHeader(name);
  }

  set(name: string, value: string): void {
    this.remove(name.toLowerCase());
    this.list.push(name, value);
  }
}

/** The flat list form of writeHead's headers argument (a copy: the handler's list may be shared between requests). */
function flatList(headers: OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined): string[] {
  if (headers === undefined) return [];
  if (Array.isArray(headers)) {
    // Either a flat name/value list or a list of [name, value] pairs.
    if (headers.length > 0 && Array.isArray(headers[0])) return (headers as unknown as string[][]).flatMap(([name, value]) => [name!, String(value)]);
    return headers.map(String);
  }
  const out: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const one of value) out.push(name, one);
    else out.push(name, String(value));
  }
  return out;
}

/** Statuses whose answer has no body to encode (or, for 206, a body that is a part of the identity form). */
function bodyless(status: number): boolean {
  return status < 200 || status === 204 || status === 206 || status === 304;
}

/** One response being compressed (or only given its Vary): the state behind the wrapped methods. */
class ResponseCompression {
  /** The head was decided (and sent). */
  decided = false;
  /** The encoding of this answer, once decided (undefined: sent as the handler wrote it). */
  using: ContentEncoding | undefined = undefined;
  /** The streaming encoder, made at the first write (an answer sent whole may use a ready encoding instead). */
  encoder: BrotliCompress | Gzip | undefined = undefined;
  sizeHint: number | undefined = undefined;
  /** The ready encoding of a whole in-memory body, when this answer is one and it was made before. */
  ready: WholeEncoding | undefined = undefined;
  /** Encoded bytes the streaming encoder handed to the socket: the access log's bytes for a streamed answer. */
  sent = 0;
  flushEach = false;
  ended = false;
  /** The length of a body given whole to `end()` before any head (Node would have set Content-Length from it). */
  endLength: number | undefined = undefined;
  endCallback: (() => void) | undefined = undefined;

  constructor(
    readonly ctx: RequestContext,
    readonly encoding: Encoding,
    readonly settings: Settings,
    readonly writeHead: Native,
    readonly write: Native,
    readonly end: Native,
  ) {}

  /** Edits the head's fields and chooses whether (and how) this answer is encoded. */
  decide(status: number, fields: HeadFields): void {
    this.decided = true;
    fields.set('Vary', varyWithAcceptEncoding(fields.all('vary')));
    const encoding = this.encoding;
    if (encoding === 'identity' || !this.#encodable(status, fields)) {
      if (this.endLength !== undefined && !bodyless(status) && fields.get('content-length') === undefined) fields.set('Content-Length', String(this.endLength));
      return;
    }
    const etag = fields.get('etag');
    if (etag !== undefined) fields.set('ETag', weakETag(etag));
    // A 304 describes the encoded answer the client holds: only its ETag changes.
    if (status === 304) return;
    const length = fields.get('content-length');
    fields.remove('content-length');
    fields.set('Content-Encoding', encoding);
    // A body sent whole from memory whose encoding was made before: sent with its length, in one write.
    const whole = this.ctx.wholeBody;
    if (whole !== undefined && length !== undefined && Number(length) === whole.length && whole.length <= WHOLE_MEMO_MAX) {
      const made = encodeWhole(whole, encoding, this.settings.levels);
      if (!(made instanceof Promise)) {
        this.ready = made;
        fields.set('Content-Length', String(made.body.length));
      }
    }
    const contentType = fields.get('content-type')!;
    this.flushEach = contentType.trimStart().toLowerCase().startsWith('text/event-stream');
    this.using = encoding;
    this.sizeHint = length === undefined ? this.endLength : Number(length);
  }

  #encodable(status: number, fields: HeadFields): boolean {
    if (bodyless(status) && status !== 304) return false;
    const contentEncoding = fields.get('content-encoding');
    if (contentEncoding !== undefined && contentEncoding.trim().toLowerCase() !== 'identity') return false;
    if (fields.get('content-range') !== undefined) return false;
    const cacheControl = fields.get('cache-control');
    if (cacheControl !== undefined && /no-transform/i.test(cacheControl)) return false;
    const contentType = fields.get('content-type');
    // A 304 usually carries no Content-Type: its 200 was encoded unless the other fields say otherwise.
    if (contentType === undefined) return status === 304;
    // gRPC frames its messages and compresses them itself (grpc-encoding): never encoded by Portico.
    if (GRPC_TYPE.test(contentType)) return false;
    if (!this.settings.typeAllowed(contentType)) return false;
    if (status === 304) return true;
    const length = fields.get('content-length') ?? (this.endLength === undefined ? undefined : String(this.endLength));
    return length === undefined || !(Number(length) < this.settings.minSize);
  }

  /** The streaming encoder, made and wired to the response on first use. */
  #encoder(): BrotliCompress | Gzip {
    if (this.encoder !== undefined) return this.encoder;
    const res = this.ctx.res;
    const encoder = createEncoder(this.using!, this.settings.levels, this.sizeHint);
    this.encoder = encoder;
    const write = this.write;
    encoder.on('data', (chunk: Buffer) => {
      this.sent += chunk.length;
      // The client is slower than the encoder: stop reading it until the socket drains.
      if (!write.call(res, chunk)) encoder.pause();
    });
    res.on('drain', () => encoder.resume());
    // The handler waits for the response's 'drain' when write() said false: the encoder's input drained.
    encoder.on('drain', () => res.emit('drain'));
    encoder.on('end', () => {
      if (!res.destroyed) this.end.call(res, this.endCallback);
    });
    encoder.on('error', () => res.destroy());
    res.once('close', () => {
      if (!res.writableFinished) encoder.destroy();
    });
    // The access log reports what went to the client: the encoded bytes, whatever the handler goes on counting.
    const counter = this;
    Object.defineProperty(this.ctx, 'bytesSent', {
      configurable: true,
      get: () => counter.sent,
      set: () => undefined,
    });
    return encoder;
  }

  /** Writes a chunk into the encoder (flushed at once for an event stream). */
  encode(chunk: unknown, encoding: BufferEncoding | undefined, callback: Callback | undefined): boolean {
    const encoder = this.#encoder();
    if (this.ended || encoder.destroyed) return false;
    const data = typeof chunk === 'string' ? Buffer.from(chunk, encoding ?? 'utf8') : (chunk as Buffer | Uint8Array);
    const ok = callback === undefined ? encoder.write(data) : encoder.write(data, callback);
    if (this.flushEach) encoder.flush(flushKind(this.using!));
    return ok;
  }

  /** Ends the encoded answer: the last chunk through the encoder, or a whole in-memory body by its ready encoding. */
  finish(chunk: unknown, encoding: BufferEncoding | undefined, callback: (() => void) | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.endCallback = callback;
    const body = this.ctx.wholeBody;
    const ready = this.ready;
    if (ready !== undefined) {
      // Content-Length promised the ready encoding: anything else than the whole body would break the framing.
      if (chunk !== body && !(typeof chunk === 'string' && chunk.length === body!.length)) return void this.ctx.res.destroy();
      // Inside the handler's end(): after it counted the identity body, so this count is the last.
      this.ctx.bytesSent = ready.body.length;
      if (ready.text !== undefined) this.end.call(this.ctx.res, ready.text, 'latin1', callback);
      else this.end.call(this.ctx.res, ready.body, callback);
      return;
    }
    if (
      this.encoder === undefined &&
      body !== undefined &&
      body.length <= WHOLE_MEMO_MAX &&
      (chunk === body || (typeof chunk === 'string' && chunk.length === body.length))
    ) {
      const made = encodeWhole(body, this.using!, this.settings.levels);
      if (made instanceof Promise) made.then((out) => this.#sendWhole(out.body), () => this.ctx.res.destroy());
      else this.#sendWhole(made.body);
      return;
    }
    const encoder = this.#encoder();
    if (chunk !== undefined && chunk !== null) {
      encoder.write(typeof chunk === 'string' ? Buffer.from(chunk, encoding ?? 'utf8') : (chunk as Buffer | Uint8Array));
    }
    encoder.end();
  }

  #sendWhole(out: Buffer): void {
    const res = this.ctx.res;
    if (res.destroyed) return;
    this.ctx.bytesSent = out.length;
    this.end.call(res, out, this.endCallback);
  }
}

/** The wrapped `writeHead`: decides once, on a copy of the head's fields, then sends the head. */
function compressingWriteHead(this: Wrapped, status: number, reason?: unknown, headers?: unknown): ClientResponse {
  const state = this[kState];
  if (state.decided) return state.writeHead.call(this, status, reason, headers) as ClientResponse;
  const message = typeof reason === 'string' ? reason : undefined;
  const fields = new HeadFields(flatList((message === undefined ? reason : headers) as OutgoingHttpHeaders | undefined), this);
  state.decide(status, fields);
  return (message === undefined ? state.writeHead.call(this, status, fields.list) : state.writeHead.call(this, status, message, fields.list)) as ClientResponse;
}

/** The wrapped `write`: the head first when none was sent, then into the encoder or straight out. */
function compressingWrite(this: Wrapped, chunk: unknown, encoding?: unknown, callback?: unknown): boolean {
  const state = this[kState];
  if (!state.decided && !this.headersSent) this.writeHead(this.statusCode);
  if (state.using === undefined) return state.write.call(this, chunk, encoding, callback) as boolean;
  if (typeof encoding === 'function') return state.encode(chunk, undefined, encoding as Callback);
  return state.encode(chunk, encoding as BufferEncoding | undefined, callback as Callback | undefined);
}

/** The wrapped `end`: ends the encoder, whose own end ends the response once the last bytes are out. */
function compressingEnd(this: Wrapped, chunk?: unknown, encoding?: unknown, callback?: unknown): ClientResponse {
  const state = this[kState];
  if (typeof chunk === 'function') {
    callback = chunk;
    chunk = undefined;
  } else if (typeof encoding === 'function') {
    callback = encoding;
    encoding = undefined;
  }
  if (!state.decided && !this.headersSent) {
    // Node sets Content-Length from a body given whole to end(); the head is decided first here, so it is kept.
    if (state.ctx.req.method !== 'HEAD') {
      state.endLength =
        chunk === undefined || chunk === null
          ? 0
          : typeof chunk === 'string'
            ? Buffer.byteLength(chunk, (encoding as BufferEncoding | undefined) ?? 'utf8')
            : (chunk as Uint8Array).length;
    }
    this.writeHead(this.statusCode);
  }
  if (state.using === undefined) return state.end.call(this, chunk, encoding, callback) as ClientResponse;
  state.finish(chunk, encoding as BufferEncoding | undefined, callback as (() => void) | undefined);
  return this;
}

/** The `compress` middleware kind (stage `compress`, the innermost: it sees the handler's answer first). */
export const compressKind = defineMiddleware({
  kind: 'compress',
  stage: 'compress',
  options,
  create(o) {
    const settings: Settings = {
      available: [...(['br', 'gzip'] as const).filter((encoding) => o.encodings.includes(encoding)), 'identity'],
      minSize: o.min_size,
      levels: { brotliQuality: o.brotli_quality, gzipLevel: o.gzip_level },
      typeAllowed: typeMatcher(o.types),
    };
    return function compress(ctx, next) {
      const { req } = ctx;
      // A tunnel's answer is no body of this route's.
      if (req.headers.upgrade !== undefined) return next(ctx);
      const encoding =
        req.method === 'HEAD' || req.headers.range !== undefined ? 'identity' : (negotiateEncoding(req.headers['accept-encoding'], settings.available) ?? 'identity');
      const res: ClientResponse = ctx.res;
      (res as Wrapped)[kState] = new ResponseCompression(ctx, encoding, settings, res.writeHead as Native, res.write as Native, res.end as Native);
      res.writeHead = compressingWriteHead as ClientResponse['writeHead'];
      res.write = compressingWrite as ClientResponse['write'];
      res.end = compressingEnd as ClientResponse['end'];
      return next(ctx);
    };
  },
});
