/**
 * `npm start`'s build step (scripts/build-if-stale.mjs), run on a small project of its own: it compiles when a
 * source is newer than the last build, says so, and starts at once when nothing changed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { makeTree } from '../helpers/portico.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const project = makeTree({
  'src/cli.ts': 'export const answer: number = 42;\n',
  'tsconfig.json': JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', strict: true, outDir: 'dist', rootDir: '.', incremental: true, tsBuildInfoFile: 'dist/.tsbuildinfo' },
    include: ['src/**/*.ts'],
  }),
});
mkdirSync(path.join(project, 'scripts'));
copyFileSync(path.join(repo, 'scripts/build-if-stale.mjs'), path.join(project, 'scripts/build-if-stale.mjs'));
symlinkSync(path.join(repo, 'node_modules'), path.join(project, 'node_modules'));
after(() => rmSync(project, { recursive: true, force: true }));

/** Runs the build step and returns what it printed (it prints only when it builds). */
function buildStep(): string {
  const run = spawnSync(process.execPath, [path.join(project, 'scripts/build-if-stale.mjs')], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  return run.stderr;
}

describe('npm start builds only what changed', () => {
  test('a fresh tree is built with a line saying so; an unchanged one is not built again; a newer source is', () => {
    assert.match(buildStep(), /^building Portico \(tsc\)…\nbuilt in [\d.]+ s\n$/);
    assert.ok(existsSync(path.join(project, 'dist/src/cli.js')));
    assert.equal(buildStep(), '', 'nothing changed: no build');
    const later = new Date(Date.now() + 60_000);
    writeFileSync(path.join(project, 'src/cli.ts'), 'export const answer: number = 43;\n');
    utimesSync(path.join(project, 'src/cli.ts'), later, later);
    assert.match(buildStep(), /^building Portico/);
    assert.equal(buildStep(), '', 'built once for the change');
    rmSync(path.join(project, 'dist/src'), { recursive: true });
    assert.match(buildStep(), /^building Portico/, 'a build whose output is gone is built again');
  });
});
