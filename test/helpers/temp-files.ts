/**
 * Portico's temporary files as this process holds them (Portico runs in the test process): they are unlinked as
 * soon as they are open, so only `/proc/self/fd` still shows them (Linux), as `…/portico-PID-HEX.tmp (deleted)`.
 */
import { readdirSync, readlinkSync, statSync } from 'node:fs';

/** An open temporary file: the path it had and its mode. */
export interface OpenTempFile {
  path: string;
  mode: number;
}

/** This process's open Portico temporary files. */
export function openTempFiles(): OpenTempFile[] {
  const found: OpenTempFile[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (!/portico-\d+-[0-9a-f]{16}\.tmp/.test(target)) continue;
      found.push({ path: target.replace(/ \(deleted\)$/, ''), mode: statSync(`/proc/self/fd/${fd}`).mode & 0o777 });
    } catch {
      // Closed meanwhile.
    }
  }
  return found;
}

/** Whether the temporary files can be watched here. */
export const canWatchTempFiles = process.platform === 'linux';
