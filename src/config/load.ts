/**
 * Config loading: YAML (or JSON, which YAML reads too) parsed with positions → schema → semantic checks →
 * relative paths resolved against the config's folder → deep-frozen `Config`. Every problem found is reported
 * at once, each with file, line, column and the path of the key.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { ConfigError, type ConfigIssue } from '../errors.js';
import { configSchema, http2Settings, listenerTls, upstreamObject, type ConfigParts, type ParsedConfig, type PemPair } from './schema.js';
import { controlSocketPath, stateDirFor } from './control.js';
import { configErrorMap, unknownKeyMessage, type KeyHome } from './messages.js';
import { configWarnings, validateConfig } from './validate.js';
import { syntaxProblem } from './yaml-syntax.js';

type DeepReadonly<T> = T extends RegExp
  ? T
  : T extends (infer U)[]
    ? readonly DeepReadonly<U>[]
    : T extends object
      ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
      : T;

/** The validated, fully defaulted, immutable config the runtime is built from. */
export type Config = DeepReadonly<ParsedConfig> & {
  /** Absolute path of the file it came from (or a pseudo-name for inline text). */
  readonly file: string;
  /** What is valid but likely a mistake (`portico check` prints these, `run` logs them), in file order. */
  readonly warnings: readonly ConfigIssue[];
  /** Folder that relative paths in the config were resolved against. */
  readonly dir: string;
  /**
   * The control channel: its unix socket, `control.sock` in the state directory (`state_dir`, else `./var/NAME`
   * beside the config file; see `config/control.ts`).
   */
  readonly control: { readonly socket: string };
  /** sha256 of the config text as loaded, hex, its first 16 characters (status: which config is serving). */
  readonly digest?: string;
};

/**
 * A config file's name as messages show it: relative to the working folder when the file is below it, else
 * absolute (`../../tmp/x.yaml` would make a reader work out where that is).
 */
export function displayPath(file: string): string {
  const absolute = path.resolve(file);
  const relative = path.relative(process.cwd(), absolute);
  const outside = relative === '' || relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative);
  return outside ? absolute : relative;
}

/** A path into the config, as keys and indexes: `['sites', 0, 'routes', 1, 'static', 'root']`. */
export type KeyPath = readonly PropertyKey[];

/** Formats a key path as `sites[0].routes[1].static.root`. */
export function formatKeyPath(keys: KeyPath): string {
  let out = '';
  for (const key of keys) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

/** Whether a YAML map key is `key`; a key YAML read as a number (`404:` under error_pages) matches its text. */
function sameKey(node: unknown, key: PropertyKey): boolean {
  const value = (node as { value?: unknown } | null)?.value;
  return value === key || (typeof key === 'string' && typeof value === 'number' && String(value) === key);
}

/** Finds where a key path sits in the YAML source; falls back to the nearest existing parent. */
function locate(doc: Document, lines: LineCounter, keys: KeyPath, unknownKey?: string): { line: number; col: number } {
  let node: unknown = doc.contents;
  let offset = (doc.contents as YamlNode | null)?.range?.[0] ?? 0;
  for (const key of keys) {
    if (isMap(node)) {
      const pair = node.items.find((item) => sameKey(item.key, key));
      if (pair === undefined) break;
      offset = (pair.key as YamlNode).range?.[0] ?? offset;
      node = pair.value;
      const valueStart = (node as YamlNode | null)?.range?.[0];
      if (valueStart !== undefined) offset = valueStart;
    } else if (isSeq(node) && typeof key === 'number') {
      const item = node.items[key];
      if (item === undefined) break;
      node = item;
      offset = (item as YamlNode).range?.[0] ?? offset;
    } else {
      break;
    }
  }
  if (unknownKey !== undefined && isMap(node)) {
    const pair = node.items.find((item) => sameKey(item.key, unknownKey));
    const start = (pair?.key as YamlNode | undefined)?.range?.[0];
    if (start !== undefined) offset = start;
  }
  const pos = lines.linePos(offset);
  return { line: pos.line, col: pos.col };
}

/** The YAML node at a key path, or undefined when the path leaves the document. */
function nodeAt(doc: Document, keys: KeyPath): unknown {
  let node: unknown = doc.contents;
  for (const key of keys) {
    if (isMap(node)) node = node.items.find((item) => sameKey(item.key, key))?.value;
    else if (isSeq(node) && typeof key === 'number') node = node.items[key];
    else return undefined;
  }
  return node;
}

/**
 * The key left empty just above an unknown key of the same map (`static:` then `root:` at its indentation, unknown
 * keys between them skipped): the key it was most likely meant to be indented under.
 */
function emptyKeyAbove(doc: Document, keys: KeyPath, unknown: readonly string[], key: string): string | undefined {
  const map = nodeAt(doc, keys);
  if (!isMap(map)) return undefined;
  const at = map.items.findIndex((item) => sameKey(item.key, key));
  for (let i = at - 1; i >= 0; i--) {
    const pair = map.items[i]!;
    const name = isScalar(pair.key) ? String(pair.key.value) : undefined;
    if (name === undefined) return undefined;
    if (unknown.includes(name)) continue;
    return pair.value === null || (isScalar(pair.value) && pair.value.value === null) ? name : undefined;
  }
  return undefined;
}

/** Keys only an upstream has: written on a proxy or a site, the message says where they go. */
const KEY_HOMES: readonly KeyHome[] = [
  { keys: Object.keys(upstreamObject.shape), where: 'an upstream: upstreams.NAME.KEY, which a proxy names with "upstream: NAME"' },
];

/** The message for one unknown key of an unrecognized_keys issue at `keys`. */
function unknownKey(issue: z.core.$ZodIssueUnrecognizedKeys, doc: Document, keys: KeyPath, key: string): string {
  const above = emptyKeyAbove(doc, keys, issue.keys, key);
  if (above !== undefined) return `unknown key here; did you mean to indent it under "${above}"?`;
  return unknownKeyMessage(issue, key, KEY_HOMES);
}

/** Turns zod's issues into located config issues. */
function schemaIssues(error: z.ZodError, doc: Document, lines: LineCounter, file: string): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const collect = (list: readonly z.core.$ZodIssue[], base: readonly PropertyKey[]): void => {
    for (const issue of list) {
      const keys = [...base, ...issue.path];
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          const where = locate(doc, lines, keys, key);
          issues.push({ file, ...where, keyPath: formatKeyPath([...keys, key]), message: unknownKey(issue, doc, keys, key) });
        }
        continue;
      }
      if (issue.code === 'invalid_union') {
        // The branch whose type fitted (e.g. the object form of a listener) holds the real problem, at its own path.
        const fitting = issue.errors.find((branch) => !branch.some((inner) => (inner.code === 'invalid_type' || inner.code === 'invalid_value') && inner.path.length === 0));
        if (fitting !== undefined && fitting.length > 0) {
          collect(fitting, keys);
          continue;
        }
      }
      issues.push({ file, ...locate(doc, lines, keys), keyPath: formatKeyPath(keys), message: issue.message });
    }
  };
  collect(error.issues, []);
  return issues;
}

