/**
 * examples/portico.service and examples/logrotate, as docs/operations.md ("Running as a service", "Reopening log
 * files with logrotate") describes them: parsed, and their key lines checked; systemd's own parser
 * (`systemd-analyze verify`) reads the unit without a complaint where it is installed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { haveTool } from '../helpers/tools.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const unitFile = path.join(root, 'examples/portico.service');

/** A unit file as sections of `key → values` (a key may be given more than once), comments and blanks left out. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const section = /^\[([A-Za-z]+)\]$/.exec(line);
    if (section !== null) {
      current = new Map();
      sections.set(section[1]!, current);
      return;
    }
    const pair = /^([A-Za-z]+)=(.*)$/.exec(line);
    assert.ok(pair !== null && current !== undefined, `portico.service line ${index + 1} is no key=value in a section: ${raw}`);
    const values = current.get(pair[1]!) ?? [];
    values.push(pair[2]!);
    current.set(pair[1]!, values);
  });
  return sections;
}

describe('examples/portico.service', () => {
  const unit = parseUnit(readFileSync(unitFile, 'utf8'));
  const service = unit.get('Service')!;
  const one = (key: string): string | undefined => service.get(key)?.at(-1);

  test('has the [Unit], [Service] and [Install] sections, starts `portico run` with --disable-sigusr1 and reloads through `portico reload` on the same config', () => {
    assert.deepEqual([...unit.keys()], ['Unit', 'Service', 'Install']);
    const start = /^(\S+node) --disable-sigusr1 (\S+\/dist\/src\/cli\.js) run -c (\S+)$/.exec(one('ExecStart') ?? '');
    assert.ok(start !== null, `ExecStart runs portico run -c FILE: ${one('ExecStart')}`);
    assert.equal(one('ExecReload'), `${start[1]} ${start[2]} reload -c ${start[3]}`);
    assert.equal(one('KillSignal'), 'SIGTERM');
    assert.equal(one('Type'), 'simple');
    assert.equal(unit.get('Install')!.get('WantedBy')?.[0], 'multi-user.target');
  });

  test('runs as User=portico with CAP_NET_BIND_SERVICE as its only capability, its state and log folders made by systemd', () => {
    assert.equal(one('User'), 'portico');
    assert.equal(one('AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
    assert.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
    assert.equal(one('StateDirectory'), 'portico');
    assert.equal(one('StateDirectoryMode'), '0700', 'Portico refuses a state directory others can write to');
    assert.equal(one('LogsDirectory'), 'portico');
  });

  test('is hardened: no new privileges, a read-only system, private /tmp and devices, no MemoryDenyWriteExecute (V8 JIT)', () => {
    for (const [key, value] of [
      ['NoNewPrivileges', 'yes'],
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['PrivateDevices', 'yes'],
      ['RestrictSUIDSGID', 'yes'],
      ['SystemCallFilter', '@system-service'],
    ]) {
      assert.equal(one(key!), value, key);
    }
    assert.equal(service.has('MemoryDenyWriteExecute'), false);
  });

  test('systemd-analyze verify reads it without an unknown key or a bad value (where systemd is installed)', (t) => {
    if (!haveTool('systemd-analyze')) return t.skip('systemd-analyze is not installed');
    const run = spawnSync('systemd-analyze', ['verify', unitFile], { encoding: 'utf8', timeout: 20_000 });
    const complaints = `${run.stdout}${run.stderr}`.split('\n').filter((line) => line.includes('portico.service'));
    assert.deepEqual(complaints, []);
  });
});

describe('examples/logrotate', () => {
  const text = readFileSync(path.join(root, 'examples/logrotate'), 'utf8');

  test('rotates /var/log/portico/*.log by renaming (no copytruncate) and has Portico reopen its files in postrotate', () => {
    assert.match(text, /^\/var\/log\/portico\/\*\.log \{$/m);
    assert.doesNotMatch(text, /^\s*copytruncate/m);
    assert.match(text, /^\s*sharedscripts$/m);
    const postrotate = /^\s*postrotate\n([\s\S]*?)^\s*endscript$/m.exec(text);
    assert.ok(postrotate !== null, 'a postrotate script');
    assert.match(postrotate[1]!, /cli\.js reopen -c \/etc\/portico\/portico\.yaml/);
    assert.match(postrotate[1]!, /kill -USR1 "\$\(cat \/var\/lib\/portico\/portico\.pid/);
  });

  test('docs/operations.md shows the same logrotate file as examples/logrotate', () => {
    const docs = readFileSync(path.join(root, 'docs/operations.md'), 'utf8');
    const body = text.slice(text.indexOf('/var/log/portico/*.log {'));
    assert.ok(docs.includes('```\n' + body + '```'), 'the docs\' block is the example, line for line');
  });
});
