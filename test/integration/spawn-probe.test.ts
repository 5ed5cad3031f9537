/**
 * Regression tests for defects found by trying spawn, deploy and reload as a user would (issue 17's probe):
 * real Portico in this process, real app processes (test/fixtures/spawn-app.mjs), real sockets on loopback.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';
import { makeTree } from '../helpers/portico.js';
import { APP, portRange } from '../helpers/supervise.js';
import { httpRequest } from './proxy-support.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) {
    try {
      await cleanup();
    } catch {
      // Already stopped by its test.
    }
  }
});

/** A config with a fixed route answering `word` and an upstream `app` of one spawned instance. */
function configText(word: string, ports: string, spawnExtra = ''): string {
  return [
    'listen: ["127.0.0.1:0"]',
    'log: { access: off }',
    'upstreams:',
    '  app:',
    `    spawn: { command: ["node", ${JSON.stringify(APP)}], instances: 1, ports: ${ports}, health_timeout: 20s${spawnExtra} }`,
    'sites:',
    '  - routes:',
    `      - { path: /word, respond: { body: "${word}" } }`,
    '      - { path: /, proxy: { upstream: app } }',
    '',
  ].join('\n');
}

describe('spawn and reload, as a user meets them', () => {
  test('a reload whose spawn names a user that cannot be used is refused before the swap: the previous config keeps serving, and a later reload works', async () => {
    const dir = makeTree({});
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'portico.yaml');
    const range = portRange(4);
    writeFileSync(file, configText('one', range.text));
    const server = new Portico(parseConfig(configText('one', range.text), file, dir), pino({ level: 'silent' }));
    cleanups.push(() => server.stop(100));
    await server.start();
    const port = server.addresses[0]!.port;
    assert.equal((await httpRequest(port, '/word')).body.toString(), 'one');

    // Not root: "needs Portico to run as root"; root: "no user ... on this system". Either way refused.
    const broken = parseConfig(configText('two', range.text, ', user: no-such-user-portico-probe'), file, dir);
    await assert.rejects(server.reload(broken), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'PORTICO_SPAWN_FAILED');
      assert.match(err.message, /^upstreams\.app\.spawn(\.user)?: /);
      return true;
    });
    assert.equal(server.config.upstreams.app!.spawn!.user, undefined, 'the previous config is still the one in service');
    assert.equal((await httpRequest(port, '/word')).body.toString(), 'one', 'the previous routes answer');
    assert.equal((await httpRequest(port, '/')).status, 200, 'the instance still serves');

    await server.reload(parseConfig(configText('three', range.text), file, dir));
    assert.equal((await httpRequest(port, '/word')).body.toString(), 'three');
  });
});
