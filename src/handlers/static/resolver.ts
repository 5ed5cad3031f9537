/**
 * Turns a canonical request path into what to serve: a file, a directory redirect, a listing, or a status. The
 * answer for a path is kept for `valid` ms (default 1 s, like nginx's `open_file_cache_valid`), so a hot path
 * costs no `stat`; after that it is worked out again and a changed file is seen. Small files are kept in a
 * byte-bounded LRU of `FileEntry`s, reused for as long as the file's size, mtime and inode stay the same.
 *
 * Safety: segments are decoded one by one (an encoded `/`, `\` or NUL is refused), dot segments are resolved
 * before this point, dotfiles are hidden except under `/.well-known/`, and with `symlinks: within_root` the
 * real path of every file must lie inside the real root.
 */
import { constants as fsConstants, promises as fs, realpathSync, type Stats } from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { decodeSegments, normalizePath } from '../../http/request-path.js';
import { oneWriteText } from '../../http/send.js';
import { FileEntry, makeETag, sameVersion, type EntryOptions, type Variant } from './file-entry.js';
import { isCompressible } from '../../http/negotiate.js';
import mime from 'mime-types';

/** What a path resolves to. */
export type Resolution =
  | { kind: 'file'; entry: FileEntry }
  | { kind: 'redirect'; path: string }
  | { kind: 'listing'; dir: string }
  | { kind: 'status'; status: number };

/** The static options the resolver needs (a subset of the route's config). */
export interface ResolverOptions {
  root: string;
  index: readonly string[];
  tryFiles: readonly string[] | undefined;
  autoindex: boolean;
  precompressed: boolean;
  dotfiles: 'deny' | 'allow';
  symlinks: 'within_root' | 'follow';
  valid: number;
  cacheEnabled: boolean;
  maxFileSize: number;
  maxSize: number;
  maxEntries: number;
}

const NOT_FOUND: Resolution = Object.freeze({ kind: 'status', status: 404 });
const FORBIDDEN: Resolution = Object.freeze({ kind: 'status', status: 403 });

interface Cached {
  resolution: Resolution;
  expires: number;
}

/** Resolves paths under one root, with a short-lived answer cache and a bounded in-memory file cache. */
export class StaticResolver {
  readonly #opt: ResolverOptions;
  readonly #entryOptions: EntryOptions;
  readonly #realRoot: string;
  readonly #answers: LRUCache<string, Cached>;
  readonly #files: LRUCache<string, FileEntry>;
  /** Resolutions under way, so a burst of misses for one path does the work once. */
  readonly #pending = new Map<string, Promise<Resolution>>();

