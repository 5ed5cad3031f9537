/**
 * Test helpers for HTTP/2: a self-signed certificate made at test time, Portico with a TLS listener speaking h2,
 * and a small h2 client.
 */
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { startPortico, type RunningPortico } from './portico.js';

/** A PEM certificate and key. */
export interface CertPair {
  cert: string;
  key: string;
}

let cached: Promise<CertPair> | undefined;

/** A self-signed ECDSA P-256 certificate for `localhost`, 127.0.0.1 and ::1, made once per test process. */
export function selfSignedCert(): Promise<CertPair> {
  cached ??= (async () => {
    x509.cryptoProvider.set(webcrypto as unknown as Crypto);
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '01',
      name: 'CN=localhost',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      keys: keys as unknown as CryptoKeyPair,
      signingAlgorithm: alg,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'localhost' }, { type: 'ip', value: '127.0.0.1' }, { type: 'ip', value: '::1' }])],
    });
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
    const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PRIVATE KEY-----\n`;
    return { cert: cert.toString('pem'), key };
  })();
  return cached;
}

/** What a running h2 Portico offers a test. */
export interface RunningH2 extends RunningPortico {
  /** `https://127.0.0.1:PORT` */
  origin: string;
}

/**
 * Starts Portico (in this process) from YAML text with one TLS listener on 127.0.0.1:0, HTTP/2 on (`http2`: the
 * listener's setting, `true` for the defaults), serving a certificate made at test time (`cert.pem`, `key.pem`
 * in the test's folder).
 */
export async function startPorticoH2(yaml: string, files: Record<string, string | Buffer> = {}, http2 = 'true'): Promise<RunningH2> {
  const { cert, key } = await selfSignedCert();
  const listen = `listen: [{ addr: "127.0.0.1:0", tls: { cert: ./cert.pem, key: ./key.pem }, http2: ${http2} }]\n`;
  const running = await startPortico(listen + yaml, { ...files, 'cert.pem': cert, 'key.pem': key });
  return { ...running, origin: `https://127.0.0.1:${running.port}` };
}

/** Connects an h2 client that trusts the test certificate; resolves once the server's SETTINGS arrived. */
export async function connectH2(origin: string, options: http2.SecureClientSessionOptions = {}): Promise<ClientHttp2Session> {
  const { cert } = await selfSignedCert();
  const session = http2.connect(origin, { ca: cert, servername: 'localhost', ...options });
  await new Promise<void>((resolve, reject) => {
    session.once('remoteSettings', () => resolve());
    session.once('error', reject);
  });
  session.on('error', () => undefined);
  return session;
}

/** A whole h2 answer. */
export interface H2Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Sends one request on `session` and reads the whole answer; rejects on a stream reset (with its code). */
export function h2Request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: string | Buffer): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'GET', ...headers }, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let head: IncomingHttpHeaders = {};
    stream.on('response', (h) => (head = h));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', reject);
    stream.on('close', () => {
      if (stream.rstCode !== 0 && stream.rstCode !== undefined) {
        reject(Object.assign(new Error(`stream reset with code ${stream.rstCode}`), { rstCode: stream.rstCode }));
        return;
      }
      resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks) });
    });
    if (body !== undefined) stream.end(body);
  });
}
