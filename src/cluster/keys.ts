/**
 * Keys every box of a cluster shares without asking anyone: the sticky cookie's HMAC key and the TLS
 * session-ticket keys (docs/cluster.md, "Sticky sessions and TLS resumption"). Each is derived (HKDF, see
 * `deriveKey`) from the cluster's secret and the **epoch** (`floor(now / period)`, Unix time): every box computes
 * the same key for the same epoch, with no Redis round trip, whether Redis is up or not, and the key changes at
 * each epoch's start on every box at once (as far as their clocks agree). A value signed under one epoch's key
 * still verifies under the next epoch (and under the previous one: a box whose clock runs ahead signs early).
 *
 * The keys of an epoch are computed once, when it begins (a timer at the boundary); what uses them reads
 * `generation` to see that they changed and caches what it builds from them (the request path derives nothing).
 */
import { createHash } from 'node:crypto';
import { deriveKey } from './sealed.js';

/** Keys to sign with and to verify with, which may change over time (see `generation`). */
export interface KeyRing {
  /** Names the ring without revealing a key: equal ids, equal rings (an upstream is rebuilt when it changes). */
  readonly id: string;
  /** Changes whenever the keys do: a user caches what it derives from them per generation. */
  readonly generation: number;
  /** The key to sign with now. */
  readonly current: Buffer;
  /** Every key a value may be signed with and still verify now: `current` first. */
  readonly accepted: readonly Buffer[];
}

/** A ring of one key that never changes (a configured secret, the state directory's key). */
export function fixedKeyRing(key: Buffer): KeyRing {
  const id = `fixed:${createHash('sha256').update(key).digest('base64url').slice(0, 16)}`;
  return Object.freeze({ id, generation: 0, current: key, accepted: Object.freeze([key]) });
}

/** How an `EpochKeys` is made. */
export interface EpochKeysOptions {
  /** How long one epoch's key signs, ms. */
  periodMs: number;
  /** The key's length (default 32 bytes). */
  bytes?: number;
  /** The clock (tests inject one). */
  now?: () => number;
}

/** The key of `purpose` for one epoch: the same on every box that has the cluster's secret. */
export function epochKey(secret: string, purpose: string, epoch: number, bytes = 32): Buffer {
  return deriveKey(secret, `${purpose}:${epoch}`, bytes);
}

/** A ring whose key changes each period, derived from the cluster's secret (see the file comment). */
export class EpochKeys implements KeyRing {
  readonly id: string;
  readonly periodMs: number;
  readonly #secret: string;
  readonly #purpose: string;
  readonly #bytes: number;
  readonly #now: () => number;
  #epoch = Number.NaN;
  #generation = 0;
  #current: Buffer = Buffer.alloc(0);
  #accepted: readonly Buffer[] = [];
  #timer: NodeJS.Timeout | undefined;
  readonly #listeners = new Set<(ring: EpochKeys) => void>();

  constructor(secret: string, purpose: string, options: EpochKeysOptions) {
    if (!(options.periodMs >= 1000)) throw new RangeError('a key rotation period is at least 1 s');
    this.id = `epoch:${purpose}:${options.periodMs}`;
    this.periodMs = options.periodMs;
    this.#secret = secret;
    this.#purpose = purpose;
    this.#bytes = options.bytes ?? 32;
    this.#now = options.now ?? Date.now;
    this.refresh();
  }

  /** The epoch whose key signs now. */
  get epoch(): number {
    return this.#epoch;
  }

  get generation(): number {
    return this.#generation;
  }

  get current(): Buffer {
    return this.#current;
  }

  /** This epoch's key, the previous epoch's (values signed before the rotation), the next one's (a clock ahead). */
  get accepted(): readonly Buffer[] {
    return this.#accepted;
  }

  /**
   * Takes the clock's epoch: when it changed, computes its keys, bumps `generation` and tells the `onRotate`
   * listeners. Returns whether it changed. The timer of `start` calls it at each boundary.
   */
  refresh(): boolean {
    const epoch = Math.floor(this.#now() / this.periodMs);
    if (epoch === this.#epoch) return false;
    this.#epoch = epoch;
    const key = (e: number): Buffer => epochKey(this.#secret, this.#purpose, e, this.#bytes);
    this.#current = key(epoch);
    this.#accepted = Object.freeze([this.#current, key(epoch - 1), key(epoch + 1)]);
    this.#generation++;
    for (const listener of [...this.#listeners]) listener(this);
    return true;
  }

  /** Calls `listener` after each rotation (not for the keys of now). Returns the unsubscribe. */
  onRotate(listener: (ring: EpochKeys) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Rotates at each epoch's start until `stop()` (the timer does not hold the process open). */
  start(): void {
    if (this.#timer !== undefined) return;
    this.refresh();
    this.#schedule();
  }

  /** Stops rotating (no timer is left). */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#listeners.clear();
  }

  #schedule(): void {
    // A timer may fire a little early, or the clock be set back: refresh() then finds the same epoch, and the
    // next timer aims at the boundary again.
    const wait = (this.#epoch + 1) * this.periodMs - this.#now();
    this.#timer = setTimeout(() => {
      this.refresh();
      this.#schedule();
    }, Math.max(50, Math.min(wait + 5, 2 ** 31 - 1)));
    this.#timer.unref();
  }
}
