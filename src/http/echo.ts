/**
 * The response classes of Portico's listeners (HTTP/1 and HTTP/2): the same as Node's, but every head they send
 * carries the request's `X-Request-Id` (`kRequestId`, set when the request's context is made), whatever wrote it:
 * a handler's flat field list, `sendError`'s `setHeader`s, a proxied answer. Doing it here costs one array copy
 * per answer; `setHeader` before a flat-list `writeHead` would send every answer down Node's slow path (each
 * field removed, then appended again).
 */
import { ServerResponse, type OutgoingHttpHeaders } from 'node:http';
import { Http2ServerResponse } from 'node:http2';

/** The request id a response echoes (unset: none). */
export const kRequestId = Symbol('portico.requestId');

/** The field's name as sent. */
const REQUEST_ID = 'X-Request-Id';

type Head = OutgoingHttpHeaders | string[] | undefined;

/** The head's fields with the request id added (a copy: a handler's list may be shared between answers). */
function withId(res: { hasHeader(name: string): boolean; setHeader(name: string, value: string): unknown }, headers: Head, id: string): Head {
  if (Array.isArray(headers)) return headers.concat(REQUEST_ID, id);
  if (headers === undefined) {
    if (!res.hasHeader(REQUEST_ID)) res.setHeader(REQUEST_ID, id);
    return undefined;
  }
  return { ...headers, [REQUEST_ID]: id };
}

/** Node's HTTP/1 response, echoing the request id. */
export class PorticoResponse extends ServerResponse {
  declare [kRequestId]: string | undefined;

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override writeHead(statusCode: number, reason?: any, headers?: any): this {
    const id = this[kRequestId];
    if (id === undefined) return super.writeHead(statusCode, reason, headers);
    if (typeof reason === 'string') return super.writeHead(statusCode, reason, withId(this, headers as Head, id) as OutgoingHttpHeaders);
    return super.writeHead(statusCode, withId(this, reason as Head, id) as OutgoingHttpHeaders);
  }
}
PorticoResponse.prototype[kRequestId] = undefined;

/** Node's HTTP/2 compat response, echoing the request id. */
export class PorticoH2Response extends Http2ServerResponse {
  declare [kRequestId]: string | undefined;

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override writeHead(statusCode: number, reason?: any, headers?: any): this {
    const id = this[kRequestId];
    if (id === undefined) return super.writeHead(statusCode, reason, headers);
    if (typeof reason === 'string') return super.writeHead(statusCode, reason, withId(this, headers as Head, id) as OutgoingHttpHeaders);
    return super.writeHead(statusCode, withId(this, reason as Head, id) as OutgoingHttpHeaders);
  }
}
PorticoH2Response.prototype[kRequestId] = undefined;
