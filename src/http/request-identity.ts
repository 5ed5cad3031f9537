/**
 * A request's identity, made once per request and cheaply: its `X-Request-Id` (kept from the client when safe,
 * else a new one) and its W3C trace context (`traceparent`, passed on or started; `tracestate` passed on with a
 * valid `traceparent` only). See docs/operations.md, "Request ids and traces".
 *
 * New ids cost no system call per request: a request id is a per-process random prefix and a counter (unique
 * across processes and restarts by the prefix, 80 random bits); trace and span ids are sliced from a pool of
 * random bytes refilled 4 KB at a time (`crypto.randomFillSync`) and turned into hex once per refill, so they
 * are random as W3C asks (measured: ~400 ns per traceparent converting per request, a few tens from the pool).
 */
import { randomBytes, randomFillSync } from 'node:crypto';

/** A client's own id is kept only in this form (or from a trusted proxy, whatever it is). */
const CLIENT_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** 20 hex digits, this process's own: ids from two processes (workers, an upgrade's successor) never meet. */
const ID_PREFIX = randomBytes(10).toString('hex');
const ZEROS = '000000000000';
let idCounter = 0;

/** A new request id: 32 hex digits (like nginx's `$request_id`), the process's prefix then a counter. */
export function newRequestId(): string {
  const n = (++idCounter).toString(16);
  return n.length >= 12 ? ID_PREFIX + n : ID_PREFIX + ZEROS.slice(n.length) + n;
}

/** Whether a client's `X-Request-Id` may be kept from any client: 1 to 128 characters of `[A-Za-z0-9._-]`. */
export function isSafeRequestId(value: string): boolean {
  return CLIENT_ID.test(value);
}

const POOL = Buffer.allocUnsafe(4096);
/** The pool as hex, made once per refill: a request takes a slice of it (no conversion per request). */
let hexPool = '';
let hexAt = 0;

/** `bytes` random bytes as lower-case hex, from the pool. */
export function randomHex(bytes: number): string {
  const chars = bytes * 2;
  if (hexAt + chars > hexPool.length) {
    randomFillSync(POOL);
    hexPool = POOL.toString('hex');
    hexAt = 0;
  }
  const hex = hexPool.slice(hexAt, hexAt + chars);
  hexAt += chars;
  return hex;
}

/** A trace id or span id of all zeros is invalid (W3C Trace Context §3.2.2.3, §3.2.2.4). */
const ALL_ZEROS = /^0+$/;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-|$)/;

/** A valid `traceparent` as received. */
export interface TraceParent {
  traceId: string;
  /** The caller's span id: the parent of whatever Portico does. */
  parentId: string;
  /** The sampled flag (bit 0 of trace-flags). */
  sampled: boolean;
}

/**
 * Parses a `traceparent` field (W3C Trace Context, level 1): `undefined` when absent or invalid (version `ff`, a
 * version-00 value of another length, all-zero ids, upper-case hex). A later version is read by its first four
 * fields, as the specification asks.
 */
export function parseTraceparent(value: string | string[] | undefined): TraceParent | undefined {
  if (typeof value !== 'string' || value.length < 55) return undefined;
  const m = TRACEPARENT.exec(value);
  if (m === null) return undefined;
  const version = m[1]!;
  if (version === 'ff' || (version === '00' && value.length !== 55)) return undefined;
  const traceId = m[2]!;
  const parentId = m[3]!;
  if (ALL_ZEROS.test(traceId) || ALL_ZEROS.test(parentId)) return undefined;
  return { traceId, parentId, sampled: (parseInt(m[4]!, 16) & 1) === 1 };
}

/** A new trace's `traceparent`, not sampled: random trace and span ids, read from the pool at once. */
export function startTraceparent(): string {
  const ids = randomHex(24);
  return `00-${ids.slice(0, 32)}-${ids.slice(32)}-00`;
}

/** A version-00 `traceparent`. */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}
