/**
 * Which PHP script a request path names, as Caddy's `php_fastcgi` decides it: the path is cut after its first
 * segment ending in `.php` (SCRIPT_NAME) and the rest is PATH_INFO. A script is only ever a regular `.php` file
 * under the real root: `/uploads/evil.jpg/x.php` names the script `/uploads/evil.jpg/x.php`, which does not
 * exist (the front controller answers), never `evil.jpg` with a PATH_INFO — nginx's `cgi.fix_pathinfo` hole.
 * Encoded slashes, NULs and dot segments never reach the disk (`decodeSegments`), as for static files.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { decodeSegments } from '../../http/request-path.js';

/** Where a path leads. */
export type PhpTarget =
  /** A script to run: its SCRIPT_NAME, its file (real path, inside the root) and PATH_INFO (decoded; '' for none). */
  | { readonly kind: 'script'; readonly scriptName: string; readonly filename: string; readonly pathInfo: string }
  /** An existing file that is not a script, or a directory whose index is none: served as a static file. */
  | { readonly kind: 'file' }
  /** A directory named without its slash, whose index script exists: redirected to the slash. */
  | { readonly kind: 'redirect'; readonly location: string }
  | { readonly kind: 'status'; readonly status: 403 | 404 };

/** What locating needs of the route, resolved once. */
export interface LocateOptions {
  /** The real path of the root (symlinks resolved). */
  readonly realRoot: string;
  /** Lower-case script extensions (`.php`): the path is split after the first segment ending in one. */
  readonly split: readonly string[];
  /** Index names tried in a directory, in order: a script (`index.php`) runs, another file (`index.html`) is served. */
  readonly index: readonly string[];
  /** The script that answers what is neither a file nor a script (`/index.php`), or undefined: 404. */
  readonly frontController: string | undefined;
  /** Serve and run dotfiles (`.env`, `.git/…`): never by default. */
  readonly dotfiles: 'deny' | 'allow';
  /** `within_root`: a script or file reached through a symlink must lie inside the root; `follow`: any. */
  readonly symlinks: 'within_root' | 'follow';
}

const NOT_FOUND: PhpTarget = Object.freeze({ kind: 'status', status: 404 });
const FORBIDDEN: PhpTarget = Object.freeze({ kind: 'status', status: 403 });

/** The index of the first segment that ends in a script extension, or -1. */
export function scriptSegment(segments: readonly string[], split: readonly string[]): number {
  for (let i = 0; i < segments.length; i++) {
    const lower = segments[i]!.toLowerCase();
    for (const ext of split) if (lower.endsWith(ext) && lower.length > ext.length) return i;
  }
  return -1;
}

/** Where the canonical path `requestPath` leads under the root. */
export async function locate(requestPath: string, o: LocateOptions): Promise<PhpTarget> {
  const segments = decodeSegments(requestPath);
  if (segments === null) return NOT_FOUND;
  if (o.dotfiles === 'deny' && segments.some((segment, i) => segment.charCodeAt(0) === 46 && !(i === 0 && segment === '.well-known'))) return NOT_FOUND;
  const at = scriptSegment(segments, o.split);
  if (at !== -1) {
    const scriptSegments = segments.slice(0, at + 1);
    const script = await scriptFile(scriptSegments, o);
    if (script === 'outside') return FORBIDDEN;
    if (script !== undefined) {
      const rest = segments.slice(at + 1);
      const pathInfo = rest.length === 0 ? (requestPath.endsWith('/') && at === segments.length - 1 ? '/' : '') : '/' + rest.join('/') + (requestPath.endsWith('/') ? '/' : '');
      return { kind: 'script', scriptName: '/' + scriptSegments.join('/'), filename: script, pathInfo };
    }
    // No such script: as Caddy's try_files, the front controller answers (a script path is never a static file).
    return frontController(o);
  }
  const fsPath = path.join(o.realRoot, ...segments);
  const stat = await statOrNull(fsPath);
  if (stat?.isFile() === true && !requestPath.endsWith('/')) {
    return (await inside(fsPath, o)) ? { kind: 'file' } : FORBIDDEN;
  }
  if (stat?.isDirectory() === true) {
    for (const name of o.index) {
      if (!isScriptName(name, o.split)) {
        // An index that is no script (index.html), as nginx's `index index.php index.html`: served as a file.
        const file = path.join(fsPath, name);
        if ((await statOrNull(file))?.isFile() !== true) continue;
        if (!(await inside(file, o))) return FORBIDDEN;
        return requestPath.endsWith('/') ? { kind: 'file' } : { kind: 'redirect', location: requestPath + '/' };
      }
      const script = await scriptFile([...segments, name], o);
      if (script === 'outside') return FORBIDDEN;
      if (script === undefined) continue;
      if (!requestPath.endsWith('/')) return { kind: 'redirect', location: requestPath + '/' };
      return { kind: 'script', scriptName: '/' + [...segments, name].join('/'), filename: script, pathInfo: '' };
    }
  }
  return frontController(o);
}

/** Whether a file name ends in one of the script extensions (`.php`). */
function isScriptName(name: string, split: readonly string[]): boolean {
  const lower = name.toLowerCase();
  return split.some((ext) => lower.endsWith(ext));
}

async function frontController(o: LocateOptions): Promise<PhpTarget> {
  if (o.frontController === undefined) return NOT_FOUND;
  const segments = o.frontController.split('/').filter((segment) => segment !== '');
  const script = await scriptFile(segments, o);
  if (script === 'outside') return FORBIDDEN;
  return script === undefined ? NOT_FOUND : { kind: 'script', scriptName: o.frontController, filename: script, pathInfo: '' };
}

/** The real path of a regular script file at `segments`, `outside` when it escapes the root, else undefined. */
async function scriptFile(segments: readonly string[], o: LocateOptions): Promise<string | 'outside' | undefined> {
  const fsPath = path.join(o.realRoot, ...segments);
  const stat = await statOrNull(fsPath);
  if (stat === null || !stat.isFile()) return undefined;
  let real: string;
  try {
    real = await fs.realpath(fsPath);
  } catch {
    return undefined;
  }
  if (o.symlinks === 'within_root' && !(real === o.realRoot || real.startsWith(o.realRoot + path.sep))) return 'outside';
  // Through a symlink, the file PHP runs must still be a script (a link `x.php` → `evil.jpg` is not one).
  const lower = real.toLowerCase();
  if (!o.split.some((ext) => lower.endsWith(ext))) return 'outside';
  return real;
}

async function inside(fsPath: string, o: LocateOptions): Promise<boolean> {
  if (o.symlinks === 'follow') return true;
  try {
    const real = await fs.realpath(fsPath);
    return real === o.realRoot || real.startsWith(o.realRoot + path.sep);
  } catch {
    return false;
  }
}

async function statOrNull(file: string): Promise<import('node:fs').Stats | null> {
  try {
    return await fs.stat(file);
  } catch {
    return null;
  }
}
