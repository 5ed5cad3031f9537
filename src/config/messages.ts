/**
 * Config messages a person can act on, in one place: zod's default wording ("Invalid input: expected object,
 * received string", "Too small: expected number to be >=1") becomes what to write and what was written, and a
 * misspelt key or value gets the nearest known name ("did you mean "upstream"?"). A schema's own message (a
 * duration's, a route path's) is kept: zod asks this map only for issues that have none.
 */
import type { z } from 'zod';

/**
 * Edit distance between `a` and `b`: the fewest one-character insertions, deletions, substitutions and swaps of
 * two neighbours (Damerau's optimal string alignment), so `rotue` is one edit from `route`, as `rote` is.
 */
export function editDistance(a: string, b: string): number {
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) current[j] = Math.min(current[j]!, before[j - 2]! + 1);
    }
    before = previous;
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * Names other servers use for what Portico calls otherwise (nginx's `proxy_pass`, `server_name`, `location`; Caddy's
 * `to`): suggested when the object has the Portico name, since no spelling distance leads from one to the other.
 */
const OTHER_NAMES: Readonly<Record<string, readonly string[]>> = {
  pass: ['upstream', 'url'],
  proxy_pass: ['upstream', 'url'],
  to: ['upstream', 'url'],
  target: ['url'],
  backend: ['upstream'],
  backends: ['servers'],
  server_name: ['hosts'],
  server_names: ['hosts'],
  host: ['hosts'],
  domains: ['hosts'],
  location: ['routes'],
  locations: ['routes'],
  root: ['static'],
  file_server: ['static'],
  reverse_proxy: ['proxy'],
};

/** Case, `_` and `-` do not tell names apart for a suggestion (`stripPrefix`, `strip-prefix` → `strip_prefix`). */
function folded(name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '');
}

function commonPrefix(a: string, b: string): number {
  let n = 0;
  while (n < a.length && a[n] === b[n]) n++;
  return n;
}

/**
 * The known names `name` was most likely meant to be: another server's name for the same thing, else the nearest
 * ones by edit distance when near enough (a third of the name's length, at least one edit). Empty when none is.
 */
export function nearestNames(name: string, known: readonly string[]): string[] {
  const other = OTHER_NAMES[name.toLowerCase()]?.filter((candidate) => known.includes(candidate));
  if (other !== undefined && other.length > 0) return other;
  const wanted = folded(name);
  const limit = Math.max(1, Math.floor(wanted.length / 3));
  // Nearest first; among equally near names, those that begin as `name` does (`hots`: `hosts` before `hsts`).
  let best = [Infinity, 0];
  let nearest: string[] = [];
  for (const candidate of known) {
    const distance = editDistance(wanted, folded(candidate));
    const prefix = commonPrefix(wanted, folded(candidate));
    if (distance > limit || distance > best[0]! || (distance === best[0] && prefix < best[1]!)) continue;
    if (distance < best[0]! || prefix > best[1]!) nearest = [];
    best = [distance, prefix];
    nearest.push(candidate);
  }
  return nearest;
}

/** ` did you mean "a" or "b"?` for the nearest known names, or '' when none is near. */
export function didYouMean(name: string, known: readonly string[]): string {
  const nearest = nearestNames(name, known).map((candidate) => JSON.stringify(candidate));
  if (nearest.length === 0) return '';
  return ` (did you mean ${nearest.length === 1 ? nearest[0] : `${nearest.slice(0, -1).join(', ')} or ${nearest.at(-1)}`}?)`;
}

/** A value as a message shows it: strings quoted (long ones cut), lists and maps by kind. */
export function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (value === null) return 'nothing (null)';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map of keys';
  return String(value);
}

/** zod's type names as a config author reads them. */
const TYPE_NAMES: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  array: 'a list',
  object: 'a map of keys',
  record: 'a map of keys',
};

function typeName(type: string): string {
  return TYPE_NAMES[type] ?? type;
}

/** The keys each unrecognized_keys issue's object knows, by the issue's `keys` array (zod copies issues shallowly). */
const knownKeysOf = new WeakMap<readonly PropertyKey[], readonly string[]>();

/** Keys that one kind of object alone has (an upstream's `timeouts`), and where that object is written. */
export interface KeyHome {
  keys: readonly string[];
  /** `an upstream: upstreams.NAME.KEY, …`; KEY stands for the key's name. */
  where: string;
}

/**
 * `unknown key` with the nearest key the object knows, for one key of an unrecognized_keys issue; else, when the key
 * (or a near miss of it) belongs to another kind of object (`proxy: { timeouts: … }`, set on an upstream), where it goes.
 */
export function unknownKeyMessage(issue: z.core.$ZodIssueUnrecognizedKeys, key: string, homes: readonly KeyHome[] = []): string {
  const here = didYouMean(key, knownKeysOf.get(issue.keys) ?? []);
  if (here !== '') return `unknown key${here}`;
  for (const home of homes) {
    const [meant] = nearestNames(key, home.keys);
    if (meant === undefined) continue;
    const where = home.where.replace('KEY', meant);
    return meant === key ? `unknown key here ("${meant}" is set on ${where})` : `unknown key here (did you mean "${meant}"? It is set on ${where})`;
  }
  return 'unknown key';
}

