/**
 * Header rules for proxying, as pure functions over Node's raw header lists.
 *
 * Towards the app server (always HTTP/1.1): HTTP/2's pseudo-fields (`:method`, `:path`, `:authority`,
 * `:scheme`, which Node lists in `rawHeaders`) are dropped, their meaning sent as the request line and Host; hop-by-hop fields (Connection and the fields it names, Keep-Alive, TE, Trailer,
 * Transfer-Encoding, Upgrade, Proxy-*) are dropped; Expect is dropped (Portico answered it); X-Forwarded-For,
 * -Proto, -Host, -Port, X-Real-IP and Forwarded are rebuilt from the real peer, keeping the client's own values
 * only when the peer is a trusted proxy; the other forwarding fields (`FORWARDING_FIELDS`: X-Forwarded-Prefix,
 * X-Original-URL, …) pass only from a trusted proxy; a method override (X-HTTP-Method-Override, X-HTTP-Method,
 * X-Method-Override) is dropped from a GET or HEAD; Via is appended; several Cookie fields (HTTP/2 splits them)
 * become one.
 *
 * X-Request-Id and traceparent are the request's own (see http/request-identity.ts), tracestate passes only beside a
 * valid traceparent from the client.
 *
 * Towards the client: hop-by-hop fields are dropped, and so are Server and X-Powered-By (the app's identity), the
 * app's X-Request-Id (Portico echoes the request's)
 * plus any configured `hide_headers`; Location and Refresh that name the app server are rewritten.
 */

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);
/** Rebuilt by Portico, never passed through as they came. */
const REBUILT = 1;
/** Passed only from a trusted proxy (`FORWARDING_FIELDS`). */
const FORWARDING = 2;
/**
 * A method override: dropped from a GET or HEAD, where no framework's default honours one (Rack's MethodOverride,
 * Symfony, Laravel and express's method-override read it on POST only) and where it could make a request the
 * cache stores as a GET run as a DELETE.
 */
const OVERRIDE = 3;
/** `tracestate`: passed only beside the client's own valid `traceparent` (a started trace has no state yet). */
const TRACESTATE = 4;
/** Lower-cased names Portico does not pass through as they came, by what it does with them. */
const SPECIAL = new Map<string, number>([
  ...['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-real-ip', 'forwarded', 'via', 'host', 'expect', 'x-request-id', 'traceparent'].map(
    (name) => [name, REBUILT] as const,
  ),
  ...[...FORWARDING_FIELDS.keys()].filter((name) => name !== 'x-forwarded-port').map((name) => [name, FORWARDING] as const),
  ...['x-http-method-override', 'x-http-method', 'x-method-override'].map((name) => [name, OVERRIDE] as const),
  ['tracestate', TRACESTATE],
]);

function isHopByHop(lower: string, named: ReadonlySet<string> | undefined): boolean {
  return HOP_BY_HOP.has(lower) || lower.startsWith('proxy-') || (named !== undefined && named.has(lower));
}

/** Field names listed in Connection fields of a raw header list (Buffers or strings); they are hop-by-hop too. Usually none. */
function connectionTokens(raw: readonly Buffer[] | readonly string[]): Set<string> | undefined {
  let named: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    // Only a 10-byte name can be Connection; its usual values name no field.
    if (raw[i]!.length !== 10 || raw[i]!.toString('latin1').toLowerCase() !== 'connection') continue;
    const value = raw[i + 1]!.toString('latin1');
    if (value.length === 10 || value.length === 5) {
      const lower = value.toLowerCase();
      if (lower === 'keep-alive' || lower === 'close') continue;
    }
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase();
      if (name !== '' && name !== 'close' && name !== 'keep-alive') (named ??= new Set()).add(name);
    }
  }
  return named;
}

import { FORWARDING_FIELDS, type ForwardedView } from '../http/forwarded.js';

