import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deriveKey, seal, unseal } from '../../src/cluster/sealed.js';

const key = deriveKey('a'.repeat(40), 'sealed');

test('a sealed value opens under its key and label, and holds nothing of the plain text', () => {
  const pem = '-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n';
  const sealed = seal(key, pem, 'portico:cert:a.example');
  assert.doesNotMatch(sealed, /BEGIN|PRIVATE/);
  assert.equal(unseal(key, sealed, 'portico:cert:a.example').toString(), pem);
});

test('each seal uses a fresh nonce: the same plain text seals differently', () => {
  assert.notEqual(seal(key, 'same', 'l'), seal(key, 'same', 'l'));
});

test('a sealed value does not open under another key, another label, or changed', () => {
  const sealed = seal(key, 'secret', 'label');
  assert.throws(() => unseal(deriveKey('b'.repeat(40), 'sealed'), sealed, 'label'));
  assert.throws(() => unseal(key, sealed, 'other'));
  // One bit of the ciphertext flipped (in the bytes: the last base64 character may carry unused bits).
  const raw = Buffer.from(sealed.slice(3), 'base64url');
  raw[raw.length - 1]! ^= 1;
  assert.throws(() => unseal(key, `v1.${raw.toString('base64url')}`, 'label'));
  assert.throws(() => unseal(key, 'plain', 'label'));
});

test('keys derived for different purposes differ', () => {
  assert.notDeepEqual(deriveKey('a'.repeat(40), 'sticky'), deriveKey('a'.repeat(40), 'tickets'));
  assert.equal(deriveKey('a'.repeat(40), 'tickets', 48).length, 48);
});
