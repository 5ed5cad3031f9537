/**
 * System tools some tests need (openssl to make a certificate). Where one is missing, a test skips and says
 * why — except on CI (CI=true), where a missing tool is a broken machine setup and the test fails instead.
 */
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';

const found = new Map<string, string | undefined>();

/**
 * Folders searched after the PATH: daemons such as dnsmasq live in sbin, which a non-root user's PATH often lacks
 * (Debian puts /usr/sbin on root's PATH only).
 */
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** The file of the executable `name` on the PATH (or in an sbin folder), or undefined. */
export function toolPath(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  let file: string | undefined;
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), ...SBIN]) {
    if (dir === '') continue;
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      file = path.join(dir, name);
      break;
    } catch {
      // Not in this folder.
    }
  }
  found.set(name, file);
  return file;
}

/** Whether an executable `name` is on the PATH (or in an sbin folder: see `toolPath`). */
export function haveTool(name: string): boolean {
  return toolPath(name) !== undefined;
}

/**
 * True when `name` is available. Otherwise the test is skipped with a message and false is returned (the
 * caller returns at once) — or, with CI=true, the test fails with a message saying what to install.
 */
export function requireTool(t: TestContext, name: string): boolean {
  if (haveTool(name)) return true;
  if (process.env.CI === 'true') {
    throw new Error(`${name} is not installed, and CI=true makes a missing tool a failure: install it (.ci/run does, e.g. apt-get install -y ${name})`);
  }
  t.skip(`${name} is not installed (on CI, with CI=true, this test fails instead)`);
  return false;
}

/**
 * True when the executable file `file` exists (a browser at a fixed path, such as Debian's /usr/bin/chromium).
 * Otherwise, as `requireTool`: skipped with a message saying what to install, or with CI=true a failure.
 */
export function requireExecutable(t: TestContext, file: string, aptPackage: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    const install = `apt-get install -y ${aptPackage}`;
    if (process.env.CI === 'true') throw new Error(`${file} is not installed, and CI=true makes a missing tool a failure: install it (.ci/run does: ${install})`);
    t.skip(`${file} is not installed (${install}; on CI, with CI=true, this test fails instead)`);
    return false;
  }
}