/** What the request-header rebuild needs to know about the request. */
export interface ForwardInfo {
  /** Node's `req.rawHeaders`. */
  rawHeaders: readonly string[];
  /** The TCP peer (IPv4-mapped prefix stripped). */
  peer: string;
  /** The client's address as Portico believes it (see TrustedProxies). */
  clientIp: string;
  /** Whether the peer is a trusted proxy (its X-Forwarded-For is kept and appended to). */
  trusted: boolean;
  /**
   * The trusted proxy's forwarded host, scheme and Forwarded elements, as the cache keys them
   * (`RequestContext.forwarded()`); `NOT_FORWARDED` from a peer that is not trusted.
   */
  forwarded: ForwardedView;
  /** `http` or `https`: how the client reached Portico. */
  scheme: string;
  /** The client-facing authority (absolute-form target or Host) in canonical form (`canonicalAuthority`), as the cache keys it. */
  host: string;
  /** The Host to send: the canonical client-facing one (`host: pass`) or a configured one. */
  upstreamHost: string;
  /** Fields to set (replacing any the client sent), lower-cased name → value. */
  setHeaders: ReadonlyMap<string, string>;
  /** The request's method (a method override is dropped from a GET or HEAD). */
  method: string;
  /** HTTP version of the client's request, for Via. */
  httpVersion: string;
  /**
   * Pass fields whose names contain `_`. Off by default, as nginx's `underscores_in_headers`: CGI, PHP and WSGI
   * apps read `X_Forwarded_For` as `HTTP_X_FORWARDED_FOR`, so a client could spoof the fields rebuilt here.
   */
  underscores: boolean;
  /** Drop Authorization: it carried Portico's own credentials (`basic_auth`), not the app's. */
  dropAuthorization: boolean;
  /** The request's id (`RequestContext.requestId`), sent as X-Request-Id. */
  requestId: string;
  /** The `traceparent` to send (`RequestContext.traceparent`). */
  traceparent: string;
  /** Pass the client's `tracestate` (its `traceparent` was valid and is carried on). */
  keepTracestate: boolean;
}

function quoteForwardedNode(ip: string): string {
  return ip.includes(':') ? `"[${ip}]"` : ip;
}

/** The header list to send upstream, as a flat `[name, value, …]` array. */
export function buildRequestHeaders(info: ForwardInfo): string[] {
  const raw = info.rawHeaders;
  const named = connectionTokens(raw);
  const out: string[] = ['host', info.upstreamHost];
  let xff: string | undefined;
  let via: string | undefined;
  /** Index in `out` of the (joined) Cookie value, -1 before the first. */
  let cookieAt = -1;
  const safe = info.method === 'GET' || info.method === 'HEAD';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58) continue;
    const lower = name.toLowerCase();
    if (isHopByHop(lower, named)) continue;
    if (!info.underscores && lower.indexOf('_') !== -1) continue;
    if (info.dropAuthorization && lower === 'authorization') continue;
    const special = SPECIAL.get(lower);
    if (special === REBUILT) {
      const value = raw[i + 1]!;
      if (lower === 'via') via = via === undefined ? value : `${via}, ${value}`;
      else if (info.trusted && lower === 'x-forwarded-for') xff = xff === undefined ? value : `${xff}, ${value}`;
      // A trusted proxy's forwarded host, scheme, port and Forwarded come from `info.forwarded`, as the cache keys them.
      continue;
    }
    if ((special === FORWARDING && !info.trusted) || (special === OVERRIDE && safe) || (special === TRACESTATE && !info.keepTracestate)) continue;
    if (info.setHeaders.has(lower)) continue;
    if (lower === 'cookie') {
      // HTTP/2 may carry one crumb per field (RFC 9113 §8.2.3): joined with "; " into the one line HTTP/1.1 allows
      // (RFC 6265 §5.4), where the first Cookie field stood. An empty crumb adds nothing.
      if (raw[i + 1]!.length === 0) continue;
      if (cookieAt === -1) {
        cookieAt = out.length + 1;
        out.push(name, raw[i + 1]!);
      } else out[cookieAt] = `${out[cookieAt]!}; ${raw[i + 1]!}`;
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  const node = `for=${quoteForwardedNode(info.peer)};proto=${info.scheme}${info.host === '' ? '' : `;host="${info.host.replace(/["\\]/g, '')}"`}`;
  // A configured set_headers value replaces the rebuilt one (one field, not two for the app to join).
  const set = info.setHeaders;
  const { host: xfHost, proto: xfProto, elements: forwarded, port: xfPort } = info.forwarded;
  if (!set.has('x-forwarded-for')) out.push('x-forwarded-for', xff === undefined ? info.peer : `${xff}, ${info.peer}`);
  if (!set.has('x-real-ip')) out.push('x-real-ip', info.clientIp);
  if (!set.has('x-forwarded-proto')) out.push('x-forwarded-proto', xfProto ?? info.scheme);
  if (!set.has('forwarded')) out.push('forwarded', forwarded === undefined ? node : `${forwarded}, ${node}`);
  if (!set.has('via')) out.push('via', `${via === undefined ? '' : `${via}, `}${info.httpVersion} portico`);
  const forwardedHost = xfHost ?? info.host;
  if (forwardedHost !== '' && !set.has('x-forwarded-host')) out.push('x-forwarded-host', forwardedHost);
  // X-Forwarded-Port only as a trusted proxy sent it: Portico sends none of its own (as nginx, HAProxy and Caddy; an
  // app without it takes the port from X-Forwarded-Host and -Proto), and a client's never passes. Measured: one
  // more field per request cost the proxy about 1% in the paired benchmark (bench/RESULTS.md, issue 16).
  if (xfPort !== undefined && !set.has('x-forwarded-port')) out.push('x-forwarded-port', xfPort);
  if (!set.has('x-request-id')) out.push('x-request-id', info.requestId);
  if (!set.has('traceparent')) out.push('traceparent', info.traceparent);
  for (const [name, value] of set) out.push(name, value);
  return out;
}

