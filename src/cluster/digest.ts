/**
 * A config's digest as the cluster compares it (docs/cluster.md, "Boxes and status"): a hash of what the config
 * means (its parsed, defaulted form), minus what legitimately differs from box to box, so that the boxes of one
 * fleet, each with its own addresses and name, agree, and a box with another upstream, route or cache setting
 * stands out. Paths under the config's folder count as written relative to it (each box may keep its config in a
 * folder of its own). Unlike `config.digest` (the file's text), two files that mean the same have one digest.
 */
import { createHash } from 'node:crypto';
import type { Config } from '../config/load.js';

/**
 * What is left out of the digest, as key paths (`[]`: each item of a list): where a box listens, its name, how it
 * reaches Redis and its copy of the secret, its admin listener (address, TLS, token), where it keeps its state, pid
 * file and logs, and its worker count (`auto` follows the machine's cores).
 */
export const PER_BOX_KEYS: readonly string[] = [
  'listen[].addr',
  'cluster.name',
  'cluster.redis',
  'cluster.sentinels',
  'cluster.key',
  'admin.listen',
  'admin.tls',
  'admin.token',
  'admin.token_file',
  'state_dir',
  'pid_file',
  'log.access',
  'log.error',
  'workers',
];

/** What the loader adds beside the parsed config (its file, folder, warnings, control socket, text digest). */
const LOADER_FIELDS = ['file', 'dir', 'warnings', 'control', 'digest'];

/** The meaning digest of `config`: sha256 of its canonical form without `PER_BOX_KEYS`, hex, 16 characters. */
export function configDigest(config: Config): string {
  const dir = config.dir;
  const hash = createHash('sha256');
  hash.update(canonical(withoutPerBox(config as unknown as Record<string, unknown>), dir));
  return hash.digest('hex').slice(0, 16);
}

/** A copy of the config's top level without the loader's fields and `PER_BOX_KEYS` (the nested ones copied on the way). */
function withoutPerBox(config: Record<string, unknown>): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...config };
  for (const field of LOADER_FIELDS) delete copy[field];
  for (const keyPath of PER_BOX_KEYS) remove(copy, keyPath.split('.'));
  return copy;
}

/** Removes the key at `parts` from `holder`, copying each object or list it goes through (the config is frozen). */
function remove(holder: Record<string, unknown>, parts: readonly string[]): void {
  const [first, ...rest] = parts;
  const many = first!.endsWith('[]');
  const key = many ? first!.slice(0, -2) : first!;
  if (!(key in holder)) return;
  if (rest.length === 0) {
    delete holder[key];
    return;
  }
  const value = holder[key];
  if (many && Array.isArray(value)) {
    holder[key] = value.map((item: unknown) => {
      if (item === null || typeof item !== 'object') return item;
      const inner = { ...(item as Record<string, unknown>) };
      remove(inner, rest);
      return inner;
    });
    return;
  }
  if (value === null || typeof value !== 'object') return;
  const inner = { ...(value as Record<string, unknown>) };
  remove(inner, rest);
  holder[key] = inner;
}

/** JSON with sorted keys, regular expressions as `/source/flags`, byte arrays hashed, paths under `dir` relative. */
function canonical(value: unknown, dir: string): string {
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return 'null';
  if (typeof value === 'string') return JSON.stringify(relative(value, dir));
  if (typeof value === 'bigint') return value.toString();
  if (typeof value !== 'object' || value === null) return JSON.stringify(value);
  if (value instanceof RegExp) return JSON.stringify(`/${value.source}/${value.flags}`);
  if (value instanceof Uint8Array) return JSON.stringify(`sha256:${createHash('sha256').update(value).digest('hex')}`);
  if (value instanceof Map) return canonical(Object.fromEntries(value), dir);
  if (value instanceof Set) return canonical([...value], dir);
  if (Array.isArray(value)) return `[${value.map((item) => canonical(item, dir)).join(',')}]`;
  const json = (value as { toJSON?: () => unknown }).toJSON;
  if (typeof json === 'function') return canonical(json.call(value), dir);
  const keys = Object.keys(value).filter((key) => (value as Record<string, unknown>)[key] !== undefined).sort();
  return `{${keys.map((key) => `${JSON.stringify(key)}:${canonical((value as Record<string, unknown>)[key], dir)}`).join(',')}}`;
}

/** A path under the config's folder as `./rest` (the folder itself: `.`); anything else as it is. */
function relative(text: string, dir: string): string {
  if (text === dir) return '.';
  return text.startsWith(`${dir}/`) ? `./${text.slice(dir.length + 1)}` : text;
}
