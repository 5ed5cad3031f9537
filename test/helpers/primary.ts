/**
 * The start of a test script that runs the primary of `workers: N` in a process of its own (`fork(script,
 * [configFile])`), as `portico run` does: node:cluster re-runs the same script in each worker, which serves.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../../src/config/load.js';
import { parseConfig } from '../../src/server/config.js';
import { Primary, serveWorker } from '../../src/server/workers.js';

/**
 * In a worker: serves `file`'s config as `portico run`'s workers do, and resolves undefined. In the primary:
 * resolves with a started `Primary` of `file` (reloads read the file again), its lines given to `say`.
 */
export async function primaryOrWorker(file: string, logger: Logger, say: (line: string) => void): Promise<Primary | undefined> {
  if (cluster.isWorker) {
    await serveWorker(logger, {
      parse: (text: string): Config | undefined => {
        try {
          return parseConfig(text, file);
        } catch {
          return undefined;
        }
      },
    });
    return undefined;
  }
  const load = () => {
    const text = readFileSync(file, 'utf8');
    return { config: parseConfig(text, file), text };
  };
  const { config, text } = load();
  const primary = new Primary(config, logger, { text, load, say });
  await primary.start();
  return primary;
}
