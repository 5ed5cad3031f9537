/**
 * The serialised operations queue (src/server/operations.ts): one at a time, in the order asked; one result shape
 * for success and every kind of failure; queued operations refused once the server stops.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { ConfigError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { Operations, type OperationParts } from '../../src/server/operations.js';

const config = parseConfig(
  'upstreams:\n  fixed: { servers: ["http://127.0.0.1:1"] }\n  app:\n    spawn: { command: "node app.js", ports: 3001-3010 }\nsites:\n  - routes: [{ path: /, respond: {} }]\n',
  '/srv/portico.yaml',
  '/srv',
);

function operations(parts: Partial<OperationParts> = {}): Operations {
  return new Operations({ config: () => config, reloadFile: async () => ({}), status: () => ({ pid: 1 }), ...parts }, pino({ level: 'silent' }));
}

test('operations run one at a time, in the order asked, and a failed one does not hold the next up', async () => {
  const order: string[] = [];
  let running = 0;
  let most = 0;
  const ops = operations();
  const task = (name: string, fail = false) =>
    ops.serialise(name, async () => {
      running++;
      most = Math.max(most, running);
      order.push(`start ${name}`);
      await new Promise((resolve) => setImmediate(resolve));
      order.push(`end ${name}`);
      running--;
      if (fail) throw new Error(`${name} broke`);
      return name;
    });
  const results = await Promise.allSettled([task('a'), task('b', true), task('c')]);
  assert.equal(most, 1);
  assert.deepEqual(order, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  assert.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
});

test('a reload whose config is invalid answers ok: false with the code and every issue as file:line:col key: message', async () => {
  const ops = operations({
    reloadFile: async () => {
      throw new ConfigError([
        { file: '/srv/portico.yaml', line: 3, col: 5, keyPath: 'sites[0].colour', message: 'unknown key' },
        { file: '/srv/portico.yaml', line: 9, col: 1, keyPath: 'listen', message: 'bad address' },
      ]);
    },
  });
  const result = await ops.reload();
  assert.equal(result.ok, false);
  assert.equal(result.operation, 'reload');
  assert.deepEqual(result.ok ? undefined : result.error, {
    code: 'PORTICO_CONFIG_INVALID',
    message: '2 errors in /srv/portico.yaml',
    issues: ['/srv/portico.yaml:3:5 sites[0].colour: unknown key', '/srv/portico.yaml:9:1 listen: bad address'],
  });
});

test('deploy: an unknown upstream, one without spawn, and a process without a supervisor each fail with their own code', async () => {
  const ops = operations();
  const codes = [];
  for (const upstream of ['nosuch', 'fixed', 'app']) {
    const result = await ops.deploy(upstream);
    assert.equal(result.ok, false);
    codes.push(result.ok ? '' : result.error.code);
  }
  assert.deepEqual(codes, ['PORTICO_UNKNOWN_UPSTREAM', 'PORTICO_NOT_APPLICABLE', 'PORTICO_UNSUPPORTED']);
  const upgrade = await ops.upgrade();
  assert.equal(upgrade.ok ? '' : upgrade.error.code, 'PORTICO_UNSUPPORTED');
});

test('deploy hands the events to progress and answers with the report; a deploy that throws answers its error', async () => {
  const events: string[] = [];
  const ops = operations({
    deploy: async (upstream, progress) => {
      progress({ message: `${upstream}#1 ready`, slot: `${upstream}#1` });
      progress({ step: 'drain' });
      return { replaced: 1 };
    },
  });
  const result = await ops.deploy('app', (event) => events.push(event.message));
  assert.equal(result.ok, true);
  assert.deepEqual(result.report, { replaced: 1 });
  assert.deepEqual(events, ['deploying upstream "app"', 'app#1 ready', '{"step":"drain"}']);
  const broken = operations({ deploy: async () => Promise.reject(new Error('instance app#2 never became healthy')) });
  const failed = await broken.deploy('app');
  assert.deepEqual(failed.ok ? undefined : failed.error, { code: 'PORTICO_INTERNAL', message: 'instance app#2 never became healthy' });
});

test('status answers at once while an operation runs, naming it and the queue', async () => {
  let release!: () => void;
  const ops = operations({ reloadFile: () => new Promise((resolve) => (release = () => resolve({})))});
  const first = ops.reload();
  const second = ops.reload();
  await new Promise((resolve) => setImmediate(resolve));
  const status = ops.status();
  assert.equal(status.ok, true);
  assert.equal(status.pid, 1);
  assert.deepEqual({ ...(status.running as object), for_ms: 0 }, { id: 1, operation: 'reload', for_ms: 0 });
  assert.equal(status.queued, 1);
  release();
  await first;
  release();
  assert.equal((await second).ok, true);
});

test('once stopped, operations still queued and new ones fail with PORTICO_STOPPING', async () => {
  let release!: () => void;
  const ops = operations({ reloadFile: () => new Promise((resolve) => (release = () => resolve({})))});
  const running = ops.reload();
  const queued = ops.reload();
  await new Promise((resolve) => setImmediate(resolve));
  ops.stop();
  release();
  assert.equal((await running).ok, true);
  const refused = await queued;
  assert.equal(refused.ok ? '' : refused.error.code, 'PORTICO_STOPPING');
  const late = await ops.run({ operation: 'reload' }, () => {});
  assert.equal(late.ok ? '' : late.error.code, 'PORTICO_STOPPING');
});

test('a request for another config file is refused before it is queued', async () => {
  const result = await operations().run({ operation: 'status', config: '/elsewhere/portico.yaml' }, () => {});
  assert.equal(result.ok, false);
  assert.match(result.ok ? '' : result.error.message, /serves \/srv\/portico\.yaml, not \/elsewhere\/portico\.yaml/);
});

test('reopen is not queued: it answers while a deploy runs, with what it reopened; a failure answers ok: false; a process without it refuses', async () => {
  let finishDeploy: () => void = () => {};
  const ops = operations({
    deploy: () => new Promise<unknown>((resolve) => (finishDeploy = () => resolve({ slots: [] }))),
    reopen: async () => ({ files: ['/var/log/portico/access.log'] }),
  });
  const deploy = ops.deploy('app');
  await new Promise((resolve) => setImmediate(resolve));
  const reopened = await ops.run({ operation: 'reopen' }, () => {});
  assert.deepEqual(reopened, { ok: true, operation: 'reopen', files: ['/var/log/portico/access.log'] });
  finishDeploy();
  assert.equal((await deploy).ok, true);

  const broken = await operations({ reopen: async () => Promise.reject(new Error('EACCES')) }).reopen();
  assert.deepEqual(broken, { ok: false, operation: 'reopen', error: { code: 'PORTICO_INTERNAL', message: 'EACCES' } });
  const none = await operations().reopen();
  assert.equal(none.ok ? undefined : none.error.code, 'PORTICO_UNSUPPORTED');
});
