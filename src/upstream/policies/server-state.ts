/**
 * Per-server state kept by a policy lives in typed arrays indexed by `PolicyServer.id`, sized once at
 * create() so a pick never allocates.
 */
import type { PolicyServer } from './types.js';

/** The length a per-server array needs so every id in `servers` is a valid index. */
export function stateSize(servers: readonly PolicyServer[]): number {
  let size = 0;
  for (const server of servers) {
    if (!Number.isInteger(server.id) || server.id < 0) {
      throw new Error(`policy server id must be a non-negative integer, got ${server.id}`);
    }
    if (server.id + 1 > size) size = server.id + 1;
  }
  return size;
}

/** The identity a hashing policy places a server by: its address when known, so config order does not matter. */
export function serverIdentity(server: PolicyServer): string {
  return server.address ?? `#${server.id}`;
}
