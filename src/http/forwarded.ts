/**
 * What a trusted proxy says of the client-facing host and scheme (X-Forwarded-Host, X-Forwarded-Proto, the host=
 * and proto= of Forwarded), read once per request: the one place that decides what the app server is told of
 * them (`upstream/headers.ts` sends it) and what the cache key must add to hold it (`ProxyCache`), so the two
 * cannot disagree. A page built for `X-Forwarded-Host: evil.example` or `X-Forwarded-Proto: https` is stored
 * only for the requests that tell the app the same. From a peer that is not trusted none of this is read: the
 * app is told the request's own authority and scheme, which the key already holds.
 */
import { canonicalAuthority, parseHostHeader } from './hosts.js';

/** A trusted proxy's forwarded host and scheme, as the app server is told them. */
export interface ForwardedView {
  /** X-Forwarded-Host sent in place of the request's authority (canonical when it is one host); undefined for none. */
  readonly host: string | undefined;
  /** X-Forwarded-Proto sent in place of the listener's scheme, lower-cased; undefined for none. */
  readonly proto: string | undefined;
  /** The proxy's Forwarded elements, joined, as they came: Portico's own element follows them. */
  readonly elements: string | undefined;
  /**
   * What the cache key adds (`\0xfh=…`, `\0xfp=…`, `\0fwd=…`): every forwarded host or scheme the app is told
   * that differs from the request's canonical authority and scheme. `''` when there is none.
   */
  readonly keySuffix: string;
}

/** Nothing forwarded (or nothing believed): the app is told the request's own authority and scheme. */
export const NOT_FORWARDED: ForwardedView = Object.freeze({ host: undefined, proto: undefined, elements: undefined, keySuffix: '' });

/**
 * Reads a trusted proxy's forwarding fields from a raw header list (`authority` is the request's canonical
 * authority, `scheme` the listener's). The first X-Forwarded-Host and X-Forwarded-Proto count, as before; every
 * Forwarded field is kept, in order. Returns `NOT_FORWARDED` (no allocation) when none of them came.
 */
export function readForwarded(raw: readonly string[], authority: string, scheme: string): ForwardedView {
  let xfh: string | undefined;
  let xfp: string | undefined;
  let elements: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const length = raw[i]!.length;
    // Only names of these lengths can be the three fields.
    if (length !== 16 && length !== 17 && length !== 9) continue;
    const lower = raw[i]!.toLowerCase();
    const value = raw[i + 1]!.trim();
    if (value === '') continue;
    if (lower === 'x-forwarded-host') xfh ??= value;
    else if (lower === 'x-forwarded-proto') xfp ??= value.toLowerCase();
    else if (lower === 'forwarded') elements = elements === undefined ? value : `${elements}, ${value}`;
  }
  if (xfh === undefined && xfp === undefined && elements === undefined) return NOT_FORWARDED;
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
  return { host: xfh, proto: xfp, elements, keySuffix };
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
