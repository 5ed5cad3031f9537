// The build step of `npm start` and `npm test`: compiles Portico with tsc (incremental: see tsconfig.json) and says
// so while it does. `npm start` builds only when a source is newer than the last build, so a warm tree starts at
// once; `npm install` has built it already (`prepare`), so a fresh `npm install && npm start` compiles once.
// `npm test` passes `--always`: tsc runs every time (its incremental check is by content, not by file time).
// Either way, a build whose output is partly gone (dist/src or dist/test deleted by hand, with the build info
// left) is built whole again: incremental tsc alone would think it current and write nothing. Exits with tsc's
// status when it fails, and a failed build is never taken for a current one.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const always = process.argv.includes('--always');
/** Written by every tsc run that emits (tsconfig.json's tsBuildInfoFile); its time is the build's. */
const stamp = path.join(root, 'dist', '.tsbuildinfo');
/** The folders tsc compiles (tsconfig.json's include), those that exist. */
const sourceDirs = ['src', 'test'].map((dir) => path.join(root, dir)).filter((dir) => existsSync(dir));

/** The TypeScript sources below the source folders, as paths relative to the root. */
function sources() {
  const found = [];
  for (const dir of sourceDirs) {
    for (const item of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (item.isFile() && item.name.endsWith('.ts') && !item.name.endsWith('.d.ts')) {
        found.push(path.relative(root, path.join(item.parentPath, item.name)));
      }
    }
  }
  return found;
}

/** The newest modification time (ms) of what the build reads. */
function sourcesTime(files) {
  let latest = statSync(path.join(root, 'tsconfig.json')).mtimeMs;
  for (const file of files) latest = Math.max(latest, statSync(path.join(root, file)).mtimeMs);
  return latest;
}

/** Whether some source has no compiled file beside the build info. */
function outputMissing(files) {
  return files.some((file) => !existsSync(path.join(root, 'dist', file.replace(/\.ts$/, '.js'))));
}

const files = sources();
// Taken before tsc starts: a source saved while it runs is newer than this build, and is built next time.
const readAt = sourcesTime(files);
const missing = outputMissing(files);
const stale = missing || !existsSync(stamp) || readAt > statSync(stamp).mtimeMs;
if (always || stale) {
  if (missing) rmSync(stamp, { force: true });
  const quiet = always && !stale;
  if (!quiet) process.stderr.write('building Portico (tsc)…\n');
  const started = Date.now();
  const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')], {
    stdio: 'inherit',
  });
  if (tsc.status !== 0) {
    // tsc writes its build info and emits JavaScript even when the types are wrong: mark that build as old, so that
    // the next start builds (and fails) again instead of running code that did not type-check.
    if (existsSync(stamp)) utimesSync(stamp, new Date(0), new Date(0));
    process.exit(tsc.status ?? 1);
  }
  // tsc leaves the build info as it was when nothing it compiles changed (a file touched, not edited): mark the
  // build as current for the sources it read — a millisecond past the newest of them as they were when it started.
  if (existsSync(stamp)) {
    const current = new Date(Math.ceil(readAt) + 1);
    utimesSync(stamp, current, current);
  }
  if (!quiet) process.stderr.write(`built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}
