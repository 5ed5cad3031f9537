/**
 * Purge by URL and by URL prefix (admin API `POST /caches/{zone}/purge`): the cache keys a URL is stored under are
 * worked out from the key templates of the routes that cache into the zone, as the proxy's cache makes them (see
 * `ProxyCache.#keyFor`: the template's text, then `\0authority` when the client named a port or the template has no
 * `$host`, then what a trusted proxy forwarded, `\0xfh=…`, `\0xfp=…`, `\0fwd=…`).
 *
 * A raw key prefix would be unsafe (`httpsa.example` is a prefix of `httpsa.example.org/…`), so a prefix is matched
 * on whole URL parts: the scheme and authority (host and port) whole, the path by segments (`/img` takes `/img`,
 * `/img/…` and `/img?…`, never `/images`) unless it ends in `/`.
 */
import type { Config } from '../config/load.js';
import type { PurgeTarget } from '../control/admin-types.js';
import type { CacheZone } from '../cache/zone.js';
import { PorticoError } from '../errors.js';
import type { RequestContext } from '../http/context.js';
import { canonicalAuthority, HostMatcher, parseHostHeader } from '../http/hosts.js';
import { parseRequestTarget } from '../http/request-path.js';
import { compileTemplate, templateVariables } from '../http/template.js';
import { Router } from './router.js';

/** Which keys a purge removes. */
export type KeyMatch = (key: string) => boolean;

/** A URL's parts as a request for it would have them. */
interface UrlParts {
  scheme: 'http' | 'https';
  host: string;
  /** Host and port as the cache keys it (a port only when not the scheme's default). */
  authority: string;
  path: string;
  query: string;
}

/** A route that caches into a zone: its key template. */
interface CachedRoute {
  zone: string;
  key: string;
  where: string;
}

/** The forwarded parts a key may end with (see `readForwarded`): the same URL, seen through a trusted proxy. */
const FORWARDED_SUFFIX = /^\0(?:xfh|xfp|fwd)=/;
/** Variables a URL alone gives a value to. */
const FROM_URL = /^\$(?:scheme|host|request_uri|uri|args|method|pid|arg_[A-Za-z0-9_]+)$/;
/** The key templates a prefix can be matched on: scheme, host and literal text, then the path (and query). */
const PREFIXABLE = /^(?:[^$]|\$scheme(?![A-Za-z0-9_])|\$host(?![A-Za-z0-9_]))*\$(?:request_uri|uri)$/;

/** Parses an absolute http(s) URL the way a request target is (canonical path); 400 otherwise. */
function parseUrl(text: unknown, what: string): UrlParts {
  const bad = (why: string): never => {
    throw new PorticoError('PORTICO_BAD_REQUEST', `${what} must be an absolute http:// or https:// URL (${why}): got ${JSON.stringify(text)}`);
  };
  if (typeof text !== 'string' || text === '') return bad('not a string');
  const scheme = /^(https?):\/\//i.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) return bad('no http:// or https://');
  const target = parseRequestTarget(text);
  if (target === null || target.authority === undefined) return bad('not a valid URL');
  const host = parseHostHeader(target.authority);
  if (host === null || host === '') return bad('no valid host');
  return { scheme: scheme as 'http' | 'https', host, authority: canonicalAuthority(host, target.authority, scheme), path: target.path, query: target.query };
}

/** A request context for a URL, enough for a key template of `FROM_URL` variables (a GET, as stored entries are). */
function urlContext(url: UrlParts): RequestContext {
  return {
    scheme: url.scheme,
    host: url.host,
    path: url.path,
    query: url.query,
    uri: url.query === '' ? url.path : `${url.path}?${url.query}`,
    req: { method: 'GET', headers: {} },
  } as unknown as RequestContext;
}

/** Every proxy route of `config` whose cache is `zone`. */
function cachedRoutes(config: Config, zone: string): CachedRoute[] {
  const out: CachedRoute[] = [];
  for (const site of config.sites) {
    for (const route of site.routes) {
      const cache = route.kind === 'proxy' ? (route.options as { cache?: { zone: string; key: string } }).cache : undefined;
      if (cache?.zone !== zone) continue;
      out.push({ zone, key: cache.key, where: `${site.hosts?.[0] ?? '*'} ${route.path.text}` });
    }
  }
  return out;
}

/** The route a request for `url` would take (nginx's matching, as the app does), if it caches into `zone`. */
function routeFor(config: Config, zone: string, url: UrlParts): CachedRoute | undefined {
  const sites = new HostMatcher<Router<CachedRoute | undefined>>();
  for (const site of config.sites) {
    const routes = site.routes.map((route) => {
      const cache = route.kind === 'proxy' ? (route.options as { cache?: { zone: string; key: string } }).cache : undefined;
      return { path: route.path, route: cache?.zone === zone ? { zone, key: cache.key, where: `${site.hosts?.[0] ?? '*'} ${route.path.text}` } : undefined };
    });
    sites.add(site.hosts, new Router(routes));
  }
  return sites.match(url.host)?.match(url.path)?.route;
}

