/**
 * The TLS part of loading a config: certificate, key and CA files are resolved against the config's folder and
 * read here, at load (so a reload re-reads them), and each pair is checked: a file that is missing or is no PEM,
 * or a key that does not belong to its certificate, is a config error at the key that names the file. The PEM
 * text goes into the config (`pem`, `client_ca_pem`): nothing at runtime reads a file.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import { DEFAULT_TLS12_CIPHERS, type ParsedConfig, type PemPair, type Problem } from './schema.js';

type Keys = PropertyKey[];

/** A file's text, or a problem at `keys` naming it as written. */
function readPem(dir: string, file: string, keys: Keys, problems: Problem[]): string | undefined {
  try {
    return readFileSync(path.resolve(dir, file), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'cannot be read (permission denied)' : code === 'EISDIR' ? 'is a directory' : 'cannot be read';
    problems.push({ keys, message: `file ${file} ${reason}` });
    return undefined;
  }
}

/** Reads and checks a certificate and its key; `keys` is where the `cert`/`key` pair sits in the config. */
function loadPair(dir: string, tls: { cert?: string; key?: string }, keys: Keys, problems: Problem[]): PemPair | undefined {
  if (tls.cert === undefined || tls.key === undefined) {
    if (tls.cert !== undefined || tls.key !== undefined) {
      problems.push({ keys: [...keys, tls.cert === undefined ? 'key' : 'cert'], message: 'cert and key go together: give both or neither' });
    }
    return undefined;
  }
  const certFile = tls.cert;
  const keyFile = tls.key;
  const cert = readPem(dir, certFile, [...keys, 'cert'], problems);
  const key = readPem(dir, keyFile, [...keys, 'key'], problems);
  tls.cert = path.resolve(dir, certFile);
  tls.key = path.resolve(dir, keyFile);
  if (cert === undefined || key === undefined) return undefined;
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch {
    problems.push({ keys: [...keys, 'cert'], message: `file ${certFile} holds no PEM certificate` });
    return undefined;
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    problems.push({ keys: [...keys, 'key'], message: `file ${keyFile} holds no PEM private key (an encrypted key is not supported)` });
    return undefined;
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    problems.push({ keys: [...keys, 'key'], message: `the key in ${keyFile} does not match the certificate in ${certFile}` });
    return undefined;
  }
  return { cert, key };
}

/** Checks and loads every TLS file of `config` (in place, before it is frozen); returns the problems found. */
export function checkTls(config: ParsedConfig, dir: string): Problem[] {
  const problems: Problem[] = [];
  const siteCertificates = config.sites.filter((site) => site.tls !== undefined).length;
  config.listen.forEach((listener, i) => {
    const tls = listener.tls;
    if (tls === undefined) return;
    const keys = ['listen', i, 'tls'];
    tls.pem = loadPair(dir, tls, keys, problems);
    if (tls.cert === undefined && tls.key === undefined && siteCertificates === 0) {
      problems.push({ keys, message: 'a TLS listener needs a certificate: tls.cert and tls.key, or a site with tls' });
    }
    if (tls.min_version === 'TLSv1.3' && tls.max_version === 'TLSv1.2') {
      problems.push({ keys: [...keys, 'max_version'], message: 'max_version is below min_version' });
    }
    if (tls.client_ca !== undefined) {
      const file = tls.client_ca;
      tls.client_ca = path.resolve(dir, file);
      const ca = readPem(dir, file, [...keys, 'client_ca'], problems);
      if (ca !== undefined) {
        try {
          new X509Certificate(ca);
          tls.client_ca_pem = ca;
        } catch {
          problems.push({ keys: [...keys, 'client_ca'], message: `file ${file} holds no PEM certificate` });
        }
      }
    }
    // The built-in list is known good; only one the config wrote is tried on OpenSSL (a context per listener per load).
    if (tls.ciphers !== DEFAULT_TLS12_CIPHERS) {
      try {
        createSecureContext({ ciphers: tls.ciphers });
      } catch {
        problems.push({ keys: [...keys, 'ciphers'], message: `no cipher of ${JSON.stringify(tls.ciphers)} is known to OpenSSL` });
      }
    }
  });
  const admin = config.admin?.tls;
  if (admin !== undefined) admin.pem = loadPair(dir, admin, ['admin', 'tls'], problems);
  config.sites.forEach((site, s) => {
    if (site.tls !== undefined) site.tls.pem = loadPair(dir, site.tls, ['sites', s, 'tls'], problems);
    const hsts = site.hsts;
    if (hsts?.preload === true && (!hsts.include_subdomains || hsts.max_age < 365 * 86_400_000)) {
      problems.push({ keys: ['sites', s, 'hsts', 'preload'], message: 'preload needs include_subdomains: true and a max_age of at least 1y' });
    }
  });
  return problems;
}
