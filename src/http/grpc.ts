/**
 * gRPC over HTTP/2, as far as a proxy needs it: telling a gRPC call from other requests, Portico's own errors
 * as gRPC statuses (a gRPC client reads `grpc-status`, never an HTML page), and `grpc-timeout` (the call's
 * deadline). See https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientResponse } from './context.js';

const GRPC = /^application\/grpc(?:[+;]|$)/i;
const TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 };

/** gRPC status codes Portico answers with. */
export const GrpcStatus = {
  OK: 0,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** Whether a request is a gRPC call (`content-type: application/grpc`, `+proto`, `;…`; not gRPC-Web). */
export function isGrpc(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  return type !== undefined && GRPC.test(type);
}

/** Whether a request is a gRPC or a gRPC-Web call (its content-type), for the counts by grpc-status. */
export function isGrpcCall(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  return type !== undefined && (GRPC.test(type) || GRPC_WEB.test(type));
}

/**
 * The gRPC status for one of Portico's HTTP statuses: the gRPC project's HTTP-to-gRPC mapping, but a gateway
 * timeout is DEADLINE_EXCEEDED (Portico gave up waiting, as Envoy says) and a too-large body RESOURCE_EXHAUSTED.
 */
export function grpcStatusOf(status: number): number {
  switch (status) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
    case 405:
    case 501:
      return GrpcStatus.UNIMPLEMENTED;
    case 413:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case 429:
    case 502:
    case 503:
      return GrpcStatus.UNAVAILABLE;
    case 504:
      return GrpcStatus.DEADLINE_EXCEEDED;
    case 500:
      return GrpcStatus.INTERNAL;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/** The `grpc-status` in a flat name/value list (a call's trailers or head), `''` when it has none. */
export function grpcStatusIn(list: readonly string[]): string {
  for (let i = 0; i < list.length; i += 2) {
    if (list[i]!.length === 11 && list[i]!.toLowerCase() === 'grpc-status') return list[i + 1]!;
  }
  return '';
}

/**
 * Answers a gRPC call with a status: a Trailers-Only answer (HTTP 200, `content-type: application/grpc`,
 * `grpc-status` and `grpc-message` in the one HEADERS frame that ends the stream), with no message.
 */
export function sendGrpcStatus(res: ClientResponse, code: number, message: string, web?: 'binary' | 'text'): void {
  for (const name of res.getHeaderNames()) if (name !== 'strict-transport-security') res.removeHeader(name);
  res.statusCode = 200;
  // gRPC-Web: the same status in the headers (its clients read a Trailers-Only answer there too).
  res.setHeader('content-type', web === undefined ? 'application/grpc' : webTypeOfGrpc('application/grpc+proto', web));
  res.setHeader('grpc-status', String(code));
  res.setHeader('grpc-message', encodeURIComponent(message));
  res.end();
}

/** A `grpc-timeout` value (`100m`, `5S`, up to 8 digits and a unit) in ms; undefined when absent or malformed. */
export function grpcTimeoutMs(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const match = TIMEOUT.exec(value);
  return match === null ? undefined : Number(match[1]) * UNIT_MS[match[2]!]!;
}

/** Units of `grpc-timeout` from the finest, in ms, for writing one. */
const UNITS_UP: ReadonlyArray<readonly [string, number]> = [['m', 1], ['S', 1000], ['M', 60_000], ['H', 3_600_000]];

/**
 * A deadline `ms` away as a `grpc-timeout` value: in the finest unit whose count fits the protocol's 8 digits
 * (as gRPC's own clients write it), rounded up (an app's deadline never comes before Portico's).
 */
export function grpcTimeoutValue(ms: number): string {
  for (const [unit, size] of UNITS_UP) {
    const count = Math.ceil(ms / size);
    if (count < 100_000_000) return `${Math.max(1, count)}${unit}`;
  }
  return '99999999H';
}

const GRPC_WEB = /^application\/grpc-web(-text)?(\+[\w.-]+)?\s*(?:;|$)/i;

/** A gRPC-Web call's form: `binary` (application/grpc-web[+proto]), `text` (base64, -text), or undefined: not one. */
export function grpcWebKind(headers: IncomingHttpHeaders): 'binary' | 'text' | undefined {
  const type = headers['content-type'];
  if (type === undefined) return undefined;
  const match = GRPC_WEB.exec(type);
  if (match === null) return undefined;
  return match[1] === undefined ? 'binary' : 'text';
}

/** The gRPC content-type for a gRPC-Web one (`application/grpc-web-text+proto` → `application/grpc+proto`). */
export function grpcTypeOfWeb(type: string): string {
  const match = GRPC_WEB.exec(type);
  return `application/grpc${match?.[2] ?? ''}`;
}

/** The gRPC-Web content-type for an app's gRPC one, in the client's form (`binary` or `text`). */
export function webTypeOfGrpc(type: string, kind: 'binary' | 'text'): string {
  const suffix = /^application\/grpc(\+[\w.-]+)?/i.exec(type)?.[1] ?? '+proto';
  return `application/grpc-web${kind === 'text' ? '-text' : ''}${suffix}`;
}

/** A gRPC-Web trailers frame (flag 0x80, length, `name:value\r\n` lines) for a flat name/value list. */
export function grpcWebTrailerFrame(trailers: readonly string[]): Buffer {
  let text = '';
  for (let i = 0; i < trailers.length; i += 2) text += `${trailers[i]!.toLowerCase()}:${trailers[i + 1]!}\r\n`;
  const body = Buffer.from(text, 'latin1');
  const frame = Buffer.alloc(5 + body.length);
  frame[0] = 0x80;
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  return frame;
}

/**
 * Decodes base64 arriving in chunks split anywhere (gRPC-Web text): each call returns the bytes of the complete
 * 4-character groups seen so far, keeping the rest for the next; padding inside the stream (chunks each padded) is
 * accepted, as gRPC-Web clients may send it.
 */
export class Base64Chunks {
  #rest = '';

  push(chunk: Buffer): Buffer {
    const text = this.#rest + chunk.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, '');
    // Cut after the last complete group, and at each padded group's end (base64 after '=' starts anew).
    const whole = text.length - (text.length % 4);
    this.#rest = text.slice(whole);
    const groups = text.slice(0, whole);
    if (!groups.includes('=')) return Buffer.from(groups, 'base64');
    const parts: Buffer[] = [];
    for (let i = 0; i < groups.length; i += 4) parts.push(Buffer.from(groups.slice(i, i + 4), 'base64'));
    return Buffer.concat(parts);
  }
}