/** Whether a key's tail (what follows the template's text) is the one `authority` and `holdsHost` give, forwarded or not. */
function tailMatches(tail: string, authority: string, host: string, holdsHost: boolean): boolean {
  if (holdsHost && authority === host) return tail === '' || FORWARDED_SUFFIX.test(tail);
  const own = `\0${authority}`;
  if (!tail.startsWith(own)) return false;
  const rest = tail.slice(own.length);
  return rest === '' || FORWARDED_SUFFIX.test(rest);
}

/**
 * Which keys of `zone` a purge of `target` removes, with `config`'s routes. Throws PorticoError: 404 for a zone
 * the config has not; 400 for a URL that is not absolute http(s), a `url` whose route keys on what a URL does not
 * give (`$cookie_…`, `$header_…`, `$remote_addr`), a `url_prefix` with a query, or a `url_prefix` for a zone one of
 * whose routes keys on a template other than literal text, `$scheme` and `$host` followed by `$request_uri` or `$uri`.
 */
export function planPurge(config: Config, zone: string, target: PurgeTarget): KeyMatch {
  if (!Object.hasOwn(config.caches, zone)) {
    const known = Object.keys(config.caches);
    throw new PorticoError('PORTICO_UNKNOWN_ZONE', `no cache zone "${zone}" (zones: ${known.length === 0 ? 'none' : known.join(', ')})`);
  }
  const given = target as { url?: unknown; url_prefix?: unknown };
  if ((given.url === undefined) === (given.url_prefix === undefined)) {
    throw new PorticoError('PORTICO_BAD_REQUEST', 'a purge names either "url" or "url_prefix"');
  }
  return given.url !== undefined ? planUrl(config, zone, parseUrl(given.url, 'url')) : planPrefix(config, zone, parseUrl(given.url_prefix, 'url_prefix'), given.url_prefix as string);
}

/** `url`: the key of the route that serves it, and that key as forwarded by a trusted proxy (every Vary variant). */
function planUrl(config: Config, zone: string, url: UrlParts): KeyMatch {
  const route = routeFor(config, zone, url);
  if (route === undefined) return () => false;
  const unknown = templateVariables(route.key).filter((name) => !FROM_URL.test(name));
  if (unknown.length > 0) {
    throw new PorticoError('PORTICO_BAD_REQUEST', `the route ${route.where} keys its cache on ${unknown.join(', ')} (key: ${route.key}), which a URL does not give: purge by url cannot name its entries`);
  }
  const text = compileTemplate(route.key)(urlContext(url));
  const holdsHost = templateVariables(route.key).includes('$host');
  return (key) => key.startsWith(text) && tailMatches(key.slice(text.length), url.authority, url.host, holdsHost);
}

/** `url_prefix`: every key, of any route of the zone, whose URL parts begin with the prefix's (see the top). */
function planPrefix(config: Config, zone: string, prefix: UrlParts, text: string): KeyMatch {
  if (prefix.query !== '' || text.includes('?')) throw new PorticoError('PORTICO_BAD_REQUEST', 'a url_prefix has no query: purge that URL by url');
  const routes = cachedRoutes(config, zone);
  const templates = [...new Set(routes.map((route) => route.key))];
  for (const route of routes) {
    if (!PREFIXABLE.test(route.key)) {
      throw new PorticoError(
        'PORTICO_BAD_REQUEST',
        `the route ${route.where} keys its cache on ${route.key}: url_prefix is matched only on keys of literal text, $scheme and $host, then $request_uri or $uri (the default, $scheme$host$request_uri); purge by url instead`,
      );
    }
  }
  const ctx = urlContext({ ...prefix, path: '', query: '' });
  const byDirectory = prefix.path.endsWith('/');
  const matchers = templates.map((template) => {
    // The template less its last variable ($request_uri or $uri), with the prefix's scheme and host.
    const head = compileTemplate(template.slice(0, template.lastIndexOf('$')))(ctx) + prefix.path;
    const holdsHost = templateVariables(template).includes('$host');
    return (key: string): boolean => {
      if (!key.startsWith(head)) return false;
      const cut = key.indexOf('\0', head.length);
      const end = cut === -1 ? key.length : cut;
      if (!byDirectory && end > head.length) {
        const next = key.charCodeAt(head.length);
        if (next !== 47 /* / */ && next !== 63 /* ? */) return false;
      }
      return tailMatches(cut === -1 ? '' : key.slice(cut), prefix.authority, prefix.host, holdsHost);
    };
  });
  return (key) => matchers.some((matches) => matches(key));
}

/** Removes the keys `match` accepts from a zone (both tiers, every variant); resolves with the count removed. */
export function purgeInZone(zone: CacheZone, match: KeyMatch): Promise<number> {
  return zone.purgeMatching(match);
}
