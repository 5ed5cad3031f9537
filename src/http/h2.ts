/**
 * What an HTTP/2 request needs before it goes the way of any request. Node's compat API hands Portico h2
 * requests with HTTP/1's shape; nghttp2 has already refused what HTTP/2 forbids (connection-specific fields, a
 * `content-length` that disagrees with the DATA, upper-case names, CR/LF in pseudo-fields) with a stream reset,
 * and dropped a regular field with CR/LF/NUL in its value or a bad name (Node offers no way to refuse those;
 * test/integration/smuggling-h2.test.ts shows none reaches an app server). What is left is the Host:
 * `:authority` plays it (RFC 9113 §8.3.1).
 */
import type { ClientRequest } from './context.js';

/**
 * Checks an h2 request and makes `:authority` its Host (so that routing, forwarded fields, cache keys and
 * redirects read one field, as for HTTP/1); returns the status to refuse it with, or 0.
 * - CONNECT: 405, as over HTTP/1 (Portico opens no tunnels; extended CONNECT, RFC 8441, is not offered).
 * - Neither `:authority` nor Host: 400 (an `http`/`https` request must carry one, RFC 9113 §8.3.1).
 * - Host naming another authority than `:authority`: 400 (the RFC's SHOULD: which one would the app see?).
 */
export function adoptAuthority(req: ClientRequest): number {
  const headers = req.headers;
  if (req.method === 'CONNECT') return 405;
  const authority = headers[':authority'];
  const host = headers.host;
  if (typeof authority !== 'string' || authority === '') return host === undefined || host === '' ? 400 : 0;
  if (host !== undefined && host.toLowerCase() !== authority.toLowerCase()) return 400;
  headers.host = authority;
  return 0;
}
