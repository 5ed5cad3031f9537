/** The values of Portico's sticky cookie per server (`upstream/sticky-values.ts`), under a key ring that rotates. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fixedKeyRing, type KeyRing } from '../../src/cluster/keys.js';
import { StickyValues } from '../../src/upstream/sticky-values.js';
import type { UpstreamServer } from '../../src/upstream/server.js';

/** A server as the values read it: its id and label. */
const server = (id: number, label: string): UpstreamServer => ({ id, label }) as unknown as UpstreamServer;

test('each server has a value of 16 hex digits, its own and its upstream\'s; a value names its server, any other none', () => {
  const ring = fixedKeyRing(Buffer.alloc(32, 1));
  const servers = [server(0, 'http://10.0.0.1:8080'), server(1, 'http://10.0.0.2:8080')];
  const values = new StickyValues('app', ring, () => servers);
  const [a, b] = [values.of(servers[0]!), values.of(servers[1]!)];
  assert.match(a, /^[0-9a-f]{16}$/);
  assert.notEqual(a, b);
  assert.doesNotMatch(a, /10\.0\.0\.1/);
  assert.notEqual(new StickyValues('other', ring, () => servers).of(servers[0]!), a, 'another upstream, another value');
  assert.equal(values.pinned(a), 0);
  assert.equal(values.pinned(b), 1);
  assert.equal(values.pinned('0123456789abcdef'), -1);
  assert.equal(values.pinned(undefined), -1);
});

test('after the ring rotates, values are the new key\'s, and the old key\'s still name their servers while the ring accepts it', () => {
  const [oldKey, newKey] = [Buffer.alloc(32, 1), Buffer.alloc(32, 2)];
  let ring: KeyRing = { id: 'r', generation: 1, current: oldKey, accepted: [oldKey] };
  const servers = [server(0, 'a'), server(1, 'b')];
  const values = new StickyValues('app', { get id() { return ring.id; }, get generation() { return ring.generation; }, get current() { return ring.current; }, get accepted() { return ring.accepted; } }, () => servers);
  const before = values.of(servers[1]!);
  ring = { id: 'r', generation: 2, current: newKey, accepted: [newKey, oldKey] };
  const after = values.of(servers[1]!);
  assert.notEqual(after, before);
  assert.equal(values.pinned(after), 1);
  assert.equal(values.pinned(before), 1, 'a client pinned under the old key stays pinned');
  ring = { id: 'r', generation: 3, current: newKey, accepted: [newKey] };
  assert.equal(values.pinned(before), -1, 'the old key no longer accepted');
});

test('values follow the servers only when told (rekey(true)); a serving server wins over a leaving one of the same label', () => {
  const ring = fixedKeyRing(Buffer.alloc(32, 3));
  let servers = [server(0, 'a')];
  const values = new StickyValues('app', ring, () => servers);
  const a = values.of(servers[0]!);
  // DNS named the address again while the old server was leaving: both are listed, the serving one first.
  servers = [server(1, 'a'), server(0, 'a')];
  assert.equal(values.pinned(a), 0, 'not built again yet');
  values.rekey(true);
  assert.equal(values.pinned(a), 1, 'the serving server takes the clients');
});
