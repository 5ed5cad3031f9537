/**
 * The certificate store: which certificate a TLS handshake presents for a server name (SNI), and whether a
 * request on a connection was misdirected (RFC 9110 §15.5.20).
 *
 * Selection for a name: an exact host of a site, then the longest wildcard host (`*.example.com`) that covers
 * it, then the listener's own default certificate. A wildcard covers one label only (RFC 6125 §6.4.3:
 * `a.example.com`, not `a.b.example.com`, which no client would accept it for), though a site's `*.` host takes
 * deeper names for routing (as nginx's server_name does). A site's certificate is the one its `tls` names; a site without one is
 * served the listener's default. Certificates `install`ed at runtime come before the configured ones for the
 * same host pattern.
 *
 * The runtime contract (kept stable for ACME):
 * - `install(id, hosts, certPem, keyPem)` puts a certificate for `hosts` (exact or `*.` patterns) under `id`,
 *   replacing an earlier one with that id. It takes effect for the next handshake: no restart, and no open
 *   connection is touched. It throws PORTICO_BAD_CERTIFICATE (and changes nothing) when the PEM does not parse
 *   or the key does not match.
 * - `remove(id)` takes one out again.
 * A reload builds a new store from the new config; `adopt(previous)` carries the installed certificates over
 * (the server does it), so an installer need not install again after a reload. Connections made before keep
 * the store they were made with, for the misdirection check.
 *
 * Versions, ciphers and client CAs are the listener's (they live on its `tls.Server`): an SNI certificate only
 * swaps the certificate and key of the handshake (that is all Node takes from an SNI context). So every site
 * on one listener has the same TLS policy, and a request may only be misdirected by its certificate.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Config } from '../config/load.js';
import { PorticoError } from '../errors.js';
import { HostMatcher } from '../http/hosts.js';

/** A certificate as served: its context for handshakes and its leaf's SHA-256 fingerprint. */
export interface ServedCertificate {
  readonly context: SecureContext;
  readonly fingerprint: string;
}

/** Builds a served certificate from PEM text; throws PORTICO_BAD_CERTIFICATE when it is unusable. */
export function servedCertificate(certPem: string, keyPem: string): ServedCertificate {
  try {
    const fingerprint = new X509Certificate(certPem).fingerprint256;
    return { context: createSecureContext({ cert: certPem, key: keyPem }), fingerprint };
  } catch (err) {
    throw new PorticoError('PORTICO_BAD_CERTIFICATE', `unusable certificate: ${(err as Error).message}`, { cause: err });
  }
}

/** The lower-cased server name of an SNI value, without a trailing dot. */
function serverName(name: string): string {
  const host = name.toLowerCase();
  return host.endsWith('.') ? host.slice(0, -1) : host;
}

/** A certificate's wildcard names one label (RFC 6125 §6.4.3). */
const CERTIFICATE_NAMES = { wildcards: 'one-label' } as const;

/** Site hosts → their certificate (`null`: the listener's default), for the certificates of one config. */
export class CertificateStore {
  /** The configured sites' host patterns and certificates, in config order. */
  readonly #configured: ReadonlyArray<{ hosts: readonly string[]; certificate: ServedCertificate | null }>;
  readonly #installed = new Map<string, { hosts: readonly string[]; certificate: ServedCertificate }>();
  #matcher: HostMatcher<ServedCertificate | null> = new HostMatcher(CERTIFICATE_NAMES);

  /** The store for a config's sites (their PEM was read and checked at load). */
  constructor(config: Pick<Config, 'sites'>) {
    this.#configured = config.sites
      .filter((site) => site.hosts !== undefined)
      .map((site) => ({ hosts: site.hosts!, certificate: site.tls?.pem === undefined ? null : servedCertificate(site.tls.pem.cert, site.tls.pem.key) }));
    this.#rebuild();
  }

  /**
   * Installs a certificate for `hosts` under `id` (replacing the one installed under it), for new handshakes.
   * Throws PORTICO_BAD_CERTIFICATE, changing nothing, when the PEM is unusable or the key does not match.
   */
  install(id: string, hosts: readonly string[], certPem: string, keyPem: string): void {
    const certificate = servedCertificate(certPem, keyPem);
    this.#installed.set(id, { hosts: [...hosts], certificate });
    this.#rebuild();
  }

