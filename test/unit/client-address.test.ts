/**
 * Who the client is: TrustedProxies believes X-Forwarded-For only from trusted peers, walking it from the right.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TrustedProxies, checkTrustedEntry, stripMapped } from '../../src/http/client-address.js';

describe('TrustedProxies.has', () => {
  const trusted = new TrustedProxies(['127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8']);

  test('addresses and networks, IPv4 and IPv6', () => {
    assert.equal(trusted.has('127.0.0.1'), true);
    assert.equal(trusted.has('127.0.0.2'), false);
    assert.equal(trusted.has('10.200.3.4'), true);
    assert.equal(trusted.has('11.0.0.1'), false);
    assert.equal(trusted.has('::1'), true);
    assert.equal(trusted.has('fd12:3456::1'), true);
    assert.equal(trusted.has('fe80::1'), false);
  });

  test('an IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is judged by its IPv4 address', () => {
    assert.equal(trusted.has('::ffff:127.0.0.1'), true);
    assert.equal(trusted.has('::ffff:10.1.2.3'), true);
    assert.equal(trusted.has('::ffff:192.0.2.1'), false);
  });

  test('an empty list trusts nobody; junk is never trusted', () => {
    const none = new TrustedProxies([]);
    assert.equal(none.has('127.0.0.1'), false);
    assert.equal(trusted.has(''), false);
    assert.equal(trusted.has('not-an-ip'), false);
  });
});

describe('TrustedProxies.clientAddress', () => {
  const trusted = new TrustedProxies(['127.0.0.1', '10.0.0.0/8']);

  test('an untrusted peer is the client, whatever X-Forwarded-For says', () => {
    assert.equal(trusted.clientAddress('192.0.2.7', '1.2.3.4'), '192.0.2.7');
    assert.equal(trusted.clientAddress('::ffff:192.0.2.7', '1.2.3.4'), '192.0.2.7');
  });

  test('a trusted peer without X-Forwarded-For is the client', () => {
    assert.equal(trusted.clientAddress('127.0.0.1', undefined), '127.0.0.1');
  });

  test('behind trusted proxies: the rightmost untrusted entry, skipping every trusted hop', () => {
    assert.equal(trusted.clientAddress('127.0.0.1', '203.0.113.9'), '203.0.113.9');
    assert.equal(trusted.clientAddress('127.0.0.1', '198.51.100.1, 203.0.113.9, 10.0.0.5, 10.1.1.1'), '203.0.113.9');
    assert.equal(trusted.clientAddress('::ffff:10.0.0.3', ' 203.0.113.9 ,10.0.0.5'), '203.0.113.9');
  });

  test('a forged leftmost entry cannot win over the hop a trusted proxy added', () => {
    assert.equal(trusted.clientAddress('127.0.0.1', '127.0.0.1, 203.0.113.9'), '203.0.113.9');
  });

  test('when every entry is trusted, the leftmost is the client', () => {
    assert.equal(trusted.clientAddress('127.0.0.1', '10.0.0.9, 10.0.0.5'), '10.0.0.9');
  });

  test('a malformed entry stops the walk: the peer is used rather than anything to its left', () => {
    assert.equal(trusted.clientAddress('127.0.0.1', '203.0.113.9, unknown'), '127.0.0.1');
    assert.equal(trusted.clientAddress('127.0.0.1', ''), '127.0.0.1');
  });

  test('IPv6 entries are accepted', () => {
    assert.equal(trusted.clientAddress('10.0.0.1', '2001:db8::5'), '2001:db8::5');
  });
});

describe('checkTrustedEntry and stripMapped', () => {
  test('addresses and CIDRs pass; anything else says why', () => {
    for (const ok of ['10.0.0.1', '10.0.0.0/8', '::1', '2001:db8::/32', '0.0.0.0/0']) assert.equal(checkTrustedEntry(ok), undefined, ok);
    assert.match(checkTrustedEntry('10.0.0.0/33')!, /0-32/);
    assert.match(checkTrustedEntry('::/129')!, /0-128/);
    assert.match(checkTrustedEntry('10.0.0.0/x')!, /0-32/);
    assert.match(checkTrustedEntry('localhost')!, /IP address or a CIDR/);
    assert.match(checkTrustedEntry('10.0.0.0/8/8')!, /IP address or a CIDR/);
  });

  test('stripMapped removes only the IPv4-mapped prefix', () => {
    assert.equal(stripMapped('::ffff:1.2.3.4'), '1.2.3.4');
    assert.equal(stripMapped('::ffff:abcd'), '::ffff:abcd');
    assert.equal(stripMapped('1.2.3.4'), '1.2.3.4');
  });
});
