import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  decodeEndRequest,
  decodeNameValuePairs,
  encodeAbortRequest,
  encodeBeginRequest,
  encodeNameValuePairs,
  encodeParams,
  encodeStream,
  HEADER_LENGTH,
  MAX_CONTENT,
  ProtocolStatus,
  RecordParser,
  RecordType,
  recordHeader,
  type FcgiRecord,
} from '../../src/upstream/fastcgi/records.js';
import { headEnd, parseCgiHead } from '../../src/upstream/fastcgi/cgi-response.js';

/** The records an application would send: stdout/stderr chunks in any order, then END_REQUEST. */
function endRequest(requestId: number, appStatus: number, protocolStatus: number, padding = 0): Buffer {
  const content = Buffer.alloc(8);
  content.writeUInt32BE(appStatus, 0);
  content[4] = protocolStatus;
  return Buffer.concat([recordHeader(RecordType.EndRequest, requestId, 8, padding), content, Buffer.alloc(padding)]);
}

function parseAll(chunks: Buffer[]): FcgiRecord[] {
  const records: FcgiRecord[] = [];
  const parser = new RecordParser((record) => records.push({ ...record, content: Buffer.from(record.content) }));
  for (const chunk of chunks) parser.push(chunk);
  assert.equal(parser.midRecord, false);
  return records;
}

describe('FastCGI records', () => {
  test('BEGIN_REQUEST names the responder role and sets FCGI_KEEP_CONN only when asked', () => {
    const kept = encodeBeginRequest(1, true);
    assert.deepEqual([...kept], [1, RecordType.BeginRequest, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
    assert.equal(encodeBeginRequest(7, false)[10], 0);
  });

  test('ABORT_REQUEST is an empty record of the request', () => {
    assert.deepEqual([...encodeAbortRequest(3)], [1, RecordType.AbortRequest, 0, 3, 0, 0, 0, 0]);
  });

  test('name-value lengths take one byte below 128 and four bytes with the high bit from 128 on', () => {
    const short = encodeNameValuePairs(['A', 'x'.repeat(127)]);
    assert.equal(short[0], 1);
    assert.equal(short[1], 127);
    const long = encodeNameValuePairs(['A', 'x'.repeat(128)]);
    assert.deepEqual([...long.subarray(1, 5)], [0x80, 0, 0, 128]);
    assert.deepEqual(decodeNameValuePairs(long), ['A', 'x'.repeat(128)]);
  });

  test('name-value pairs survive encoding for any names and values (1- and 4-byte lengths)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.string({ maxLength: 300 }), fc.string({ maxLength: 70_000 })), { maxLength: 6 }), (tuples) => {
        const pairs = tuples.flat().map((s) => Buffer.from(s, 'latin1').toString('latin1'));
        assert.deepEqual(decodeNameValuePairs(encodeNameValuePairs(pairs)), pairs);
      }),
      { numRuns: 40 },
    );
  });

  test('a truncated name-value pair is an error, not a short list', () => {
    const encoded = encodeNameValuePairs(['NAME', 'value']);
    assert.throws(() => decodeNameValuePairs(encoded.subarray(0, encoded.length - 1)), /truncated/);
  });

  test('streams are cut in records of at most 65535 bytes, each padded to a multiple of 8, and end with an empty record', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 3 * MAX_CONTENT + 10 }), (length) => {
        const content = Buffer.alloc(length, 0x61);
        const wire = Buffer.concat(encodeStream(RecordType.Stdin, 5, content));
        assert.equal(wire.length % 8, 0);
        const records = parseAll([wire]);
        for (const record of records) assert.ok(record.content.length <= MAX_CONTENT);
        assert.equal(Buffer.concat(records.map((r) => r.content)).length, length);
        assert.ok(records.every((r) => r.type === RecordType.Stdin && r.requestId === 5));
      }),
      { numRuns: 30 },
    );
  });

  test('PARAMS ends with an empty PARAMS record and decodes back to the pairs', () => {
    const records = parseAll(encodeParams(1, ['SCRIPT_FILENAME', '/srv/index.php', 'QUERY_STRING', '']));
    assert.equal(records.at(-1)!.content.length, 0);
    assert.deepEqual(decodeNameValuePairs(Buffer.concat(records.map((r) => r.content))), ['SCRIPT_FILENAME', '/srv/index.php', 'QUERY_STRING', '']);
  });

  test('PARAMS past one record are cut only between pairs: each record decodes on its own, as PHP-FPM reads them', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 20 }), fc.integer({ min: 0, max: 30_000 })), { minLength: 1, maxLength: 12 }), (sizes) => {
        const pairs = sizes.flatMap(([name, length], i) => [`${name}${i}`, 'v'.repeat(length)]);
        const records = parseAll(encodeParams(1, pairs)).filter((r) => r.content.length > 0);
        for (const record of records) assert.ok(record.content.length <= MAX_CONTENT);
        assert.deepEqual(records.flatMap((r) => decodeNameValuePairs(r.content)), pairs);
      }),
      { numRuns: 40 },
    );
  });

  test('the parser gives the same records for a reply split at every offset, with padding skipped', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(RecordType.Stdout, RecordType.Stderr), fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.integer({ min: 0, max: 255 }),
        (parts, appStatus) => {
          // Interleaved stdout and stderr with arbitrary padding (the spec allows up to 255), then END_REQUEST.
          const wire = Buffer.concat([
            ...parts.map(([type, bytes, padding]) => Buffer.concat([recordHeader(type, 1, bytes.length, padding), Buffer.from(bytes), Buffer.alloc(padding, 0xee)])),
            endRequest(1, appStatus, ProtocolStatus.RequestComplete, 3),
          ]);
          const whole = parseAll([wire]);
          assert.equal(whole.length, parts.length + 1);
          parts.forEach(([type, bytes], i) => {
            assert.equal(whole[i]!.type, type);
            assert.deepEqual([...whole[i]!.content], [...bytes]);
          });
          assert.deepEqual(decodeEndRequest(whole.at(-1)!.content), { appStatus, protocolStatus: 0 });
          for (let cut = 0; cut <= wire.length; cut++) {
            assert.deepEqual(parseAll([wire.subarray(0, cut), wire.subarray(cut)]), whole);
          }
          // Byte by byte, too.
          assert.deepEqual(parseAll([...wire].map((b) => Buffer.from([b]))), whole);
        },
      ),
      { numRuns: 25 },
    );
  });

  test('the parser holds a partial record and reports it', () => {
    const parser = new RecordParser(() => assert.fail('no record is whole yet'));
    parser.push(recordHeader(RecordType.Stdout, 1, 10, 6).subarray(0, HEADER_LENGTH));
    assert.equal(parser.midRecord, true);
  });

  test('END_REQUEST protocol statuses decode as sent (complete, cannot multiplex, overloaded, unknown role)', () => {
    for (const status of Object.values(ProtocolStatus)) {
      const [record] = parseAll([endRequest(2, 0xfffffffe, status)]);
      assert.deepEqual(decodeEndRequest(record!.content), { appStatus: 0xfffffffe, protocolStatus: status });
    }
    assert.throws(() => decodeEndRequest(Buffer.alloc(4)), /END_REQUEST of 4 bytes/);
  });

  test('a byte stream that is not FastCGI (version other than 1) is refused', () => {
    const parser = new RecordParser(() => undefined);
    assert.throws(() => parser.push(Buffer.from('HTTP/1.1 200 OK\r\n')), /version 72/);
  });
});

