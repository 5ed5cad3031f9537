/**
 * The capacity queue of an upstream (`upstream/capacity-queue.ts`) with a source the test drives: its size and
 * timeout, turns given to the first waiter that can use them, a turn not taken handed on, and clear.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CapacityQueue, type CapacitySource } from '../../src/upstream/capacity-queue.js';
import type { UpstreamServer } from '../../src/upstream/server.js';

/** A server as the queue reads it: its counts. */
const server = (id: number): UpstreamServer => ({ id, active: 0, pooled: 0 }) as unknown as UpstreamServer;

/** A source whose servers are free when `free` has them; a waiter pinned to a server probes only that one. */
function source(servers: UpstreamServer[], free: Set<UpstreamServer>): CapacitySource {
  return {
    anyCapacity: () => free.size > 0,
    probe: (tried, sticky) => servers.find((s) => free.has(s) && !tried?.has(s.id) && (sticky === undefined || sticky === String(s.id))),
    hold: (s) => void s.active++,
    unhold: (s) => void s.active--,
  };
}

test('past its size a wait is refused at once; within it a wait times out at its deadline and leaves the queue', async () => {
  const a = server(0);
  const free = new Set<UpstreamServer>();
  const queue = new CapacityQueue({ size: 1, timeout: 30 }, source([a], free));
  const first = queue.wait(undefined, undefined, undefined);
  assert.equal(await queue.wait(undefined, undefined, undefined).ready, false, 'the queue is full');
  const started = Date.now();
  assert.equal(await first.ready, false);
  assert.ok(Date.now() - started >= 25, 'waited its timeout');
  // It left: the queue has room for one again, and that one gets the next turn.
  const next = queue.wait(undefined, undefined, undefined);
  free.add(a);
  queue.wake();
  assert.equal(await next.ready, true);
});

test('a freed turn goes to the first waiter that can use it: one pinned to a busy server or that tried the freed one is passed over', async () => {
  const [a, b] = [server(0), server(1)];
  const free = new Set<UpstreamServer>();
  const queue = new CapacityQueue({ size: 10, timeout: 5000 }, source([a, b], free));
  const pinnedToB = queue.wait(undefined, '1', undefined);
  const triedA = queue.wait(undefined, undefined, new Set([0]));
  const any = queue.wait(undefined, undefined, undefined);
  const woken: string[] = [];
  for (const [name, wait] of [['pinnedToB', pinnedToB], ['triedA', triedA], ['any', any]] as const) void wait.ready.then((ok) => ok && woken.push(name));
  free.add(a);
  queue.wake();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(woken, ['any'], 'a is free: only the waiter that may use a');
  assert.equal(a.active, 0, 'the turn is held only while the pass lasts');
  free.add(b);
  queue.wake();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(woken.sort(), ['any', 'pinnedToB', 'triedA']);
  queue.clear();
});

test('a waiter woken in a pass is counted on its server until the pass ends, so capacity for one turn wakes one waiter', async () => {
  const a = server(0);
  const free = new Set([a]);
  const src = source([a], free);
  // The server has room for one request: held once, it is full for the rest of the pass.
  const queue = new CapacityQueue({ size: 10, timeout: 5000 }, { ...src, probe: (tried, sticky) => (a.active === 0 ? src.probe(tried, sticky) : undefined) });
  const waits = [queue.wait(undefined, undefined, undefined), queue.wait(undefined, undefined, undefined)];
  let woken = 0;
  for (const wait of waits) void wait.ready.then((ok) => void (ok && woken++));
  queue.wake();
  await Promise.resolve();
  assert.equal(woken, 1);
  assert.equal(a.active, 0);
  // The woken request did not take its turn (it went away): the check after the pass hands it on.
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(woken, 2, 'the turn not taken went to the next waiter');
  queue.clear();
});

test('clear lets every waiter go (ready false) and leaves no timer', async () => {
  const queue = new CapacityQueue({ size: 10, timeout: 60_000 }, source([], new Set()));
  const waits = [queue.wait(undefined, undefined, undefined), queue.wait({ until: 0 }, 'x', new Set([1]))];
  queue.clear();
  assert.deepEqual(await Promise.all(waits.map((w) => w.ready)), [false, false]);
});
