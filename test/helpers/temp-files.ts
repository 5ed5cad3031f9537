/**
 * Portico's temporary files as this process holds them (Portico runs in the test process): they are unlinked as
 * soon as they are open, so only `/proc/self/fd` still shows them (Linux), as `…/portico-PID-HEX.tmp (deleted)`.
 */
import { readdirSync, readlinkSync, statSync } from 'node:fs';

/** An open temporary file: the path it had, its mode, and whether it is unlinked already. */
export interface OpenTempFile {
  path: string;
  mode: number;
  deleted: boolean;
}

/** This process's open Portico temporary files. */
export function openTempFiles(): OpenTempFile[] {
  const found: OpenTempFile[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (!/portico-\d+-[0-9a-f]{16}\.tmp/.test(target)) continue;
      const deleted = target.endsWith(' (deleted)');
      found.push({ path: deleted ? target.slice(0, -' (deleted)'.length) : target, mode: statSync(`/proc/self/fd/${fd}`).mode & 0o777, deleted });
    } catch {
      // Closed meanwhile.
    }
  }
  return found;
}

/** Whether the temporary files can be watched here. */
export const canWatchTempFiles = process.platform === 'linux';