  /** Removes the certificate installed under `id`; whether there was one. */
  remove(id: string): boolean {
    const had = this.#installed.delete(id);
    if (had) this.#rebuild();
    return had;
  }

  /** Takes over the certificates installed in the store a reload replaces. */
  adopt(previous: CertificateStore): void {
    for (const [id, entry] of previous.#installed) if (!this.#installed.has(id)) this.#installed.set(id, entry);
    this.#rebuild();
  }

  /**
   * The certificate for a host: a certificate; `null` when the host is a site's without a certificate of its
   * own (the listener's default serves it); `undefined` when no site names it.
   */
  match(host: string): ServedCertificate | null | undefined {
    return this.#matcher.match(host);
  }

  /** The certificate for an SNI server name (`undefined`: the listener's default). */
  forServerName(name: string): ServedCertificate | undefined {
    return this.#matcher.match(serverName(name)) ?? undefined;
  }

  #rebuild(): void {
    // Installed first: for the same pattern the first added wins.
    const matcher = new HostMatcher<ServedCertificate | null>(CERTIFICATE_NAMES);
    for (const { hosts, certificate } of this.#installed.values()) matcher.add(hosts, certificate);
    for (const { hosts, certificate } of this.#configured) matcher.add(hosts, certificate);
    this.#matcher = matcher;
  }
}

const kMade = Symbol('portico.tls.made');

/** What a TLS connection was made with: the store of that time, the listener's default, what it presented. */
interface MadeWith {
  readonly store: CertificateStore;
  readonly fallback: ServedCertificate | undefined;
  readonly socket: TLSSocket;
  /** The presented certificate's fingerprint, read on first need. */
  presented: string | undefined;
  /** The presented certificate, parsed only when a host's certificate differs from it (see `isMisdirected`). */
  parsed?: X509Certificate | null;
}

/** Records, on a connection whose handshake is done, the store and default certificate it was made with. */
export function recordHandshake(socket: TLSSocket, store: CertificateStore, fallback: ServedCertificate | undefined): void {
  (socket as TLSSocket & { [kMade]?: MadeWith })[kMade] = { store, fallback, socket, presented: undefined };
}

/** For a resumed TLS session: the fingerprint of the certificate the connection's name (SNI) selects now. */
function resumedCertificate(made: MadeWith): string | undefined {
  if (!made.socket.isSessionReused()) return undefined;
  const name = (made.socket as TLSSocket & { servername?: string | false }).servername;
  const served = (typeof name === 'string' ? made.store.match(name.toLowerCase()) : undefined) ?? made.fallback;
  return served?.fingerprint;
}

/**
 * Whether a request for `host` (parsed, lower-cased) on this connection is misdirected: the host is a
 * configured site's, and the certificate that store gives it differs from the one the connection presented.
 * A host served by the same certificate (a SAN or wildcard certificate, HTTP/2 connection coalescing) is not.
 * `socket` is the request's (for HTTP/2, the session's socket or its proxy).
 */
export function isMisdirected(socket: object, host: string): boolean {
  const made = (socket as { [kMade]?: MadeWith })[kMade];
  if (made === undefined) return false;
  const expected = made.store.match(host);
  if (expected === undefined) return false;
  const wanted = expected ?? made.fallback;
  if (wanted === undefined) return false;
  if (made.presented === undefined) {
    const own = made.socket.getCertificate() as { fingerprint256?: string } | null;
    // A resumed session presents no certificate (OpenSSL reports none): the one its name selects now stands for
    // it (sessions are resumed for the name they were made for: RFC 8446 §4.6.1).
    const resumedWith = own === null || own.fingerprint256 === undefined ? resumedCertificate(made) : undefined;
    made.presented = own?.fingerprint256 ?? resumedWith ?? '';
  }
  if (wanted.fingerprint === made.presented) return false;
  // Another certificate serves the host now. A connection made before it was installed (an ACME renewal) presented
  // the previous one, which still names the host: the request is not misdirected, and the connection goes on.
  if (made.parsed === undefined) {
    const raw = (made.socket.getCertificate() as { raw?: Buffer } | null)?.raw;
    made.parsed = raw === undefined ? null : new X509Certificate(raw);
  }
  return made.parsed === null || made.parsed.checkHost(host) === undefined;
}
