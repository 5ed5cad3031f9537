/**
 * HTTP/1 request smuggling corpus. Each case is sent byte for byte on a raw socket to a proxy route whose app
 * server is a raw-socket backend that records every byte it receives (test/helpers/recording-backend.ts). A case
 * is either rejected (400 or another 4xx, and the connection closed when the framing is in doubt; nothing reaches
 * the backend) or normalised (the backend receives exactly the one request sent, framed as Portico understood
 * it, with its body). After every case a canary request proves Portico still serves, and the backend's record
 * must hold no bytes that are not part of a complete, well-formed request: nothing smuggled, no second request.
 * A table of outcomes (case, client status, connection closed?, backend requests seen) is printed with
 * t.diagnostic. HTTP/2 downgrade cases are in smuggling-h2.test.ts.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { rawRequest, type RawResponse } from '../helpers/raw-client.js';
import { startRecordingBackend, type RecordedRequest, type RecordingBackend } from '../helpers/recording-backend.js';

const H = 'Host: a.test\r\n';
/** A complete request, carried as a body. */
const HIDDEN = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;

/** What reaches the backend when a case is normalised and forwarded. */
interface Forwarded {
  method: string;
  target: string;
  body: string;
  /** Status the client gets (default 200, the backend's answer). */
  status?: number;
  /** Whether the connection must be closed after the answer (default: not asserted). */
  closed?: boolean;
  /** Further checks on the recorded request. */
  check?: (request: RecordedRequest) => void;
}

interface Case {
  /** The subtest's name: the behaviour it checks. */
  name: string;
  request: string;
  /** `reject`: a 4xx (default 400), the connection closed, nothing forwarded. */
  expect: { reject: number; closed?: boolean } | { forward: Forwarded[] };
  /** Final answers to wait for (pipelined requests); default 1. */
  responses?: number;
  /** The statuses of all the answers (interim 1xx included), in order, when asserted. */
  statuses?: number[];
}

const reject = (status = 400, closed = true) => ({ reject: status, closed });
const forward = (...requests: Forwarded[]) => ({ forward: requests });
const field = (request: RecordedRequest, name: string) => request.fields.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);

