/**
 * The gRPC health checking protocol (grpc.health.v1, https://github.com/grpc/grpc/blob/master/doc/health-checking.md)
 * as far as a check needs it: the Check request for a service, framed as a gRPC message, and the status read
 * from its answer. The two protobuf messages have one field each, encoded here by hand.
 */

/** The method a check calls. */
export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';

/** HealthCheckResponse.ServingStatus names, by number. */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/** A HealthCheckRequest `{ service }` as one uncompressed gRPC message (flag, length, protobuf). */
export function healthCheckRequest(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  // Field 1, wire type 2 (length-delimited); an empty string is the default: no field at all.
  const length = varint(name.length);
  const message = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), length, name]);
  const frame = Buffer.alloc(5);
  frame.writeUInt32BE(message.length, 1);
  return Buffer.concat([frame, message]);
}

/**
 * The serving status of a HealthCheckResponse message (the answer's body: one gRPC message): its name, or why
 * the body is not one (`no message`, `compressed`, `malformed`).
 */
export function servingStatus(body: Buffer): string {
  if (body.length < 5) return 'no message';
  if (body[0] !== 0) return 'compressed';
  const length = body.readUInt32BE(1);
  if (body.length < 5 + length) return 'malformed';
  let i = 5;
  const end = 5 + length;
  // Absent field 1: its default, 0 (UNKNOWN).
  let status = 0;
  while (i < end) {
    const [tag, afterTag] = readVarint(body, i, end);
    if (afterTag < 0) return 'malformed';
    i = afterTag;
    const wire = tag & 7;
    if (wire === 0) {
      const [value, next] = readVarint(body, i, end);
      if (next < 0) return 'malformed';
      if (tag >>> 3 === 1) status = value;
      i = next;
    } else if (wire === 2) {
      const [len, next] = readVarint(body, i, end);
      if (next < 0 || next + len > end) return 'malformed';
      i = next + len;
    } else if (wire === 5) i += 4;
    else if (wire === 1) i += 8;
    else return 'malformed';
  }
  return SERVING_STATUS[status] ?? `status ${status}`;
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let v = value;
  while (v > 0x7f) {
    bytes.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  bytes.push(v);
  return Buffer.from(bytes);
}

/** A varint at `i` (before `end`): its value and the index after it (-1: truncated or too long). */
function readVarint(buf: Buffer, start: number, end: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = start; i < end && i < start + 10; i++) {
    const byte = buf[i]!;
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if ((byte & 0x80) === 0) return [value, i + 1];
  }
  return [0, -1];
}