describe('CGI response heads', () => {
  const text = (raw: Buffer[]): string[] => raw.map((b) => b.toString('latin1'));

  test('the head ends at the first empty line, with CRLF or bare LF line ends', () => {
    assert.equal(headEnd(Buffer.from('A: 1\r\n\r\nbody')), 8);
    assert.equal(headEnd(Buffer.from('A: 1\n\nbody')), 6);
    assert.equal(headEnd(Buffer.from('A: 1\r\nB: 2\r\n')), -1);
    assert.equal(headEnd(Buffer.from('\r\nbody')), 2);
  });

  test('Status: sets the status and is not passed on; Location without Status is a 302; repeated fields stay apart', () => {
    assert.deepEqual(parseCgiHead(Buffer.from('Status: 404 Not Found\r\nContent-Type: text/html\r\n')), { status: 404, rawHeaders: [Buffer.from('Content-Type'), Buffer.from('text/html')], contentLength: -1 });
    assert.equal(parseCgiHead(Buffer.from('Location: /x\r\n'))!.status, 302);
    assert.equal(parseCgiHead(Buffer.from('Status: 301\r\nLocation: /x\r\n'))!.status, 301);
    assert.equal(parseCgiHead(Buffer.from('X: 1\n'))!.status, 200);
    assert.deepEqual(text(parseCgiHead(Buffer.from('Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n'))!.rawHeaders), ['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2']);
  });

  test('a head that is not CGI (a line without a colon, a bad field name, a bad status) is refused', () => {
    assert.equal(parseCgiHead(Buffer.from('HTTP/1.1 200 OK\r\n')), undefined);
    assert.equal(parseCgiHead(Buffer.from('Bad Name: 1\r\n')), undefined);
    assert.equal(parseCgiHead(Buffer.from('Status: abc\r\n')), undefined);
    assert.equal(parseCgiHead(Buffer.from('Status: 99 Low\r\n')), undefined);
    assert.equal(parseCgiHead(Buffer.from('Status: 600 Beyond\r\n')), undefined);
    assert.equal(parseCgiHead(Buffer.from('Status: 999\r\n')), undefined);
    // A control character in a value (PHP's header() passes all but CR and LF) is no head Node could send on.
    assert.equal(parseCgiHead(Buffer.from('X-Bad: a\x01b\r\n')), undefined);
    assert.equal(parseCgiHead(Buffer.from('X-Bad: a\rb\n')), undefined);
    // Content-Length frames the body: digits, one value (repeated alike is one).
    assert.equal(parseCgiHead(Buffer.from('Content-Length: 12\r\n'))!.contentLength, 12);
    assert.equal(parseCgiHead(Buffer.from('Content-Length: 12\r\nContent-Length: 12\r\n'))!.contentLength, 12);
    assert.equal(parseCgiHead(Buffer.from('Content-Length: 12\r\nContent-Length: 13\r\n')), undefined);
    assert.equal(parseCgiHead(Buffer.from('Content-Length: -1\r\n')), undefined);
  });

  test('Content-Length: one decimal length is the body length, sent as one field; a bad one, or two that differ, refuse the head', () => {
    const head = parseCgiHead(Buffer.from('Content-Length: 5\r\nContent-Length: 5\r\nX: 1\r\n'))!;
    assert.equal(head.contentLength, 5);
    assert.deepEqual(text(head.rawHeaders), ['X', '1', 'Content-Length', '5']);
    assert.equal(parseCgiHead(Buffer.from('Content-Length: 5, 5\r\n'))!.contentLength, 5);
    assert.equal(parseCgiHead(Buffer.from('X: 1\r\n'))!.contentLength, -1);
    for (const bad of ['abc', '-1', '+5', '5, 6', '0x10', '', '1e3']) {
      assert.equal(parseCgiHead(Buffer.from(`Content-Length: ${bad}\r\n`)), undefined, bad);
    }
    assert.equal(parseCgiHead(Buffer.from('Content-Length: 5\r\nContent-Length: 6\r\n')), undefined);
  });
});