const CASES: Case[] = [
  // CL.TE / TE.CL: both framings in one request.
  {
    name: 'CL.TE: Content-Length and Transfer-Encoding: chunked together are refused (400, closed), the "G" never reaches the app',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG`,
    expect: reject(),
  },
  {
    name: 'TE.CL: Transfer-Encoding: chunked before Content-Length is refused (400, closed), the chunk holding a request is never forwarded',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST /smuggled HTTP/1.1\r\nHost: a.test\r\nContent-Type: x\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'CL.TE with Content-Length: 0 and a chunked body holding a second request is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n${H}\r\n`,
    expect: reject(),
  },
  // TE.TE obfuscations.
  {
    name: 'TE.TE: Transfer-Encoding: xchunked is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'TE.TE: Transfer-Encoding: xchunked without Content-Length is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'TE.TE: " chunked" (leading OWS) is chunked: normalised, the body decoded and forwarded once',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding:  chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello' }),
  },
  {
    name: 'TE.TE: "chunked, identity" (chunked not last) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'TE.TE: two Transfer-Encoding fields, chunked then identity, are refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'TE.TE: two Transfer-Encoding fields, identity then chunked (chunked last), are framed as chunked: the body forwarded once',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello' }),
  },
  {
    name: 'TE.TE: Transfer-Encoding with a tab before the value is chunked (tab is OWS): normalised',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello' }),
  },
  {
    name: 'TE.TE: Transfer-Encoding with a vertical tab before chunked is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: \x0bchunked\r\nContent-Length: 5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'TE.TE: "Transfer-Encoding\\t: chunked" (whitespace before the colon) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding\t: chunked\r\nContent-Length: 5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'TE.TE: "Transfer-Encoding : chunked" (a space before the colon) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'TE.TE: upper-case TRANSFER-ENCODING: CHUNKED is chunked: normalised, forwarded once',
    request: `POST /p HTTP/1.1\r\n${H}TRANSFER-ENCODING: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello' }),
  },
  {
    name: 'TE.TE: Transfer-Encoding: chunked followed by a trailing "x" token (chunked;x / "chunkedx") is refused',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunkedx\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'TE.TE: a Transfer-Encoding field continued by obs-fold is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\nhello`,
    expect: reject(),
  },
  // Content-Length forms.
  {
    name: 'Content-Length: "5, 5" (comma-joined, equal) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 5, 5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'Content-Length: "5, 6" (comma-joined, different) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 5, 6\r\n\r\nhello!`,
    expect: reject(),
  },
  {
    name: 'two Content-Length fields with equal values are refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'two Content-Length fields with different values are refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
    expect: reject(),
  },
  {
    name: 'Content-Length: +5 (a sign) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'Content-Length: -1 is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'Content-Length: 0x5 (hex) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 0x5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'Content-Length: "1 0" (a space inside the number) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 1 0\r\n\r\nhellohello`,
    expect: reject(),
  },
  {
    name: 'Content-Length with a vertical tab after the number is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 5\x0b\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'Content-Length: 005 (leading zeros) frames five bytes and reaches the app as Content-Length: 5',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 005\r\n\r\nhello`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello', check: (r) => assert.deepEqual(field(r, 'content-length'), ['5']) }),
  },
  {
    name: 'Content-Length with OWS around the number ("  5  ") frames five bytes',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length:  5  \r\n\r\nhello`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello', check: (r) => assert.deepEqual(field(r, 'content-length'), ['5']) }),
  },
  {
    name: 'Content-Length of 20 digits (overflow) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 18446744073709551621\r\n\r\nhello`,
    expect: reject(400),
  },
  // Chunk sizes and extensions.
  {
    name: 'a chunk size that overflows 64 bits (ffffffffffffffff1) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffff1\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a negative chunk size (-5) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a chunk size written 0x5 is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a chunk size with a leading space is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a chunk size with a trailing space is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'an empty chunk size line is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a short chunk extension (5;name=value) is dropped: the body reaches the app decoded, once',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello', check: (r) => assert.doesNotMatch(r.fields.join(), /name=value/) }),
  },
  {
    name: 'an oversized chunk extension (64 KB) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;${'x'.repeat(64 * 1024)}\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'chunk data not followed by CRLF is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'chunk data longer than its size (6 bytes for 5) is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'chunk lines ended by bare LF are refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n`,
    expect: reject(),
  },
  {
    name: 'a Content-Length in the chunked trailer is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a Transfer-Encoding in the chunked trailer is refused (400, closed)',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'an ordinary chunked trailer field is not turned into a header field the app sees; the body is forwarded once',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello', check: (r) => assert.deepEqual(field(r, 'x-trailer'), []) }),
  },
  // Field syntax.
  {
    name: 'obs-fold (a field line continued with a space) is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}X-Folded: a\r\n b\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'obs-fold with a tab is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}X-Folded: a\r\n\tContent-Length: 5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'a head whose lines end with bare LF is refused (400, closed)',
    request: `GET /p HTTP/1.1\n${H.replace('\r\n', '\n')}\n`,
    expect: reject(),
  },
  {
    name: 'a bare LF inside the head (between CRLF lines) is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}X-A: 1\nContent-Length: 5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'a bare CR inside a field value is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}X-A: a\rContent-Length: 5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'a bare CR ending a field line is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}X-A: a\r\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a NUL in a field value is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a NUL in a field name is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}X-\0A: a\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a field name with a space before the colon (Host : other) is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}Content-Length : 5\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'a field line without a colon is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}NoColonHere\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a request line with two spaces before the target is normalised (RFC 9112 §3 allows it): forwarded with single spaces',
    request: `GET  /p HTTP/1.1\r\n${H}\r\n`,
    expect: forward({ method: 'GET', target: '/p', body: '' }),
  },
  {
    name: 'a request line with a bare CR before the version is refused (400, closed)',
    request: `GET /p\rHTTP/1.1\r\n${H}\r\n`,
    expect: reject(),
  },
  // Bodies where none is expected, and requests hidden in bodies.
  {
    name: 'GET with a Content-Length body: the body is forwarded with the GET, framed by its length',
    request: `GET /p HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`,
    expect: forward({ method: 'GET', target: '/p', body: 'hello' }),
  },
  {
    name: 'a second request hidden in a Content-Length body stays body: the app sees one request carrying it',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: ${HIDDEN.length}\r\n\r\n${HIDDEN}`,
    expect: forward({ method: 'POST', target: '/p', body: HIDDEN }),
  },
  {
    name: 'a second request hidden in a chunked body stays body: the app sees one request carrying it',
    request: `POST /p HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${HIDDEN.length.toString(16)}\r\n${HIDDEN}\r\n0\r\n\r\n`,
    expect: forward({ method: 'POST', target: '/p', body: HIDDEN }),
  },
  {
    name: 'two pipelined requests are forwarded as exactly those two, in order, each with its own body',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nonePOST /q HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\ntwo`,
    responses: 2,
    expect: forward({ method: 'POST', target: '/p', body: 'one' }, { method: 'POST', target: '/q', body: 'two' }),
  },
  {
    name: 'HTTP/1.0 with Transfer-Encoding: chunked is refused (400, closed): its framing is faulty (RFC 9112 §6.1)',
    request: `POST /p HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: reject(),
  },
  {
    // Regression: Portico forwarded it and kept the connection open, so /after (which an HTTP/1.0 hop before
    // Portico saw as body) was run as a second request.
    name: 'HTTP/1.0 with Transfer-Encoding: chunked and keep-alive is refused and closed: the request after it is never run',
    request: `POST /p HTTP/1.0\r\n${H}Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /after HTTP/1.0\r\n${H}\r\n`,
    expect: reject(),
  },
  {
    name: 'HTTP/1.0 with Transfer-Encoding: chunked and a Content-Length is refused (400, closed)',
    request: `POST /p HTTP/1.0\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello`,
    expect: reject(),
  },
  {
    name: 'HTTP/1.0 with a Content-Length body is forwarded once, framed by its length',
    request: `POST /p HTTP/1.0\r\n${H}Content-Length: 5\r\n\r\nhello`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello', closed: true }),
  },
  {
    // Regression: Node emits requests pipelined behind an answer that closes the connection, and Portico ran them.
    name: 'a request pipelined behind one refused with Connection: close (no Host) is never run',
    request: `POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST /after HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a request pipelined behind one refused for its path (%00, 400, closed) is never run',
    request: `GET /a%00 HTTP/1.1\r\n${H}\r\nGET /after HTTP/1.1\r\n${H}\r\n`,
    expect: reject(),
  },
  {
    name: 'a request pipelined behind one refused with 413 (Content-Length over max_body_size) is never run',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 2000\r\n\r\n${'x'.repeat(2000)}GET /after HTTP/1.1\r\n${H}\r\n`,
    expect: reject(413),
  },
  {
    // Regression: Portico wrote its 400 for the bytes behind at once, before the proxied answer to the request
    // the app had run (which was then lost): the client took the 400 for that request's answer.
    name: 'a valid request followed by bytes the parser refuses: its answer comes first, then 400, then the close',
    request: `POST /p HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello0\r\n\r\n`,
    responses: 2,
    statuses: [200, 400],
    expect: forward({ method: 'POST', target: '/p', body: 'hello', closed: true }),
  },
  {
    name: 'two valid pipelined requests followed by a malformed one: both answers in order, then 400, then the close',
    request: `GET /p HTTP/1.1\r\n${H}\r\nGET /q HTTP/1.1\r\n${H}\r\nGET /r HTTP/1.1\r\n${H}X: a\0b\r\n\r\n`,
    responses: 3,
    statuses: [200, 200, 400],
    expect: forward({ method: 'GET', target: '/p', body: '', closed: true }, { method: 'GET', target: '/q', body: '' }),
  },
  // Upgrades: no tunnel unless the app switched protocols, so bytes behind a failed upgrade never reach the app.
  {
    name: 'a WebSocket upgrade the app answers with 200 (not 101) gets 502 and closes: the request pipelined behind it never reaches the app',
    request: `GET /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n${HIDDEN}`,
    expect: forward({ method: 'GET', target: '/ws', body: '', status: 502, closed: true }),
  },
  {
    name: 'a WebSocket upgrade with an unsupported version the app refuses: no tunnel, the bytes behind it never reach the app',
    request: `GET /ws HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 1337\r\n\r\n${HIDDEN}`,
    expect: forward({ method: 'GET', target: '/ws', body: '', status: 502, closed: true }),
  },
  {
    name: 'Upgrade: websocket on a POST is a plain request: its body forwarded once, the connection closed, the request behind never run',
    request: `POST /p HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhello${HIDDEN}`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello', closed: true }),
  },
  {
    name: 'Upgrade: h2c is ignored: the request answered plainly, the connection closed, the request behind never run',
    request: `GET /p HTTP/1.1\r\n${H}Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n${HIDDEN}`,
    expect: forward({ method: 'GET', target: '/p', body: '', closed: true, check: (r) => assert.deepEqual(field(r, 'upgrade'), []) }),
  },
  // Hop-by-hop tricks.
  {
    name: 'Connection: content-length cannot strip the length from the forwarded request: the body is still framed',
    request: `POST /p HTTP/1.1\r\n${H}Connection: content-length\r\nContent-Length: 5\r\n\r\nhello`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello' }),
  },
  {
    name: 'Connection: transfer-encoding with a chunked body: the body is still framed and forwarded once',
    request: `POST /p HTTP/1.1\r\n${H}Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    expect: forward({ method: 'POST', target: '/p', body: 'hello' }),
  },
  {
    name: 'Connection: host cannot strip Host: the app sees exactly one Host',
    request: `GET /p HTTP/1.1\r\n${H}Connection: host\r\n\r\n`,
    expect: forward({ method: 'GET', target: '/p', body: '', check: (r) => assert.deepEqual(field(r, 'host'), ['a.test']) }),
  },
  // Targets and hosts.
  {
    name: 'an absolute-form target wins over a different Host: the app sees one Host, the target\'s',
    request: `GET http://a.test/p HTTP/1.1\r\nHost: evil.test\r\n\r\n`,
    expect: forward({ method: 'GET', target: '/p', body: '', check: (r) => assert.deepEqual(field(r, 'host'), ['a.test']) }),
  },
  {
    name: 'an absolute-form target naming an unknown host is not forwarded even with a known Host (421)',
    request: `GET http://evil.test/p HTTP/1.1\r\n${H}\r\n`,
    expect: reject(421, false),
  },
  {
    name: 'two Host fields are refused (400, closed)',
    request: `GET /p HTTP/1.1\r\n${H}Host: evil.test\r\n\r\n`,
    expect: reject(),
  },
  {
    name: 'a Host with a comma-joined second host is refused (400, closed)',
    request: `GET /p HTTP/1.1\r\nHost: a.test, evil.test\r\n\r\n`,
    expect: reject(),
  },
  // Expect.
  {
    name: 'Expect: 100-continue with a body: one 100 then the answer, the body forwarded once',
    request: `POST /p HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello`,
    statuses: [100, 200],
    expect: forward({ method: 'POST', target: '/p', body: 'hello', check: (r) => assert.equal(field(r, 'expect').length, 0) }),
  },
  {
    name: 'Expect: 100-continue with a body over max_body_size gets 413 (no 100 before it) and nothing is forwarded',
    request: `POST /p HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 2000\r\n\r\n`,
    statuses: [413],
    expect: reject(413),
  },
  {
    name: 'an unknown expectation (Expect: 100-continuex) gets 417 and nothing is forwarded',
    request: `POST /p HTTP/1.1\r\n${H}Expect: 100-continuex\r\nContent-Length: 5\r\n\r\nhello`,
    expect: reject(417, false),
  },
  {
    name: 'Expect: 100-continue twice (comma-joined) gets 417 and nothing is forwarded',
    request: `POST /p HTTP/1.1\r\n${H}Expect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello`,
    expect: reject(417, false),
  },
];