function bound(issue: { origin: string; inclusive?: boolean; exact?: boolean }, limit: number | bigint, atLeast: boolean): string {
  const amount = Number(limit);
  if (issue.origin === 'string') {
    if (atLeast && amount === 1) return 'must not be empty';
    return `must have ${issue.exact ? 'exactly' : atLeast ? 'at least' : 'at most'} ${amount} character${amount === 1 ? '' : 's'}`;
  }
  if (issue.origin === 'array' || issue.origin === 'set') {
    if (atLeast && amount === 1) return 'needs at least one entry';
    return `must have ${issue.exact ? 'exactly' : atLeast ? 'at least' : 'at most'} ${amount} entr${amount === 1 ? 'y' : 'ies'}`;
  }
  if (issue.inclusive === false) return `must be ${atLeast ? 'more' : 'less'} than ${amount}`;
  return `must be ${atLeast ? 'at least' : 'at most'} ${amount}`;
}

/**
 * For a union no branch of which fits the value at all: "expected a string or a number, got true", or for a union
 * of literals "expected one of 301, 302, 307 (got 200)".
 */
function unionMessage(issue: z.core.$ZodRawIssue<z.core.$ZodIssueInvalidUnion>): string | undefined {
  const expected: string[] = [];
  let literals = true;
  for (const branch of issue.errors) {
    const inner = branch[0];
    if (inner === undefined || inner.path.length > 0) return undefined;
    if (inner.code === 'invalid_type') {
      expected.push(typeName(inner.expected));
      literals = false;
    } else if (inner.code === 'invalid_value') {
      expected.push(...inner.values.map((value) => String(value)));
    } else {
      return undefined;
    }
  }
  if (expected.length === 0) return undefined;
  const names = [...new Set(expected)];
  if (literals && names.length > 1) return `expected one of ${names.join(', ')}${issue.input === undefined ? '' : ` (got ${shown(issue.input)})`}`;
  return `expected ${names.join(' or ')}${issue.input === undefined ? '' : `, got ${shown(issue.input)}`}`;
}

/** The key an issue is about, for a message that names it (`path must start with "/"`); '' below a list. */
function lastKey(issue: z.core.$ZodRawIssue): string {
  const key = issue.path?.at(-1);
  return typeof key === 'string' ? `${key} ` : '';
}

/**
 * zod's per-parse error map for configs: a message for every issue a schema did not word itself. Pass it as
 * `schema.safeParse(value, { error: configErrorMap })`.
 */
export function configErrorMap(issue: z.core.$ZodRawIssue): string | undefined {
  const got = issue.input === undefined ? '' : ` (got ${shown(issue.input)})`;
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return `required (${typeName(issue.expected)})`;
      // `static:` with nothing after it: most often its lines are below but not indented under it.
      if (issue.input === null) return `expected ${typeName(issue.expected)}, got nothing (what belongs to a key goes on the lines below it, indented further)`;
      return `expected ${typeName(issue.expected)}, got ${shown(issue.input)}`;
    case 'invalid_union':
      return unionMessage(issue);
    case 'invalid_value': {
      const values = issue.values.map((value) => (typeof value === 'string' ? value : String(value)));
      const expected = values.length === 1 ? shown(issue.values[0]) : `one of ${values.join(', ')}`;
      // The values are listed: a guess helps only when one of them stands out.
      const hint = typeof issue.input === 'string' && nearestNames(issue.input, values).length === 1 ? didYouMean(issue.input, values) : '';
      return `expected ${expected}${got}${hint}`;
    }
    case 'too_small':
      return `${bound(issue, issue.minimum, true)}${issue.input === '' ? '' : got}`;
    case 'too_big':
      return `${bound(issue, issue.maximum, false)}${got}`;
    case 'not_multiple_of':
      return `must be a multiple of ${Number(issue.divisor)}${got}`;
    case 'invalid_format':
      switch (issue.format) {
        case 'starts_with':
          return `${lastKey(issue)}must start with ${JSON.stringify(issue.prefix)}${got}`;
        case 'ends_with':
          return `${lastKey(issue)}must end with ${JSON.stringify(issue.suffix)}${got}`;
        case 'includes':
          return `${lastKey(issue)}must contain ${JSON.stringify(issue.includes)}${got}`;
        case 'url':
          return `expected a URL such as "https://example.com/"${got}`;
        case 'regex':
          return `${lastKey(issue)}does not have the expected form ${issue.pattern ?? ''}${got}`;
        default:
          return `expected ${issue.format === 'email' ? 'an e-mail address' : `a valid ${issue.format}`}${got}`;
      }
    case 'invalid_key':
      // A record key that failed its own check (e.g. error_pages.200): the key schema's message says what a key must be.
      return issue.issues[0]?.message;
    case 'unrecognized_keys': {
      const shape = (issue.inst as { _zod?: { def?: { shape?: object } } } | undefined)?._zod?.def?.shape;
      if (shape !== undefined) knownKeysOf.set(issue.keys, Object.keys(shape));
      return issue.keys.length === 1 ? 'unknown key' : 'unknown keys';
    }
    default:
      return undefined;
  }
}
