/** The pid file (src/server/pid-file.ts): written atomically, removed at the stop only while it is this process's. */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { PidFile } from '../../src/server/pid-file.js';

function fresh(): { file: string; done: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-pid-'));
  return { file: path.join(dir, 'portico.pid'), done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('write() names this process; remove() at its stop deletes the file', () => {
  const { file, done } = fresh();
  try {
    const pid = new PidFile(file, pino({ level: 'silent' }));
    pid.write();
    assert.equal(readFileSync(file, 'utf8'), `${process.pid}\n`);
    pid.remove();
    assert.equal(existsSync(file), false);
  } finally {
    done();
  }
});

test("after leave() (an upgrade handed over), remove() leaves the file alone even while it still names this process: the new process's write may land between a read and an unlink", () => {
  const { file, done } = fresh();
  try {
    const pid = new PidFile(file, pino({ level: 'silent' }));
    pid.write();
    pid.leave();
    pid.remove();
    assert.equal(readFileSync(file, 'utf8'), `${process.pid}\n`, 'left for the new process to replace');
  } finally {
    done();
  }
});
