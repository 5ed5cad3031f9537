/**
 * The head of a CGI response (RFC 3875 §6) as PHP writes it on FastCGI STDOUT: header lines up to an empty line,
 * `Status: 404 Not Found` for the status, a `Location` without a `Status` meaning a redirect (302).
 */

/** Largest response head accepted: past it the answer is not a CGI response (undici's default is alike). */
export const MAX_HEAD = 64 * 1024;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What RFC 9110 §5.5 and Node refuse in a field value. */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const DIGITS = /^\d{1,15}$/;
const CONTENT_LENGTH = Buffer.from('Content-Length', 'latin1');

/**
 * A parsed head: the status, the other fields as undici hands them (name, value, name, value… as Buffers), and
 * the body's length its `Content-Length` declares (-1: none).
 */
export interface CgiHead {
  readonly status: number;
  readonly rawHeaders: Buffer[];
  readonly contentLength: number;
}

/**
 * Where the head ends in `bytes`: the offset of the body's first byte, or -1 while the empty line has not come
 * (lines end in CRLF or a bare LF, both of which PHP and other CGI programs write).
 */
export function headEnd(bytes: Buffer): number {
  for (let i = bytes.indexOf(10); i !== -1; i = bytes.indexOf(10, i + 1)) {
    if (i === 0) return 1;
    if (bytes[i - 1] === 10) return i + 1;
    if (bytes[i - 1] === 13 && (i === 1 || bytes[i - 2] === 10)) return i + 1;
  }
  return -1;
}

/**
 * Parses a head (the bytes before `headEnd`). Invalid (undefined), as nginx's "upstream sent invalid header": a line
 * that is not `Name: value`, a status outside 200–599 (RFC 9110 §15: 100–599 are status codes, and an interim 1xx
 * is no CGI answer), a `Content-Length` that is not one decimal length (not digits, or several that differ), a
 * field value with a control character.
 */
export function parseCgiHead(head: Buffer): CgiHead | undefined {
  const rawHeaders: Buffer[] = [];
  let status = 0;
  let location = false;
  let contentLength = -1;
  for (const line of head.toString('latin1').split('\n')) {
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (text === '') continue;
    const colon = text.indexOf(':');
    if (colon <= 0) return undefined;
    const name = text.slice(0, colon).trim();
    const value = text.slice(colon + 1).trim();
    if (!TOKEN.test(name)) return undefined;
    // A control character (PHP's header() lets all but CR and LF through) cannot be sent on: a bad answer, a 502,
    // as an HTTP app's would be (undici's parser refuses it), not a write that throws and cuts the client.
    if (BAD_VALUE.test(value)) return undefined;
    const lower = name.toLowerCase();
    if (lower === 'status') {
      const code = Number(value.slice(0, 3));
      if (!Number.isInteger(code) || code < 200 || code > 599 || !/^\d{3}( |$)/.test(value)) return undefined;
      status = code;
      continue;
    }
    if (lower === 'location') location = true;
    else if (lower === 'content-length') {
      // A script's wrong length must never frame the client's answer: one that is not a plain length is no answer.
      for (const part of value.split(',')) {
        const length = part.trim();
        if (!DIGITS.test(length) || (contentLength !== -1 && Number(length) !== contentLength)) return undefined;
        contentLength = Number(length);
      }
      continue;
    }
    rawHeaders.push(Buffer.from(name, 'latin1'), Buffer.from(value, 'latin1'));
  }
  // One field, however many the script sent (`5, 5` or twice `5`: RFC 9110 §8.6 lets a recipient take it as one).
  if (contentLength !== -1) rawHeaders.push(CONTENT_LENGTH, Buffer.from(String(contentLength), 'latin1'));
  return { status: status !== 0 ? status : location ? 302 : 200, rawHeaders, contentLength };
}
