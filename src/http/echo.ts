/**
 * The response classes of Portico's listeners (HTTP/1 and HTTP/2): the same as Node's, but every head they send
 * carries the request's `X-Request-Id` (`kRequestId`, set when the request's context is made), whatever wrote it:
 * a handler's flat field list, `sendError`'s `setHeader`s, a proxied answer.
 *
 * HTTP/1: the field is added to the head Node has just serialised (`_header`, the head's text until its first
 * write), one string concatenation. Measured against the alternatives: copying the handler's field list (a
 * handler's list may be shared between answers, so it cannot be extended in place) allocates an array per answer,
 * and `setHeader` before a flat-list `writeHead` sends every answer down Node's slow path (each field removed,
 * then appended again). The id needs no check: Portico made it, or it came in a request field, which Node's parser
 * admits without CR, LF or NUL.
 */
import { ServerResponse, type OutgoingHttpHeaders } from 'node:http';
import { Http2ServerResponse } from 'node:http2';

/** The request id a response echoes (unset: none). */
export const kRequestId = Symbol('portico.requestId');

/** The field's name as sent. */
const REQUEST_ID = 'X-Request-Id';

/** Node's HTTP/1 response, echoing the request id. */
export class PorticoResponse extends ServerResponse {
  /** Initialised here, so that setting it per request does not change the object's shape. */
  [kRequestId]: string | undefined = undefined;
  /** Node's serialised head (a documented legacy field; `undefined` before `writeHead`, then its text). */
  declare _header: string | null | undefined;

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override writeHead(statusCode: number, reason?: any, headers?: any): this {
    super.writeHead(statusCode, reason, headers);
    const id = this[kRequestId];
    const head = this._header;
    // The head ends with an empty line: the field goes before it.
    if (id !== undefined && typeof head === 'string') this._header = `${head.slice(0, -2)}${REQUEST_ID}: ${id}\r\n\r\n`;
    return this;
  }
}

/** Node's HTTP/2 compat response, echoing the request id (its fields are an object until the head is sent). */
export class PorticoH2Response extends Http2ServerResponse {
  [kRequestId]: string | undefined = undefined;

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override writeHead(statusCode: number, reason?: any, headers?: any): this {
    const id = this[kRequestId];
    if (id !== undefined && !this.headersSent) this.setHeader(REQUEST_ID, id);
    return super.writeHead(statusCode, reason, headers as OutgoingHttpHeaders);
  }
}