  constructor(options: ResolverOptions, entryOptions: EntryOptions) {
    this.#opt = options;
    this.#entryOptions = entryOptions;
    this.#realRoot = realpathSync(options.root);
    // Bounded by bytes too: request paths are client-chosen and may be long.
    this.#answers = new LRUCache({ max: options.maxEntries, maxSize: 16 * 1024 * 1024, sizeCalculation: (_v, key) => key.length + 128 });
    this.#files = new LRUCache({
      maxSize: Math.max(options.maxSize, 1),
      sizeCalculation: (entry) => Math.max(1, entry.memorySize),
      max: options.maxEntries,
    });
  }

  /**
   * The cached answer for a path while it is still valid, without any I/O; `undefined` otherwise. A hit does not
   * move the answer up the LRU order (lru-cache's `peek`, cheaper than `get`): a hot path's answer is set again
   * every `valid` ms, and that keeps it recent.
   */
  peek(requestPath: string, now: number): Resolution | undefined {
    const cached = this.#answers.peek(requestPath);
    return cached !== undefined && cached.expires > now ? cached.resolution : undefined;
  }

  /** Resolves a path, using and refreshing the answer cache. */
  resolve(requestPath: string): Promise<Resolution> {
    let pending = this.#pending.get(requestPath);
    if (pending === undefined) {
      pending = this.#resolveUncached(requestPath).then(
        (resolution) => {
          this.#pending.delete(requestPath);
          if (this.#opt.cacheEnabled && this.#opt.valid > 0) {
            this.#answers.set(requestPath, { resolution, expires: Date.now() + this.#opt.valid });
          }
          return resolution;
        },
        (err: unknown) => {
          this.#pending.delete(requestPath);
          throw err;
        },
      );
      this.#pending.set(requestPath, pending);
    }
    return pending;
  }

  /** Drops the cached answer for a path (the file was seen to change). */
  forget(requestPath: string): void {
    this.#answers.delete(requestPath);
  }

  /** Empties both caches. */
  clear(): void {
    this.#answers.clear();
    this.#files.clear();
  }

  /** Builds (or reuses) the entry for a file, reading it into memory when small enough. */
  async entryFor(realPath: string, stat: Stats): Promise<FileEntry> {
    const version = { size: stat.size, mtimeMs: stat.mtimeMs, ino: stat.ino };
    const known = this.#files.get(realPath);
    if (known !== undefined && sameVersion(known.stat, version)) return known;
    let body: Buffer | undefined;
    let actual = version;
    if (this.#opt.cacheEnabled && stat.size <= this.#opt.maxFileSize) {
      // Read through one handle and stat that handle, so body and validators always describe the same version.
      const handle = await fs.open(realPath, fsConstants.O_RDONLY);
      try {
        const fresh = await handle.stat();
        actual = { size: fresh.size, mtimeMs: fresh.mtimeMs, ino: fresh.ino };
        body = await handle.readFile();
        if (body.length !== fresh.size) body = undefined;
      } finally {
        await handle.close();
      }
    }
    const entry = new FileEntry(realPath, actual, body, await this.#siblings(realPath, actual.mtimeMs), this.#entryOptions);
    if (body !== undefined) this.#files.set(realPath, entry);
    return entry;
  }

  /** Precompressed `.br` / `.gz` siblings that are regular files and not older than the file. */
  async #siblings(realPath: string, mtimeMs: number): Promise<Variant[]> {
    if (!this.#opt.precompressed || !this.#entryOptions.compress) return [];
    const type = mime.contentType(path.basename(realPath)) || 'application/octet-stream';
    if (!isCompressible(type)) return [];
    const found: Variant[] = [];
    for (const [encoding, ext] of [['br', '.br'], ['gzip', '.gz']] as const) {
      const file = realPath + ext;
      const stat = await statOrNull(file);
      if (stat === null || !stat.isFile() || stat.mtimeMs < mtimeMs) continue;
      if (!(await this.#inside(file))) continue;
      const small = this.#opt.cacheEnabled && stat.size <= this.#opt.maxFileSize;
      const body = small ? await fs.readFile(file) : undefined;
      const etag = makeETag(stat, `-${encoding === 'br' ? 'br' : 'gz'}s`);
      found.push({ encoding, etag, size: body?.length ?? stat.size, body, text: body === undefined ? undefined : oneWriteText(body), path: file, headers: [] });
    }
    return found;
  }

  /** Whether a path's real location is inside the real root (always true with `symlinks: follow`). */
  async #inside(file: string): Promise<boolean> {
    if (this.#opt.symlinks === 'follow') return true;
    try {
      const real = await fs.realpath(file);
      return real === this.#realRoot || real.startsWith(this.#realRoot + path.sep);
    } catch {
      return false;
    }
  }

  #hidden(segments: readonly string[]): boolean {
    if (this.#opt.dotfiles === 'allow') return false;
    for (let i = 0; i < segments.length; i++) {
      if (segments[i]!.charCodeAt(0) === 46 && !(i === 0 && segments[i] === '.well-known')) return true;
    }
    return false;
  }

  /** Looks for a regular file at a path (no trailing slash semantics). */
  async #file(segments: readonly string[]): Promise<Resolution | null> {
    const fsPath = path.join(this.#realRoot, ...segments);
    const stat = await statOrNull(fsPath);
    if (stat === null || !stat.isFile()) return null;
    if (!(await this.#inside(fsPath))) return FORBIDDEN;
    const real = this.#opt.symlinks === 'follow' ? fsPath : await fs.realpath(fsPath);
    return { kind: 'file', entry: await this.entryFor(real, stat) };
  }

  /** Looks for a directory; answers its index, listing, redirect (no slash) or `null` when there is none. */
  async #directory(segments: readonly string[], requestPath: string, orElse: Resolution | null): Promise<Resolution | null> {
    const fsPath = path.join(this.#realRoot, ...segments);
    const stat = await statOrNull(fsPath);
    if (stat === null || !stat.isDirectory()) return null;
    if (!(await this.#inside(fsPath))) return FORBIDDEN;
    if (!requestPath.endsWith('/')) return { kind: 'redirect', path: requestPath + '/' };
    for (const name of this.#opt.index) {
      const found = await this.#file([...segments, name]);
      if (found !== null) return found;
    }
    if (this.#opt.autoindex) return { kind: 'listing', dir: fsPath };
    return orElse;
  }

  async #resolveUncached(requestPath: string): Promise<Resolution> {
    const segments = decodeSegments(requestPath);
    if (segments === null || this.#hidden(segments)) return NOT_FOUND;
    const tryFiles = this.#opt.tryFiles;
    if (tryFiles === undefined) {
      if (!requestPath.endsWith('/')) {
        const file = await this.#file(segments);
        if (file !== null) return file;
      }
      return (await this.#directory(segments, requestPath, FORBIDDEN)) ?? NOT_FOUND;
    }
    for (let i = 0; i < tryFiles.length; i++) {
      const entry = tryFiles[i]!;
      const last = i === tryFiles.length - 1;
      if (entry.startsWith('=')) return { kind: 'status', status: Number(entry.slice(1)) };
      const candidate = entry.replaceAll('$uri', requestPath);
      const wantsDir = candidate.endsWith('/');
      const canonical = normalizePath(candidate);
      const parts = canonical === null ? null : decodeSegments(canonical);
      if (canonical === null || parts === null || this.#hidden(parts)) continue;
      // `$uri/` for `/docs` finds the folder under the client's own path, so it is redirected to `/docs/`.
      const dirPath = entry === '$uri/' ? requestPath : canonical;
      const found = wantsDir ? await this.#directory(parts, dirPath, null) : await this.#file(parts);
      if (found !== null) return found;
      if (last) return NOT_FOUND;
    }
    return NOT_FOUND;
  }
}

async function statOrNull(file: string): Promise<Stats | null> {
  try {
    return await fs.stat(file);
  } catch {
    return null;
  }
}