let backend: RecordingBackend;
let portico: RunningPortico;
const rows: string[][] = [];

before(async () => {
  backend = await startRecordingBackend();
  portico = await startPortico(`sites:
  - hosts: ["a.test"]
    routes:
      - path: /
        proxy: { url: "${backend.url}", max_body_size: 1KB }
      - path: /stream/
        proxy: { url: "${backend.url}", max_body_size: 1KB, request_buffering: false }
`);
});

after(async () => {
  await portico.stop();
  await backend.stop();
});

/** Sends a canary on a fresh connection: Portico still serves, and the backend has taken in everything before it. */
async function canary(n: number): Promise<void> {
  const target = `/canary-${n}`;
  const res = await rawRequest(portico.port, `GET ${target} HTTP/1.1\r\n${H}\r\n`);
  assert.equal(res.status, 200, 'the canary after the case is served');
  await backend.waitFor(target);
}

function printable(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text);
}

describe('request smuggling corpus (HTTP/1)', () => {
  test('the corpus holds at least 30 cases, each with a distinct name', () => {
    assert.ok(CASES.length >= 30, `${CASES.length} cases`);
    assert.equal(new Set(CASES.map((c) => c.name)).size, CASES.length);
  });

  CASES.forEach((c, i) => {
    test(c.name, async (t) => {
      backend.reset();
      let res: RawResponse;
      res = await rawRequest(portico.port, c.request, { responses: c.responses ?? 1 });
      await canary(i);
      // A body Portico was streaming when the client's framing broke is cut: its upstream connection must close.
      const settled = await backend.settled();
      const seen = backend.requests.filter((r) => !r.target.startsWith('/canary-'));
      const abandoned = backend.abandoned();
      const seenText = `${seen.length}${abandoned.length > 0 ? ` (+${abandoned.length} cut)` : ''}`;
      rows.push([String(i), c.name.slice(0, 70), String(res.status), res.closed ? 'closed' : 'open', seenText]);
      t.diagnostic(`status ${res.status}, connection ${res.closed ? 'closed' : 'open'}, backend saw ${seenText} request(s): ${seen.map((r) => `${r.method} ${r.target} body=${printable(r.body)}`).join('; ')}${abandoned.map((a) => ` cut: ${printable(a)}`).join('')}`);
      // Nothing half-framed or malformed ever reached the backend, and nothing in it names the smuggled target.
      assert.deepEqual(backend.malformed, [], 'every byte the backend got framed as well-formed requests');
      assert.ok(settled, `no incomplete request left on an open backend connection: ${JSON.stringify(backend.leftovers())}`);
      for (const r of seen) assert.ok(!r.target.includes('smuggled'), 'no smuggled request line reached the backend');
      if (c.statuses !== undefined) {
        const statuses = [...res.raw.matchAll(/HTTP\/1\.1 (\d{3}) [^\r\n]*\r\n/g)].map((m) => Number(m[1]));
        assert.deepEqual(statuses, c.statuses, 'the answers (interim ones included), in order');
      }
      if ('reject' in c.expect) {
        assert.equal(res.status, c.expect.reject, `answered ${c.expect.reject}`);
        if (c.expect.closed === true) assert.ok(res.closed, 'the connection is closed');
        assert.equal(seen.length, 0, 'nothing reached the backend');
        return;
      }
      const expected = c.expect.forward;
      assert.equal(res.status, expected[0]!.status ?? 200);
      assert.equal(seen.length, expected.length, 'the backend saw exactly the requests sent');
      expected.forEach((want, k) => {
        const got = seen[k]!;
        assert.equal(got.method, want.method);
        assert.equal(got.target, want.target);
        assert.equal(got.body, want.body, 'the body is framed as Portico understood it');
        assert.ok(field(got, 'transfer-encoding').length + field(got, 'content-length').length <= 1, 'at most one framing field');
        want.check?.(got);
      });
      if (expected[0]!.closed === true) assert.ok(res.closed, 'the connection is closed');
    });
  });

  test('a Content-Length body the client cuts short is never forwarded', async () => {
    backend.reset();
    const client = net.connect(portico.port, '127.0.0.1');
    client.on('error', () => {});
    await once(client, 'connect');
    // The 100 says the route took the request and waits for its body; a proxy that streamed the body would have
    // sent the head upstream by then. Portico holds a body this small until it is whole (for a replay).
    client.write(`POST /cut-length HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 500\r\n\r\n`);
    const [interim] = (await once(client, 'data')) as [Buffer];
    assert.match(interim.toString('latin1'), /^HTTP\/1\.1 100 /);
    client.write('x'.repeat(100));
    client.destroy();
    await canary(1000);
    assert.ok(await backend.settled());
    assert.equal(backend.received().join('').includes('/cut-length'), false, 'no byte of it reached the app');
  });

  test('a chunked body the client cuts short mid-stream is never forwarded (request buffering reads it whole first)', async () => {
    backend.reset();
    const client = net.connect(portico.port, '127.0.0.1');
    client.on('error', () => {});
    await once(client, 'connect');
    client.write(`POST /cut-chunked HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\na\r\nfirst-part\r\n`, () => client.destroy());
    await once(client, 'close');
    await canary(1002);
    assert.ok(await backend.settled());
    assert.equal(backend.received().join('').includes('/cut-chunked'), false, 'no byte of it reached the app');
  });

  test('request_buffering: false: a chunked body the client cuts short mid-stream: its upstream connection is cut, the app never sees it complete', async () => {
    backend.reset();
    const client = net.connect(portico.port, '127.0.0.1');
    client.on('error', () => {});
    await once(client, 'connect');
    const arrived = backend.waitForBytes('first-part');
    client.write(`POST /stream/cut-chunked HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\na\r\nfirst-part\r\n`);
    await arrived;
    client.destroy();
    assert.ok(await backend.settled(), 'the cut request does not stay open on an upstream connection');
    await canary(1001);
    assert.equal(backend.requests.filter((r) => r.target === '/stream/cut-chunked').length, 0);
    assert.equal(backend.abandoned().length, 1, 'the app saw the start of it, on a connection that closed');
  });

  test('outcome table', (t) => {
    // One diagnostic per row: the TAP reporter escapes line breaks inside one.
    const lines = ['#  | client status | connection | backend requests | case', ...rows.map(([i, name, status, closed, seen]) => `${i!.padStart(2)} | ${status!.padEnd(13)} | ${closed!.padEnd(10)} | ${seen!.padEnd(16)} | ${name}`)];
    for (const line of lines) t.diagnostic(line);
    assert.equal(rows.length, CASES.length, 'every case ran');
  });
});

