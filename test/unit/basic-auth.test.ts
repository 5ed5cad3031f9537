/**
 * basic_auth's pure parts: the Authorization parser, the htpasswd parser and its refusal of non-bcrypt formats,
 * and the hash pool's bounds, ranking by failed attempts and lifetime.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { parseBasicCredentials } from '../../src/handlers/middleware/basic-auth.js';
import { HashPool } from '../../src/handlers/middleware/hash-pool.js';
import { parseHtpasswd, refuseHash } from '../../src/handlers/middleware/htpasswd.js';

const b64 = (text: string) => Buffer.from(text).toString('base64');

describe('parseBasicCredentials', () => {
  test('splits at the first colon, decodes UTF-8, takes the scheme in any case', () => {
    assert.deepEqual(parseBasicCredentials(`Basic ${b64('alice:a:b')}`), { user: 'alice', password: 'a:b' });
    assert.deepEqual(parseBasicCredentials(`BASIC ${b64('zoë:')}`), { user: 'zoë', password: '' });
  });

  test('absent, other schemes, bad base64, no colon or an empty user: undefined', () => {
    for (const value of [undefined, '', 'Basic', 'Basic ', 'Bearer x', 'Basic a', 'Basic !!!!', `Basic ${b64('alice')}`, `Basic ${b64(':pw')}`, 'Basic YQ==YQ==']) {
      assert.equal(parseBasicCredentials(value), undefined, String(value));
    }
  });
});

describe('htpasswd', () => {
  const hash = bcrypt.hashSync('x', 4);

  test('bcrypt ($2a$, $2b$, $2y$) is accepted; every other format is named and refused', () => {
    assert.equal(refuseHash(hash), undefined);
    assert.equal(refuseHash(hash.replace('$2b$', '$2y$')), undefined);
    assert.equal(refuseHash(hash.replace('$2b$', '$2a$')), undefined);
    assert.match(refuseHash('$apr1$abc$def')!, /^an Apache MD5/);
    assert.match(refuseHash('{SHA}abc=')!, /^a SHA-1/);
    assert.match(refuseHash('$6$salt$hash')!, /^a SHA-crypt \(\$6\$\)/);
    assert.match(refuseHash('abcdefghijklm')!, /^a DES crypt/);
    assert.match(refuseHash(hash.slice(0, -1))!, /^a malformed bcrypt/);
    assert.match(refuseHash('plain')!, /only bcrypt hashes/);
  });

  test('comments, blank lines and CRLF are skipped; each bad line is reported with its number', () => {
    const parsed = parseHtpasswd(`# head\r\n\r\nalice:${hash}\r\nnocolon\nbob:{SHA}x\nalice:${hash}\n`);
    assert.deepEqual(parsed.users, [{ user: 'alice', hash }]);
    assert.deepEqual(
      parsed.problems.map((p) => p.line),
      [4, 5, 6],
    );
    assert.match(parsed.problems[2]!.message, /listed twice/);
  });
});

describe('HashPool', () => {
  test('checks in a worker; a full queue refuses at once; close ends the workers and fails what waits', async () => {
    const pool = new HashPool(1, 1);
    const slow = bcrypt.hashSync('pw', 10);
    const running = pool.verify('pw', slow, 'a');
    const queued = pool.verify('nope', slow, 'a');
    assert.equal(await pool.verify('pw', slow, 'a'), undefined, 'one running, one queued: the third is refused');
    assert.equal(await running, true);
    assert.equal(await queued, false);
    assert.equal(pool.started, 2);
    const running2 = assert.rejects(pool.verify('pw', slow, 'a'), /closed/);
    const queued2 = assert.rejects(pool.verify('pw', slow, 'b'), /closed/);
    await pool.close();
    await Promise.all([running2, queued2]);
    assert.equal(pool.pending, 0);
    assert.equal(await pool.verify('pw', slow, 'a'), true, 'a closed pool starts a worker again on the next check');
    await pool.close();
  });

  test('clients take turns: one with many checks queued does not delay another by more than one of its checks', async () => {
    const pool = new HashPool(1, 32, 8);
    const slow = bcrypt.hashSync('pw', 8);
    const order: string[] = [];
    const check = (client: string, name: string) => pool.verify('pw', slow, client).then(() => order.push(name));
    await Promise.all([check('a', 'a1'), check('a', 'a2'), check('a', 'a3'), check('a', 'a4'), check('b', 'b1')]);
    assert.deepEqual(order, ['a1', 'a2', 'b1', 'a3', 'a4']);
    await pool.close();
  });

  test('a client holds at most its share of checks; past it only its own are refused', async () => {
    const pool = new HashPool(1, 32, 2);
    const slow = bcrypt.hashSync('pw', 8);
    const mine = [pool.verify('pw', slow, 'a'), pool.verify('pw', slow, 'a')];
    assert.equal(await pool.verify('pw', slow, 'a'), undefined, 'the third of client a is refused');
    assert.equal(await pool.verify('pw', slow, 'b'), true, 'client b is checked');
    assert.deepEqual(await Promise.all(mine), [true, true]);
    assert.equal(await pool.verify('pw', slow, 'a'), true, 'its share is back once its checks ended');
    await pool.close();
  });

  test('a full queue takes a newcomer in place of the last check of the longest queue', async () => {
    const pool = new HashPool(1, 2, 8);
    const slow = bcrypt.hashSync('pw', 8);
    const a = [pool.verify('pw', slow, 'a'), pool.verify('pw', slow, 'a'), pool.verify('pw', slow, 'a')];
    const b = pool.verify('pw', slow, 'b');
    assert.equal(await pool.verify('pw', slow, 'c'), undefined, 'a and b queue one check each: the queue is full for c');
    assert.deepEqual(await Promise.all(a), [true, true, undefined], 'a had two queued: its last one gave its place to b');
    assert.equal(await b, true);
    await pool.close();
  });

  test('clients with fewer failed attempts are served first: a clean client waits only for the check running; equals take turns', async () => {
    const pool = new HashPool(1, 32, 8);
    const slow = bcrypt.hashSync('pw', 8);
    const order: string[] = [];
    const check = (client: string, name: string, failures: number) => pool.verify('pw', slow, client, undefined, failures).then(() => order.push(name));
    await Promise.all([check('a', 'a1', 2), check('a', 'a2', 2), check('b', 'b1', 1), check('d', 'd1', 1), check('b', 'b2', 1), check('c', 'c1', 0)]);
    assert.deepEqual(order, ['a1', 'c1', 'b1', 'd1', 'b2', 'a2']);
    await pool.close();
  });

  test('a full queue takes a newcomer in place of the newest check of the client with the most failures; full of clean clients, it refuses', async () => {
    const pool = new HashPool(1, 3, 8);
    const slow = bcrypt.hashSync('pw', 8);
    const check = (client: string, failures: number) => pool.verify('pw', slow, client, undefined, failures);
    const a = [check('a', 3), check('a', 3)];
    const b = [check('b', 1), check('b', 1)];
    const c = check('c', 0);
    assert.equal(await a[1], undefined, 'c takes the place of the newest check of a (three failures)');
    const d = check('d', 0);
    assert.equal(await b[1], undefined, 'd takes the place of the newest check of b (one failure)');
    const e = check('e', 0);
    assert.equal(await b[0], undefined, 'e takes the place of the last check of b');
    assert.equal(await check('f', 0), undefined, 'the queue holds only clean clients: a clean newcomer is refused');
    assert.equal(await check('g', 2), undefined, 'and so is one with failures');
    assert.deepEqual(await Promise.all([a[0], c, d, e]), [true, true, true, true], 'the running check and the clean ones end');
    await pool.close();
  });

  test('a queued check whose signal aborts (its client left) is never run; a running one ends; the client gets its share back', async () => {
    const pool = new HashPool(1, 32, 2);
    const slow = bcrypt.hashSync('pw', 8);
    const running = new AbortController();
    const queued = new AbortController();
    const first = pool.verify('pw', slow, 'a', running.signal);
    const gone = pool.verify('pw', slow, 'a', queued.signal);
    queued.abort();
    running.abort();
    assert.equal(await gone, undefined, 'the queued check is withdrawn at once');
    assert.equal(pool.withdrawn, 1);
    assert.equal(pool.pending, 1, 'only the running check is left');
    const next = pool.verify('pw', slow, 'a');
    assert.equal(await first, true, 'a check already running goes to its end');
    assert.equal(await next, true, 'the withdrawn check no longer counts in the client share');
    assert.equal(pool.started, 2, 'the withdrawn check never reached a worker');
    assert.equal(await pool.verify('pw', slow, 'a', AbortSignal.abort()), undefined, 'an aborted signal queues nothing');
    assert.equal(pool.started, 2);
    await pool.close();
  });

  test('a check in progress holds the process open; an idle pool does not (regression: it held it for the idle timeout)', () => {
    const pool = new URL('../../src/handlers/middleware/hash-pool.js', import.meta.url).href;
    const script = `import { HashPool } from ${JSON.stringify(pool)};
      import bcrypt from ${JSON.stringify(import.meta.resolve('bcryptjs'))};
      const pool = new HashPool(1, 1);
      console.log(await pool.verify('pw', bcrypt.hashSync('pw', 4), 'a'));`;
    // Within 10 s, well under the pool's 30 s idle timeout: the worker no longer holds the process once idle.
    // A file, not --eval: the worker would inherit --input-type, which Node refuses for a file.
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'portico-pool-')), 'check.mjs');
    writeFileSync(file, script);
    const child = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 10_000, cwd: process.cwd() });
    rmSync(path.dirname(file), { recursive: true, force: true });
    assert.equal(child.signal, null, 'the process ended by itself');
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'true', 'the check finished before the process ended');
  });
});
