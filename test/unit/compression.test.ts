/** The shared compression rules: Vary merging, ETag weakening, and whole-body encodings made once per body. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import zlib from 'node:zlib';
import { DEFAULT_LEVELS, encodeWhole, varyWithAcceptEncoding, weakETag } from '../../src/http/compression.js';

describe('varyWithAcceptEncoding', () => {
  test('adds Accept-Encoding to nothing, to a list, and across several Vary fields, without duplicates', () => {
    assert.equal(varyWithAcceptEncoding([]), 'Accept-Encoding');
    assert.equal(varyWithAcceptEncoding(['Origin']), 'Origin, Accept-Encoding');
    assert.equal(varyWithAcceptEncoding(['Origin, accept-encoding', 'Cookie', 'origin']), 'Origin, accept-encoding, Cookie');
    assert.equal(varyWithAcceptEncoding([' , Cookie ,']), 'Cookie, Accept-Encoding');
  });

  test('Vary: * stays * alone', () => {
    assert.equal(varyWithAcceptEncoding(['Origin', '*']), '*');
  });
});

describe('weakETag', () => {
  test('a strong tag gets W/; a weak one is left as it is', () => {
    assert.equal(weakETag('"abc"'), 'W/"abc"');
    assert.equal(weakETag('W/"abc"'), 'W/"abc"');
  });
});

describe('encodeWhole', () => {
  test('encodes a body once per encoding and level; later calls return the same Buffer', async () => {
    const body = Buffer.from('hello compression '.repeat(200));
    const first = encodeWhole(body, 'gzip', DEFAULT_LEVELS);
    assert.ok(first instanceof Promise, 'the first call works in the background');
    const made = await first;
    assert.equal(zlib.gunzipSync(made.body).toString(), body.toString());
    assert.equal(encodeWhole(body, 'gzip', DEFAULT_LEVELS), made, 'the second call returns the made Buffer itself');
    const br = await encodeWhole(body, 'br', DEFAULT_LEVELS);
    assert.equal(zlib.brotliDecompressSync(br.body).toString(), body.toString());
    const level1 = await encodeWhole(body, 'gzip', { ...DEFAULT_LEVELS, gzipLevel: 1 });
    assert.notEqual(level1, made, 'another level is another encoding');
    const copy = Buffer.from(body);
    assert.ok(encodeWhole(copy, 'gzip', DEFAULT_LEVELS) instanceof Promise, 'keyed by the body object, not its content');
  });
});
