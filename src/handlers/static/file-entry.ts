/**
 * What Portico knows about one file on disk: its validators, type, optional in-memory body, and its encoded
 * variants (precompressed siblings on disk, or compressions made once in memory). Header lists are built once
 * per entry so the hot path hands Node a ready array.
 */
import mime from 'mime-types';
import { oneWriteText } from '../../http/send.js';
import { isCompressible, type Encoding } from '../../http/negotiate.js';
import { DEFAULT_LEVELS, encodeWhole, MIN_COMPRESS_SIZE } from '../../http/compression.js';



/** Stat fields that identify a version of a file. */
export interface FileStat {
  size: number;
  mtimeMs: number;
  ino: number;
}

/** One encoded form of a file. */
export interface Variant {
  encoding: Exclude<Encoding, 'identity'>;
  etag: string;
  size: number;
  /** In memory (a compression made once, or a small precompressed sibling). */
  body?: Buffer;
  /** `body` as a latin1 string when small (see `oneWriteText`). */
  text?: string | undefined;
  /** On disk (a precompressed sibling streamed from its file). */
  path?: string;
  /** Header list for a 200 of this variant (without per-request fields). */
  headers: string[];
}

/** Options that shape the headers of every entry of one static route. */
export interface EntryOptions {
  cacheControl: string | undefined;
  extraHeaders: readonly string[];
  serverHeader: string;
  compress: boolean;
}

/** The strong entity tag for a version of a file: mtime and size, as nginx does, plus a variant suffix. */
export function makeETag(stat: FileStat, suffix = ''): string {
  return `"${Math.floor(stat.mtimeMs).toString(16)}-${stat.size.toString(16)}${suffix}"`;
}

/** Whether two stats describe the same version of a file. */
export function sameVersion(a: FileStat, b: FileStat): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;
}

/** A file version and everything derived from it. */
export class FileEntry {
  readonly etag: string;
  readonly lastModified: string;
  /** Last-Modified in whole seconds (as the header carries it), in ms. */
  readonly lastModifiedMs: number;
  readonly contentType: string;
  /** Whether some request may receive an encoded variant (then every response carries Vary). */
  readonly varies: boolean;
  /** Header list for a 200 of the identity form. */
  readonly headers: string[];
  /** `body` as a latin1 string when small, for a one-write answer (see `oneWriteText`). */
  readonly bodyText: string | undefined;
  /** The identity form as a representation choice, made once (the hot path allocates nothing for it). */
  readonly identity: { readonly etag: string; readonly variant: undefined; readonly streamEncoding: undefined };
  /** Header list for a 304 (validators and caching fields only). */
  readonly notModifiedHeaders: string[];
  readonly #compressible: boolean;
  readonly #options: EntryOptions;
  readonly #precompressed: Map<Variant['encoding'], Variant>;
  readonly #made = new Map<Variant['encoding'], Promise<Variant>>();
  readonly #ready = new Map<Variant['encoding'], Variant>();
  #available: readonly Encoding[] | undefined;

  constructor(
    /** Real path of the file (symlinks resolved). */
    readonly path: string,
    readonly stat: FileStat,
    /** The whole file, when it is small enough to keep in memory. */
    readonly body: Buffer | undefined,
    precompressed: Variant[],
    options: EntryOptions,
  ) {
    this.#options = options;
    this.bodyText = body === undefined ? undefined : oneWriteText(body);
    this.etag = makeETag(stat);
    this.identity = Object.freeze({ etag: this.etag, variant: undefined, streamEncoding: undefined });
    this.lastModifiedMs = Math.floor(stat.mtimeMs / 1000) * 1000;
    this.lastModified = new Date(this.lastModifiedMs).toUTCString();
    this.contentType = mime.contentType(path.slice(path.lastIndexOf('/') + 1)) || 'application/octet-stream';
    this.#compressible = options.compress && isCompressible(this.contentType) && stat.size >= MIN_COMPRESS_SIZE;
    this.#precompressed = new Map(precompressed.map((v) => [v.encoding, v]));
    this.varies = this.#compressible || this.#precompressed.size > 0;
    this.headers = this.headerList(this.etag, stat.size, undefined);
    this.notModifiedHeaders = this.#commonHeaders(this.etag);
    for (const variant of precompressed) variant.headers = this.headerList(variant.etag, variant.size, variant.encoding);
  }

  /** Fields shared by 200 and 304 answers. */
  #commonHeaders(etag: string): string[] {
    const list = ['ETag', etag, 'Last-Modified', this.lastModified];
    if (this.varies) list.push('Vary', 'Accept-Encoding');
    if (this.#options.cacheControl !== undefined) list.push('Cache-Control', this.#options.cacheControl);
    if (this.#options.serverHeader !== '') list.push('Server', this.#options.serverHeader);
    list.push(...this.#options.extraHeaders);
    return list;
  }

  /** The header list of a 200 for one form of the file. */
  headerList(etag: string, size: number | undefined, encoding: string | undefined): string[] {
    const list = ['Content-Type', this.contentType];
    if (size !== undefined) list.push('Content-Length', String(size));
    if (encoding !== undefined) list.push('Content-Encoding', encoding);
    else list.push('Accept-Ranges', 'bytes');
    return list.concat(this.#commonHeaders(etag));
  }

  /** Encodings this file can be sent in, best first; identity always last. */
  available(): readonly Encoding[] {
    if (this.#available === undefined) {
      const out: Encoding[] = [];
      if (this.varies) {
        if (this.#precompressed.has('br') || this.#compressible) out.push('br');
        if (this.#precompressed.has('gzip') || this.#compressible) out.push('gzip');
      }
      out.push('identity');
      this.#available = out;
    }
    return this.#available;
  }

  /** The in-memory compression for an encoding once it is made (so later requests need no promise). */
  compressedNow(encoding: Variant['encoding']): Variant | undefined {
    return this.#ready.get(encoding);
  }

  /** A precompressed sibling for an encoding, if there is one. */
  precompressed(encoding: Variant['encoding']): Variant | undefined {
    return this.#precompressed.get(encoding);
  }

  /** Whether this file may be compressed on the fly (when no sibling exists). */
  get compressible(): boolean {
    return this.#compressible;
  }

  /** The in-memory compression of the body for an encoding, made once and shared by every later request. */
  compressed(encoding: Variant['encoding']): Promise<Variant> {
    let made = this.#made.get(encoding);
    if (made === undefined) {
      const work = Promise.resolve(encodeWhole(this.body!, encoding, DEFAULT_LEVELS));
      const suffix = encoding === 'br' ? '-br' : '-gz';
      made = work.then((out) => {
        const etag = makeETag(this.stat, suffix);
        const variant: Variant = { encoding, etag, size: out.body.length, body: out.body, text: out.text, headers: this.headerList(etag, out.body.length, encoding) };
        this.#ready.set(encoding, variant);
        return variant;
      });
      made.catch(() => this.#made.delete(encoding));
      this.#made.set(encoding, made);
    }
    return made;
  }

  /** Bytes this entry holds in memory (for the cache's bound). */
  get memorySize(): number {
    let total = (this.body?.length ?? 0) + (this.bodyText?.length ?? 0) + 512;
    for (const variant of this.#precompressed.values()) total += (variant.body?.length ?? 0) + (variant.text?.length ?? 0);
    // On-the-fly compressions (and their one-write strings) are at most about the body's size again, twice.
    if (this.#compressible && this.body !== undefined) total += 2 * this.body.length;
    return total;
  }
}
