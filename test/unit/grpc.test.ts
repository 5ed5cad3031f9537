/** gRPC's rules a proxy needs: telling a call apart, `grpc-timeout`, and Portico's statuses as gRPC codes. */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { Base64Chunks, grpcStatusOf, grpcTimeoutMs, grpcTimeoutValue, grpcTypeOfWeb, grpcWebKind, grpcWebTrailerFrame, isGrpc, webTypeOfGrpc } from '../../src/http/grpc.js';
import { ReplayableBody } from '../../src/handlers/proxy/body.js';

test('a gRPC call is told by its content-type (application/grpc, +proto, ;params), gRPC-Web and others are not', () => {
  assert.equal(isGrpc({ 'content-type': 'application/grpc' }), true);
  assert.equal(isGrpc({ 'content-type': 'application/grpc+proto' }), true);
  assert.equal(isGrpc({ 'content-type': 'Application/GRPC; charset=utf-8' }), true);
  assert.equal(isGrpc({ 'content-type': 'application/grpc-web+proto' }), false);
  assert.equal(isGrpc({ 'content-type': 'application/json' }), false);
  assert.equal(isGrpc({}), false);
});

test('grpc-timeout reads up to 8 digits and a unit (H M S m u n) as ms; anything else is no deadline', () => {
  assert.equal(grpcTimeoutMs('100m'), 100);
  assert.equal(grpcTimeoutMs('5S'), 5000);
  assert.equal(grpcTimeoutMs('2M'), 120_000);
  assert.equal(grpcTimeoutMs('1H'), 3_600_000);
  assert.equal(grpcTimeoutMs('1500u'), 1.5);
  assert.equal(grpcTimeoutMs('99999999n'), 99.999999);
  assert.equal(grpcTimeoutMs('123456789m'), undefined);
  assert.equal(grpcTimeoutMs('10'), undefined);
  assert.equal(grpcTimeoutMs('-1S'), undefined);
  assert.equal(grpcTimeoutMs(undefined), undefined);
});

test("Portico's statuses map to gRPC codes: 502/503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, 404 UNIMPLEMENTED, 401 UNAUTHENTICATED", () => {
  assert.equal(grpcStatusOf(502), 14);
  assert.equal(grpcStatusOf(503), 14);
  assert.equal(grpcStatusOf(429), 14);
  assert.equal(grpcStatusOf(504), 4);
  assert.equal(grpcStatusOf(404), 12);
  assert.equal(grpcStatusOf(401), 16);
  assert.equal(grpcStatusOf(403), 7);
  assert.equal(grpcStatusOf(413), 8);
  assert.equal(grpcStatusOf(500), 13);
  assert.equal(grpcStatusOf(418), 2);
});

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += String(chunk);
  return text;
}

test('a replayable body gives a second reading that starts with what the first read, then the rest as it comes', async () => {
  const source = new PassThrough();
  const body = new ReplayableBody(source, 10);
  const first = body.stream();
  source.write('abc');
  await new Promise((resolve) => first.once('data', resolve));
  const second = body.stream();
  assert.equal(first.destroyed, true);
  source.end('def');
  assert.equal(await readAll(second), 'abcdef');
  assert.equal(body.replayable, true);
  assert.equal(await readAll(body.stream()), 'abcdef');
});

test('a replayable body past its limit says it can no longer be sent again', async () => {
  const source = new PassThrough();
  const body = new ReplayableBody(source, 4);
  const reading = readAll(body.stream());
  source.end('0123456789');
  assert.equal(await reading, '0123456789');
  assert.equal(body.replayable, false);
});

test('gRPC-Web content types: told apart (binary, text), mapped to gRPC and back in the client form', () => {
  assert.equal(grpcWebKind({ 'content-type': 'application/grpc-web' }), 'binary');
  assert.equal(grpcWebKind({ 'content-type': 'application/grpc-web+proto' }), 'binary');
  assert.equal(grpcWebKind({ 'content-type': 'application/grpc-web-text; charset=utf-8' }), 'text');
  assert.equal(grpcWebKind({ 'content-type': 'application/grpc' }), undefined);
  assert.equal(grpcTypeOfWeb('application/grpc-web-text+proto'), 'application/grpc+proto');
  assert.equal(grpcTypeOfWeb('application/grpc-web'), 'application/grpc');
  assert.equal(webTypeOfGrpc('application/grpc', 'text'), 'application/grpc-web-text+proto');
  assert.equal(webTypeOfGrpc('application/grpc+json', 'binary'), 'application/grpc-web+json');
});

test('a gRPC-Web trailers frame is flag 0x80, a length, then name:value lines', () => {
  const frame = grpcWebTrailerFrame(['Grpc-Status', '0', 'grpc-message', 'OK']);
  assert.equal(frame[0], 0x80);
  assert.equal(frame.readUInt32BE(1), frame.length - 5);
  assert.equal(frame.subarray(5).toString(), 'grpc-status:0\r\ngrpc-message:OK\r\n');
});

test('base64 split anywhere across chunks, padded chunks included, decodes to the same bytes', () => {
  const bytes = Buffer.from('the frames of a gRPC-Web text call, arriving in pieces');
  const text = bytes.toString('base64');
  for (const cut of [1, 2, 3, 5, 7, 13]) {
    const decoder = new Base64Chunks();
    const out: Buffer[] = [];
    for (let i = 0; i < text.length; i += cut) out.push(decoder.push(Buffer.from(text.slice(i, i + cut))));
    assert.deepEqual(Buffer.concat(out), bytes, `cut every ${cut}`);
  }
  const padded = new Base64Chunks();
  const parts = [Buffer.from('ab'), Buffer.from('cde')].map((b) => b.toString('base64')).join('');
  assert.equal(padded.push(Buffer.from(parts)).toString(), 'abcde');
});

test('a deadline is written as grpc-timeout in the finest unit that fits 8 digits, rounded up, and reads back', () => {
  assert.equal(grpcTimeoutValue(1500), '1500m');
  assert.equal(grpcTimeoutValue(0.2), '1m');
  assert.equal(grpcTimeoutValue(99_999_999), '99999999m');
  assert.equal(grpcTimeoutValue(259_200_000), '259200S');
  assert.equal(grpcTimeoutValue(30 * 24 * 3600 * 1000 + 1), '2592001S');
  assert.equal(grpcTimeoutValue(1e12), '16666667M');
  assert.equal(grpcTimeoutValue(1e13), '2777778H');
  assert.equal(grpcTimeoutValue(1e20), '99999999H');
  for (const ms of [1, 12_345, 1e8, 3e9, 1e12]) {
    const value = grpcTimeoutValue(ms);
    assert.match(value, /^\d{1,8}[HMSm]$/);
    assert.ok(grpcTimeoutMs(value)! >= ms && grpcTimeoutMs(value)! < ms * 1.01 + 1, `${ms} → ${value}`);
  }
});
