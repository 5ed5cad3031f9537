// `npm start`'s build step: compiles Portico (tsc, incremental: see tsconfig.json) only when a source is newer than
// the last build, and says so while it does; a warm tree starts at once. `npm install` has built it already
// (`prepare`), so a fresh `npm install && npm start` compiles once. Exits with tsc's status when it fails.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Written by every tsc run that emits (tsconfig.json's tsBuildInfoFile); touched here after each build. */
const stamp = path.join(root, 'dist', '.tsbuildinfo');
/** What `npm start` runs: without it the build is missing whatever the stamp says. */
const entry = path.join(root, 'dist', 'src', 'cli.js');

/** The newest modification time (ms) of the files below `dir`. */
function newest(dir) {
  let latest = 0;
  for (const item of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (item.isFile()) latest = Math.max(latest, statSync(path.join(item.parentPath, item.name)).mtimeMs);
  }
  return latest;
}

/** The newest modification time (ms) of what the build reads. */
function sourcesTime() {
  return Math.max(newest(path.join(root, 'src')), statSync(path.join(root, 'tsconfig.json')).mtimeMs);
}

function isStale() {
  if (!existsSync(stamp) || !existsSync(entry)) return true;
  return sourcesTime() > statSync(stamp).mtimeMs;
}

if (isStale()) {
  process.stderr.write('building Portico (tsc)…\n');
  const started = Date.now();
  const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')], {
    stdio: 'inherit',
  });
  if (tsc.status !== 0) process.exit(tsc.status ?? 1);
  // tsc leaves the build info as it was when nothing it compiles changed (a file touched, not edited), and a
  // source may carry a time ahead of this clock: mark the build as current so that the next start skips it (a
  // millisecond past the newest source: file times have finer grain than a Date, and their rounding goes both ways).
  const current = new Date(Math.ceil(Math.max(Date.now(), sourcesTime())) + 1);
  utimesSync(stamp, current, current);
  process.stderr.write(`built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}
