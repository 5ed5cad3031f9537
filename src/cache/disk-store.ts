/**
 * The disk tier of the HTTP cache: one file per stored variant, so the cache survives a restart.
 *
 * A variant lives at `<path>/<hh>/<sha256(key + "\0" + varyKey)>` (`hh` = the hash's first two hex digits, so no
 * folder grows past 1/256 of the entries). A file is `PCO1`, a u32 BE length, a JSON header (key, varyKey,
 * status, headers, times, bodyLength, bodyCrc32), then the body. It is written under `<path>/tmp/` and renamed
 * into place, so a crash leaves a tmp file (swept by `open()`), never a half entry under a served name. There is
 * no fsync: a file torn by a power loss fails the length or CRC check and is discarded like any corrupt entry,
 * which is all a cache needs.
 *
 * The index (name → key, varyKey, size) is in memory, in a Map whose insertion order is the LRU order. Every
 * change to the index and to the files under served names goes through one serial queue, so the index always
 * matches the disk; the slow part, writing a body, runs outside it and in parallel. One DiskStore per path per
 * process: two instances on one path would each sweep the other's tmp files and keep diverging indexes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { storedSize, type PersistentStore, type StoredResponse } from './types.js';

/** Options of a DiskStore. */
export interface DiskStoreOptions {
  /** Folder of the store (created if missing). Nothing else should write there. */
  path: string;
  /** Bound on the sum of `storedSize()` of the stored variants. */
  maxSize: number;
}

/** The JSON header of an entry file. */
interface EntryHeader {
  key: string;
  varyKey: string;
  status: number;
  headers: string[];
  requestTime: number;
  responseTime: number;
  bodyLength: number;
  bodyCrc32: number;
}

/** What the index knows of one stored variant. A replaced variant gets a new object, so identity tells versions apart. */
interface IndexEntry {
  readonly name: string;
  readonly key: string;
  readonly varyKey: string;
  readonly size: number;
}

/** A put whose body is being written; a delete of its key cancels it so a purge is not undone by a late write. */
interface PendingPut {
  readonly key: string;
  cancelled: boolean;
}

const MAGIC = Buffer.from('PCO1', 'latin1');
/** Magic plus the u32 header length. */
const PREFIX_LENGTH = 8;
/** Above this a "header length" is garbage, not a response head; bounds what a bad file makes us allocate. */
const MAX_HEADER_LENGTH = 1 << 24;
const ENTRY_NAME = /^[0-9a-f]{64}$/;
const FOLDERS = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
/** Folders scanned at once by open(): bounds the file handles open together. */
const SCAN_CONCURRENCY = 16;
const EMPTY = Buffer.alloc(0);

/** Persistent, size-bounded LRU store of response variants on a local disk. */
export class DiskStore implements PersistentStore {
  readonly #root: string;
  readonly #tmpDir: string;
  #maxSize: number;
  /** name → entry, least recently used first. */
  readonly #entries = new Map<string, IndexEntry>();
  /** key → varyKey → entry. */
  readonly #variants = new Map<string, Map<string, IndexEntry>>();
  readonly #pending = new Set<PendingPut>();
  readonly #inFlight = new Set<Promise<unknown>>();
  #queue: Promise<unknown> = Promise.resolve();
  #size = 0;
  #closed = false;

  constructor(options: DiskStoreOptions) {
    if (!(options.maxSize > 0)) throw new RangeError(`DiskStore maxSize must be positive, got ${options.maxSize}`);
    this.#root = options.path;
    this.#tmpDir = join(options.path, 'tmp');
    this.#maxSize = options.maxSize;
  }

  /** Bytes in use: the sum of `storedSize()` of the stored variants. */
  get size(): number {
    return this.#size;
  }

  /** Keys stored (each key's variants count once). */
  get entries(): number {
    return this.#variants.size;
  }

