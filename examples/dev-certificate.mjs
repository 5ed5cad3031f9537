// The showcase's HTTPS certificate: self-signed for localhost, 127.0.0.1 and ::1 (what `portico run --dev`
// makes), kept in examples/var/dev/ (git-ignored) and made again when missing or within a day of expiring.
// `npm start` runs this before Portico; browsers warn about the certificate (curl: --cacert examples/var/dev/cert.pem).
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const DEV_CERT_DIR = path.join(here, 'var/dev');

function stillGood(certFile) {
  try {
    const cert = new X509Certificate(readFileSync(certFile));
    return Date.parse(cert.validTo) - Date.now() > 86_400_000;
  } catch {
    return false;
  }
}

/** Makes the certificate unless a good one is there; resolves with the paths of its files. */
export async function ensureDevCertificate() {
  const files = { cert: path.join(DEV_CERT_DIR, 'cert.pem'), key: path.join(DEV_CERT_DIR, 'key.pem') };
  if (existsSync(files.key) && stillGood(files.cert)) return files;
  // Portico's own generator (compiled by `npm start`'s tsc), loaded only when a certificate must be made.
  const { createCertificate, DEV_NAMES } = await import('../dist/src/tls/self-signed.js');
  const pem = await createCertificate({ names: DEV_NAMES, days: 30 });
  mkdirSync(DEV_CERT_DIR, { recursive: true, mode: 0o700 });
  writeFileSync(files.key, pem.key, { mode: 0o600 });
  chmodSync(files.key, 0o600);
  writeFileSync(files.cert, pem.cert);
  return files;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const files = await ensureDevCertificate();
  console.log(files.cert);
}
