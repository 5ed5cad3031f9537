/**
 * The PROXY protocol parser (src/connections/proxy-protocol.ts): v1 lines and v2 binary headers per HAProxy's
 * proxy-protocol.txt, strict about what it accepts, and the same answer however the bytes are split.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parseProxyHeader, V1_MAX, V2_MAX, type ProxyParse } from '../../src/connections/proxy-protocol.js';

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** A v2 header: command (0 LOCAL, 1 PROXY), family/transport byte, address block and extra TLV bytes. */
function v2(command: number, familyTransport: number, block: Buffer, tlvs: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(4);
  head[0] = 0x20 | command;
  head[1] = familyTransport;
  head.writeUInt16BE(block.length + tlvs.length, 2);
  return Buffer.concat([SIG, head, block, tlvs]);
}

function inet4(src: number[], dst: number[], sport: number, dport: number): Buffer {
  const block = Buffer.alloc(12);
  Buffer.from(src).copy(block, 0);
  Buffer.from(dst).copy(block, 4);
  block.writeUInt16BE(sport, 8);
  block.writeUInt16BE(dport, 10);
  return block;
}

function inet6(src: Buffer, dst: Buffer, sport: number, dport: number): Buffer {
  const block = Buffer.alloc(36);
  src.copy(block, 0);
  dst.copy(block, 16);
  block.writeUInt16BE(sport, 32);
  block.writeUInt16BE(dport, 34);
  return block;
}

const done = (result: ProxyParse) => {
  assert.equal(result.kind, 'done', JSON.stringify(result));
  return result as Extract<ProxyParse, { kind: 'done' }>;
};

describe('PROXY protocol v1', () => {
  test('TCP4 and TCP6 lines give the source address and port, and the header length (CRLF included)', () => {
    const line = 'PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n';
    const r4 = done(parseProxyHeader(Buffer.from(line + 'GET / HTTP/1.1\r\n')));
    assert.deepEqual(r4, { kind: 'done', length: line.length, source: { address: '192.0.2.7', port: 56324 } });
    const r6 = done(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n')));
    assert.deepEqual(r6.source, { address: '2001:db8::1', port: 1 });
  });

  test('UNKNOWN means the real peer (no source), whatever follows it on the line', () => {
    assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { kind: 'done', length: 15, source: undefined });
    assert.equal(done(parseProxyHeader(Buffer.from('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n'))).source, undefined);
  });

  test('malformed lines are refused: wrong family for the address, bad ports, extra fields, lowercase, no CRLF within 107 bytes', () => {
    for (const line of [
      'PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n',
      'PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n',
      'PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n',
      'PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n',
      'PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n',
      'PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n',
      'PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n',
      'PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n',
      'proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n',
      'PROXY TCP4 192.0.2.001 192.0.2.2 1 2\r\n',
      'GET / HTTP/1.1\r\n',
    ]) {
      assert.equal(parseProxyHeader(Buffer.from(line)).kind, 'invalid', line);
    }
    assert.equal(parseProxyHeader(Buffer.from('PROXY UNKNOWN ' + 'x'.repeat(V1_MAX))).kind, 'invalid');
    // 107 bytes exactly, CRLF included, is the longest allowed line.
    const longest = 'PROXY UNKNOWN ' + 'x'.repeat(V1_MAX - 16) + '\r\n';
    assert.equal(longest.length, V1_MAX);
    assert.equal(parseProxyHeader(Buffer.from(longest)).kind, 'done');
  });

  test('a line still arriving is incomplete, not refused', () => {
    assert.equal(parseProxyHeader(Buffer.from('PROX')).kind, 'incomplete');
    assert.equal(parseProxyHeader(Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 5')).kind, 'incomplete');
  });
});

describe('PROXY protocol v2', () => {
  test('PROXY over TCP/IPv4 and TCP/IPv6 gives the source; TLVs after the addresses are skipped', () => {
    const tlv = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]);
    const h4 = v2(1, 0x11, inet4([203, 0, 113, 9], [10, 0, 0, 1], 40000, 443), tlv);
    assert.deepEqual(parseProxyHeader(Buffer.concat([h4, Buffer.from('GET')])), {
      kind: 'done',
      length: h4.length,
      source: { address: '203.0.113.9', port: 40000 },
    });
    const src = Buffer.from('20010db8000000000000000000000042', 'hex');
    const h6 = v2(1, 0x21, inet6(src, Buffer.alloc(16), 1234, 443));
    assert.deepEqual(done(parseProxyHeader(h6)).source, { address: '2001:db8::42', port: 1234 });
    const mapped = Buffer.from('00000000000000000000ffffc0000207', 'hex');
    assert.deepEqual(done(parseProxyHeader(v2(1, 0x21, inet6(mapped, Buffer.alloc(16), 5, 6)))).source, { address: '192.0.2.7', port: 5 });
  });

  test('LOCAL, UNSPEC, UNIX and datagram headers mean the real peer', () => {
    assert.equal(done(parseProxyHeader(v2(0, 0x11, inet4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)))).source, undefined);
    assert.equal(done(parseProxyHeader(v2(1, 0x00, Buffer.alloc(0)))).source, undefined);
    assert.equal(done(parseProxyHeader(v2(1, 0x31, Buffer.alloc(216)))).source, undefined);
    assert.equal(done(parseProxyHeader(v2(1, 0x12, inet4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)))).source, undefined);
  });

  test('refused: another version, an unknown command or family, an address block too short, a length past the bound', () => {
    const good = v2(1, 0x11, inet4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
    const version1 = Buffer.from(good);
    version1[12] = 0x11;
    const command = Buffer.from(good);
    command[12] = 0x22;
    const family = Buffer.from(good);
    family[13] = 0x41;
    for (const bad of [version1, command, family, v2(1, 0x21, Buffer.alloc(12)), v2(1, 0x11, Buffer.alloc(8))]) {
      assert.equal(parseProxyHeader(bad).kind, 'invalid');
    }
    // The bound is judged from the first 16 bytes: a huge declared length is refused before it is read.
    const huge = Buffer.from(good.subarray(0, 16));
    huge.writeUInt16BE(V2_MAX, 14);
    assert.equal(parseProxyHeader(huge).kind, 'invalid');
    const wrongSignature = Buffer.from(good);
    wrongSignature[5] = 1;
    assert.equal(parseProxyHeader(wrongSignature).kind, 'invalid');
  });
});