  /**
   * Sweeps tmp files, rebuilds the index from the entry headers (deleting unreadable ones), then applies the bound.
   * `shared` (an upgrade's new process, while the old one still writes here): no sweep and no eviction.
   */
  async open(shared = false): Promise<void> {
    this.#closed = false;
    this.#entries.clear();
    this.#variants.clear();
    this.#size = 0;
    await mkdir(this.#tmpDir, { recursive: true });
    if (!shared) for (const name of await readdir(this.#tmpDir)) await rm(join(this.#tmpDir, name), { force: true, recursive: true });

    const found: { header: EntryHeader; name: string; mtimeMs: number }[] = [];
    let next = 0;
    const scanNext = async (): Promise<void> => {
      while (next < FOLDERS.length) await this.#scanFolder(FOLDERS[next++]!, found);
    };
    await Promise.all(Array.from({ length: SCAN_CONCURRENCY }, scanNext));

    // get() bumps a file's mtime, so mtime order is the last session's LRU order.
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const { header, name } of found) {
      this.#insert({ name, key: header.key, varyKey: header.varyKey, size: sizeOfHeader(header) });
    }
    if (!shared) await this.#serially(() => this.#evict());
  }

  /** Every valid variant of `key`; a corrupt or truncated one is deleted and left out. */
  async get(key: string): Promise<StoredResponse[]> {
    const variants = this.#variants.get(key);
    if (this.#closed || !variants) return [];
    const read = this.#track(Promise.all([...variants.values()].map((entry) => this.#readVariant(entry))));
    return (await read).filter((stored): stored is StoredResponse => stored !== undefined);
  }

  /** Stores a variant (replacing the same key and varyKey), then evicts least recently used beyond the bound. */
  async put(entry: StoredResponse): Promise<void> {
    if (this.#closed) return;
    await this.#track(this.#store(entry));
  }

  /** Whether a variant of `key` is in the index or being written (from memory: no disk access). */
  holds(key: string): boolean {
    if (this.#variants.has(key)) return true;
    for (const pending of this.#pending) if (pending.key === key && !pending.cancelled) return true;
    return false;
  }

  /** Removes every variant of `key`; returns how many were stored. */
  async delete(key: string): Promise<number> {
    if (this.#closed) return 0;
    this.#cancelPending((pendingKey) => pendingKey === key);
    return this.#track(this.#serially(() => this.#remove([...(this.#variants.get(key)?.values() ?? [])])));
  }

  /** Removes every variant of every key starting with `prefix`; returns how many were stored. */
  async deletePrefix(prefix: string): Promise<number> {
    return this.deleteMatching((key) => key.startsWith(prefix));
  }

  /** Removes every variant of every key `match` accepts; returns how many were stored. */
  async deleteMatching(match: (key: string) => boolean): Promise<number> {
    if (this.#closed) return 0;
    this.#cancelPending(match);
    return this.#track(
      this.#serially(() => {
        const victims: IndexEntry[] = [];
        for (const [key, variants] of this.#variants) if (match(key)) victims.push(...variants.values());
        return this.#remove(victims);
      }),
    );
  }

  /** Waits for the reads and writes in flight; later calls do nothing (get gives [], put stores nothing). */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    await this.#queue;
  }

  async #store(entry: StoredResponse): Promise<void> {
    const name = entryName(entry.key, entry.varyKey);
    const size = storedSize(entry);
    if (size > this.#maxSize) {
      // Not stored; and the older response it supersedes must not be served in its place.
      await this.#serially(() => this.#remove(this.#current(name)));
      return;
    }
    const pending: PendingPut = { key: entry.key, cancelled: false };
    this.#pending.add(pending);
    let tmp: string;
    try {
      tmp = await this.#writeTemporary(entry);
    } catch (err) {
      this.#pending.delete(pending);
      throw err;
    }
    return this.#serially(async () => {
      this.#pending.delete(pending);
      if (pending.cancelled) return removeFile(tmp);
      try {
        await rename(tmp, this.#fileOf(name));
      } catch (err) {
        await removeFile(tmp);
        throw err;
      }
      for (const previous of this.#current(name)) this.#forget(previous);
      this.#insert({ name, key: entry.key, varyKey: entry.varyKey, size });
      await this.#evict();
    });
  }

  /** Writes the whole entry file under tmp/ and returns its path. */
  async #writeTemporary(entry: StoredResponse): Promise<string> {
    const header: EntryHeader = {
      key: entry.key,
      varyKey: entry.varyKey,
      status: entry.status,
      headers: [...entry.headers],
      requestTime: entry.requestTime,
      responseTime: entry.responseTime,
      bodyLength: entry.body.length,
      bodyCrc32: crc32(entry.body),
    };
    const json = Buffer.from(JSON.stringify(header), 'utf8');
    const prefix = Buffer.allocUnsafe(PREFIX_LENGTH);
    MAGIC.copy(prefix, 0);
    prefix.writeUInt32BE(json.length, 4);
    const tmp = join(this.#tmpDir, randomBytes(12).toString('hex'));
    try {
      await writeFile(tmp, [prefix, json, entry.body], { flag: 'wx' });
    } catch (err) {
      await removeFile(tmp);
      throw err;
    }
    return tmp;
  }

  /** Reads and checks one variant; an unreadable one is removed. */
  async #readVariant(entry: IndexEntry): Promise<StoredResponse | undefined> {
    const file = this.#fileOf(entry.name);
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.#discard(entry);
      return undefined;
    }
    const stored = decodeEntry(data, entry.key, entry.varyKey);
    if (!stored) {
      await this.#discard(entry);
      return undefined;
    }
    if (this.#entries.get(entry.name) === entry) {
      this.#entries.delete(entry.name);
      this.#entries.set(entry.name, entry);
      // Persist the use for the next open(); not awaited by get(), but close() waits for it.
      const now = new Date();
      void this.#track(utimes(file, now, now).catch(() => undefined));
    }
    return stored;
  }

  /** Removes a variant found unreadable, unless a put has replaced it since it was read. */
  #discard(entry: IndexEntry): Promise<number> {
    return this.#serially(() => this.#remove(this.#entries.get(entry.name) === entry ? [entry] : []));
  }

  /** Reads the headers of one folder's entries into `found`; deletes the unreadable ones. Other names are left alone. */
  async #scanFolder(folder: string, found: { header: EntryHeader; name: string; mtimeMs: number }[]): Promise<void> {
    const dir = join(this.#root, folder);
    await mkdir(dir, { recursive: true });
    for (const dirent of await readdir(dir, { withFileTypes: true })) {
      const name = dirent.name;
      if (!dirent.isFile() || !ENTRY_NAME.test(name) || !name.startsWith(folder)) continue;
      const file = join(dir, name);
      let scanned: { header: EntryHeader; mtimeMs: number } | undefined;
      try {
        scanned = await readHeader(file);
      } catch (err) {
        if (isNotFound(err)) continue;
        throw err;
      }
      if (scanned && entryName(scanned.header.key, scanned.header.varyKey) === name) found.push({ ...scanned, name });
      else await removeFile(file);
    }
  }

  resize(maxSize: number): void {
    if (!(maxSize > 0)) throw new RangeError(`DiskStore maxSize must be positive, got ${maxSize}`);
    this.#maxSize = maxSize;
  }

  /** Drops least recently used variants until the bound holds. Runs inside the queue. */
  #evict(): Promise<number> {
    const victims: IndexEntry[] = [];
    let size = this.#size;
    for (const entry of this.#entries.values()) {
      if (size <= this.#maxSize) break;
      victims.push(entry);
      size -= entry.size;
    }
    return this.#remove(victims);
  }

  /** Drops current entries from the index and their files from disk. Runs inside the queue. */
  async #remove(entries: readonly IndexEntry[]): Promise<number> {
    for (const entry of entries) this.#forget(entry);
    await Promise.all(entries.map((entry) => removeFile(this.#fileOf(entry.name))));
    return entries.length;
  }

  #current(name: string): IndexEntry[] {
    const entry = this.#entries.get(name);
    return entry ? [entry] : [];
  }

  #insert(entry: IndexEntry): void {
    this.#entries.set(entry.name, entry);
    let variants = this.#variants.get(entry.key);
    if (!variants) this.#variants.set(entry.key, (variants = new Map()));
    variants.set(entry.varyKey, entry);
    this.#size += entry.size;
  }

  #forget(entry: IndexEntry): void {
    this.#entries.delete(entry.name);
    const variants = this.#variants.get(entry.key);
    variants?.delete(entry.varyKey);
    if (variants?.size === 0) this.#variants.delete(entry.key);
    this.#size -= entry.size;
  }

