/**
 * Route matching within a site, on the canonical path. The rule is nginx's `location` rule, so an nginx user
 * is never surprised:
 *   1. an exact route (`= /x`) that equals the path wins outright;
 *   2. otherwise the longest matching prefix is remembered; if it is a `^~` prefix it wins outright;
 *   3. otherwise regex routes (`~ re`, `~* re` case-insensitive) are tried in config order, the first match wins;
 *   4. otherwise the longest prefix wins; with none, there is no route (404).
 * A prefix is a plain string prefix (`/img` matches `/img`, `/img/a` and `/imgs`). A request for `/api` where a
 * route `/api/` exists (and nothing more specific matched) is redirected to `/api/` with 301, like nginx.
 */
import type { RoutePath } from '../config/schema.js';

/** What a lookup found: a route, or a redirect to the slash-terminated path of a prefix route. */
export type RouteMatch<T> = { route: T; redirectTo?: undefined } | { route?: undefined; redirectTo: string };

interface PrefixEntry<T> {
  path: string;
  stopRegex: boolean;
  route: T;
  /** The match result, built once so the hot path allocates nothing. */
  match: RouteMatch<T>;
}

/** Matches canonical paths to routes; built once per site when the config is loaded. */
export class Router<T> {
  readonly #exact = new Map<string, RouteMatch<T>>();
  /** Longest first, so the first hit is the longest. */
  readonly #prefixes: PrefixEntry<T>[] = [];
  readonly #regexes: Array<{ regex: RegExp; match: RouteMatch<T> }> = [];
  /** `/api` → `/api/` for prefix routes ending in a slash. */
  readonly #slashRedirects = new Set<string>();

  constructor(routes: ReadonlyArray<{ path: RoutePath; route: T }>) {
    for (const { path, route } of routes) {
      if (path.kind === 'exact') {
        if (!this.#exact.has(path.path)) this.#exact.set(path.path, { route });
      } else if (path.kind === 'prefix') {
        this.#prefixes.push({ path: path.path, stopRegex: path.stopRegex, route, match: { route } });
        if (path.path.length > 1 && path.path.endsWith('/')) this.#slashRedirects.add(path.path.slice(0, -1));
      } else {
        this.#regexes.push({ regex: path.regex, match: { route } });
      }
    }
    this.#prefixes.sort((a, b) => b.path.length - a.path.length);
  }

  /** Finds the route for a canonical path, or `undefined`. */
  match(path: string): RouteMatch<T> | undefined {
    // Empty tables are skipped: most sites have few exact, redirect or regex routes, and each lookup hashes the path.
    if (this.#exact.size > 0) {
      const exact = this.#exact.get(path);
      if (exact !== undefined) return exact;
    }

    let prefix: PrefixEntry<T> | undefined;
    const prefixes = this.#prefixes;
    for (let i = 0; i < prefixes.length; i++) {
      if (path.startsWith(prefixes[i]!.path)) {
        prefix = prefixes[i];
        break;
      }
    }
    // nginx redirects only when no prefix route is the path itself (`/api` beside `/api/` serves `/api`).
    const redirect = this.#slashRedirects.size > 0 && this.#slashRedirects.has(path) && prefix?.path !== path;
    if (prefix?.stopRegex === true && !redirect) return prefix.match;

    const regexes = this.#regexes;
    for (let i = 0; i < regexes.length; i++) {
      if (regexes[i]!.regex.test(path)) return regexes[i]!.match;
    }
    if (redirect) return { redirectTo: path + '/' };
    return prefix?.match;
  }
}