/** What the response-header filter needs. */
export interface ResponseFilter {
  /** Extra lower-cased names to drop (beyond hop-by-hop, Server, X-Powered-By). */
  hide: ReadonlySet<string>;
  /** Rewrites a Location/Refresh URL naming the app server; returns it unchanged otherwise. */
  rewriteLocation: (value: string) => string;
  /** The `Server` value to send ('' for none). */
  serverHeader: string;
}

/** The app's identity, and its X-Request-Id: the answer echoes Portico's (which the app was sent), once. */
const IDENTITY = new Set(['server', 'x-powered-by', 'x-request-id']);

/** Filters undici's raw response headers (Buffers, name/value pairs) into a flat list for `writeHead`. */
export function filterResponseHeaders(raw: readonly Buffer[] | readonly string[], filter: ResponseFilter): string[] {
  const named = connectionTokens(raw);
  const hide = filter.hide;
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const lower = name.toLowerCase();
    if (isHopByHop(lower, named) || IDENTITY.has(lower) || (hide.size > 0 && hide.has(lower))) continue;
    let value = raw[i + 1]!.toString('latin1');
    if (lower === 'location') value = filter.rewriteLocation(value);
    else if (lower === 'refresh') value = value.replace(/(url\s*=\s*)(\S+)/i, (_m, pre: string, url: string) => pre + filter.rewriteLocation(url));
    out.push(name, value);
  }
  if (filter.serverHeader !== '') out.push('Server', filter.serverHeader);
  return out;
}

/**
 * Maps an app-server URL back to the client-facing one (nginx's `proxy_redirect default`): when `value` starts
 * with the server's origin and base path, the origin becomes the client's scheme and host, and the base path
 * becomes the route prefix that `strip_prefix` removed.
 */
export function rewriteLocation(
  value: string,
  serverOrigins: readonly string[],
  basePath: string,
  clientOrigin: string,
  strippedPrefix: string,
): string {
  for (const origin of serverOrigins) {
    if (!value.startsWith(origin)) continue;
    const rest = value.slice(origin.length);
    if (rest !== '' && !'/?#'.includes(rest[0]!)) continue;
    let path = rest === '' ? '/' : rest;
    if (basePath !== '') {
      // Outside the base path the route's mapping does not apply: only the app's address is hidden.
      if (!(path === basePath || path.startsWith(basePath + '/') || path.startsWith(basePath + '?'))) return clientOrigin + path;
      path = path.slice(basePath.length) || '/';
    }
    if (!path.startsWith('/')) path = '/' + path;
    return clientOrigin + strippedPrefix + path;
  }
  return value;
}

/**
 * The Link values of a 103 Early Hints head (undici's raw Buffers), one link per entry: a field listing several
 * (`<a>; rel=preload, <b>; rel=preload`, as Node's `writeEarlyHints` sends them) is split at the commas between
 * links, outside `<…>` and quoted strings. Undefined when it has none.
 */
export function earlyHintLinks(raw: readonly Buffer[]): string[] | undefined {
  let links: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length !== 4 || raw[i]!.toString('latin1').toLowerCase() !== 'link') continue;
    const value = raw[i + 1]!.toString('latin1');
    let start = 0;
    let quoted = false;
    let inUri = false;
    for (let j = 0; j <= value.length; j++) {
      const c = value[j];
      if (c === undefined || (c === ',' && !quoted && !inUri)) {
        const link = value.slice(start, j).trim();
        if (link !== '') (links ??= []).push(link);
        start = j + 1;
      } else if (quoted) {
        if (c === '\\') j++;
        else if (c === '"') quoted = false;
      } else if (inUri) {
        if (c === '>') inUri = false;
      } else if (c === '"') quoted = true;
      else if (c === '<') inUri = true;
    }
  }
  return links;
}

/**
 * How many times a request has come through a Portico: the `Via` entries each added (`1.1 portico`, `2 portico`),
 * in one field or several. A proxy in between adds its own, which do not count.
 */
export function porticoHops(via: string | string[] | undefined): number {
  if (via === undefined) return 0;
  let hops = 0;
  for (const field of Array.isArray(via) ? via : [via]) {
    for (const entry of field.split(',')) if (/^\s*[^\s,]+\s+portico\s*$/i.test(entry)) hops++;
  }
  return hops;
}
