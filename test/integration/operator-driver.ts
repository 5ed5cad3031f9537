/**
 * Not a test: the primary of `workers: N` in a process of its own, for operator-process.test.ts, which asks it over
 * IPC what the admin API will (`Primary.serverAction`, `Primary.purgeTarget`, a reload, the workers) until the
 * admin API serves them. Its workers are this same script (node:cluster re-runs it), serving as `portico run`'s do.
 *
 * Usage: fork(`operator-driver.js`, [configFile]); it sends `{ ready: { port } }`, then answers each
 * `{ id, op, ... }` with `{ id, result }` or `{ id, error: { message, status } }`.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { Primary, serveWorker } from '../../src/server/workers.js';
import type { PurgeTarget, ServerAction } from '../../src/control/admin-types.js';

/** What the test asks. */
export type DriverRequest =
  | { id: number; op: 'action'; upstream: string; server: string; action: ServerAction }
  | { id: number; op: 'purge'; zone: string; target: PurgeTarget }
  | { id: number; op: 'workers' }
  | { id: number; op: 'reload' }
  | { id: number; op: 'stop' };

const file = process.argv[2]!;
const logger = pino({ level: 'silent' });

if (cluster.isWorker) {
  await serveWorker(logger, {
    parse: (text) => {
      try {
        return parseConfig(text, file);
      } catch {
        return undefined;
      }
    },
  });
} else {
  const load = () => {
    const text = readFileSync(file, 'utf8');
    return { config: parseConfig(text, file), text };
  };
  const { config, text } = load();
  const primary = new Primary(config, logger, { text, load, say: (line) => void process.stderr.write(`${line}\n`) });
  await primary.start();
  process.send!({ ready: { port: primary.addresses[0]!.port } });
  process.on('message', (request: DriverRequest) => {
    const run = async (): Promise<unknown> => {
      switch (request.op) {
        case 'action':
          return primary.serverAction(request.upstream, request.server, request.action);
        case 'purge':
          return primary.purgeTarget(request.zone, request.target);
        case 'workers':
          return primary.workers();
        case 'reload':
          return primary.reload();
        case 'stop':
          await primary.stop(1000);
          return null;
      }
    };
    run().then(
      (result) => {
        process.send!({ id: request.id, result }, undefined, {}, () => {
          if (request.op === 'stop') process.exit(0);
        });
      },
      (err: unknown) => process.send!({ id: request.id, error: { message: (err as Error).message, status: (err as { status?: number }).status } }),
    );
  });
  process.on('disconnect', () => void primary.stop(1000).then(() => process.exit(0)));
}
