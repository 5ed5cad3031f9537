/**
 * The dashboard's files, served by the admin API from the repository's `dashboard/` folder: `index.html` at `/`,
 * any other file at `/assets/NAME`. Read at each request (a few small files), never outside the folder (no dot
 * segment, no symbolic link out), with a strict Content-Security-Policy: everything from the admin listener itself.
 */
import { realpathSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mime from 'mime-types';

/** The repository's `dashboard/` folder (this file is `dist/src/control/admin-assets.js`). */
export const DASHBOARD_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..', 'dashboard');

/** The largest dashboard file served. */
const MAX_FILE = 4 * 1024 * 1024;

/** The dashboard's Content-Security-Policy: no inline script or style, no other origin, no framing. */
export const DASHBOARD_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** The file a dashboard path names under `dir` (undefined: not a dashboard path, or unsafe). */
export function dashboardFile(dir: string, pathname: string): string | undefined {
  if (pathname === '/' || pathname === '/index.html') return path.join(dir, 'index.html');
  if (!pathname.startsWith('/assets/')) return undefined;
  let rel: string;
  try {
    rel = decodeURIComponent(pathname.slice('/assets/'.length));
  } catch {
    return undefined;
  }
  const segments = rel.split('/');
  if (rel === '' || rel.includes('\\') || rel.includes('\0') || segments.some((s) => s === '' || s.startsWith('.'))) return undefined;
  return path.join(dir, ...segments);
}

/**
 * Answers with the file `file` of the dashboard folder `dir`; resolves false (nothing written) when there is no
 * such regular file inside the folder.
 */
export async function serveDashboardFile(dir: string, file: string, res: ServerResponse): Promise<boolean> {
  let body: Buffer;
  try {
    const real = realpathSync(file);
    const root = realpathSync(dir);
    if (!real.startsWith(root + path.sep)) return false;
    const stats = await stat(real);
    if (!stats.isFile() || stats.size > MAX_FILE) return false;
    body = await readFile(real);
  } catch {
    return false;
  }
  res.writeHead(200, {
    'content-type': mime.contentType(path.extname(file)) || 'application/octet-stream',
    'content-length': body.length,
    'cache-control': 'no-cache',
    'content-security-policy': DASHBOARD_CSP,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    // same-origin, not no-referrer: under no-referrer a browser's same-origin POST says `Origin: null`, which the
    // CSRF check refuses; the page's own origin still goes nowhere else.
    'referrer-policy': 'same-origin',
  });
  res.end(body);
  return true;
}
