/**
 * Config test helpers: every issue of a config that must be refused, formatted as `portico check` prints them.
 */
import assert from 'node:assert/strict';
import { ConfigError, formatConfigIssue, type ConfigIssue } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';

/** The issues of `text` (as `portico.yaml` in `dir`), as found; fails the test when the config is accepted. */
export function configIssues(text: string, dir: string): readonly ConfigIssue[] {
  try {
    parseConfig(text, 'portico.yaml', dir);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.issues;
  }
  assert.fail('expected the config to be refused');
}

/** The issues of `text` (as `portico.yaml` in `dir`), formatted; fails the test when the config is accepted. */
export function configErrors(text: string, dir: string): string[] {
  return configIssues(text, dir).map(formatConfigIssue);
}
