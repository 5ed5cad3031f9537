/**
 * SIGHUP reload of a real `portico run` process: a good config is picked up; a config that does not parse or
 * validate is reported and the old one keeps serving; a config that validates but cannot start (its listen
 * address is taken) is reported and the old one keeps serving on its port.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { makeTree } from '../helpers/portico.js';
import { PorticoProcess } from '../helpers/process.js';

const dir = makeTree({});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A config with one respond route answering `body` on every path. */
function respondConfig(listen: string, body: string): string {
  return `listen: ["${listen}"]\nlog: { access: off }\nsites:\n  - routes:\n      - path: /\n        respond: { body: "${body}" }\n`;
}

/** The body of GET / on a fresh connection. */
async function body(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: 'close' } });
  assert.equal(res.status, 200);
  return res.text();
}

/** Starts Portico from a config answering "one", with the file then naming the port it got (as an operator's would). */
async function startServingOne(name: string): Promise<PorticoProcess> {
  const file = path.join(dir, name);
  writeFileSync(file, respondConfig('127.0.0.1:0', 'one'));
  const portico = await PorticoProcess.start(file, dir);
  assert.equal(await body(portico.port), 'one');
  return portico;
}

describe('SIGHUP reload of a running portico', { concurrency: true }, () => {
  test('a good new config is picked up: "config reloaded" is logged and the same port answers with the new body', async () => {
    const portico = await startServingOne('good.yaml');
    try {
      const { line, log } = await portico.reload(respondConfig(`127.0.0.1:${portico.port}`, 'two'));
      assert.equal(line, 'portico: config reloaded', log);
      assert.equal(await body(portico.port), 'two');
      // And again: reload is not a one-shot.
      const again = await portico.reload(respondConfig(`127.0.0.1:${portico.port}`, 'three'));
      assert.equal(again.line, 'portico: config reloaded', again.log);
      assert.equal(await body(portico.port), 'three');
    } finally {
      assert.equal(await portico.stop(), 0, portico.stderr);
    }
  });

  test('a config with a YAML syntax error or a schema error is reported with file:line:col and the old config keeps serving', async () => {
    const portico = await startServingOne('broken.yaml');
    try {
      const yaml = await portico.reload('listen: ["127.0.0.1:0"\nsites: [\n');
      assert.equal(yaml.line, 'portico: reload refused, still serving the previous config', yaml.log);
      assert.match(yaml.log, /broken\.yaml:\d+:\d+ /, 'the YAML error says where');
      assert.equal(await body(portico.port), 'one');

      const schema = await portico.reload(`${respondConfig(`127.0.0.1:${portico.port}`, 'two')}colour: red\n`);
      assert.equal(schema.line, 'portico: reload refused, still serving the previous config', schema.log);
      assert.match(schema.log, /broken\.yaml:7:1 colour: unknown key/);
      assert.equal(await body(portico.port), 'one');

      // The process is still healthy: a fixed config is then picked up.
      const fixed = await portico.reload(respondConfig(`127.0.0.1:${portico.port}`, 'fixed'));
      assert.equal(fixed.line, 'portico: config reloaded', fixed.log);
      assert.equal(await body(portico.port), 'fixed');
    } finally {
      assert.equal(await portico.stop(), 0, portico.stderr);
    }
  });

  test('a config that validates but cannot start (its disk cache folder is a file) is reported as "reload failed" and the old config keeps serving', async () => {
    const portico = await startServingOne('disk.yaml');
    try {
      writeFileSync(path.join(dir, 'not-a-folder'), 'a file where the cache folder should be');
      const { line, log } = await portico.reload(
        `caches:\n  main: { memory: 1MB, disk: { path: ./not-a-folder, size: 10MB } }\n${respondConfig(`127.0.0.1:${portico.port}`, 'two')}`,
      );
      assert.match(line, /^portico: reload failed: /, log);
      assert.equal(await body(portico.port), 'one');
    } finally {
      assert.equal(await portico.stop(), 0, portico.stderr);
    }
  });

  test(
    'a config that validates but cannot start (its listen address is held by another server) is reported, and the old config keeps serving on its port',
    async () => {
      const holder = net.createServer();
      holder.listen(0, '127.0.0.1');
      await once(holder, 'listening');
      const held = (holder.address() as net.AddressInfo).port;
      const portico = await startServingOne('taken.yaml');
      try {
        const { line, log } = await portico.reload(respondConfig(`127.0.0.1:${held}`, 'two'));
        assert.match(line, /^portico: reload failed: cannot listen on 127\.0\.0\.1:\d+: address already in use \(PORTICO_LISTEN_FAILED\); still serving the previous config$/, log);
        assert.equal(await body(portico.port), 'one', 'the old config still answers on the old port');
      } finally {
        assert.equal(await portico.stop(), 0, portico.stderr);
        holder.close();
        await once(holder, 'close');
      }
    },
  );
});
