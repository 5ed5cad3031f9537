/**
 * `basic_auth` (RFC 7617): a route or site answers only requests whose `Authorization: Basic` credentials match
 * one of its users' bcrypt hashes, listed inline or in an htpasswd file (see `htpasswd.ts`). Otherwise 401 with
 * a `WWW-Authenticate` challenge.
 *
 * - Credentials cross the network in the clear, so over plain HTTP they are only taken from a loopback peer
 *   (a local proxy, a test); any other plain-HTTP connection gets 403 before anything is checked.
 * - Hashes are checked on the worker threads of `hash-pool.ts`, never on the event loop, in a queue fair between
 *   client addresses (full, or this client's share taken: 503 with Retry-After). A check the cache
 *   cannot answer costs a failed-attempt token of the client (its address, IPv6 by /64, as `rate_limit`),
 *   given back when the password was right: a client out of tokens gets 429 with `Retry-After` before any
 *   hashing, so that unauthenticated requests cannot keep the cores busy. The tokens a client has spent rank
 *   its checks in the queue: a client with no recent failure is served before clients with failures and may
 *   take the place of their newest queued check, so a flood of wrong passwords cannot lock a user out.
 * - Results are kept a short while in a bounded LRU keyed by an HMAC (under a key made per process) of the user,
 *   the hash and the password: never the password itself, and a hash changed by a reload is checked anew.
 *   Parallel requests with the same credentials share the check in flight; when all of them went away while it
 *   still waited in the pool's queue, it is withdrawn unrun.
 * - An unknown user costs a check too (against another user's hash), so that timing does not tell which users
 *   exist.
 * - `Authorization` is not forwarded to the app unless `pass_authorization: true`.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { duration, type Problem } from '../../config/schema.js';
import type { Handler, RequestContext } from '../../http/context.js';
import { RETRY_SOON, sendError } from '../../http/send.js';
import { defineMiddleware } from '../chain.js';
import { sharedHashPool } from './hash-pool.js';
import { parseHtpasswd, refuseHash, type HtpasswdUser } from './htpasswd.js';
import { TokenBuckets, clientKey, rate } from './rate-limit.js';

const user = z.strictObject({
  user: z.string().min(1).refine((name) => !name.includes(':'), 'a user name has no ":"'),
  hash: z.string().superRefine((hash, ctx) => {
    const refused = refuseHash(hash);
    if (refused !== undefined) ctx.addIssue({ code: 'custom', message: `this is ${refused}` });
  }),
});

const options = z.strictObject({
  /** Shown by browsers in the login prompt; a quoted-string, so no `"`, `\` or control characters. */
  realm: z
    .string()
    .regex(/^[^"\\\x00-\x1f\x7f]*$/, 'a realm has no ", \\ or control characters')
    .default('Restricted'),
  /** Users and their bcrypt hashes, inline. */
  users: z.array(user).min(1).optional(),
  /** Or an htpasswd file (relative to the config's folder), read when the config is loaded or reloaded. */
  htpasswd: z.string().min(1).optional(),
  /** Forward the Authorization field to the app (it is Portico's otherwise). */
  pass_authorization: z.boolean().default(false),
  /** Failed attempts a client may make: a token bucket; past it 429 before any hashing. */
  failure_limit: z.strictObject({ rate: rate.prefault('10/m'), burst: z.number().int().min(1).default(10) }).prefault({}),
  /** How long a checked (user, password) result is kept; 0 = not kept. */
  cache_ttl: duration.default(60_000),
});

/** Results kept at most per `basic_auth`. */
const CACHE_ENTRIES = 1024;
/** Failed-attempt buckets kept at most per `basic_auth`. */
const CLIENTS = 100_000;
/** The key of the result cache's HMAC: random per process, so keys mean nothing outside it. */
const RESULT_KEY = randomBytes(32);

/** A bcrypt check under way, shared by the requests with the same credentials that wait for it. */
interface InflightCheck {
  readonly result: Promise<boolean | undefined>;
  /** Aborted when the last request waiting goes away: a check still queued is then never run. */
  readonly withdraw: AbortController;
  waiting: number;
}

