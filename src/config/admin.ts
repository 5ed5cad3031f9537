/**
 * The checks of the `admin` section beyond its schema: a listener reachable from the network must use TLS (the
 * token and the dashboard's session cookie would otherwise cross it in clear), must not be one of the public
 * listeners' addresses, and its extra host names are bare names.
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import type { ParsedConfig, Problem } from './schema.js';

/** Whether a listen host is a loopback address (127.0.0.0/8, ::1, `localhost`). */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (bare === 'localhost' || bare === '::1') return true;
  if (bare.startsWith('::ffff:')) return isLoopbackHost(bare.slice(7));
  return isIP(bare) === 4 && bare.startsWith('127.');
}

/** The shortest admin token accepted (16 characters: `openssl rand -hex 32` gives 64). */
export const MIN_TOKEN_LENGTH = 16;

/** Why `token` is too weak to guard the admin API (undefined: it is not): too short, or holding whitespace. */
export function tokenWeakness(token: string): string | undefined {
  if (token.length < MIN_TOKEN_LENGTH) return `it is shorter than ${MIN_TOKEN_LENGTH} characters (${token.length}): make one with "openssl rand -hex 32"`;
  if (/\s/.test(token)) return 'it holds whitespace (a Bearer token cannot): make one with "openssl rand -hex 32"';
  return undefined;
}

/**
 * Reads `admin.token_file` (relative to `dir`) into `admin.token`; a problem when it cannot be read, is empty,
 * is readable by group or others, or holds a weak token.
 */
function readTokenFile(admin: NonNullable<ParsedConfig['admin']>, dir: string): Problem | undefined {
  if (admin.token_file === undefined) return undefined;
  const file = path.resolve(dir, admin.token_file);
  let text: string;
  let mode: number;
  try {
    text = readFileSync(file, 'utf8').trim();
    mode = statSync(file).mode;
  } catch (err) {
    return { keys: ['admin', 'token_file'], message: `cannot read the token file ${file}: ${(err as Error).message}` };
  }
  if (text === '') return { keys: ['admin', 'token_file'], message: `the token file ${file} is empty` };
  // As ssh refuses a private key others can read: a token anyone on the host can read guards nothing.
  if ((mode & 0o077) !== 0) {
    return { keys: ['admin', 'token_file'], message: `the token file ${file} is readable by group or others (mode ${(mode & 0o777).toString(8).padStart(3, '0')}): chmod 600 it` };
  }
  const weak = tokenWeakness(text);
  if (weak !== undefined) return { keys: ['admin', 'token_file'], message: `the token in ${file} is refused: ${weak}` };
  admin.token = text;
  return undefined;
}

/** Problems of `config.admin` (none when there is no admin section); reads its token file, relative to `dir`. */
export function checkAdmin(config: ParsedConfig, dir: string): Problem[] {
  const admin = config.admin;
  if (admin === undefined) return [];
  const problems: Problem[] = [];
  const unreadable = readTokenFile(admin, dir);
  if (unreadable !== undefined) problems.push(unreadable);
  const listen = admin.listen;
  if (listen !== undefined) {
    if (!isLoopbackHost(listen.host) && admin.tls === undefined) {
      problems.push({
        keys: ['admin', 'listen'],
        message: `${listen.text} is not a loopback address: an admin listener reachable from the network needs TLS (admin.tls: { cert, key }), else the token and the session cookie cross the network in clear`,
      });
    }
    config.listen.forEach((listener, i) => {
      if (listen.port !== 0 && listener.addr.port === listen.port && (listener.addr.host === listen.host || listener.addr.host === '0.0.0.0' || listen.host === '0.0.0.0')) {
        problems.push({ keys: ['admin', 'listen'], message: `${listen.text} is also listen[${i}] (${listener.addr.text}): the admin API needs an address of its own` });
      }
    });
  }
  admin.hosts.forEach((host, i) => {
    if (!/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/.test(host)) {
      problems.push({ keys: ['admin', 'hosts', i], message: `expected a host name, optionally with ":port" (admin.example or admin.example:9901), got ${JSON.stringify(host)}` });
    }
  });
  return problems;
}
