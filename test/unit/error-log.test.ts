/**
 * The error log's shapes and its config keys (docs/operations.md, "Error log"; "Running as a service" for
 * `pid_file`): a readable line per entry (time, level name, message, fields), JSON with a level name and an ISO
 * time otherwise; `log.error`, `log.error_format` and `pid_file` refused at file:line:col when wrong. What the
 * processes do with them (stderr, files reopened, the pid file) is test/integration/log-files.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { createErrorLog, isReadable, readableLine, reopenErrorLogFiles } from '../../src/log/error-log.js';
import { holdsReopenSignal } from '../../src/log/reopen-signal.js';
import { parseConfig } from '../../src/server/config.js';
import { configErrors } from '../helpers/config.js';
import { makeTree } from '../helpers/portico.js';

const dir = makeTree({});
after(() => rmSync(dir, { recursive: true, force: true }));

const SITE = 'sites:\n  - routes: [{ path: /, respond: { body: ok } }]\n';

describe('readable error-log lines', () => {
  test('one line per entry: ISO time, the level name, the message, then each field as key=value', () => {
    const line = readableLine(JSON.stringify({ level: 40, time: Date.UTC(2026, 11, 6, 4, 11, 39, 120), msg: 'upstream app: server down', upstream: 'app', server: 'app#1', fails: 3, ok: false }));
    assert.equal(line, '2026-12-06T04:11:39.120Z WARN  upstream app: server down upstream=app server=app#1 fails=3 ok=false\n');
  });

  test('a value with spaces, quotes or an equals sign is quoted as JSON; an object as JSON; an error as its message and code, without its stack', () => {
    const err = { type: 'Error', message: 'connect ECONNREFUSED', code: 'ECONNREFUSED', stack: 'Error: connect\n    at x' };
    const line = readableLine(JSON.stringify({ level: 50, time: 0, msg: 'failed', path: '/a b', q: 'x"y', kv: 'a=b', files: ['/var/log/a.log'], err }));
    assert.equal(line, `1970-01-01T00:00:00.000Z ERROR failed path="/a b" q="x\\"y" kv="a=b" files=["/var/log/a.log"] err="connect ECONNREFUSED (ECONNREFUSED)"\n`);
    assert.equal(line.split('\n').length, 2, 'one line');
  });

  test('a message with a line break stays on one line; every level has its name; colour only when asked', () => {
    assert.match(readableLine(JSON.stringify({ level: 30, time: 0, msg: 'a\nb' })), /INFO  a\\nb\n$/);
    const names = [10, 20, 30, 40, 50, 60].map((level) => readableLine(JSON.stringify({ level, time: 0, msg: 'm' })).split(' ')[1]);
    assert.deepEqual(names, ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL']);
    assert.match(readableLine(JSON.stringify({ level: 50, time: 0, msg: 'm' }), true), /^\S+ \x1b\[31mERROR\x1b\[39m m\n$/);
    assert.doesNotMatch(readableLine(JSON.stringify({ level: 50, time: 0, msg: 'm' })), /\x1b/);
  });

  test('auto is readable only on a terminal stderr; a file is JSON unless pretty is asked', () => {
    assert.equal(isReadable('pretty', '/var/log/portico/error.log'), true);
    assert.equal(isReadable('json', 'stderr'), false);
    assert.equal(isReadable('auto', '/var/log/portico/error.log'), false);
    assert.equal(isReadable('auto', 'stderr'), process.stderr.isTTY === true);
  });
});

describe('the error log to a file', () => {
  test('JSON entries carry the level name and an ISO time; after the file is renamed and reopened, the next entry lands in a new file', () => {
    const file = path.join(dir, 'error.log');
    const logger = createErrorLog('info', { file, format: 'auto' });
    logger.warn({ upstream: 'app' }, 'before');
    const first = JSON.parse(readFileSync(file, 'utf8').trim()) as Record<string, unknown>;
    assert.equal(first.level, 'warn');
    assert.match(String(first.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(first.msg, 'before');
    assert.equal(first.upstream, 'app');
    renameSync(file, `${file}.1`);
    assert.ok(reopenErrorLogFiles() >= 1);
    logger.info('after');
    assert.equal(readFileSync(`${file}.1`, 'utf8').trim().split('\n').length, 1, 'nothing more in the renamed file');
    assert.equal((JSON.parse(readFileSync(file, 'utf8').trim()) as { msg: string }).msg, 'after');
  });

  test('error_format: pretty writes readable lines to a file too', () => {
    const file = path.join(dir, 'pretty.log');
    createErrorLog('info', { file, format: 'pretty' }).info({ worker: 2 }, 'logs reopened');
    assert.match(readFileSync(file, 'utf8'), /^\d{4}-\d\d-\d\dT\S+Z INFO  logs reopened worker=2\n$/);
  });
});

describe('config: log.error, log.error_format, pid_file', () => {
  test('defaults: the error log on stderr, auto format, no pid_file named (portico run uses the state directory)', () => {
    const config = parseConfig(SITE, 'portico.yaml', dir);
    assert.equal(config.log.error, 'stderr');
    assert.equal(config.log.error_format, 'auto');
    assert.equal(config.pid_file, undefined);
  });

  test('paths are resolved against the config folder; a pid file in the state directory needs no folder yet', () => {
    mkdirSync(path.join(dir, 'logs'), { recursive: true });
    const config = parseConfig(`log: { error: logs/error.log, error_format: pretty }\nstate_dir: ./state\npid_file: ./state/portico.pid\n${SITE}`, 'portico.yaml', dir);
    assert.equal(config.log.error, path.join(dir, 'logs/error.log'));
    assert.equal(config.log.error_format, 'pretty');
    assert.equal(config.pid_file, path.join(dir, 'state/portico.pid'));
    assert.equal(parseConfig(`pid_file: "off"\n${SITE}`, 'portico.yaml', dir).pid_file, 'off');
  });

  test('a missing folder, a folder named as the file, and an unknown format are errors at file:line:col', () => {
    mkdirSync(path.join(dir, 'adir'), { recursive: true });
    // The file's shape is checked first (a pass of its own), the folders next.
    const shape = configErrors(`log:\n  error: nowhere/error.log\n  error_format: xml\n${SITE}`, dir);
    assert.deepEqual(shape, ['portico.yaml:3:17 log.error_format: expected one of pretty, json, auto (got "xml")']);
    const folders = configErrors(`log:\n  error: nowhere/error.log\npid_file: adir\n${SITE}`, dir);
    assert.equal(folders.length, 2, folders.join('\n'));
    assert.match(folders[0]!, /^portico\.yaml:2:10 log\.error: folder .*nowhere does not exist$/);
    assert.match(folders[1]!, /^portico\.yaml:3:11 pid_file: .*adir is a directory: name a file$/);
    assert.match(configErrors(`pid_file: nowhere/portico.pid\n${SITE}`, dir)[0]!, /^portico\.yaml:1:11 pid_file: folder .*nowhere does not exist$/);
  });
});

test('importing the SIGUSR1 module installs the handler (Node then never opens its inspector on the signal)', () => {
  assert.equal(holdsReopenSignal(), true);
});
