/**
 * A primary of `workers: N` for tests that call its admin parts (`statusReport()`, `metricsText()`) directly, as
 * the admin API does: run with `fork(thisFile, [configFile])`. It forks its workers from this same file (as
 * `portico run` forks from the CLI), says `{ t: 'ready', workers }` once they serve, and answers `{ t: 'status' }`,
 * `{ t: 'metrics' }` and `{ t: 'stop' }` messages from the test.
 */
import pino from 'pino';
import { primaryOrWorker } from './primary.js';

const file = process.argv[2]!;
const logger = pino({ level: 'silent' });

const primary = await primaryOrWorker(file, logger, () => undefined);
if (primary !== undefined) {
  process.on('message', (message: { t: string }) => {
    if (message.t === 'status') void primary.statusReport().then((report) => process.send!({ t: 'status', report }));
    else if (message.t === 'metrics') void primary.metricsText().then((metrics) => process.send!({ t: 'metrics', text: metrics.body }));
    else if (message.t === 'stop') void primary.stop(2000).then(() => process.exit(0));
  });
  // The test is gone: nothing will stop this primary otherwise.
  process.on('disconnect', () => void primary.stop(1000).then(() => process.exit(0)));
  process.send!({ t: 'ready', workers: primary.workers(), port: primary.addresses[0]!.port });
}
