/**
 * What a trusted proxy says of the client-facing host and scheme (X-Forwarded-Host, X-Forwarded-Proto, the host=
 * and proto= of Forwarded), read once per request: the one place that decides what the app server is told of
 * them (`upstream/headers.ts` sends it) and what the cache key must add to hold it (`ProxyCache`), so the two
 * cannot disagree. A page built for `X-Forwarded-Host: evil.example` or `X-Forwarded-Proto: https` is stored
 * only for the requests that tell the app the same. From a peer that is not trusted none of this is read: the
 * app is told the request's own authority and scheme, which the key already holds.
 */
import { canonicalAuthority, parseHostHeader } from './hosts.js';

/**
 * Forwarding fields besides X-Forwarded-For/-Proto/-Host, Forwarded and X-Real-IP, which apps trust to say the
 * client-facing port, path prefix and scheme (Spring's ForwardedHeaderFilter: X-Forwarded-Port/-Prefix; Rails:
 * X-Forwarded-Ssl, X-Forwarded-Scheme; Rack: Front-End-Https, X-Url-Scheme; Flask/Werkzeug: X-Scheme; some link
 * builders: X-Host), the target to run (Symfony, IIS: X-Original-URL, X-Rewrite-URL; Traefik's forward-auth:
 * X-Forwarded-Uri, -Method) and the client certificate a TLS-terminating proxy checked (Envoy's
 * X-Forwarded-Client-Cert, Traefik's X-Forwarded-Tls-Client-Cert[-Info]). Only a trusted proxy may say any of
 * it (Traefik strips its X-Forwarded-* set, Envoy its XFCC, from other peers): from anyone else they are dropped,
 * (a trusted proxy's X-Forwarded-Port is passed on; Portico sends none of its own). Each one a trusted proxy sends is keyed by the cache, as it reaches the app,
 * except X-Forwarded-Server, which names the hop (as Forwarded's `for=` does) — and X-Forwarded-Port only when it
 * says another port than the request's own. Lower-cased name → `true` when keyed.
 */
export const FORWARDING_FIELDS: ReadonlyMap<string, boolean> = new Map([
  ['x-forwarded-port', true],
  ['x-forwarded-prefix', true],
  ['x-forwarded-scheme', true],
  ['x-forwarded-ssl', true],
  ['front-end-https', true],
  ['x-url-scheme', true],
  ['x-scheme', true],
  ['x-host', true],
  ['x-forwarded-uri', true],
  ['x-forwarded-method', true],
  ['x-original-url', true],
  ['x-rewrite-url', true],
  ['x-forwarded-client-cert', true],
  ['x-forwarded-tls-client-cert', true],
  ['x-forwarded-tls-client-cert-info', true],
  ['x-forwarded-server', false],
]);

/**
 * Which name lengths can be a forwarding field (X-Forwarded-Host/-Proto, Forwarded or one of FORWARDING_FIELDS,
 * all starting with x or f): another name is passed over without being lower-cased, so a request with none
 * costs no allocation.
 */
const FORWARDING_LENGTHS = new Uint8Array(64);
for (const name of ['x-forwarded-host', 'x-forwarded-proto', 'forwarded', ...FORWARDING_FIELDS.keys()]) FORWARDING_LENGTHS[name.length] = 1;

/** The port a client addressed: the authority's (the first of a list), else the scheme's default. */
export function addressedPort(authority: string, scheme: string): string {
  // On every proxied request: scanned in place (no slice or regex unless a port is there to return).
  const comma = authority.indexOf(',');
  const host = comma === -1 ? authority : authority.slice(0, comma).trim();
  const colon = host.lastIndexOf(':');
  if (colon !== -1 && colon > host.lastIndexOf(']') && colon < host.length - 1) {
    let digits = true;
    for (let i = colon + 1; i < host.length && digits; i++) {
      const code = host.charCodeAt(i);
      digits = code >= 48 && code <= 57;
    }
    if (digits) return host.slice(colon + 1);
  }
  return scheme === 'https' || scheme === 'wss' ? '443' : '80';
}

/** A trusted proxy's forwarded host and scheme, as the app server is told them. */
export interface ForwardedView {
  /** X-Forwarded-Host sent in place of the request's authority (canonical when it is one host); undefined for none. */
  readonly host: string | undefined;
  /** X-Forwarded-Proto sent in place of the listener's scheme, lower-cased; undefined for none. */
  readonly proto: string | undefined;
  /** The proxy's Forwarded elements, joined, as they came: Portico's own element follows them. */
  readonly elements: string | undefined;
  /** The proxy's X-Forwarded-Port, sent in place of the port its host and scheme say; undefined for none. */
  readonly port: string | undefined;
  /**
   * What the cache key adds (`\0xfh=…`, `\0xfp=…`, `\0fwd=…`, `\0x-forwarded-prefix=…`): every forwarded host,
   * scheme or port the app is told that differs from the request's canonical authority and scheme, and every
   * keyed FORWARDING_FIELDS field as it came. `''` when there is none.
   */
  readonly keySuffix: string;
}