  #cancelPending(matches: (key: string) => boolean): void {
    for (const pending of this.#pending) if (matches(pending.key)) pending.cancelled = true;
  }

  /** Runs `task` after every task queued before it; a failure does not stop the queue. */
  #serially<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Registers an operation so close() can wait for it. */
  #track<T>(operation: Promise<T>): Promise<T> {
    this.#inFlight.add(operation);
    const settle = () => this.#inFlight.delete(operation);
    operation.then(settle, settle);
    return operation;
  }

  #fileOf(name: string): string {
    return join(this.#root, name.slice(0, 2), name);
  }
}

/** The file name of a variant: sha256 hex of `key + "\0" + varyKey`. */
function entryName(key: string, varyKey: string): string {
  return createHash('sha256').update(`${key}\0${varyKey}`).digest('hex');
}

/** `storedSize()` of the variant a header describes; storedSize counts the body by its length alone. */
function sizeOfHeader(header: EntryHeader): number {
  return storedSize({ ...header, body: EMPTY }) + header.bodyLength;
}

/** The header length from the fixed prefix, or undefined when the magic is wrong or the file too short for it. */
function readPrefix(prefix: Buffer, fileLength: number): number | undefined {
  if (prefix.length < PREFIX_LENGTH || !prefix.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const headerLength = prefix.readUInt32BE(MAGIC.length);
  if (headerLength > MAX_HEADER_LENGTH || PREFIX_LENGTH + headerLength > fileLength) return undefined;
  return headerLength;
}

/** The parsed header, or undefined when it is not valid JSON of the right shape or the file length disagrees with it. */
function parseHeader(json: Buffer, fileLength: number): EntryHeader | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!isEntryHeader(value)) return undefined;
  return PREFIX_LENGTH + json.length + value.bodyLength === fileLength ? value : undefined;
}