/** Issues sorted by where they are in the file, as a reader goes through it. */
function inFileOrder(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.sort((a, b) => a.line - b.line || a.col - b.col);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !(value instanceof RegExp) && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/**
 * Parses and validates config text against the handler kinds and policies in `parts`; `file` names it in errors,
 * `dir` anchors relative paths.
 */
export function parseConfigWith(parts: ConfigParts, text: string, file: string, dir: string = path.dirname(path.resolve(file))): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const displayName = displayPath(file);
  if (doc.errors.length > 0) throw new ConfigError([{ file: displayName, ...syntaxProblem(doc.errors, text, lines, doc), keyPath: '' }]);
  const raw: unknown = doc.toJS() ?? {};
  const parsed = configSchema(parts).safeParse(raw, { error: configErrorMap });
  if (!parsed.success) throw new ConfigError(inFileOrder(schemaIssues(parsed.error, doc, lines, displayName)));

  const problems = validateConfig(parsed.data, dir, parts, file);
  if (problems.length > 0) {
    throw new ConfigError(
      inFileOrder(problems.map((p) => ({ file: displayName, ...locate(doc, lines, p.keys), keyPath: formatKeyPath(p.keys), message: p.message }))),
    );
  }
  const warnings = inFileOrder(
    configWarnings(parsed.data).map((p) => ({ file: displayName, ...locate(doc, lines, p.keys), keyPath: formatKeyPath(p.keys), message: p.message })),
  );
  const control = { socket: controlSocketPath(stateDirFor(file, dir, parsed.data.state_dir)) };
  const digest = createHash('sha256').update(text).digest('hex').slice(0, 16);
  return deepFreeze({ ...parsed.data, file: path.resolve(file), dir, warnings, control, digest }) as Config;
}

/** Reads and parses a config file. Throws `ConfigError` (with every issue) or the file-system error. */
export function loadConfigFileWith(parts: ConfigParts, file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    // The absolute path: a relative one hides which folder it was looked for in.
    const absolute = path.resolve(file);
    const code = (err as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT' ? 'it does not exist' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new ConfigError([{ file: absolute, line: 0, col: 0, keyPath: '', message: `cannot read the config file: ${reason}` }]);
  }
  return parseConfigWith(parts, text, file);
}

/**
 * The config `portico run --dev` serves: every listener without `tls` (and without `redirect_https`) serves TLS
 * with HTTP/2, with the given certificate (already on disk as `files`) as its default.
 */
export function withDevCertificate(config: Config, files: PemPair, pem: PemPair): Config {
  const listen = config.listen.map((listener) => {
    if (listener.tls !== undefined || listener.redirect_https !== undefined) return listener;
    const tls = { ...listenerTls.parse(files), pem };
    return { ...listener, tls, http2: http2Settings.parse({}) };
  });
  return deepFreeze({ ...config, listen }) as Config;
}
