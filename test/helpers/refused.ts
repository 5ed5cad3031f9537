/** An assertion for what Portico refuses with a `PorticoError` (an admin part's 4xx). */
import assert from 'node:assert/strict';
import { PorticoError } from '../../src/errors.js';

/** Asserts that `promise` rejects with a PorticoError of `status` whose message matches `message`. */
export async function assertRefused(promise: Promise<unknown>, status: number, message: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof PorticoError, String(err));
    assert.equal(err.status, status);
    assert.match(err.message, message);
    return true;
  });
}
