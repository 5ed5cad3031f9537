/** The error log: pino to stderr, at the configured level. */
import pino, { type Logger } from 'pino';

/** Creates the process's error logger. */
export function createErrorLog(level: string): Logger {
  return pino({ level, base: undefined }, pino.destination({ dest: 2, sync: true }));
}