/**
 * The corpus, generated: random mixes of framing fields (lengths and codings in odd forms, both at once, HTTP/1.0),
 * bodies that fit them or not, and a complete request behind, then a last request that closes the connection.
 * The invariant: every request the app receives had its answer relayed to the client (a request
 * run whose answer nobody gets is one the client did not see as a request: smuggled), and no bytes of an
 * incomplete request are left on an open upstream connection.
 */
describe('request smuggling, generated (fast-check)', () => {
  const FRAMING = [
    'Content-Length: {n}',
    'Content-Length: {n}, {n}',
    'Content-Length:  {n} ',
    'Content-Length: +{n}',
    'Content-Length: 0{n}',
    'Content-Length: {m}',
    'Transfer-Encoding: chunked',
    'Transfer-Encoding: CHUNKED',
    'Transfer-Encoding: xchunked',
    'Transfer-Encoding : chunked',
    'Transfer-Encoding:\tchunked',
    'Transfer-Encoding: chunked, identity',
    'Transfer-Encoding: identity',
    'Transfer-Encoding: \x0bchunked',
    'Connection: close',
    'Connection: keep-alive',
    'Connection: content-length',
    'Expect: 100-continue',
    'Upgrade: h2c',
    'Connection: Upgrade',
    'X-Fold: a\r\n chunked',
  ];
  const LAST = `GET /last HTTP/1.1\r\n${H}Connection: close\r\n\r\n`;
  const exchange = fc.record({
    method: fc.constantFrom('POST', 'GET', 'PUT'),
    version: fc.constantFrom('1.1', '1.1', '1.0'),
    fields: fc.subarray(FRAMING, { maxLength: 4 }),
    body: fc.string({ unit: 'grapheme-ascii', maxLength: 40 }),
    chunked: fc.boolean(),
    wrong: fc.integer({ min: -5, max: 5 }),
    behind: fc.boolean(),
  });

  // Node's parser reports no error for a request llhttp took for an upgrade (Upgrade + Connection: upgrade), so a
  // malformed body behind an upgrade Portico declines used to leave the request waiting for request_timeout.
  test('a declined upgrade (h2c, or an unknown token) whose chunked body is malformed gets 400 and a close at once, and never reaches the app', async () => {
    for (const [token, target] of [['h2c', '/gen'], ['foo/1', '/gen'], ['h2c', '/stream/gen']] as const) {
      backend.reset();
      const started = Date.now();
      const res = await rawRequest(portico.port, `POST ${target} HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nUpgrade: ${token}\r\nConnection: Upgrade\r\n\r\nGET /x HTTP/1.1\r\n\r\n`, { timeoutMs: 3000 });
      assert.equal(res.status, 400, `${token} ${target}: ${JSON.stringify(res.raw.slice(0, 200))}`);
      assert.ok(res.closed, 'the connection is closed after the 400');
      assert.ok(Date.now() - started < 2000, 'answered at once, not after a timeout');
      assert.ok(await backend.settled(), 'nothing of it is left open upstream');
      assert.equal(backend.requests.length, 0, 'the app never got it as a whole request');
    }
  });

  test('300 generated exchanges: every request the app sees was answered to the client, nothing left half-framed upstream', async (t) => {
    let runs = 0;
    let refused = 0;
    let forwarded = 0;
    await fc.assert(
      fc.asyncProperty(exchange, async (x) => {
        runs++;
        backend.reset();
        const payload = x.chunked ? `${x.body.length.toString(16)}\r\n${x.body}\r\n0\r\n\r\n` : x.body;
        const n = payload.length;
        const head = x.fields.map((f) => f.replace(/\{n\}/g, String(n)).replace(/\{m\}/g, String(Math.max(0, n + x.wrong))) + '\r\n').join('');
        const behind = x.behind ? `POST /behind HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nend` : '';
        const request = `${x.method} /gen HTTP/${x.version}\r\n${H}${head}\r\n${payload}${behind}`;
        // A last request that closes the connection ends every exchange (at most 5 bytes of it can be taken for a
        // body, so no framing leaves Portico waiting for more).
        const res = await rawRequest(portico.port, `${request}${LAST}`, { responses: 99, timeoutMs: 8000 });
        // The app answers every request with `200 ok`; Portico's own answers are its error pages.
        const relayed = (res.raw.match(/HTTP\/1\.1 200 OK\r\n(?:[^\r\n]+\r\n)*\r\nok/g) ?? []).length;
        assert.ok(await backend.settled(), `no incomplete request left on an open upstream connection: ${JSON.stringify(backend.leftovers())}`);
        assert.deepEqual(backend.malformed, [], 'every byte the app got framed as well-formed requests');
        const seen = backend.requests.length;
        assert.equal(seen, relayed, `every request the app saw (${seen}) was answered to the client (${relayed}) for ${JSON.stringify(request)}: ${JSON.stringify(res.raw.slice(0, 300))}`);
        if (seen === 0) refused++;
        else forwarded++;
      }),
      { numRuns: 300, includeErrorInReport: true },
    );
    t.diagnostic(`${runs} exchanges: ${forwarded} forwarded, ${refused} refused before the app`);
    assert.ok(forwarded > 0 && refused > 0, 'both outcomes happen');
  });
});

