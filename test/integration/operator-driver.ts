/**
 * Not a test: the primary of `workers: N` in a process of its own, for operator-process.test.ts, which asks it over
 * IPC what the admin API will (`Primary.serverAction`, `Primary.purgeTarget`, a reload, the workers) until the
 * admin API serves them. Its workers are this same script (node:cluster re-runs it), serving as `portico run`'s do.
 *
 * Usage: fork(`operator-driver.js`, [configFile]); it sends `{ ready: { port } }`, then answers each
 * `{ id, op, ... }` with `{ id, result }` or `{ id, error: { message, status } }`.
 */
import pino from 'pino';
import type { PurgeTarget, ServerAction } from '../../src/control/admin-types.js';
import { primaryOrWorker } from '../helpers/primary.js';

/** What the test asks. */
export type DriverRequest =
  | { id: number; op: 'action'; upstream: string; server: string; action: ServerAction }
  | { id: number; op: 'purge'; zone: string; target: PurgeTarget }
  | { id: number; op: 'workers' }
  | { id: number; op: 'reload' }
  | { id: number; op: 'stop' };

const file = process.argv[2]!;
const logger = pino({ level: 'silent' });

const primary = await primaryOrWorker(file, logger, (line) => void process.stderr.write(`${line}\n`));
if (primary !== undefined) {
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
