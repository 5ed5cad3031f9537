/**
 * ACME http-01 challenges (RFC 8555 §8.3): the tokens of orders in progress and their key authorizations, which
 * the plain listeners answer under /.well-known/acme-challenge/. Apart from `acme.ts` so that the request path
 * needs no ACME client loaded.
 */

/** The path prefix of http-01 challenges (RFC 8555 §8.3). */
export const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

/** The http-01 tokens now pending, with their key authorizations: only these are answered. */
export class Http01Challenges {
  readonly #pending = new Map<string, string>();
  /** Where a token not pending here is looked up (a cluster: another box's order, in Redis). */
  #shared: ((token: string) => Promise<string | undefined>) | undefined;

  /** The key authorization for a request path, or undefined when the path names no pending token. */
  answer(path: string): string | undefined {
    if (!path.startsWith(CHALLENGE_PREFIX)) return undefined;
    return this.#pending.get(path.slice(CHALLENGE_PREFIX.length));
  }

  /**
   * For a challenge path whose token is not pending here: its key authorization looked up elsewhere (a cluster's
   * Redis, under a request's deadline; undefined when not found). Undefined when there is nowhere else to look.
   */
  lookup(path: string): Promise<string | undefined> | undefined {
    if (this.#shared === undefined || !path.startsWith(CHALLENGE_PREFIX)) return undefined;
    return this.#shared(path.slice(CHALLENGE_PREFIX.length));
  }

  /** Sets (or clears) where tokens not pending here are looked up. */
  share(lookup: ((token: string) => Promise<string | undefined>) | undefined): void {
    this.#shared = lookup;
  }

  /** Every pending token with its key authorization (for a worker started while an order is pending). */
  entries(): Array<[string, string]> {
    return [...this.#pending];
  }

  get size(): number {
    return this.#pending.size;
  }

  set(token: string, keyAuthorization: string): void {
    this.#pending.set(token, keyAuthorization);
  }

  delete(token: string): void {
    this.#pending.delete(token);
  }
}
