/**
 * Certificates made on the spot, with @peculiar/x509 and Node's WebCrypto (no openssl at runtime): the
 * self-signed certificate of `portico run --dev`, and (the same function) the CAs and certificates the tests
 * make. ECDSA P-256 keys, SHA-256 signatures.
 */
import { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A certificate and its private key, as PEM. */
export interface PemCertificate {
  cert: string;
  key: string;
}

/** What to put in a certificate. */
export interface CertificateRequest {
  /** DNS names and IP addresses it is for (subjectAltName); the first is also its common name. */
  names: readonly string[];
  /** The CA that signs it; self-signed when absent. */
  issuer?: PemCertificate;
  /** A CA certificate (may sign others). */
  ca?: boolean;
  /** For TLS clients (mTLS) instead of servers. */
  client?: boolean;
  /** Validity from now, in days (1 by default); a negative one gives an expired certificate. */
  days?: number;
}

/** Makes a certificate (self-signed, or signed by `issuer`) and its new key. */
export async function createCertificate(request: CertificateRequest): Promise<PemCertificate> {
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const days = request.days ?? 1;
  const notBefore = new Date(Date.now() - (days < 0 ? 2 * -days : 1) * 86_400_000);
  const notAfter = new Date(Date.now() + days * 86_400_000);
  const subject = `CN=${request.names[0] ?? 'portico'}`;
  const alternative = request.names.map((name) => ({ type: isIP(name) === 0 ? ('dns' as const) : ('ip' as const), value: name }));
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(request.ca === true, undefined, true),
    new x509.KeyUsagesExtension(request.ca === true ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature : x509.KeyUsageFlags.digitalSignature, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (request.ca !== true) {
    extensions.push(new x509.ExtendedKeyUsageExtension([request.client === true ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth]));
  }
  if (alternative.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(alternative));
  const serialNumber = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1');
  let cert: x509.X509Certificate;
  if (request.issuer === undefined) {
    cert = await x509.X509CertificateGenerator.createSelfSigned({ serialNumber, name: subject, notBefore, notAfter, keys, signingAlgorithm: ALGORITHM, extensions });
  } else {
    const issuerKey = await webcrypto.subtle.importKey('pkcs8', pemBody(request.issuer.key), ALGORITHM, false, ['sign']);
    cert = await x509.X509CertificateGenerator.create({
      serialNumber,
      subject,
      issuer: new x509.X509Certificate(request.issuer.cert).subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: issuerKey,
      signingAlgorithm: ALGORITHM,
      extensions,
    });
  }
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { cert: cert.toString('pem') + '\n', key: pem('PRIVATE KEY', pkcs8) };
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

function pemBody(text: string): Buffer {
  return Buffer.from(text.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

/** The names of the `--dev` certificate. */
export const DEV_NAMES = ['localhost', '127.0.0.1', '::1'] as const;
