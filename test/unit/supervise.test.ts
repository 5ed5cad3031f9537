/**
 * The Supervisor's pure parts (src/supervise/): output lines (chunk borders, UTF-8, the length bound), the restart
 * policy (backoff, crash loop), command placeholders, and which spawn changes need a deploy.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CrashHistory } from '../../src/supervise/crashes.js';
import { commandArgv, describeExit } from '../../src/supervise/instance.js';
import { LineSplitter, LineTail } from '../../src/supervise/lines.js';
import { processChanged, type UpstreamSpec } from '../../src/supervise/slot.js';

function split(chunks: Array<string | Buffer>, max = 100): string[] {
  const lines: string[] = [];
  const splitter = new LineSplitter(max, (line) => lines.push(line));
  for (const chunk of chunks) splitter.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  splitter.end();
  return lines;
}

describe('supervise: pure parts', () => {
  test('lines are cut at newlines across chunk borders, CRLF and a last line without newline included, and a UTF-8 character split between chunks stays whole', () => {
    assert.deepEqual(split(['one\ntw', 'o\r\nthr', 'ee']), ['one', 'two', 'three']);
    const euro = Buffer.from('€\n');
    assert.deepEqual(split([euro.subarray(0, 1), euro.subarray(1)]), ['€']);
    assert.deepEqual(split(['\n\n']), ['', '']);
  });

  test('a line longer than the bound is logged cut, and the rest of it up to its newline is dropped, also across chunks', () => {
    assert.deepEqual(split(['abcdefgh', 'ijkl\nnext\n'], 5), ['abcde [line cut at 5 characters]', 'next']);
    assert.deepEqual(split(['abcde\n'], 5), ['abcde']);
  });

  test('the stderr tail keeps the last lines only', () => {
    const tail = new LineTail(2);
    for (const line of ['a', 'b', 'c']) tail.add(line);
    assert.deepEqual(tail.lines(), ['b', 'c']);
  });

  test('restarts back off from 100 ms, doubling; the fifth crash within a minute is a crash loop; an instance that ran a minute starts the doubling over', () => {
    const history = new CrashHistory();
    assert.deepEqual([0, 1000, 2000, 3000].map((t) => history.record(t, 500)), [100, 200, 400, 800]);
    assert.equal(history.record(4000, 500), undefined);
    const spread = new CrashHistory();
    const delays = [0, 61_000, 122_000, 183_000, 244_000, 305_000, 366_000, 427_000, 488_000, 549_000, 610_000].map((t) => spread.record(t, 1000));
    assert.deepEqual(delays, [100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000], 'crashes a minute apart are no loop; the delay is capped at 30 s');
    assert.equal(spread.record(700_000, 60_000), 100, 'after a minute up the backoff starts over');
    spread.clear();
    assert.equal(spread.recent, 0);
  });

  test('{port}, {slot} and {route} are filled into argv and into a /bin/sh -c string; exits read as log text', () => {
    const where = { upstream: 'app', slot: 'app#2', route: 'app2', port: 3002 };
    assert.deepEqual(commandArgv(['node', 'server.js', '--port={port}', '{slot}/{route}'], where), ['node', 'server.js', '--port=3002', 'app#2/app2']);
    assert.deepEqual(commandArgv('npm start -- --port {port}', where), ['/bin/sh', '-c', 'npm start -- --port 3002']);
    assert.equal(describeExit({ code: 3, signal: null }), 'exited with code 3');
    assert.equal(describeExit({ code: null, signal: 'SIGKILL' }), 'was killed by SIGKILL');
  });

  test('a deploy is due when command, cwd, env, user, group or the stop settings change, not for ports, instances or health', () => {
    const base: UpstreamSpec = {
      command: ['node', 'a.js'], cwd: '/srv/app', env: { A: '1', B: '2' }, credentials: [], stopSignal: 'SIGTERM', stopTimeout: 10_000,
      ports: { from: 3001, to: 3010 }, instances: 2, maxSurge: 1, healthTimeout: 60_000, user: undefined, group: undefined, readiness: undefined,
    };
    assert.equal(processChanged(base, { ...base, env: { B: '2', A: '1' } }), false, 'env order does not matter');
    assert.equal(processChanged(base, { ...base, ports: { from: 4001, to: 4010 }, instances: 5, maxSurge: 2, healthTimeout: 1000 }), false);
    for (const change of [{ command: ['node', 'b.js'] }, { cwd: '/srv/other' }, { env: { A: '1' } }, { user: 'www-data' }, { group: 'www' }, { stopSignal: 'SIGINT' as const }, { stopTimeout: 1 }]) {
      assert.equal(processChanged(base, { ...base, ...change }), true, JSON.stringify(change));
    }
  });
});
