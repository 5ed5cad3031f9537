/**
 * External programs some tests need (openssl to make certificates, …). A missing tool skips the test on a
 * developer's machine, with a message saying what to install; on CI (`CI=true`) it fails the test instead, so a
 * runner image that lost the tool can never turn those tests into silent skips.
 */
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';

/** The full path of an executable found on PATH, or undefined. */
export function findTool(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/**
 * Whether `name` is on PATH. When it is not: on CI throws (the test fails with a clear message); elsewhere marks
 * the test skipped with a message and returns false, so the caller returns at once:
 *
 *     if (!requireTool(t, 'openssl')) return;
 */
export function requireTool(t: TestContext, name: string): boolean {
  if (findTool(name) !== undefined) return true;
  const message = `${name} is not installed (not found on PATH); this test needs it`;
  if (process.env.CI === 'true') throw new Error(`${message}, and CI=true: install ${name} on the CI image`);
  t.skip(`${message}: install ${name} to run it`);
  return false;
}
