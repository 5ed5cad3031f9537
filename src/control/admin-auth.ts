/**
 * The admin API's guards on TCP, as pure functions and one small session store: the Bearer token compared in
 * constant time, the dashboard's session cookie, the CSRF rules of a cookie-authenticated POST, the Host check
 * against DNS rebinding, and what counts as a loopback peer. The control socket needs none of it: its folder's
 * mode is the guard.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';

/** The dashboard's session cookie. */
export const SESSION_COOKIE = 'portico_admin';
/** The header a cookie-authenticated POST must carry (a cross-site form or `<img>` cannot set it). */
export const CSRF_HEADER = 'x-portico-admin';
/** How long a dashboard session lasts. */
export const SESSION_MS = 8 * 60 * 60_000;
/** Sessions held at once; past it the oldest ends (a login loop cannot grow memory). */
const MAX_SESSIONS = 1000;

/** Whether `given` is the token, in constant time (both hashed first, so that their lengths leak nothing). */
export function tokenMatches(token: string | undefined, given: string | undefined): boolean {
  if (token === undefined || token === '' || given === undefined) return false;
  const a = createHash('sha256').update(token).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer …` header (undefined: none, or another scheme). */
export function bearerToken(headers: IncomingHttpHeaders): string | undefined {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(headers.authorization ?? '');
  return match?.[1];
}

/** A cookie's value from the `Cookie` header (the first of the name). */
export function cookieValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  for (const part of (headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Whether a peer address is loopback (127.0.0.0/8, ::1, or either mapped in IPv6). */
export function isLoopbackPeer(address: string | undefined): boolean {
  if (address === undefined) return false;
  const bare = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : address;
  return bare === '::1' || (isIP(bare) === 4 && bare.startsWith('127.'));
}

/**
 * Whether a request's `Host` names the admin listener: the address the client connected to (`127.0.0.1:9901`,
 * `[::1]:9901`), `localhost:PORT` on a loopback connection, or one of `names` (`admin.hosts`: without a port any
 * port, with one that port). A name that resolved to the listener by DNS rebinding is none of these.
 */
export function hostAllowed(host: string | undefined, local: { address: string | undefined; port: number | undefined }, names: readonly string[]): boolean {
  if (host === undefined || local.address === undefined || local.port === undefined) return false;
  const given = host.trim().toLowerCase();
  const match = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(given);
  if (match === null) return false;
  const name = match[1]!;
  const port = match[2] === undefined ? undefined : Number(match[2]);
  const address = local.address.toLowerCase().startsWith('::ffff:') ? local.address.slice(7) : local.address.toLowerCase();
  const own = isIP(address) === 6 ? `[${address}]` : address;
  if (port === local.port && (name === own || (name === 'localhost' && isLoopbackPeer(address)))) return true;
  for (const entry of names) {
    const wanted = entry.toLowerCase();
    if (wanted === given || wanted === name) return true;
  }
  return false;
}

/**
 * Why a POST authenticated by the session cookie may be a cross-site forgery (undefined: it is not): it needs the
 * dashboard's custom header, a JSON body type, and `Origin` / `Sec-Fetch-Site` saying same-origin when present.
 * `origin` is this listener's own (`https://127.0.0.1:9901`, from the request's checked Host).
 */
export function csrfProblem(headers: IncomingHttpHeaders, origin: string): string | undefined {
  if (headers[CSRF_HEADER] !== '1') return `a request authenticated by the session cookie needs the header "X-Portico-Admin: 1"`;
  const type = (headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') return 'a request authenticated by the session cookie needs "Content-Type: application/json"';
  return crossSite(headers, origin);
}

/** Why a request comes from another site by its `Origin` or `Sec-Fetch-Site` (undefined: same-origin or neither sent). */
export function crossSite(headers: IncomingHttpHeaders, origin: string): string | undefined {
  const site = headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin') return `Sec-Fetch-Site is "${site}": only same-origin requests are accepted`;
  const from = headers.origin;
  if (from !== undefined && from.toLowerCase() !== origin.toLowerCase()) return `Origin ${from} is not this admin listener's (${origin})`;
  return undefined;
}

/** The dashboard's sessions, in memory: a random id → its expiry. */
export class Sessions {
  readonly #expiry = new Map<string, number>();
  readonly #now: () => number;

  /** A store reading the clock `now` (tests move it). */
  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Opens a session; returns its id (256 random bits, base64url). */
  open(): string {
    const id = randomBytes(32).toString('base64url');
    if (this.#expiry.size >= MAX_SESSIONS) {
      const oldest = this.#expiry.keys().next().value;
      if (oldest !== undefined) this.#expiry.delete(oldest);
    }
    this.#expiry.set(id, this.#now() + SESSION_MS);
    return id;
  }

  /** Whether `id` is a live session (an expired one is forgotten). */
  valid(id: string | undefined): boolean {
    if (id === undefined) return false;
    const until = this.#expiry.get(id);
    if (until === undefined) return false;
    if (until <= this.#now()) {
      this.#expiry.delete(id);
      return false;
    }
    return true;
  }

  /** Ends one session. */
  close(id: string | undefined): void {
    if (id !== undefined) this.#expiry.delete(id);
  }

  /** Ends every session (the token changed). */
  clear(): void {
    this.#expiry.clear();
  }

  /** How many sessions are open. */
  get size(): number {
    return this.#expiry.size;
  }
}

/** The `Set-Cookie` value of a new session (`Secure` on TLS). */
export function sessionCookie(id: string, secure: boolean): string {
  return `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_MS / 1000}${secure ? '; Secure' : ''}`;
}

/** The `Set-Cookie` value that ends the session cookie. */
export function clearedCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0${secure ? '; Secure' : ''}`;
}
