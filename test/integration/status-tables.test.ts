/**
 * `portico status` against a real `portico run`: the process lines, then tables of upstream servers, routes and
 * caches built from the admin API's report over the control socket; `--json` prints the `/v1/status` result with
 * that report (the /status view as JSON).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { PorticoProcess, runCli } from '../helpers/process.js';
import { startUpstream } from '../helpers/upstream.js';

const cleanups: Array<() => Promise<unknown> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

test('portico status prints the servers, routes and caches as tables (no colour off a terminal); --json is the /v1/status result with the whole /status report', async () => {
  const one = await startUpstream('one');
  cleanups.push(() => one.stop());
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-status-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'portico.yaml');
  writeFileSync(
    file,
    [
      'listen: ["127.0.0.1:0"]',
      'log: { access: off }',
      'admin: {}',
      'caches:',
      '  pages: { memory: 1MB }',
      'upstreams:',
      `  app: { servers: [{ url: "${one.url}", name: one }] }`,
      'sites:',
      '  - routes: [{ path: /, proxy: { upstream: app, cache: { zone: pages } } }]',
      '',
    ].join('\n'),
  );
  const portico = await PorticoProcess.start(file, dir);
  cleanups.push(() => portico.stop());
  for (let i = 0; i < 5; i++) assert.equal((await fetch(`http://127.0.0.1:${portico.port}/n${i}`)).status, 200);

  const plain = await runCli(['status', '-c', file], dir);
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, new RegExp(`^listen +http://127\\.0\\.0\\.1:${portico.port}/$`, 'm'), 'the process lines come first, as before');
  assert.match(plain.stdout, /^UPSTREAM +SERVER +ADDRESS +STATE +WEIGHT/m);
  assert.match(plain.stdout, new RegExp(`^app +one +${one.url.replace(/\./g, '\\.')} +healthy +1 +0 +5 +0 +0 `, 'm'));
  assert.match(plain.stdout, /^ROUTE +HANDLER +REQUESTS/m);
  assert.match(plain.stdout, /^\*\/ +proxy +5 +5 +0 +0 +0 /m);
  assert.match(plain.stdout, /^CACHE +ENTRIES/m);
  assert.match(plain.stdout, /^pages +\d+ /m);
  assert.doesNotMatch(plain.stdout, /\x1b\[/, 'no colour when stdout is not a terminal');

  const json = await runCli(['status', '--json', '-c', file], dir);
  assert.equal(json.code, 0, json.stderr);
  const result = JSON.parse(json.stdout) as Record<string, unknown>;
  assert.equal(result.ok, true);
  assert.equal(result.pid, portico.child.pid);
  const upstreams = result.upstreams as Array<{ name: string; servers: Array<{ id: string; requests: number }> }>;
  assert.ok(Array.isArray(upstreams) && upstreams.length > 0, json.stdout);
  assert.ok(Array.isArray(result.routes) && Array.isArray(result.caches) && typeof result.totals === 'object', 'the /status view: routes, caches, totals');
});
