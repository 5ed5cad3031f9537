/**
 * `static`: serves files under a root with full HTTP semantics: GET/HEAD, validators and conditional requests,
 * byte ranges (single and multipart), content negotiation between identity, precompressed siblings and
 * on-the-fly compression, index files, directory redirects, try_files and autoindex.
 *
 * Hot small files are answered from memory: a path's resolution is cached for `file_cache.valid` (1 s), so a
 * repeated request costs no `stat` and no read. Larger files are streamed from an open handle whose own `fstat`
 * is checked against what the headers will say.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs, type Stats } from 'node:fs';
import path from 'node:path';
import { pipeline, Transform } from 'node:stream';
import { PorticoError } from '../../errors.js';
import { responseCut, type RequestContext } from '../../http/context.js';
import { drained, RETRY_SOON, sendError, sendWhole } from '../../http/send.js';
import { renderListing } from './autoindex.js';
import { evaluatePreconditions, hasConditionals, ifRangeAllows } from '../../http/conditional.js';
import { negotiateEncoding } from '../../http/negotiate.js';
import { createEncoder, DEFAULT_LEVELS } from '../../http/compression.js';
import { makeETag, sameVersion, type FileEntry, type Variant } from './file-entry.js';
import { parseRange, type ByteRange } from '../../http/range.js';
import { StaticResolver, type Resolution } from './resolver.js';
import { z } from 'zod';
import { duration, headerMap, size, type CheckEnv, type Problem } from '../../config/schema.js';
import { isDirectory } from '../../config/validate.js';
import { defineHandler } from '../types.js';

/** Options of a `static` route. */
const optionsObject = z.strictObject({
  root: z.string().min(1),
  index: z.array(z.string().min(1)).default(['index.html']),
  /** Like nginx's try_files: `$uri`, `$uri/`, or a path tried in order; the last may be `=404`. */
  try_files: z.array(z.string().min(1)).optional(),
  autoindex: z.boolean().default(false),
  /** On-the-fly gzip/br for compressible types, and `.br`/`.gz` siblings when present. */
  compress: z.boolean().default(true),
  /** Serve `file.br` / `file.gz` siblings when present and not older than the file. */
  precompressed: z.boolean().default(true),
  cache_control: z.string().optional(),
  headers: headerMap.default({}),
  /** `deny`: any path segment starting with `.` is 404, except under `/.well-known/`. */
  dotfiles: z.enum(['deny', 'allow']).default('deny'),
  /** `within_root`: a symlink is followed only while its target stays inside root; `follow`: always. */
  symlinks: z.enum(['within_root', 'follow']).default('within_root'),
  /** Most ranges honoured in one multi-range request; beyond it the whole file is sent (200). */
  max_ranges: z.number().int().min(1).max(1000).default(16),
  /** In-memory cache of small hot files; a changed file is seen within `valid`. */
  file_cache: z
    .strictObject({
      enabled: z.boolean().default(true),
      valid: duration.default(1000),
      max_file_size: size.default(1024 * 1024),
      max_size: size.default(64 * 1024 * 1024),
      max_entries: z.number().int().min(1).default(10_000),
    })
    .prefault({}),
});

/** Options of a `static` route, or its root alone (`static: ./www`, as an upstream's server may be its URL alone). */
const options = z.preprocess((value) => (typeof value === 'string' ? { root: value } : value), optionsObject);

/** Options of a `static` route, as the schema gives them. */
export type StaticOptions = z.output<typeof options>;

/** Resolves `root` against the config's folder (in place) and checks it, try_files and index. */
function checkStatic(stat: StaticOptions, env: CheckEnv): Problem[] {
  const problems: Problem[] = [];
  const root = path.resolve(env.dir, stat.root);
  if (!isDirectory(root)) problems.push({ keys: ['root'], message: `directory ${stat.root} does not exist` });
  stat.root = root;
  stat.try_files?.forEach((entry, t) => {
    const last = t === stat.try_files!.length - 1;
    const ok = entry.startsWith('/') || entry.startsWith('$uri') || (last && /^=[1-5]\d\d$/.test(entry));
    if (!ok) problems.push({ keys: ['try_files', t], message: 'expected "$uri", "$uri/", a path starting with "/", or (last) "=404"' });
  });
  stat.index.forEach((name, i) => {
    if (name.includes('/')) problems.push({ keys: ['index', i], message: 'an index is a file name, without "/"' });
  });
  return problems;
}

