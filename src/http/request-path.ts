/**
 * The one canonical form of a request path. Route matching, static file lookup and (later) forwarding all use
 * it, so that `/%61pp/`, `//app` and `/x/../app` are the same path as `/app/` and can never bypass a route.
 *
 * Rules (RFC 3986 §6.2.2 plus nginx's habits):
 * - percent-encoded *unreserved* characters (ALPHA DIGIT - . _ ~) are decoded; every other escape is kept,
 *   with upper-case hex. An encoded slash `%2F` therefore stays `%2F` and is never a separator.
 * - characters that may not appear raw in a path (space, `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, and
 *   bytes ≥ 0x80) are percent-encoded.
 * - `%00`, any raw control character, and a malformed escape make the path invalid (the caller answers 400).
 * - repeated slashes are merged into one (as nginx's `merge_slashes on`).
 * - `.` and `..` segments are resolved; `..` never climbs above `/`. A path ending in `/`, `/.` or `/..` keeps a
 *   trailing slash.
 */

const UNRESERVED = new Uint8Array(128);
const PCHAR = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  if (/[A-Za-z0-9\-._~]/.test(ch)) UNRESERVED[c] = 1;
  if (/[A-Za-z0-9\-._~!$&'()*+,;=:@/]/.test(ch)) PCHAR[c] = 1;
}
const HEX = '0123456789ABCDEF';

function hexValue(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 65 && code <= 70) return code - 55;
  if (code >= 97 && code <= 102) return code - 87;
  return -1;
}

function encodeByte(byte: number): string {
  return '%' + HEX[byte >> 4] + HEX[byte & 15];
}

/** True when `path` is already canonical and needs no work: the common case, checked in one pass. */
function isCanonical(path: string): boolean {
  let prev = 0;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c >= 128 || PCHAR[c] === 0 || c === 37 /* % */) return false;
    if (prev === 47 /* / */ && (c === 47 || c === 46 /* . */)) return false;
    prev = c;
  }
  return true;
}

/**
 * The canonical form of the path part of a request target (which must start with `/`), or `null` when the
 * path is invalid and the request must be refused with 400.
 */
export function normalizePath(path: string): string | null {
  if (path.length === 0 || path.charCodeAt(0) !== 47) return null;
  if (isCanonical(path)) return path;

  // Pass 1: decode unreserved escapes, normalise the rest, reject NUL and control characters.
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 37) {
      const hi = hexValue(path.charCodeAt(i + 1));
      const lo = hexValue(path.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) return null;
      const byte = (hi << 4) | lo;
      if (byte === 0) return null;
      decoded += byte < 128 && UNRESERVED[byte] === 1 ? String.fromCharCode(byte) : encodeByte(byte);
      i += 2;
    } else if (c < 0x20 || c === 0x7f) {
      return null;
    } else if (c >= 128) {
      // Node hands the request line over as latin1, one char per byte; anything wider came from elsewhere.
      if (c > 0xff) for (const byte of Buffer.from(path[i]!, 'utf8')) decoded += encodeByte(byte);
      else decoded += encodeByte(c);
    } else if (PCHAR[c] === 0) {
      decoded += encodeByte(c);
    } else {
      decoded += path[i];
    }
  }

  // Pass 2: merge slashes and resolve dot segments.
  const segments = decoded.split('/');
  const out: string[] = [];
  let trailingSlash = false;
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    const last = i === segments.length - 1;
    if (segment === '' || segment === '.') {
      if (last) trailingSlash = true;
    } else if (segment === '..') {
      out.pop();
      if (last) trailingSlash = true;
    } else {
      out.push(segment);
    }
  }
  if (out.length === 0) return '/';
  return '/' + out.join('/') + (trailingSlash ? '/' : '');
}

/** A request target split into its parts. */
export interface RequestTarget {
  /** The canonical path (see `normalizePath`). */
  path: string;
  /** The query string without `?`, as received; `''` when absent. */
  query: string;
  /** The authority of an absolute-form target (`GET http://host/p`), which wins over `Host`. */
  authority: string | undefined;
}

/**
 * Splits a request target (origin-form or absolute-form) and canonicalises its path; `null` when it is invalid.
 * The asterisk-form (`OPTIONS *`) is returned with the path `*`.
 */
export function parseRequestTarget(target: string): RequestTarget | null {
  let authority: string | undefined;
  let rest = target;
  if (target.charCodeAt(0) !== 47) {
    if (target === '*') return { path: '*', query: '', authority: undefined };
    const scheme = /^https?:\/\//i.exec(target);
    if (scheme === null) return null;
    const afterScheme = target.slice(scheme[0].length);
    let end = afterScheme.length;
    for (let i = 0; i < afterScheme.length; i++) {
      const c = afterScheme.charCodeAt(i);
      if (c === 47 || c === 63 || c === 35) {
        end = i;
        break;
      }
    }
    authority = afterScheme.slice(0, end);
    if (authority === '' || authority.includes('@')) return null;
    rest = afterScheme.slice(end);
    if (rest === '' || rest.charCodeAt(0) === 63) rest = '/' + rest;
  }
  const q = rest.indexOf('?');
  const rawPath = q === -1 ? rest : rest.slice(0, q);
  let query = q === -1 ? '' : rest.slice(q + 1);
  const hash = query.indexOf('#');
  if (hash !== -1) query = query.slice(0, hash);
  const hashInPath = rawPath.indexOf('#');
  const path = normalizePath(hashInPath === -1 ? rawPath : rawPath.slice(0, hashInPath));
  if (path === null) return null;
  return { path, query, authority };
}

/**
 * Splits a canonical path into decoded file-system segments for static lookup, or `null` when a segment would
 * be unsafe on disk: an encoded slash or backslash, a NUL, or a dot segment that survived encoding.
 */
export function decodeSegments(canonicalPath: string): string[] | null {
  const parts = canonicalPath.split('/');
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '') continue;
    let segment: string;
    if (part.includes('%')) {
      try {
        segment = decodeURIComponent(part);
      } catch {
        // Not UTF-8: fall back to the raw bytes as latin1 so that such names are simply not found.
        segment = unescape(part);
      }
    } else {
      segment = part;
    }
    if (segment === '.' || segment === '..' || /[/\\\0]/.test(segment)) return null;
    out.push(segment);
  }
  return out;
}
