/**
 * Secrets at rest in Redis (certificate keys, the ACME account key): AES-256-GCM with a fresh 96-bit nonce per
 * write, under a key derived (HKDF-SHA256) from the cluster's secret (`cluster.key_env`). A sealed value is text:
 * `v1.` + base64url(nonce ‖ tag ‖ ciphertext); the label it was sealed under is authenticated too (AAD), so a value
 * moved to another key's place does not open.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

const VERSION = 'v1.';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** A 32-byte key derived from the cluster secret for one use (`purpose`: 'sealed', 'sticky', 'tickets', ...). */
export function deriveKey(secret: string, purpose: string, bytes = 32): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), Buffer.from('portico-cluster'), Buffer.from(purpose, 'utf8'), bytes));
}

/**
 * The secret's fingerprint a box announces in its heartbeat (16 hex digits of a key derived for this use alone: it
 * tells two secrets apart and says nothing of either). Boxes with other fingerprints cannot open each other's
 * sealed values, and do not share sticky cookies or TLS session tickets.
 */
export function secretId(secret: string): string {
  return deriveKey(secret, 'secret-id', 8).toString('hex');
}

/** Seals `plain` under `key` (32 bytes), bound to `label` (the Redis key it is written to). */
export function seal(key: Buffer, plain: string | Buffer, label: string): string {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(label, 'utf8'));
  const body = Buffer.concat([cipher.update(typeof plain === 'string' ? Buffer.from(plain, 'utf8') : plain), cipher.final()]);
  return VERSION + Buffer.concat([nonce, cipher.getAuthTag(), body]).toString('base64url');
}

/**
 * Opens a value `seal` made under `key` and `label`; throws when it was not (another key, another label, a value
 * changed or cut).
 */
export function unseal(key: Buffer, sealed: string, label: string): Buffer {
  if (!sealed.startsWith(VERSION)) throw new Error('not a sealed value');
  const raw = Buffer.from(sealed.slice(VERSION.length), 'base64url');
  if (raw.length < NONCE_BYTES + TAG_BYTES) throw new Error('sealed value too short');
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, NONCE_BYTES));
  decipher.setAAD(Buffer.from(label, 'utf8'));
  decipher.setAuthTag(raw.subarray(NONCE_BYTES, NONCE_BYTES + TAG_BYTES));
  return Buffer.concat([decipher.update(raw.subarray(NONCE_BYTES + TAG_BYTES)), decipher.final()]);
}
