/**
 * Loading a config for this build of Portico: the config layer validates against the handler kinds and
 * load-balancing policies registered above it, which are handed in here (config/ never imports them).
 */
import { loadConfigFileWith, parseConfigWith, type Config } from '../config/load.js';
import type { ConfigParts } from '../config/schema.js';
import { handlerKinds, middlewareKinds } from '../handlers/index.js';
import { POLICY_NAMES } from '../upstream/policies/index.js';

export type { Config };

/** The handler kinds, middleware kinds and policies a config may name (as registered now). */
export function configParts(): ConfigParts {
  return { handlers: handlerKinds(), middlewares: middlewareKinds(), policies: POLICY_NAMES };
}

/** Parses and validates config text; `file` names it in errors, `dir` anchors relative paths. */
export function parseConfig(text: string, file: string, dir?: string): Config {
  return parseConfigWith(configParts(), text, file, dir);
}

/** Reads and parses a config file. Throws `ConfigError` (with every issue) or the file-system error. */
export function loadConfigFile(file: string): Config {
  return loadConfigFileWith(configParts(), file);
}
