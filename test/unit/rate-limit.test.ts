import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ipv6Prefix } from '../../src/handlers/middleware/rate-limit.js';

describe('ipv6Prefix (rate-limit keys group IPv6 clients)', () => {
  test('keeps the first bits and zeroes the rest, whatever the spelling', () => {
    assert.equal(ipv6Prefix('2001:db8:1:2:3:4:5:6', 64), '2001:db8:1:2:0:0:0:0');
    assert.equal(ipv6Prefix('2001:db8:1:2::9', 64), '2001:db8:1:2:0:0:0:0');
    assert.equal(ipv6Prefix('::1', 128), '0:0:0:0:0:0:0:1');
    assert.equal(ipv6Prefix('2001:db8:abcd:12ff::1', 56), '2001:db8:abcd:1200:0:0:0:0');
    assert.equal(ipv6Prefix('::ffff:192.0.2.1', 128), '0:0:0:0:0:ffff:c000:201');
  });

  test('two addresses of one /64 share a key; of two /64s they do not', () => {
    assert.equal(ipv6Prefix('2001:db8::1', 64), ipv6Prefix('2001:db8::ffff:1', 64));
    assert.notEqual(ipv6Prefix('2001:db8:0:1::1', 64), ipv6Prefix('2001:db8:0:2::1', 64));
  });
});