const ALLOW = { Allow: 'GET, HEAD' };
/** Largest piece of a range read into memory at once when sending multipart ranges from disk. */
const RANGE_CHUNK = 64 * 1024;

/**
 * The `fstat` of an open handle; `undefined` when it fails, the handle then closed (a handle whose stat failed
 * is no use to anyone, and was left to the garbage collector).
 */
async function statOrClose(handle: fs.FileHandle): Promise<Stats | undefined> {
  try {
    return await handle.stat();
  } catch {
    await handle.close().catch(() => undefined);
    return undefined;
  }
}

/** Opens an entry's file if it is still the version the entry describes; `undefined` otherwise. */
async function openIfUnchanged(entry: FileEntry): Promise<fs.FileHandle | undefined> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(entry.path, 'r');
  } catch {
    return undefined;
  }
  const stat = await statOrClose(handle);
  if (stat === undefined) return undefined;
  if (sameVersion(entry.stat, stat)) return handle;
  await handle.close();
  return undefined;
}

/**
 * Passes a file's bytes on and fails at their end if fewer than `expected` came: the file shrank while it was
 * sent (the read stream just ends early at the new end of file). The failure reaches the response before its end,
 * so the connection is cut instead of ending an answer short of its Content-Length (or with a clean last chunk).
 */
function wholeOrFail(expected: number): Transform {
  let passed = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      passed += chunk.length;
      callback(null, chunk);
    },
    flush(callback) {
      callback(passed === expected ? null : new PorticoError('PORTICO_INTERNAL', `file shrank while it was sent: ${passed} of ${expected} bytes`));
    },
  });
}

/** What to stream from disk, and how. */
interface StreamedFile {
  /** The file to open: the entry's own, or a precompressed sibling. */
  file: string;
  headers: string[];
  range?: ByteRange | undefined;
  /** Compress on the fly with this encoding. */
  encoding?: 'br' | 'gzip' | undefined;
  /** On a vanished or changed file: resolve the path again once (false on that second try). */
  mayRetry: boolean;
  /** The size the headers promise, checked against the opened file (a sibling's; the entry's own is its stat). */
  length?: number | undefined;
  status?: number;
}

/** A representation chosen for one request: the identity form, or an encoded variant (maybe streamed). */
interface Chosen {
  etag: string;
  variant: Variant | undefined;
  /** Compress the identity stream on the fly with this encoding (large compressible files). */
  streamEncoding: 'br' | 'gzip' | undefined;
}

/** Replaces the ETag in a prepared header list (ETag always directly follows its name). */
function withETag(headers: readonly string[], etag: string): string[] {
  const copy = headers.slice();
  const at = copy.indexOf('ETag');
  if (at !== -1) copy[at + 1] = etag;
  return copy;
}

class StaticHandler {
  readonly #resolver: StaticResolver;
  readonly #options: StaticOptions;

