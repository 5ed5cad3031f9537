/**
 * The values of Portico's sticky cookie for an upstream's servers: each names a server without revealing it, an
 * HMAC of the upstream's name and the server's label under the sticky key. The key is a ring (cluster/keys.ts): a
 * value signed under any key it still accepts names its server, the current key's values are the ones handed out.
 *
 * Scope: one upstream (built again when its servers change, or when the ring rotates: never per request).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { fixedKeyRing, type KeyRing } from '../cluster/keys.js';
import type { UpstreamServer } from './server.js';

/**
 * The sticky cookie's HMAC key when the config names none: random, for this process (scope: process). A value
 * therefore names its server only to this process, survives reloads, and changes on restart, when clients are
 * simply pinned again. Without a key the value was a plain hash of the server's URL, which could be reversed to
 * the app's address by trying candidates. With a state directory, the server hands in the key kept there instead
 * (`stickyKey`), so that pins survive restarts and hold across processes sharing it; a cluster hands in its
 * rotating keys (cluster/keys.ts), so that a pin holds on every box.
 */
const PROCESS_STICKY_SECRET = fixedKeyRing(randomBytes(32));

/** The sticky key an upstream is built with: one key, or a ring that rotates (see `KeyRing`). */
export type StickyKey = Buffer | KeyRing;

/** `key` as a ring (undefined: the process's own). */
export function stickyKeyRing(key: StickyKey | undefined): KeyRing {
  if (key === undefined) return PROCESS_STICKY_SECRET;
  return Buffer.isBuffer(key) ? fixedKeyRing(key) : key;
}

/** The sticky values of one upstream's servers (see the file comment). */
export class StickyValues {
  readonly #upstream: string;
  readonly #ring: KeyRing;
  /** The servers a value may name: those serving, and those leaving while their requests end. */
  readonly #servers: () => readonly UpstreamServer[];
  /** The ring's generation the values below were computed for (-1: never). */
  #generation = -1;
  /** Each server's value under the current key, by server id (`''` for an id no server has). */
  #ids: string[] = [];
  /** Server ids by every value that still names one: the current key's, and the other accepted keys'. */
  #pins: ReadonlyMap<string, number> = new Map();

  constructor(upstream: string, ring: KeyRing, servers: () => readonly UpstreamServer[]) {
    this.#upstream = upstream;
    this.#ring = ring;
    this.#servers = servers;
  }

  /**
   * Computes the values again: when the servers changed (`force`), or the ring's keys did (a rotation: once per
   * period). A leaving server keeps its value while its requests end (their answers may set the cookie).
   */
  rekey(force = false): void {
    const ring = this.#ring;
    if (!force && ring.generation === this.#generation) return;
    const servers = this.#servers();
    const valueOf = (key: Buffer, server: UpstreamServer): string => createHmac('sha256', key).update(`${this.#upstream}\0${server.label}`).digest('hex').slice(0, 16);
    const ids: string[] = [];
    const pins = new Map<string, number>();
    for (const server of servers) {
      while (ids.length <= server.id) ids.push('');
      ids[server.id] = valueOf(ring.current, server);
      // A serving server wins over a leaving one of the same address (DNS dropped it and named it again while its
      // requests drained): its clients are pinned to the one that takes them.
      if (!pins.has(ids[server.id]!)) pins.set(ids[server.id]!, server.id);
    }
    // The current key's values first: they win should two keys ever give one value.
    for (const key of ring.accepted) {
      if (key === ring.current) continue;
      for (const server of servers) {
        const value = valueOf(key, server);
        if (!pins.has(value)) pins.set(value, server.id);
      }
    }
    this.#ids = ids;
    this.#pins = pins;
    this.#generation = ring.generation;
  }

  /** The value that names `server` now (under the current key). */
  of(server: UpstreamServer): string {
    this.rekey();
    return this.#ids[server.id]!;
  }

  /** The id of the server a value names (under any accepted key), or -1. */
  pinned(value: string | undefined): number {
    if (value === undefined) return -1;
    this.rekey();
    return this.#pins.get(value) ?? -1;
  }
}