describe('PROXY protocol parser properties', () => {
  const header = fc.oneof(
    fc
      .tuple(fc.ipV4(), fc.ipV4(), fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }))
      .map(([a, b, p, q]) => ({ bytes: Buffer.from(`PROXY TCP4 ${a} ${b} ${p} ${q}\r\n`), address: a, port: p })),
    fc
      .tuple(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 65535 }), fc.uint8Array({ maxLength: 64 }))
      .map(([a, p, tlvs]) => ({ bytes: v2(1, 0x11, inet4(a, [127, 0, 0, 1], p, 80), Buffer.from(tlvs)), address: a.join('.'), port: p })),
  );

  test('every header is found whole, with its source, however its bytes are cut, and bytes after it are left alone', () => {
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 32 }), fc.nat(), ({ bytes, address, port }, rest, cut) => {
        const all = Buffer.concat([bytes, rest]);
        const result = done(parseProxyHeader(all));
        assert.equal(result.length, bytes.length);
        assert.deepEqual(result.source, { address, port });
        // Any proper prefix of the header is only incomplete: never refused, never done early.
        const prefix = all.subarray(0, cut % bytes.length);
        assert.equal(parseProxyHeader(prefix).kind, 'incomplete');
      }),
    );
  });

  test('arbitrary bytes never throw, and a header found never claims more bytes than given or than the bounds', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.concat([SIG, b]))), (bytes) => {
        const result = parseProxyHeader(Buffer.from(bytes));
        if (result.kind === 'done') {
          assert.ok(result.length <= bytes.length);
          assert.ok(result.length <= V2_MAX);
        }
        if (result.kind === 'incomplete') assert.ok(bytes.length < V2_MAX);
      }),
      { numRuns: 2000 },
    );
  });
});
