/** The gRPC health checking protocol's two messages, encoded and read by hand (grpc-health.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { healthCheckRequest, servingStatus } from '../../src/upstream/health/grpc-health.js';

test('a Check request is one uncompressed gRPC message holding field 1 = the service (none for the whole server)', () => {
  assert.deepEqual([...healthCheckRequest('')], [0, 0, 0, 0, 0]);
  assert.deepEqual([...healthCheckRequest('app.Svc')], [0, 0, 0, 0, 9, 0x0a, 7, ...Buffer.from('app.Svc')]);
  const long = 'x'.repeat(200);
  const frame = healthCheckRequest(long);
  assert.equal(frame.readUInt32BE(1), 1 + 2 + 200);
  assert.deepEqual([...frame.subarray(5, 8)], [0x0a, 0xc8, 0x01]);
});

test('the serving status is read from field 1 of the answer, its default UNKNOWN, unknown fields skipped', () => {
  const message = (bytes: number[]): Buffer => Buffer.from([0, 0, 0, 0, bytes.length, ...bytes]);
  assert.equal(servingStatus(message([0x08, 1])), 'SERVING');
  assert.equal(servingStatus(message([0x08, 2])), 'NOT_SERVING');
  assert.equal(servingStatus(message([0x08, 3])), 'SERVICE_UNKNOWN');
  assert.equal(servingStatus(message([])), 'UNKNOWN');
  assert.equal(servingStatus(message([0x12, 2, 0x41, 0x42, 0x08, 1])), 'SERVING');
  assert.equal(servingStatus(message([0x08, 9])), 'status 9');
});

test('an answer that is no readable message says so (none, compressed, truncated)', () => {
  assert.equal(servingStatus(Buffer.alloc(0)), 'no message');
  assert.equal(servingStatus(Buffer.from([1, 0, 0, 0, 2, 0x08, 1])), 'compressed');
  assert.equal(servingStatus(Buffer.from([0, 0, 0, 0, 5, 0x08])), 'malformed');
  assert.equal(servingStatus(Buffer.from([0, 0, 0, 0, 1, 0x08])), 'malformed');
});
