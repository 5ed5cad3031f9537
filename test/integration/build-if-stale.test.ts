/**
 * `npm start`'s build step (scripts/build-if-stale.mjs), run on a small project of its own: it compiles when a
 * source is newer than the last build, says so, and starts at once when nothing changed.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
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

/** Runs the build step and returns what it printed (it prints only when it builds); `status` is the exit expected. */
function buildStep(status = 0): string {
  const run = spawnSync(process.execPath, [path.join(project, 'scripts/build-if-stale.mjs')], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, status, run.stderr);
  return run.stderr;
}

/** Saves the entry's source as an editor would: its time is the clock's. */
function save(text: string): void {
  writeFileSync(path.join(project, 'src/cli.ts'), text);
}

/** Moves the source and the last build an hour back, so that the clock's saves come after both. */
function backdate(): void {
  const past = new Date(Date.now() - 3_600_000);
  utimesSync(path.join(project, 'src/cli.ts'), past, past);
  utimesSync(path.join(project, 'dist/.tsbuildinfo'), past, past);
}

/** What the built entry says (the compiled `answer`). */
function built(): string {
  return readFileSync(path.join(project, 'dist/src/cli.js'), 'utf8');
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
    assert.match(built(), /answer = 43/, 'the output is written again, not only the line printed');
  });

  test('a build that fails type-checking is built (and fails) again at the next start, never run', () => {
    backdate();
    save('export const answer: number = "not a number";\n');
    assert.match(buildStep(2), /^building Portico/);
    assert.match(buildStep(2), /^building Portico/, 'the failed build is not taken for a current one');
    save('export const answer: number = 44;\n');
    assert.match(buildStep(), /^building Portico/);
    assert.match(built(), /answer = 44/);
  });

  test('a source saved while tsc runs is built at the next start', async () => {
    backdate();
    save('export const answer: number = 45;\n');
    const child = spawn(process.execPath, [path.join(project, 'scripts/build-if-stale.mjs')], { stdio: ['ignore', 'ignore', 'pipe'] });
    // The line comes once the sources were read for this build and before tsc starts: the save lands after.
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (chunk: Buffer) => chunk.toString().includes('building') && resolve());
      child.once('exit', () => reject(new Error('the build ended before saying it builds')));
    });
    save('export const answer: number = 46;\n');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0);
    assert.match(buildStep(), /^building Portico/, 'the save made during the build is newer than that build');
    assert.match(built(), /answer = 46/);
    assert.equal(buildStep(), '', 'and then the tree is current');
  });
});
