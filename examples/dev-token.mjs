// The showcase's admin token: a random one in examples/var/admin.token (0600, git-ignored), made once and kept;
// examples/portico.yaml reads it (`admin.token_file`). `npm start` runs this before Portico and prints where the
// dashboard is and the token to log in with: a showcase on loopback, not how to hand out a production token
// (docs/operations.md, "Admin API": token_env or token_file, e.g. from systemd's LoadCredential=).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const DEV_TOKEN_FILE = path.join(here, 'var/admin.token');

/** The token in DEV_TOKEN_FILE, made first when missing or empty. */
export function ensureDevToken() {
  if (existsSync(DEV_TOKEN_FILE)) {
    const token = readFileSync(DEV_TOKEN_FILE, 'utf8').trim();
    if (token !== '') return token;
  }
  mkdirSync(path.dirname(DEV_TOKEN_FILE), { recursive: true, mode: 0o700 });
  const token = randomBytes(24).toString('base64url');
  try {
    // `wx`: made once even when two starts race (the second reads the first's token).
    writeFileSync(DEV_TOKEN_FILE, `${token}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if (err.code !== 'EEXIST') throw err;
    const made = readFileSync(DEV_TOKEN_FILE, 'utf8').trim();
    if (made !== '') return made;
    writeFileSync(DEV_TOKEN_FILE, `${token}\n`, { mode: 0o600 });
  }
  return token;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const token = ensureDevToken();
  process.stderr.write(`dashboard: http://127.0.0.1:9901/ (log in with the token ${token}, kept in examples/var/admin.token)\n`);
}