  constructor(options: StaticOptions, serverHeader: string) {
    this.#options = options;
    const extraHeaders = Object.entries(options.headers).flat();
    this.#resolver = new StaticResolver(
      {
        root: options.root,
        index: options.index,
        tryFiles: options.try_files,
        autoindex: options.autoindex,
        precompressed: options.precompressed,
        dotfiles: options.dotfiles,
        symlinks: options.symlinks,
        valid: options.file_cache.valid,
        cacheEnabled: options.file_cache.enabled,
        maxFileSize: options.file_cache.max_file_size,
        maxSize: options.file_cache.max_size,
        maxEntries: options.file_cache.max_entries,
      },
      { cacheControl: options.cache_control, extraHeaders, serverHeader, compress: options.compress },
    );
  }

  stop(): void {
    this.#resolver.clear();
  }

  /** Entry point; synchronous for a cached small file, a promise otherwise. */
  handle(ctx: RequestContext): Promise<void> | void {
    const method = ctx.req.method;
    if (method !== 'GET' && method !== 'HEAD') {
      sendError(ctx, 405, ALLOW);
      return;
    }
    const cached = this.#resolver.peek(ctx.path, Date.now());
    if (cached !== undefined) return this.#answer(ctx, cached, true);
    return this.#resolver.resolve(ctx.path).then((resolution) => this.#answer(ctx, resolution, true));
  }

  #answer(ctx: RequestContext, resolution: Resolution, mayRetry: boolean): Promise<void> | void {
    switch (resolution.kind) {
      case 'file':
        return this.#serveFile(ctx, resolution.entry, mayRetry);
      case 'redirect':
        return this.#redirect(ctx, resolution.path);
      case 'listing':
        return this.#listing(ctx, resolution.dir);
      case 'status':
        return sendError(ctx, resolution.status);
    }
  }

  #redirect(ctx: RequestContext, path: string): void {
    // `path` is canonical: one leading slash, never `//host`, so this can never become an open redirect.
    const location = ctx.query === '' ? path : `${path}?${ctx.query}`;
    sendError(ctx, 301, { Location: location });
  }

  async #listing(ctx: RequestContext, dir: string): Promise<void> {
    const body = await renderListing(dir, ctx.path, this.#options.dotfiles === 'allow');
    ctx.status = 200;
    const head = ['Content-Type', 'text/html; charset=utf-8', 'Content-Length', String(body.length), 'Cache-Control', 'no-cache'];
    if (ctx.serverHeader !== '') head.push('Server', ctx.serverHeader);
    ctx.res.writeHead(200, head);
    if (ctx.req.method === 'HEAD') return void ctx.res.end();
    ctx.bytesSent = body.length;
    ctx.res.end(body);
  }

  /** Picks identity or an encoded variant for this request. */
  #choose(ctx: RequestContext, entry: FileEntry, rangeApplies: boolean): Chosen | Promise<Chosen> {
    const identity = entry.identity;
    if (!entry.varies || rangeApplies) return identity;
    const accept = ctx.req.headers['accept-encoding'];
    if (accept === undefined) return identity;
    const encoding = negotiateEncoding(accept, entry.available());
    if (encoding === null || encoding === 'identity') return identity;
    const sibling = entry.precompressed(encoding);
    if (sibling !== undefined) return { etag: sibling.etag, variant: sibling, streamEncoding: undefined };
    if (entry.body !== undefined) {
      const ready = entry.compressedNow(encoding);
      if (ready !== undefined) return { etag: ready.etag, variant: ready, streamEncoding: undefined };
      return entry.compressed(encoding).then((variant) => ({ etag: variant.etag, variant, streamEncoding: undefined }));
    }
    return { etag: makeETag(entry.stat, encoding === 'br' ? '-br' : '-gz'), variant: undefined, streamEncoding: encoding };
  }

  #serveFile(ctx: RequestContext, entry: FileEntry, mayRetry: boolean): Promise<void> | void {
    const { req } = ctx;
    const rangeHeader = req.method === 'GET' ? req.headers.range : undefined;
    const rangeApplies = rangeHeader !== undefined && ifRangeAllows(req.headers['if-range'] as string | undefined, entry);
    const chosen = this.#choose(ctx, entry, rangeApplies);
    if (chosen instanceof Promise) return chosen.then((c) => this.#serveChosen(ctx, entry, c, rangeApplies ? rangeHeader : undefined, mayRetry));
    return this.#serveChosen(ctx, entry, chosen, rangeApplies ? rangeHeader : undefined, mayRetry);
  }

  #serveChosen(ctx: RequestContext, entry: FileEntry, chosen: Chosen, range: string | undefined, mayRetry: boolean): Promise<void> | void {
    const { req, res } = ctx;
    if (hasConditionals(req.headers)) {
      const outcome = evaluatePreconditions(req.headers, { etag: chosen.etag, lastModifiedMs: entry.lastModifiedMs }, true);
      if (outcome === 304) {
        ctx.status = 304;
        res.writeHead(304, chosen.etag === entry.etag ? entry.notModifiedHeaders : withETag(entry.notModifiedHeaders, chosen.etag));
        res.end();
        return;
      }
      if (outcome === 412) return sendError(ctx, 412);
    }
    if (range !== undefined) {
      const decision = parseRange(range, entry.stat.size, this.#options.max_ranges);
      if (decision.kind === 'unsatisfiable') return sendError(ctx, 416, { 'Content-Range': `bytes */${entry.stat.size}` });
      if (decision.kind === 'ranges') return this.#serveRanges(ctx, entry, decision.ranges, mayRetry);
    }
    const variant = chosen.variant;
    if (variant !== undefined && variant.body !== undefined) return sendWhole(ctx, 200, variant.headers, variant.body, variant.text);
    if (variant !== undefined) return this.#streamFile(ctx, entry, { file: variant.path!, headers: variant.headers, mayRetry, length: variant.size });
    if (chosen.streamEncoding !== undefined) {
      const headers = entry.headerList(chosen.etag, undefined, chosen.streamEncoding);
      return this.#streamFile(ctx, entry, { file: entry.path, headers, encoding: chosen.streamEncoding, mayRetry });
    }
    if (entry.body !== undefined) return sendWhole(ctx, 200, entry.headers, entry.body, entry.bodyText);
    return this.#streamFile(ctx, entry, { file: entry.path, headers: entry.headers, mayRetry, length: entry.stat.size });
  }

  async #serveRanges(ctx: RequestContext, entry: FileEntry, ranges: ByteRange[], mayRetry: boolean): Promise<void> {
    const { res } = ctx;
    const size = entry.stat.size;
    // Validators plus the route's caching and extra headers, exactly as on the 200.
    const common = ['Accept-Ranges', 'bytes', ...entry.notModifiedHeaders];
    if (ranges.length === 1) {
      const { start, end } = ranges[0]!;
      const headers = ['Content-Type', entry.contentType, 'Content-Range', `bytes ${start}-${end}/${size}`, ...common];
      if (entry.body !== undefined) {
        ctx.status = 206;
        res.writeHead(206, [...headers, 'Content-Length', String(end - start + 1)]);
        ctx.bytesSent = end - start + 1;
        res.end(entry.body.subarray(start, end + 1));
        return;
      }
      return this.#streamFile(ctx, entry, {
        file: entry.path,
        headers: [...headers, 'Content-Length', String(end - start + 1)],
        range: { start, end },
        mayRetry,
        status: 206,
      });
    }
    const boundary = randomBytes(12).toString('hex');
    const heads = ranges.map(
      ({ start, end }, i) =>
        `${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: ${entry.contentType}\r\nContent-Range: bytes ${start}-${end}/${size}\r\n\r\n`,
    );
    const tail = `\r\n--${boundary}--\r\n`;
    let length = Buffer.byteLength(tail);
    ranges.forEach((r, i) => (length += Buffer.byteLength(heads[i]!) + r.end - r.start + 1));
    // The ranges were computed for the cached version: read only from that very version, never past its end.
    let handle: fs.FileHandle | undefined;
    if (entry.body === undefined) {
      handle = await openIfUnchanged(entry);
      if (handle === undefined) {
        this.#resolver.forget(ctx.path);
        if (mayRetry) return this.#answer(ctx, await this.#resolver.resolve(ctx.path), false);
        return sendError(ctx, 503, RETRY_SOON);
      }
    }
    ctx.status = 206;
    res.writeHead(206, ['Content-Type', `multipart/byteranges; boundary=${boundary}`, 'Content-Length', String(length), ...common]);
    if (ctx.req.method === 'HEAD') {
      await handle?.close();
      return void res.end();
    }
    if (handle === undefined) {
      ctx.bytesSent = length;
      ranges.forEach((r, i) => {
        res.write(heads[i]!);
        res.write(entry.body!.subarray(r.start, r.end + 1));
      });
      res.end(tail);
      return;
    }
    try {
      for (let i = 0; i < ranges.length; i++) {
        const r = ranges[i]!;
        // Counted as handed to the client: a cut answer logs what went out before the cut.
        ctx.bytesSent += Buffer.byteLength(heads[i]!);
        res.write(heads[i]!);
        // Bounded pieces: a range may be as large as the file.
        for (let at = r.start; at <= r.end; ) {
          const chunk = Buffer.allocUnsafe(Math.min(RANGE_CHUNK, r.end - at + 1));
          const { bytesRead } = await handle.read(chunk, 0, chunk.length, at);
          // The file shrank while being sent: cut the connection rather than send bytes it does not hold.
          if (bytesRead !== chunk.length || responseCut(res)) return void res.destroy();
          at += bytesRead;
          ctx.bytesSent += bytesRead;
          // A client gone while this waits sends no 'drain': `drained` rejects then, and the handle is closed.
          if (!res.write(chunk)) await drained(res);
        }
      }
      ctx.bytesSent += Buffer.byteLength(tail);
      res.end(tail);
    } finally {
      await handle.close();
    }
  }

  /**
   * Streams a file (or a range of it, or a compression of it). The file is opened and `fstat`ed first: if it
   * is no longer the version the headers describe, the cached answer is dropped and the request starts over.
   */
  async #streamFile(ctx: RequestContext, entry: FileEntry, send: StreamedFile): Promise<void> {
    const { req, res } = ctx;
    const { file, headers, range, encoding, mayRetry, length, status = 200 } = send;
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(file, 'r');
    } catch {
      this.#resolver.forget(ctx.path);
      if (mayRetry) return this.#answer(ctx, await this.#resolver.resolve(ctx.path), false);
      return sendError(ctx, 404);
    }
    // A handle whose stat fails (closed by then) counts as a changed file: resolved again once, then 503.
    const stat = await statOrClose(handle);
    const expected = file === entry.path ? entry.stat : undefined;
    const changed =
      stat === undefined || (expected !== undefined ? !sameVersion(expected, stat) : length !== undefined && stat.size !== length);
    if (changed) {
      if (stat !== undefined) await handle.close();
      this.#resolver.forget(ctx.path);
      if (mayRetry) return this.#answer(ctx, await this.#resolver.resolve(ctx.path), false);
      return sendError(ctx, 503, RETRY_SOON);
    }
    ctx.status = status;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      await handle.close();
      res.end();
      return;
    }
    // The bytes the headers promise (of the file; compressed on the fly, their encoding): read no more than these
    // from a file that grew, and cut the connection if it shrank, as the multi-range path does.
    const promised = range !== undefined ? range.end - range.start + 1 : stat.size;
    if (promised === 0) {
      await handle.close();
      res.end();
      return;
    }
    // The stream owns the handle and closes it when it ends or is destroyed. (A raw `fd` with `autoClose: false`
    // was closed by the stream anyway on an aborted response, and never on a completed one: the handle was then
    // closed twice, or by the garbage collector — after the fd number had been reused by another request.)
    const stream = handle.createReadStream({ start: range?.start ?? 0, end: range?.end ?? stat.size - 1 });
    const done = (err: NodeJS.ErrnoException | null) => {
      // The headers are out: an error can only be shown by cutting the connection, never by a clean end.
      if (err) res.destroy();
    };
    const last = encoding === undefined ? wholeOrFail(promised) : createEncoder(encoding, DEFAULT_LEVELS);
    if (encoding === undefined) {
      pipeline(stream, last, res, done);
    } else {
      pipeline(stream, wholeOrFail(promised), last, res, done);
    }
    // The access log reports the bytes handed to the client, not the length promised: a cut answer logs what went
    // out before the cut (as nginx's $body_bytes_sent). Listened to after pipeline() piped it: a 'data' listener
    // added before would start the flow with no one to take it.
    last.on('data', (chunk: Buffer) => {
      ctx.bytesSent += chunk.length;
    });
  }
}

/** The `static` handler kind. */
export const staticKind = defineHandler({
  kind: 'static',
  options,
  check: checkStatic,
  servedFolders: (options) => [options.root],
  create(options, env) {
    const handler = new StaticHandler(options, env.serverHeader);
    return {
      handle: function serveStatic(ctx) {
        return handler.handle(ctx);
      },
      stop: () => handler.stop(),
    };
  },
});