function isEntryHeader(value: unknown): value is EntryHeader {
  if (typeof value !== 'object' || value === null) return false;
  const h = value as Record<string, unknown>;
  return (
    typeof h.key === 'string' &&
    typeof h.varyKey === 'string' &&
    Number.isInteger(h.status) &&
    Array.isArray(h.headers) &&
    h.headers.every((field) => typeof field === 'string') &&
    Number.isFinite(h.requestTime) &&
    Number.isFinite(h.responseTime) &&
    Number.isSafeInteger(h.bodyLength) &&
    (h.bodyLength as number) >= 0 &&
    Number.isInteger(h.bodyCrc32)
  );
}

/** Reads only the header of an entry file (not the body) and checks the file's length against it. */
async function readHeader(file: string): Promise<{ header: EntryHeader; mtimeMs: number } | undefined> {
  const handle = await open(file, 'r');
  try {
    const { size, mtimeMs } = await handle.stat();
    const prefix = Buffer.alloc(PREFIX_LENGTH);
    const { bytesRead } = await handle.read(prefix, 0, PREFIX_LENGTH, 0);
    const headerLength = readPrefix(prefix.subarray(0, bytesRead), size);
    if (headerLength === undefined) return undefined;
    const json = Buffer.alloc(headerLength);
    const { bytesRead: jsonRead } = await handle.read(json, 0, headerLength, PREFIX_LENGTH);
    if (jsonRead !== headerLength) return undefined;
    const header = parseHeader(json, size);
    return header && { header, mtimeMs };
  } finally {
    await handle.close();
  }
}

/** A whole entry file checked (magic, header, length, CRC-32, and that it is the variant asked for), or undefined. */
function decodeEntry(data: Buffer, key: string, varyKey: string): StoredResponse | undefined {
  const headerLength = readPrefix(data, data.length);
  if (headerLength === undefined) return undefined;
  const bodyStart = PREFIX_LENGTH + headerLength;
  const header = parseHeader(data.subarray(PREFIX_LENGTH, bodyStart), data.length);
  if (!header || header.key !== key || header.varyKey !== varyKey) return undefined;
  const body = data.subarray(bodyStart);
  if (crc32(body) !== header.bodyCrc32) return undefined;
  const { status, headers, requestTime, responseTime } = header;
  return { key, varyKey, status, headers, body, requestTime, responseTime };
}

async function removeFile(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}