/**
 * The other direction: an app whose answers are framed wrongly (two answers for one request, a body on HEAD or
 * 204, both framings, duplicate lengths, a bad chunk, bare LF, obs-fold) must not desynchronise the upstream
 * connection: the next request gets its own answer, never bytes the app sent after the first (response queue
 * poisoning), and no client ever sees the extra bytes.
 */
describe('answers from the app cannot poison the upstream connection', () => {
  const POISON = 'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED';
  const ANSWERS: Record<string, string> = {
    '/two-answers': `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok${POISON}`,
    '/head-body': 'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED',
    '/204-body': 'HTTP/1.1 204 No Content\r\nContent-Length: 8\r\n\r\nPOISONED',
    '/304-body': 'HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\nPOISONED',
    '/cl-te': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nPOISONED\r\n0\r\n\r\n',
    '/dup-cl': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 10\r\n\r\nokPOISONED',
    '/cl-comma': 'HTTP/1.1 200 OK\r\nContent-Length: 2, 10\r\n\r\nokPOISONED',
    '/bad-chunk': `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n${POISON}\r\n0\r\n\r\n`,
    '/bare-lf': `HTTP/1.1 200 OK\nContent-Length: 2\n\nok${POISON}`,
    '/obs-fold': `HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 50\r\nContent-Length: 2\r\n\r\nok${POISON}`,
    '/cr-in-field': `HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 50\r\nContent-Length: 2\r\n\r\nok${POISON}`,
    '/te-identity': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nokPOISONED',
  };
  let app: RecordingBackend;
  let front: RunningPortico;
  const table: string[] = [];

  before(async () => {
    app = await startRecordingBackend((request) => {
      if (request.target === '/next') return 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nNEXT';
      return ANSWERS[request.target] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n';
    });
    // One upstream connection, so that the next request must reuse the one the bad answer came on (if kept).
    front = await startPortico(`upstreams:
  app: { servers: [{ url: "${app.url}" }], keepalive: 1, retries: 0 }
sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`);
  });

  after(async () => {
    await front.stop();
    await app.stop();
  });

  test('control: two ordinary requests in a row share one upstream connection (so a kept poisoned one would be reused)', async () => {
    app.reset();
    for (let i = 0; i < 2; i++) assert.equal((await rawRequest(front.port, `GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n`)).body, 'NEXT');
    assert.ok(app.received().some((text) => text.split('GET /next ').length - 1 === 2), 'both went over one connection');
  });

  for (const target of Object.keys(ANSWERS)) {
    const method = target === '/head-body' ? 'HEAD' : 'GET';
    test(`${method} ${target}: no client sees the bytes after the answer, and the next request gets its own answer`, async (t) => {
      const res = await rawRequest(front.port, `${method} ${target} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
      const next = await rawRequest(front.port, `GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n`);
      const row = `${method} ${target}: client ${res.status}${res.closed ? ' (closed)' : ''}, next ${next.status} ${JSON.stringify(next.body)}`;
      table.push(row);
      t.diagnostic(row);
      assert.ok(res.status >= 200 && res.status <= 599, 'a final answer');
      assert.doesNotMatch(res.raw, /POISONED/);
      assert.equal(next.status, 200);
      assert.equal(next.body, 'NEXT');
    });
  }

  test('outcome table (app answers)', (t) => {
    for (const row of table) t.diagnostic(row);
    assert.equal(table.length, Object.keys(ANSWERS).length);
  });
});
