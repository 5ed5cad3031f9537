/**
 * Host names: parsing the `Host` header (or an absolute-form authority) and matching it to a site.
 *
 * A host is compared lower-cased and without its port. IPv6 literals keep their brackets (`[::1]`), in the
 * request and in the config alike. `*.example.com` matches any deeper name (`a.example.com`,
 * `a.b.example.com`) but not the apex `example.com`: list both to serve both, as Caddy and nginx's
 * `server_name` do.
 */

const REG_NAME = /^[a-z0-9\-._~!$&'()*+;=%]*$/;
const IPV6 = /^\[[0-9a-f:.]+\]$/;

/**
 * The lower-cased host name of a `Host` value or authority (port dropped, IPv6 in brackets), or `null` when
 * it is not a valid host (for example two hosts joined by a comma, or a user-info part).
 */
export function parseHostHeader(value: string): string | null {
  let host = value.toLowerCase();
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf(']');
    if (close === -1) return null;
    const rest = host.slice(close + 1);
    if (rest !== '' && !/^:\d{0,5}$/.test(rest)) return null;
    host = host.slice(0, close + 1);
    return IPV6.test(host) ? host : null;
  }
  const colon = host.indexOf(':');
  if (colon !== -1) {
    if (!/^\d{0,5}$/.test(host.slice(colon + 1))) return null;
    host = host.slice(0, colon);
  }
  if (host.endsWith('.')) host = host.slice(0, -1);
  return REG_NAME.test(host) ? host : null;
}

/** The port a scheme implies (an authority naming it says no more than one without a port). */
const DEFAULT_PORTS: Readonly<Record<string, number>> = { http: 80, https: 443 };

/**
 * The canonical authority of a request: its parsed host (`parseHostHeader`: lower case, no trailing dot) and the
 * port the client wrote, as a number, only when it is not the scheme's default (`Good.Example.:0080` over http is
 * `good.example`, `good.example:06666` is `good.example:6666`). What the app is told and the cache keys on.
 * `authority` is the raw value that `host` was parsed from.
 */
export function canonicalAuthority(host: string, authority: string, scheme: string): string {
  if (authority === host) return host;
  const end = authority.charCodeAt(0) === 91 /* [ */ ? authority.indexOf(']') + 1 : 0;
  const colon = authority.indexOf(':', end);
  if (colon === -1 || colon === authority.length - 1) return host;
  // On every proxied request: the port read in place, and the authority itself returned when it is already
  // canonical (`127.0.0.1:8080`), so the usual request allocates nothing here.
  let port = 0;
  for (let i = colon + 1; i < authority.length; i++) {
    const digit = authority.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return `${host}:${Number(authority.slice(colon + 1))}`;
    port = port * 10 + digit;
  }
  if (port === DEFAULT_PORTS[scheme]) return host;
  if (colon === host.length && authority.charCodeAt(colon + 1) !== 48 /* 0 */ && authority.startsWith(host)) return authority;
  return `${host}:${port}`;
}

/** The canonical form of a host pattern written in a config (`Example.COM`, `::1`, `*.example.com`). */
export function normalizeHostPattern(pattern: string): string {
  let host = pattern.trim().toLowerCase();
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`;
  if (host.endsWith('.')) host = host.slice(0, -1);
  return host;
}

/**
 * Whether a config host pattern is well formed; returns a reason when it is not, which says what to write for the
 * mistakes people make (a URL, a port, a path, several names in one entry).
 */
export function checkHostPattern(pattern: string): string | undefined {
  const raw = pattern.trim();
  const write = (name: string): string => (name === '' ? '' : `: write "${name.toLowerCase()}"`);
  const url = /^[a-z][a-z0-9+.-]*:\/\/(?:[^/?#@]*@)?(\[[^\]]*\]|[^/?#:]*)/i.exec(raw);
  if (url !== null) return `expected a host name, not a URL${write(url[1]!)}`;
  if (/^[^:[\]]+:\d*$/.test(raw)) return `a host has no port here (every port of the listeners is served)${write(raw.slice(0, raw.indexOf(':')))}`;
  if (/[\s,]/.test(raw)) return 'a host name has no spaces or commas: list each host as an entry of its own';
  if (/^[^/]+\//.test(raw)) return `expected a host name, without a path${write(raw.slice(0, raw.indexOf('/')))}`;
  if (raw === '*') return '"*" is not a host pattern: a site without "hosts" answers every host';
  if (raw === '*.') return 'a wildcard needs a domain after "*.", such as "*.example.com"';
  const host = normalizeHostPattern(pattern);
  if (host.startsWith('[')) return IPV6.test(host) ? undefined : 'not a valid host name or IPv6 address';
  const name = host.startsWith('*.') ? host.slice(2) : host;
  if (name === '' || name.includes('*')) return 'a wildcard is allowed only as a leading "*." label';
  if (!REG_NAME.test(name)) return 'not a valid host name';
  return undefined;
}

/**
 * How far a `*.` pattern reaches: `any-depth` (a site's `*.example.com` takes `a.b.example.com` too, as nginx's
 * server_name does), or `one-label` (a certificate's covers `a.example.com` only: RFC 6125 §6.4.3).
 */
export interface HostMatcherOptions {
  wildcards?: 'any-depth' | 'one-label';
}

/** Finds the site for a host: exact names first, then the longest matching wildcard, then the default. */
export class HostMatcher<T> {
  readonly #exact = new Map<string, T>();
  /** Wildcard suffixes (`.example.com`), longest first so the most specific wins. */
  readonly #wildcards: Array<{ suffix: string; value: T }> = [];
  readonly #oneLabel: boolean;
  #fallback: T | undefined;

  constructor(options: HostMatcherOptions = {}) {
    this.#oneLabel = options.wildcards === 'one-label';
  }

  /** Registers a value under host patterns; `undefined` patterns make it the default (first one wins). */
  add(patterns: readonly string[] | undefined, value: T): void {
    if (patterns === undefined) {
      this.#fallback ??= value;
      return;
    }
    for (const raw of patterns) {
      const pattern = normalizeHostPattern(raw);
      if (pattern.startsWith('*.')) this.#wildcards.push({ suffix: pattern.slice(1), value });
      else if (!this.#exact.has(pattern)) this.#exact.set(pattern, value);
    }
    this.#wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
  }

  /** The value for a parsed host (see `parseHostHeader`), or `undefined` when nothing matches. */
  match(host: string): T | undefined {
    const exact = this.#exact.get(host);
    if (exact !== undefined) return exact;
    for (const { suffix, value } of this.#wildcards) {
      if (host.length <= suffix.length || !host.endsWith(suffix)) continue;
      // One label: no dot before the suffix.
      if (this.#oneLabel && host.lastIndexOf('.', host.length - suffix.length - 1) !== -1) continue;
      return value;
    }
    return this.#fallback;
  }
}
