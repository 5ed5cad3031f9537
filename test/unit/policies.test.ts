import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { POLICY_NAMES, policyKind, registerPolicy } from '../../src/upstream/policies/index.js';
import { createPolicy, NO_OPTIONS, type PickContext, type Policy, type PolicyServer } from '../../src/upstream/policies/types.js';

/** A mutable server, as the pool would keep it. */
interface TestServer extends PolicyServer {
  weight: number;
  effectiveWeight: number;
  active: number;
  ewmaMs: number;
}

function servers(weights: readonly number[], extra: Partial<TestServer> = {}): TestServer[] {
  return weights.map((weight, id) => ({ id, weight, effectiveWeight: weight, active: 0, ewmaMs: 0, ...extra }));
}

/** A seeded PRNG (mulberry32) so every run sees the same sequence. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return function random() {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function ctx(overrides: Partial<PickContext> = {}): PickContext {
  return { clientIp: '127.0.0.1', hashKey: '', random: seededRandom(1), ...overrides };
}

function create(name: string, list: readonly PolicyServer[], options = {}): Policy {
  const kind = policyKind(name);
  assert.ok(kind, `policy ${name} is registered`);
  return createPolicy(kind, list, options);
}

function pickId(policy: Policy, candidates: readonly PolicyServer[], context: PickContext): number {
  const picked = policy.pick(candidates, context);
  assert.ok(picked);
  return picked.id;
}

function counts(n: number, size: number, pickOnce: () => number): number[] {
  const tally = new Array<number>(size).fill(0);
  for (let i = 0; i < n; i++) tally[pickOnce()]!++;
  return tally;
}

describe('registry', () => {
  test('every listed name resolves to a kind of that name', () => {
    for (const name of POLICY_NAMES) assert.equal(policyKind(name)?.name, name);
    assert.equal(policyKind('nope'), undefined);
  });

  test('registering a name twice throws', () => {
    assert.throws(() => registerPolicy({ name: 'round_robin', options: NO_OPTIONS, create: () => ({ pick: (c) => c[0] }) }), /twice/);
  });
});

describe('every policy', () => {
  test('picks one of the candidates for any non-empty subset of servers', () => {
    const serverArb = fc.record({
      weight: fc.integer({ min: 1, max: 10 }),
      fraction: fc.double({ min: 0.01, max: 1, noNaN: true }),
      active: fc.integer({ min: 0, max: 50 }),
      ewmaMs: fc.oneof(fc.constant(0), fc.double({ min: 0.1, max: 5000, noNaN: true })),
    });
    fc.assert(
      fc.property(
        fc.array(serverArb, { minLength: 1, maxLength: 12 }),
        fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }),
        fc.constantFrom(...POLICY_NAMES),
        fc.string(),
        fc.ipV4(),
        fc.integer(),
        fc.nat(20),
        (specs, present, name, hashKey, clientIp, seed, firstId) => {
          // Ids need not start at 0: a pool may build a policy over its backups alone.
          const all: TestServer[] = specs.map((s, i) => ({
            id: firstId + i,
            weight: s.weight,
            effectiveWeight: s.weight * s.fraction,
            active: s.active,
            ewmaMs: s.ewmaMs,
          }));
          let candidates = all.filter((_, i) => present[i]);
          if (candidates.length === 0) candidates = [all[all.length - 1]!];
          const policy = create(name, all, name === 'hash' ? { virtualNodes: 8 } : {});
          const context = ctx({ hashKey, clientIp, random: seededRandom(seed) });
          for (let i = 0; i < 5; i++) {
            const picked = policy.pick(candidates, context);
            assert.ok(picked !== undefined && candidates.includes(picked));
          }
        },
      ),
    );
  });
});

describe('round_robin', () => {
  test('weights 5:1:1 give the nginx smooth sequence a a b a c a a', () => {
    const list = servers([5, 1, 1]);
    const policy = create('round_robin', list);
    const names = 'abc';
    const seq = Array.from({ length: 14 }, () => names[pickId(policy, list, ctx())]).join(' ');
    assert.equal(seq, 'a a b a c a a a a b a c a a');
  });

  test('700 picks over weights 5:1:1 are exactly 500:100:100', () => {
    const list = servers([5, 1, 1]);
    const policy = create('round_robin', list);
    assert.deepEqual(
      counts(700, 3, () => pickId(policy, list, ctx())),
      [500, 100, 100],
    );
  });

  test('any integer weights are served exactly in proportion over one cycle of their total', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 8 }), (weights) => {
        const list = servers(weights);
        const policy = create('round_robin', list);
        const total = weights.reduce((a, b) => a + b, 0);
        for (let cycle = 0; cycle < 2; cycle++) {
          assert.deepEqual(
            counts(total, weights.length, () => pickId(policy, list, ctx())),
            weights,
          );
        }
      }),
    );
  });

  test('an absent server is skipped without disturbing the others, and rejoins without a burst', () => {
    const list = servers([1, 1, 1]);
    const policy = create('round_robin', list);
    const withoutB = [list[0]!, list[2]!];
    assert.deepEqual(
      counts(10, 3, () => pickId(policy, withoutB, ctx())),
      [5, 0, 5],
    );
    const back = counts(30, 3, () => pickId(policy, list, ctx()));
    assert.deepEqual(back, [10, 10, 10]);
  });

  test('a slow-starting server gets its share of its effective weight', () => {
    const list = servers([1, 1]);
    list[1]!.effectiveWeight = 0.25;
    const policy = create('round_robin', list);
    assert.deepEqual(
      counts(500, 2, () => pickId(policy, list, ctx())),
      [400, 100],
    );
  });
});

describe('least_conn', () => {
  test('prefers the idle server', () => {
    const list = servers([1, 1, 1]);
    list[0]!.active = 3;
    list[2]!.active = 1;
    const policy = create('least_conn', list);
    for (let i = 0; i < 10; i++) assert.equal(pickId(policy, list, ctx()), 1);
  });

  test('compares active requests relative to weight', () => {
    const list = servers([4, 1]);
    list[0]!.active = 3; // 0.75 per unit of weight
    list[1]!.active = 1; // 1 per unit of weight
    const policy = create('least_conn', list);
    assert.equal(pickId(policy, list, ctx()), 0);
  });

  test('breaks ties by weighted round robin among the tied servers only', () => {
    const list = servers([2, 1, 1]);
    list[2]!.active = 5;
    const policy = create('least_conn', list);
    assert.deepEqual(
      counts(300, 3, () => pickId(policy, list, ctx())),
      [200, 100, 0],
    );
  });

  test('spreads load as requests are held open', () => {
    const list = servers([1, 1, 1]);
    const policy = create('least_conn', list);
    for (let i = 0; i < 9; i++) list[pickId(policy, list, ctx())]!.active++;
    assert.deepEqual(
      list.map((s) => s.active),
      [3, 3, 3],
    );
  });
});

describe('random_two', () => {
  test('respects weights when servers are idle', () => {
    const list = servers([3, 1, 1]);
    const policy = create('random_two', list);
    const context = ctx({ random: seededRandom(42) });
    const tally = counts(20_000, 3, () => pickId(policy, list, context));
    assert.ok(Math.abs(tally[0]! / 20_000 - 0.6) < 0.02, `weight 3 share: ${tally}`);
    assert.ok(Math.abs(tally[1]! / 20_000 - 0.2) < 0.02, `weight 1 share: ${tally}`);
  });

  test('of the two drawn, takes the less loaded', () => {
    const list = servers([1, 1]);
    list[0]!.active = 2;
    const policy = create('random_two', list);
    const context = ctx({ random: seededRandom(7) });
    for (let i = 0; i < 50; i++) assert.equal(pickId(policy, list, context), 1);
  });

  test('never sends to the most loaded of three (it always loses its pair)', () => {
    const list = servers([1, 1, 1]);
    list[1]!.active = 10;
    const policy = create('random_two', list);
    const context = ctx({ random: seededRandom(3) });
    const tally = counts(3000, 3, () => pickId(policy, list, context));
    assert.equal(tally[1], 0);
    assert.ok(tally[0]! > 1300 && tally[2]! > 1300, `${tally}`);
  });
});

describe('ewma', () => {
  test('avoids a slow server', () => {
    const list = servers([1, 1, 1]);
    list[0]!.ewmaMs = 5;
    list[1]!.ewmaMs = 200;
    list[2]!.ewmaMs = 5;
    const policy = create('ewma', list);
    const context = ctx({ random: seededRandom(9) });
    // Requests are held open for a while, so the fast servers build up queues the slow one does not.
    const inFlight: number[] = [];
    const tally = counts(5000, 3, () => {
      const id = pickId(policy, list, context);
      list[id]!.active++;
      inFlight.push(id);
      if (inFlight.length > 20) list[inFlight.shift()!]!.active--;
      return id;
    });
    assert.ok(tally[1]! / 5000 < 0.1, `slow server share: ${tally}`);
  });

  test('tries an unmeasured server, but only one request at a time until it is measured', () => {
    const list = servers([1, 1]);
    list[0]!.ewmaMs = 5;
    const policy = create('ewma', list);
    assert.equal(pickId(policy, list, ctx()), 1);
    list[1]!.active = 1;
    assert.equal(pickId(policy, list, ctx()), 0);
    list[0]!.active = 100;
    assert.equal(pickId(policy, list, ctx()), 0);
  });

  test('weighs latency by the requests in flight', () => {
    const list = servers([1, 1]);
    list[0]!.ewmaMs = 10;
    list[0]!.active = 9; // cost 100
    list[1]!.ewmaMs = 40;
    list[1]!.active = 1; // cost 80
    const policy = create('ewma', list);
    assert.equal(pickId(policy, list, ctx()), 1);
  });
});

describe('ip_hash', () => {
  test('the same address always gets the same server', () => {
    const list = servers([1, 1, 1, 1]);
    const policy = create('ip_hash', list);
    const first = pickId(policy, list, ctx({ clientIp: '203.0.113.7' }));
    for (let i = 0; i < 20; i++) assert.equal(pickId(policy, list, ctx({ clientIp: '203.0.113.7' })), first);
    // A fresh instance (another worker, or after a reload) agrees.
    assert.equal(pickId(create('ip_hash', list), list, ctx({ clientIp: '203.0.113.7' })), first);
  });

  test('an IPv4-mapped IPv6 address sticks like the plain IPv4 address', () => {
    const list = servers([1, 1, 1, 1, 1]);
    const policy = create('ip_hash', list);
    for (let i = 0; i < 50; i++) {
      const ip = `198.51.100.${i}`;
      assert.equal(pickId(policy, list, ctx({ clientIp: `::ffff:${ip}` })), pickId(policy, list, ctx({ clientIp: ip })));
    }
  });

  test('spreads addresses across servers, by weight', () => {
    const list = servers([1, 1, 2]);
    const policy = create('ip_hash', list);
    let n = 0;
    const tally = counts(10_000, 3, () => {
      n++;
      return pickId(policy, list, ctx({ clientIp: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` }));
    });
    assert.ok(Math.abs(tally[0]! / 10_000 - 0.25) < 0.03, `${tally}`);
    assert.ok(Math.abs(tally[1]! / 10_000 - 0.25) < 0.03, `${tally}`);
    assert.ok(Math.abs(tally[2]! / 10_000 - 0.5) < 0.03, `${tally}`);
    // IPv6 clients spread too.
    const v6 = counts(3000, 3, () => pickId(policy, list, ctx({ clientIp: `2001:db8::${(n++).toString(16)}` })));
    assert.ok(v6.every((c) => c > 500), `${v6}`);
  });

  test('when its server is not a candidate, a client moves deterministically and only that server’s clients move', () => {
    const list = servers([1, 1, 1, 1]);
    const policy = create('ip_hash', list);
    const without2 = list.filter((s) => s.id !== 2);
    for (let i = 0; i < 1000; i++) {
      const context = ctx({ clientIp: `172.16.${i >> 8}.${i & 255}` });
      const before = pickId(policy, list, context);
      const after = pickId(policy, without2, context);
      assert.notEqual(after, 2);
      if (before !== 2) assert.equal(after, before);
      else assert.equal(pickId(create('ip_hash', list), without2, context), after);
    }
  });

  test('adding a server moves only about 1/(N+1) of clients', () => {
    const three = servers([1, 1, 1]);
    const four = servers([1, 1, 1, 1]);
    const p3 = create('ip_hash', three);
    const p4 = create('ip_hash', four);
    let moved = 0;
    for (let i = 0; i < 10_000; i++) {
      const context = ctx({ clientIp: `10.1.${i >> 8}.${i & 255}` });
      const a = pickId(p3, three, context);
      const b = pickId(p4, four, context);
      if (a !== b) {
        moved++;
        assert.equal(b, 3, 'clients only move to the new server');
      }
    }
    assert.ok(moved > 1500 && moved < 3500, `moved ${moved}`);
  });
});

describe('hash', () => {
  const keys = Array.from({ length: 10_000 }, (_, i) => `/assets/item-${i}.png`);

  test('the same key always gets the same server', () => {
    const list = servers([1, 1, 1]);
    const policy = create('hash', list);
    for (const key of keys.slice(0, 100)) {
      const id = pickId(policy, list, ctx({ hashKey: key }));
      assert.equal(pickId(policy, list, ctx({ hashKey: key })), id);
      assert.equal(pickId(create('hash', list), list, ctx({ hashKey: key })), id);
    }
  });

  test('10k keys spread evenly across 3 servers, and by weight', () => {
    const list = servers([1, 1, 1]);
    const policy = create('hash', list);
    const tally = [0, 0, 0];
    for (const key of keys) tally[pickId(policy, list, ctx({ hashKey: key }))]!++;
    for (const c of tally) assert.ok(Math.abs(c / keys.length - 1 / 3) < 0.06, `${tally}`);

    const weighted = servers([1, 3]);
    const wp = create('hash', weighted);
    let heavy = 0;
    for (const key of keys) if (pickId(wp, weighted, ctx({ hashKey: key })) === 1) heavy++;
    assert.ok(Math.abs(heavy / keys.length - 0.75) < 0.06, `heavy got ${heavy}`);
  });

  test('adding a 4th server moves between 15% and 35% of keys, all to the new server', () => {
    const three = servers([1, 1, 1]);
    const four = servers([1, 1, 1, 1]);
    const p3 = create('hash', three);
    const p4 = create('hash', four);
    let moved = 0;
    for (const key of keys) {
      const a = pickId(p3, three, ctx({ hashKey: key }));
      const b = pickId(p4, four, ctx({ hashKey: key }));
      if (a !== b) {
        moved++;
        assert.equal(b, 3);
      }
    }
    assert.ok(moved > 1500 && moved < 3500, `moved ${moved}`);
  });

  test('removing a candidate moves only the keys that were on it', () => {
    const list = servers([1, 1, 1, 1]);
    const policy = create('hash', list);
    const without1 = list.filter((s) => s.id !== 1);
    let moved = 0;
    for (const key of keys) {
      const before = pickId(policy, list, ctx({ hashKey: key }));
      const after = pickId(policy, without1, ctx({ hashKey: key }));
      assert.notEqual(after, 1);
      if (before !== 1) assert.equal(after, before, `key ${key} moved off a server that is still there`);
      else moved++;
    }
    assert.ok(moved > 1500, `server 1 owned ${moved} keys`);
  });

  test('servers are placed by address, so reordering the config does not move keys', () => {
    const addrs = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'];
    const a = addrs.map((address, id) => ({ ...servers([1])[0]!, id, address }));
    const b = [...addrs].reverse().map((address, id) => ({ ...servers([1])[0]!, id, address }));
    const pa = create('hash', a);
    const pb = create('hash', b);
    for (const key of keys.slice(0, 500)) {
      const ia = pickId(pa, a, ctx({ hashKey: key }));
      const ib = pickId(pb, b, ctx({ hashKey: key }));
      assert.equal(a[ia]!.address, b[ib]!.address);
    }
  });

  test('an empty key is spread by weighted random instead of pinned to one server', () => {
    const list = servers([1, 1]);
    const policy = create('hash', list);
    const context = ctx({ random: seededRandom(5) });
    const tally = counts(2000, 2, () => pickId(policy, list, context));
    assert.ok(tally[0]! > 800 && tally[1]! > 800, `${tally}`);
  });

  test('rejects a non-positive virtualNodes', () => {
    assert.throws(() => create('hash', servers([1]), { virtualNodes: 0 }), /virtualNodes/);
  });
});

describe('first', () => {
  test('picks the lowest id and fails over in order', () => {
    const list = servers([1, 1, 1]);
    const policy = create('first', list);
    assert.equal(pickId(policy, list, ctx()), 0);
    assert.equal(pickId(policy, [list[2]!, list[1]!], ctx()), 1);
    assert.equal(pickId(policy, [list[2]!], ctx()), 2);
  });
});
