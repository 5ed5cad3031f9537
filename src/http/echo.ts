/**
 * The response classes of Portico's listeners (HTTP/1 and HTTP/2): the same as Node's, but every head they send
 * carries the request's `X-Request-Id` (`kRequestId`, set when the request's context is made), whatever wrote it:
 * a handler's flat field list, `sendError`'s `setHeader`s, a proxied answer.
 *
 * HTTP/1: the field is written after the status line as Node serialises the head (`_storeHeader`), one string
 * concatenation. Measured against the alternatives (bench/RESULTS.md, issue 18): copying the handler's field list
 * (a handler's list may be shared between answers, so it cannot be extended in place) allocated an array per
 * answer and cost about 5% of the static scenario; `setHeader` before a flat-list `writeHead` sends every answer
 * down Node's slow path (each field removed, then appended again); overriding `writeHead` and editing the
 * serialised head after it cost a frame and a slice. The id needs no check: Portico made it, or it came in a
 * request field, which Node's parser admits without CR, LF or NUL.
 */
import { ServerResponse, type OutgoingHttpHeaders } from 'node:http';
import { Http2ServerResponse } from 'node:http2';

/** The request id a response echoes (unset: none). */
export const kRequestId = Symbol('portico.requestId');

/** The field's name as sent. */
const REQUEST_ID = 'X-Request-Id';

/** Node's own head serialiser, which the override calls. */
const storeHeader = (ServerResponse.prototype as unknown as { _storeHeader(this: ServerResponse, firstLine: string, headers: unknown): void })._storeHeader;

/** Node's HTTP/1 response, echoing the request id. */
export class PorticoResponse extends ServerResponse {
  /** Initialised here, so that setting it per request does not change the object's shape. */
  [kRequestId]: string | undefined = undefined;

  /**
   * Node's `writeHead` hands the status line and the fields to `_storeHeader`, which serialises the head (Node 18
   * to 24 alike): the field goes right after the status line, one concatenation of short strings.
   */
  _storeHeader(firstLine: string, headers: unknown): void {
    const id = this[kRequestId];
    storeHeader.call(this, id === undefined ? firstLine : `${firstLine}${REQUEST_ID}: ${id}\r\n`, headers);
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