/** Nothing forwarded (or nothing believed): the app is told the request's own authority and scheme. */
export const NOT_FORWARDED: ForwardedView = Object.freeze({ host: undefined, proto: undefined, elements: undefined, port: undefined, keySuffix: '' });

/**
 * Reads a trusted proxy's forwarding fields from a raw header list (`authority` is the request's canonical
 * authority, `scheme` the listener's). The first X-Forwarded-Host, X-Forwarded-Proto and X-Forwarded-Port count, as
 * before; every Forwarded field is kept, in order; every keyed FORWARDING_FIELDS field is keyed as it came (they
 * are passed on as they came). Returns `NOT_FORWARDED` (no allocation) when none of them came.
 */
export function readForwarded(raw: readonly string[], authority: string, scheme: string): ForwardedView {
  let xfh: string | undefined;
  let xfp: string | undefined;
  let xfPort: string | undefined;
  let elements: string | undefined;
  let passed = '';
  for (let i = 0; i < raw.length; i += 2) {
    const length = raw[i]!.length;
    // Only names of these lengths, starting with x or f, can be forwarding fields.
    if (length >= 64 || FORWARDING_LENGTHS[length] === 0) continue;
    const first = raw[i]!.charCodeAt(0) | 0x20;
    if (first !== 0x78 /* x */ && first !== 0x66 /* f */) continue;
    const lower = raw[i]!.toLowerCase();
    if (lower === 'x-forwarded-host') xfh ??= nonEmpty(raw[i + 1]!);
    else if (lower === 'x-forwarded-proto') xfp ??= nonEmpty(raw[i + 1]!)?.toLowerCase();
    else if (lower === 'forwarded') {
      const value = nonEmpty(raw[i + 1]!);
      if (value !== undefined) elements = elements === undefined ? value : `${elements}, ${value}`;
    } else if (lower === 'x-forwarded-port') xfPort ??= nonEmpty(raw[i + 1]!);
    else if (FORWARDING_FIELDS.get(lower) === true) passed += `\0${lower}=${raw[i + 1]!}`;
  }
  if (xfh === undefined && xfp === undefined && elements === undefined && xfPort === undefined && passed === '') return NOT_FORWARDED;
  if (xfh !== undefined) {
    // One host is sent in canonical form, as the request's own (`Evil.Example.:443` over https is `evil.example`);
    // a list or anything else is sent as it came, and keyed so.
    const parsed = parseHostHeader(xfh);
    if (parsed !== null) xfh = canonicalAuthority(parsed, xfh, xfp ?? scheme);
  }
  let keySuffix = '';
  if (xfh !== undefined && xfh !== authority) keySuffix += `\0xfh=${xfh}`;
  if (xfp !== undefined && xfp !== scheme) keySuffix += `\0xfp=${xfp}`;
  if (elements !== undefined) {
    const told = forwardedHostAndProto(elements, authority, scheme);
    if (told !== '') keySuffix += `\0fwd=${told}`;
  }
  // The port the app is told otherwise follows the host and scheme, keyed already.
  if (xfPort !== undefined && xfPort !== addressedPort(xfh ?? authority, xfp ?? scheme)) keySuffix += `\0xfport=${xfPort}`;
  return { host: xfh, proto: xfp, elements, port: xfPort, keySuffix: keySuffix + passed };
}

function nonEmpty(value: string): string | undefined {
  const trimmed = value.trim();
  return trimmed === '' ? undefined : trimmed;
}

/**
 * The `host=` and `proto=` pairs of a Forwarded value (RFC 7239 §4) that say other than `authority` and `scheme`,
 * as written (a quoted value keeps its quotes, so no two different values read the same), joined with `;`.
 * `for=`, `by=` and extensions name the hops, not what the app builds a page for.
 */
function forwardedHostAndProto(value: string, authority: string, scheme: string): string {
  let out = '';
  let start = 0;
  let quoted = false;
  for (let j = 0; j <= value.length; j++) {
    const c = value.charCodeAt(j);
    if (quoted) {
      if (c === 92 /* \ */) j++;
      else if (c === 34 /* " */) quoted = false;
      continue;
    }
    if (c === 34) {
      quoted = true;
      continue;
    }
    if (j < value.length && c !== 59 /* ; */ && c !== 44 /* , */) continue;
    const pair = value.slice(start, j).trim();
    start = j + 1;
    const eq = pair.indexOf('=');
    if (eq === -1) continue;
    const name = pair.slice(0, eq).trim().toLowerCase();
    if (name !== 'host' && name !== 'proto') continue;
    const said = pair.slice(eq + 1).trim();
    const own = name === 'host' ? authority : scheme;
    if (said === own || said === `"${own}"`) continue;
    out += out === '' ? `${name}=${said}` : `;${name}=${said}`;
  }
  return out;
}
