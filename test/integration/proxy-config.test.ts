/**
 * Proxy and upstream config mistakes are refused at load, each with the line and key path that caused it.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { describe, test } from 'node:test';
import type { ConfigIssue } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { configIssues } from '../helpers/config.js';

/** The issues of a config that must not load. */
function issuesOf(text: string): readonly ConfigIssue[] {
  return configIssues(text, tmpdir());
}

/** The 1-based line of the first line of `text` containing `needle`. */
function lineOf(text: string, needle: string): number {
  const index = text.split('\n').findIndex((line) => line.includes(needle));
  assert.ok(index >= 0, `no line contains ${needle}`);
  return index + 1;
}

function assertIssue(text: string, keyPath: string, message: RegExp, lineNeedle: string): void {
  const issues = issuesOf(text);
  const issue = issues.find((i) => i.keyPath === keyPath);
  assert.ok(issue !== undefined, `no issue at ${keyPath}: ${JSON.stringify(issues)}`);
  assert.match(issue.message, message);
  assert.equal(issue.line, lineOf(text, lineNeedle), `line of ${keyPath}`);
  assert.ok(issue.col >= 1);
}

const route = `sites:
  - routes:
      - path: /
        proxy: { upstream: app }
`;

describe('proxy and upstream config errors', () => {
  test('an upstream URL that is not a URL, or has another scheme, is an error at its line', () => {
    const bad = `upstreams:
  app:
    servers:
      - url: "not a url"
${route}`;
    assertIssue(bad, 'upstreams.app.servers[0].url', /not a valid URL/, 'not a url');
    const ftp = `upstreams:
  app:
    servers:
      - url: "http://127.0.0.1:3000"
      - url: "ftp://127.0.0.1:21"
${route}`;
    assertIssue(ftp, 'upstreams.app.servers[1].url', /unsupported scheme "ftp"/, 'ftp://');
    const query = `upstreams:\n  app:\n    servers: [{ url: "http://127.0.0.1:3000/x?y=1" }]\n${route}`;
    assertIssue(query, 'upstreams.app.servers[0].url', /no user, query or fragment/, '?y=1');
  });

  test('a proxy naming an unknown upstream is an error that lists the defined ones', () => {
    const text = `upstreams:
  app:
    servers: [{ url: "http://127.0.0.1:3000" }]
sites:
  - routes:
      - path: /
        proxy:
          upstream: appp
`;
    assertIssue(text, 'sites[0].routes[0].proxy.upstream', /unknown upstream "appp" \(defined: app\)/, 'upstream: appp');
  });

  test('an empty server list is an error', () => {
    const text = `upstreams:
  app:
    servers: []
${route}`;
    assertIssue(text, 'upstreams.app.servers', /at least one server/, 'servers: []');
  });

  test('an unknown policy is an error that lists the known ones', () => {
    const text = `upstreams:
  app:
    policy: fastest
    servers: [{ url: "http://127.0.0.1:3000" }]
${route}`;
    assertIssue(text, 'upstreams.app.policy', /unknown policy "fastest" \(expected one of: round_robin, /, 'policy: fastest');
  });

  test('strip_prefix on a regex route is an error', () => {
    const text = `sites:
  - routes:
      - path: "~ ^/api/v[0-9]+/"
        proxy:
          url: "http://127.0.0.1:3000"
          strip_prefix: true
`;
    assertIssue(text, 'sites[0].routes[0].proxy.strip_prefix', /needs a prefix or exact route/, 'strip_prefix');
  });

  test('a proxy with both upstream and url, or neither, is an error', () => {
    const both = `upstreams:
  app:
    servers: [{ url: "http://127.0.0.1:3000" }]
sites:
  - routes:
      - path: /
        proxy: { upstream: app, url: "http://127.0.0.1:3001" }
`;
    assertIssue(both, 'sites[0].routes[0].proxy', /either an "upstream" or a "url"/, 'proxy: {');
  });

  test('several mistakes are all reported at once, in file order', () => {
    for (const text of [
      `upstreams:\n  app:\n    servers: [{ url: "nope" }]\n  other:\n    servers: []\n${route}`,
      `upstreams:\n  app:\n    policy: fastest\n    servers: [{ url: "http://127.0.0.1:3000" }]\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: nope }\n`,
    ]) {
      const issues = issuesOf(text);
      assert.equal(issues.length, 2, JSON.stringify(issues));
      const lines = issues.map((i) => i.line);
      assert.deepEqual(lines, [...lines].sort((a, b) => a - b));
    }
  });

  test('retry_on and passive.on accept bare statuses, which YAML reads as numbers (regression)', () => {
    const config = parseConfig(
      `upstreams:
  app:
    servers: [{ url: "http://127.0.0.1:3000" }]
    retry_on: [connect_error, 502, "503"]
    passive: { on: [timeout, 500] }
${route}`,
      'portico.yaml',
      tmpdir(),
    );
    assert.deepEqual(config.upstreams.app!.retry_on, ['connect_error', '502', '503']);
    assert.deepEqual(config.upstreams.app!.passive.on, ['timeout', '500']);
    const issues = issuesOf(`upstreams:\n  app:\n    servers: [{ url: "http://127.0.0.1:3000" }]\n    retry_on: [501]\n${route}`);
    assert.equal(issues[0]!.keyPath, 'upstreams.app.retry_on[0]');
  });
});
