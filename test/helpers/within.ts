/**
 * A bounded wait for tests: a promise, or a failure naming what was awaited once `ms` has passed (a hung exchange
 * fails the test instead of hanging it).
 */

/** Resolves with `promise`, or rejects naming `what` after `ms` (default 5 s). */
export async function within<T>(what: string, promise: Promise<T>, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
