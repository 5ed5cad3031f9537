/**
 * Test helpers for HTTP/2: a self-signed certificate made at test time, a Portico app served over TLS with ALPN
 * `h2` the way a listener hands an h2 request to the app (`Dispatch.request(req, res, 'https')`), and a small h2
 * client. The server part stands in for the TLS listener until it exists; its session settings are the ones
 * Portico's listener should use (see `H2_SETTINGS`).
 */
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders, type SecureServerOptions } from 'node:http2';
import { webcrypto } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { rmSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { App } from '../../src/server/app.js';
import { CacheZones } from '../../src/cache/zones.js';
import { serveH2 } from '../../src/server/h2-session.js';
import { makeTree } from './portico.js';

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
export interface RunningH2 {
  app: App;
  /** `https://127.0.0.1:PORT` */
  origin: string;
  port: number;
  dir: string;
  server: http2.Http2SecureServer;
  stop(): Promise<void>;
}

/**
 * The session settings Portico's h2 listener should have (nginx's numbers where it has one): at most 128 streams
 * at a time (Node's default is unlimited), a 64 KiB header list, Node's 64 KiB windows.
 */
export const H2_SETTINGS: SecureServerOptions = {
  settings: { maxConcurrentStreams: 128, maxHeaderListSize: 65_536 },
  maxSessionMemory: 10,
};

/**
 * Starts a Portico app from YAML text behind an h2 (TLS, ALPN h2 only) server on 127.0.0.1:0. The app is built
 * as `Portico` builds it (cache zones, then the app), handed its requests by `serveH2` as a listener would.
 */
export async function startPorticoH2(yaml: string, files: Record<string, string | Buffer> = {}, options: SecureServerOptions = {}): Promise<RunningH2> {
  const dir = makeTree(files);
  let text = yaml;
  if (!/^log:/m.test(text)) text = `log: { access: off }\n${text}`;
  const config = parseConfig(text, path.join(dir, 'portico.yaml'), dir);
  const logger = pino({ level: 'silent' });
  const zones = new CacheZones(logger);
  const plan = zones.resolve(config.caches);
  plan.commit();
  await zones.start();
  const app = new App(config, logger, plan.zones);
  await app.start();
  const { cert, key } = await selfSignedCert();
  const server = http2.createSecureServer({ ...H2_SETTINGS, ...options, cert, key, allowHTTP1: false });
  serveH2(
    server,
    {
      request: (req, res, scheme) => app.handle(req, res, scheme),
      refuse: (req, res, scheme, status, close) => app.refuse(req, res, scheme, status, close),
    },
    'https',
  );
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    app,
    origin: `https://127.0.0.1:${port}`,
    port,
    dir,
    server,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) session.destroy();
      await closed;
      await app.stop();
      await zones.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Connects an h2 client that trusts the test certificate. */
export async function connectH2(origin: string, options: http2.SecureClientSessionOptions = {}): Promise<ClientHttp2Session> {
  const { cert } = await selfSignedCert();
  const session = http2.connect(origin, { ca: cert, servername: 'localhost', ...options });
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
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
