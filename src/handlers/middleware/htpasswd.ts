/**
 * Users and their password hashes, inline or from an htpasswd file (`user:hash` per line, `#` comments). Only
 * bcrypt hashes (`$2a$`, `$2b$`, `$2y$`, as `htpasswd -B` writes) are accepted, as Caddy does: the other formats
 * htpasswd can write (Apache MD5 `$apr1$`, `{SHA}`, crypt) are fast to brute-force, and nginx accepts them only
 * because it inherited them. A refused hash is a config error naming its line.
 */

const BCRYPT = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;

/** Why `hash` is refused (which format it is), or `undefined` when it is a bcrypt hash. */
export function refuseHash(hash: string): string | undefined {
  if (BCRYPT.test(hash)) return undefined;
  let what = 'not a bcrypt hash';
  if (hash.startsWith('$apr1$')) what = 'an Apache MD5 ($apr1$) hash';
  else if (hash.startsWith('{SHA}')) what = 'a SHA-1 ({SHA}) hash';
  else if (hash.startsWith('$1$')) what = 'an MD5-crypt ($1$) hash';
  else if (hash.startsWith('$5$') || hash.startsWith('$6$')) what = `a SHA-crypt (${hash.slice(0, 3)}) hash`;
  else if (/^[./0-9A-Za-z]{13}$/.test(hash)) what = 'a DES crypt hash';
  else if (hash.startsWith('$2')) what = 'a malformed bcrypt hash';
  else if (hash === '') what = 'an empty hash';
  return `${what}; only bcrypt hashes ($2a$, $2b$, $2y$) are accepted: make one with "htpasswd -nB user"`;
}

/** One user and its bcrypt hash. */
export interface HtpasswdUser {
  user: string;
  hash: string;
}

/** What reading an htpasswd file's text gives: the users, and a message per refused line. */
export interface Htpasswd {
  users: HtpasswdUser[];
  problems: Array<{ line: number; message: string }>;
}

/** Parses htpasswd text (blank lines and `#` comments skipped; a user listed twice is refused). */
export function parseHtpasswd(text: string): Htpasswd {
  const users: HtpasswdUser[] = [];
  const problems: Htpasswd['problems'] = [];
  const seen = new Set<string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) return void problems.push({ line: i + 1, message: 'expected "user:hash"' });
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1).trim();
    const refused = refuseHash(hash);
    if (refused !== undefined) return void problems.push({ line: i + 1, message: `user ${JSON.stringify(user)} has ${refused}` });
    if (seen.has(user)) return void problems.push({ line: i + 1, message: `user ${JSON.stringify(user)} is listed twice` });
    seen.add(user);
    users.push({ user, hash });
  });
  return { users, problems };
}
