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

/**
 * Answers a gRPC call with a status: a Trailers-Only answer (HTTP 200, `content-type: application/grpc`,
 * `grpc-status` and `grpc-message` in the one HEADERS frame that ends the stream), with no message.
 */
export function sendGrpcStatus(res: ClientResponse, code: number, message: string): void {
  for (const name of res.getHeaderNames()) if (name !== 'strict-transport-security') res.removeHeader(name);
  res.statusCode = 200;
  res.setHeader('content-type', 'application/grpc');
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