/** Base64 as RFC 4648 writes it (token68 of the Basic scheme). */
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** User and password from an `Authorization: Basic …` value; `undefined` when absent or malformed. */
export function parseBasicCredentials(value: string | undefined): { user: string; password: string } | undefined {
  if (value === undefined || value.length < 7 || value.slice(0, 6).toLowerCase() !== 'basic ') return undefined;
  const token = value.slice(6).trim();
  if (token.length % 4 !== 0 || !BASE64.test(token)) return undefined;
  const decoded = Buffer.from(token, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Whether the connection itself is TLS (set by Node on TLS sockets; a plain socket has no such field). */
function isEncrypted(ctx: RequestContext): boolean {
  return (ctx.req.socket as { encrypted?: boolean } | null)?.encrypted === true;
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1';
}

function readUsers(o: z.output<typeof options>): HtpasswdUser[] {
  if (o.htpasswd === undefined) return o.users ?? [];
  const parsed = parseHtpasswd(readFileSync(o.htpasswd, 'utf8'));
  const first = parsed.problems[0];
  if (first !== undefined) throw new Error(`${o.htpasswd} line ${first.line}: ${first.message}`);
  return parsed.users;
}

/** The `basic_auth` middleware kind (stage `auth`). */
export const basicAuthKind = defineMiddleware({
  kind: 'basic_auth',
  stage: 'auth',
  options,
  check(o, env) {
    const problems: Problem[] = [];
    if ((o.users === undefined) === (o.htpasswd === undefined)) {
      problems.push({ keys: [], message: 'basic_auth takes either "users" or "htpasswd", not both and not neither' });
    }
    const seen = new Map<string, number>();
    o.users?.forEach((entry, i) => {
      if (seen.has(entry.user)) problems.push({ keys: ['users', i, 'user'], message: `user ${JSON.stringify(entry.user)} is listed twice (first at users[${seen.get(entry.user)}])` });
      seen.set(entry.user, i);
    });
    if (o.htpasswd !== undefined) {
      const written = o.htpasswd;
      o.htpasswd = path.resolve(env.dir, written);
      let text: string;
      try {
        text = readFileSync(o.htpasswd, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        problems.push({ keys: ['htpasswd'], message: `cannot read ${written}: ${code === 'ENOENT' ? 'no such file' : code}` });
        return problems;
      }
      const parsed = parseHtpasswd(text);
      for (const problem of parsed.problems) problems.push({ keys: ['htpasswd'], message: `${written} line ${problem.line}: ${problem.message}` });
      if (parsed.problems.length === 0 && parsed.users.length === 0) problems.push({ keys: ['htpasswd'], message: `${written} lists no user` });
    }
    return problems;
  },
  create(o) {
    const users = new Map(readUsers(o).map((entry) => [entry.user, entry.hash]));
    // An unknown user is checked against a real hash (the result ignored), so that it takes as long as a known one.
    const decoy = users.values().next().value!;
    const challenge = { 'WWW-Authenticate': `Basic realm="${o.realm}", charset="UTF-8"` };
    const failures = new TokenBuckets(o.failure_limit.rate, o.failure_limit.burst, CLIENTS);
    const results = o.cache_ttl === 0 ? undefined : new LRUCache<string, boolean>({ max: CACHE_ENTRIES, ttl: o.cache_ttl });
    const pool = sharedHashPool();
    const consume = !o.pass_authorization;

    function admit(ctx: RequestContext, next: Handler): Promise<void> | void {
      if (consume) ctx.credentialsConsumed = true;
      return next(ctx);
    }

    /**
     * Checks in flight by result key: parallel requests with the same credentials (a page's assets) share one.
     * When every request waiting for a check has gone away while it is still queued, it is withdrawn unrun.
     */
    const inflight = new Map<string, InflightCheck>();

    async function checkHash(ctx: RequestContext, next: Handler, password: string, hash: string | undefined, key: string): Promise<void> {
      let check = inflight.get(key);
      if (check === undefined) {
        const client = clientKey(ctx, 64);
        // Read before this attempt takes its token: failed attempts (and checks of this client still under way).
        const failed = failures.spent(client);
        const wait = failures.take(client);
        if (wait !== 0) return sendError(ctx, 429, { 'Retry-After': String(wait) });
        const withdraw = new AbortController();
        const result = pool.verify(password, hash ?? decoy, client, withdraw.signal, failed).then((match) => {
          // Refused (this client holds its share of the queue, or it is full) or withdrawn: not an attempt, nothing kept.
          if (match === undefined) {
            failures.giveBack(client);
            return undefined;
          }
          const ok = match && hash !== undefined;
          results?.set(key, ok);
          if (ok) failures.giveBack(client);
          return ok;
        });
        const started: InflightCheck = { result, withdraw, waiting: 0 };
        check = started;
        inflight.set(key, started);
        const forget = () => {
          if (inflight.get(key) === started) inflight.delete(key);
        };
        void result.catch(() => undefined).finally(forget);
        withdraw.signal.addEventListener('abort', forget, { once: true });
      }
      const joined = check;
      joined.waiting++;
      let waiting = true;
      ctx.onClientGone(() => {
        if (!waiting) return;
        waiting = false;
        if (--joined.waiting === 0) joined.withdraw.abort();
      });
      let ok: boolean | undefined;
      try {
        ok = await joined.result;
      } finally {
        if (waiting) joined.waiting--;
        waiting = false;
      }
      if (ctx.res.destroyed) return;
      if (ok === undefined) return sendError(ctx, 503, RETRY_SOON);
      if (!ok) return sendError(ctx, 401, challenge);
      return admit(ctx, next);
    }

    return function basicAuth(ctx, next) {
      if (!isEncrypted(ctx) && !isLoopback(ctx.peerAddress())) return sendError(ctx, 403);
      const credentials = parseBasicCredentials(ctx.req.headers.authorization);
      if (credentials === undefined) return sendError(ctx, 401, challenge);
      const hash = users.get(credentials.user);
      const key = createHmac('sha256', RESULT_KEY)
        .update(JSON.stringify([credentials.user, hash ?? '', credentials.password]))
        .digest('base64');
      const known = results?.get(key);
      if (known === true) return admit(ctx, next);
      if (known === false) return sendError(ctx, 401, challenge);
      return checkHash(ctx, next, credentials.password, hash, key);
    };
  },
});
