/** What a reload reads but applies only on restart (server/restart-only.ts): said, not silently ignored. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { parseConfig } from '../../src/server/config.js';
import { restartOnlyChanges } from '../../src/server/restart-only.js';

const site = 'sites:\n  - routes:\n      - path: /\n        respond: { status: 200 }\n';

function withCluster(lines: string): ReturnType<typeof parseConfig> {
  process.env.PORTICO_TEST_KEY = 'k'.repeat(64);
  return parseConfig(`cluster:\n  redis: redis://127.0.0.1:6379/0\n  key_env: PORTICO_TEST_KEY\n  name: box1\n${lines}${site}`, 'portico.yaml', tmpdir());
}

test('a reload that changes cluster.timeout or cluster.boxes says they take effect on restart (the link keeps its own)', () => {
  const before = withCluster('  timeout: 50ms\n  boxes: 3\n');
  assert.deepEqual(restartOnlyChanges(before, withCluster('  timeout: 50ms\n  boxes: 3\n')), []);
  for (const lines of ['  timeout: 100ms\n  boxes: 3\n', '  timeout: 50ms\n  boxes: 4\n', '  timeout: 50ms\n  boxes: 3\n  prefix: other\n']) {
    const warnings = restartOnlyChanges(before, withCluster(lines));
    assert.equal(warnings.length, 1, lines);
    assert.match(warnings[0]!, /cluster .*changed: takes effect on restart/, lines);
  }
});
