/**
 * `intercept_errors` (nginx's `proxy_intercept_errors`): an app answer with a listed status is replaced by the
 * site's error page, so an app server's own page (a Tomcat stack trace, its version) never reaches a client.
 * Only the fields that carry the status's meaning pass; the app's body is read out when small or its connection
 * closed, and it is never handed to a sink (so never stored in a cache, never shared with collapsed waiters).
 */
import type { OutgoingHttpHeaders } from 'node:http';
import { z } from 'zod';

/**
 * `true` (every 4xx and 5xx: Portico has a page for each) or a list of 4xx/5xx statuses. A 1xx, 2xx or 3xx is
 * never replaced: a redirect or a 304 is the app working, not its error page.
 */
export const interceptOption = z
  .union([z.boolean(), z.array(z.number().int().min(400, 'a 4xx or 5xx status').max(599, 'a 4xx or 5xx status'))], {
    // zod's own word for a lone status is "expected boolean or array, received number": say what to write.
    error: (issue) => (typeof issue.input === 'number' ? `a list of statuses: write [${issue.input}] (or true for every 4xx and 5xx)` : 'true, false or a list of 4xx/5xx statuses'),
  })
  .default(false);

/** The statuses a route intercepts, resolved once (undefined: none). */
export function interceptedStatuses(option: boolean | readonly number[]): ReadonlySet<number> | undefined {
  if (option === false || (Array.isArray(option) && option.length === 0)) return undefined;
  if (option === true) return new Set(Array.from({ length: 200 }, (_v, i) => 400 + i));
  return new Set(option as readonly number[]);
}

/**
 * Fields of the app's answer kept on the error page: they are part of what the status means (when to come back,
 * how to log in, which methods work, how long the resource is), not of the app's page.
 */
const KEPT_FIELDS: ReadonlyMap<string, string> = new Map([
  // The names as written elsewhere in Portico's answers (Title-Case), whatever case the app used.
  ['retry-after', 'Retry-After'],
  ['www-authenticate', 'WWW-Authenticate'],
  ['allow', 'Allow'],
  ['content-range', 'Content-Range'],
]);

function latin1(value: Buffer | string): string {
  return typeof value === 'string' ? value : value.toString('latin1');
}

/** The kept fields of an intercepted answer's raw head (raw from undici, or a stored flat list; a repeated WWW-Authenticate stays repeated). */
export function keptFields(raw: readonly (Buffer | string)[]): OutgoingHttpHeaders | undefined {
  let kept: Record<string, string | string[]> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = KEPT_FIELDS.get(latin1(raw[i]!).toLowerCase());
    if (name === undefined) continue;
    const value = latin1(raw[i + 1]!);
    kept ??= {};
    const previous = kept[name];
    kept[name] = previous === undefined ? value : [...(Array.isArray(previous) ? previous : [previous]), value];
  }
  return kept;
}

/**
 * A discarded body up to this size is read to its end, so its keep-alive connection serves the next request;
 * past it (a Content-Length beyond it: at once; a chunked body: once it passes it) the connection is closed.
 * Reading 64 KB over a socket costs less than the new connection (and TLS handshake) a close would need later,
 * and error pages are small; a larger body would hold the connection for bytes nobody reads.
 */
export const READ_OUT_LIMIT = 64 * 1024;

/**
 * How long reading out may take in all: an app that trickles its error page would otherwise hold the connection
 * (and its place in the pool) for nobody, up to the read timeout per chunk. Then the connection is closed.
 */
export const READ_OUT_TIME = 1000;

/** How many body bytes of an intercepted answer to read out; -1: close the connection now. */
export function readOutBudget(raw: readonly Buffer[]): number {
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length !== 14 || raw[i]!.toString('latin1').toLowerCase() !== 'content-length') continue;
    const length = Number(raw[i + 1]!.toString('latin1'));
    return length > READ_OUT_LIMIT ? -1 : READ_OUT_LIMIT;
  }
  return READ_OUT_LIMIT;
}
