/**
 * Shared by the TLS tests: certificates made at test time (one CA, server certificates signed by it), and
 * clients that report what the handshake gave (the peer certificate, the ALPN protocol) with the answer.
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import { createCertificate, type PemCertificate } from '../../src/tls/self-signed.js';

export type { PemCertificate };

/** A CA and certificates it signed, by name. */
export interface TestPki {
  ca: PemCertificate;
  /** A server certificate for `names`, signed by the CA. */
  issue(names: string[], options?: { client?: boolean; days?: number }): Promise<PemCertificate>;
}

/** A fresh CA. */
export async function testPki(): Promise<TestPki> {
  const ca = await createCertificate({ names: ['Portico Test CA'], ca: true, days: 2 });
  return { ca, issue: (names, options = {}) => createCertificate({ names, issuer: ca, ...options }) };
}

/** An answer over TLS, with what the handshake gave. */
export interface TlsAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** The server certificate's subject CN. */
  peer: string;
  alpn: string | false | null;
}

export interface TlsRequest {
  port: number;
  ca: string;
  /** SNI; none is sent when empty. */
  servername: string;
  /** The Host field (the servername when absent). */
  host?: string;
  path?: string;
  /** A client certificate. */
  client?: PemCertificate;
  minVersion?: tls.SecureVersion;
  maxVersion?: tls.SecureVersion;
  /** The client's cipher list (`DEFAULT@SECLEVEL=0` lets it offer TLS 1.0 and 1.1 at all). */
  ciphers?: string;
}

/** One HTTP/1.1 request over its own TLS connection (ALPN http/1.1). */
export function httpsGet(request: TlsRequest): Promise<TlsAnswer> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      {
        host: '127.0.0.1',
        port: request.port,
        path: request.path ?? '/',
        ca: request.ca,
        servername: request.servername,
        headers: { host: request.host ?? request.servername },
        agent: false,
        ALPNProtocols: ['http/1.1'],
        // The names are checked by the peer CN assertions; the chain by `ca`.
        checkServerIdentity: () => undefined,
        ...(request.client === undefined ? {} : { cert: request.client.cert, key: request.client.key }),
        ...(request.minVersion === undefined ? {} : { minVersion: request.minVersion }),
        ...(request.maxVersion === undefined ? {} : { maxVersion: request.maxVersion }),
        ...(request.ciphers === undefined ? {} : { ciphers: request.ciphers }),
        timeout: 10_000,
        // Handed to tls.connect (not in https' own option type).
      } as https.RequestOptions,
      (res) => {
        const socket = res.socket as tls.TLSSocket;
        const peer = socket.getPeerCertificate().subject?.CN ?? '';
        const alpn = socket.alpnProtocol;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, peer: String(peer), alpn }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

/** An HTTP/2 session to Portico, for several requests on one connection. */
export async function h2Session(port: number, ca: string, servername: string): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername, checkServerIdentity: () => undefined });
  session.on('error', () => undefined);
  await once(session, 'connect');
  return session;
}

/** A GET on an HTTP/2 session with `host` as its authority. */
export function h2Get(session: http2.ClientHttp2Session, host: string, path = '/'): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path, ':authority': host, host });
    let headers: http2.IncomingHttpHeaders = {};
    let body = '';
    stream.setEncoding('utf8');
    stream.on('response', (h) => (headers = h));
    stream.on('data', (chunk: string) => (body += chunk));
    stream.on('end', () => resolve({ status: Number(headers[':status']), headers, body }));
    stream.on('error', reject);
    stream.setTimeout(10_000, () => stream.close(http2.constants.NGHTTP2_CANCEL));
  });
}

/** The certificate the server presents for `servername` (empty: no SNI). */
export function peerCertificate(port: number, ca: string, servername: string): Promise<tls.PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, ...(servername === '' ? {} : { servername }), checkServerIdentity: () => undefined }, () => {
      const certificate = socket.getPeerCertificate();
      socket.destroy();
      resolve(certificate);
    });
    socket.on('error', reject);
  });
}

/** The subject CN of the certificate the server presents for `servername` (empty: no SNI). */
export async function presented(port: number, ca: string, servername: string): Promise<string> {
  return String((await peerCertificate(port, ca, servername)).subject?.CN ?? '');
}
