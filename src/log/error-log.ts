/**
 * The error log: pino, to stderr or to a file (`log.error`), in one of two shapes (`log.error_format`): a line a
 * person reads (`2026-12-06T04:11:39.120Z WARN  upstream app: server down  upstream=app server=app%231`) or a JSON
 * object a machine reads (`{"level":"warn","time":"2026-12-06T04:11:39.120Z","msg":"…",…}`). `auto` (the default)
 * is the readable line on a terminal and JSON anywhere else (a pipe, a file, journald). Every line Portico writes
 * while it runs goes through it, so stderr has one shape. A file is opened in append mode and reopened by
 * `reopenErrorLogFiles()` (SIGUSR1, `portico reopen`) after a rotation.
 */
import pino, { type Logger } from 'pino';
import { inspect } from 'node:util';

/** How the error log writes its lines. */
export type ErrorLogFormat = 'pretty' | 'json' | 'auto';

/** Where and how the error log writes. */
export interface ErrorLogOptions {
  /** `pretty`, `json`, or `auto` (pretty on a terminal, else JSON). Default `auto`. */
  format?: ErrorLogFormat;
  /** `stderr` (the default) or a file path (appended to; reopened by `reopenErrorLogFiles`). */
  file?: string;
}

/** The file destinations of this process's error logs, for `reopenErrorLogFiles`. */
const files = new Set<pino.DestinationStream & { reopen(): void; flushSync(): void }>();

/** Level numbers to the names shown (pino's own). */
const LABELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** ANSI colours of the level names on a terminal. */
const COLOURS: Record<number, number> = { 10: 90, 20: 36, 30: 32, 40: 33, 50: 31, 60: 35 };

/** A field's value as shown on a readable line: bare when it is a plain word, else JSON (quoted, escaped). */
function fieldText(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=\\\x00-\x1f]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  if (value !== null && typeof value === 'object' && typeof (value as { message?: unknown }).message === 'string' && 'stack' in value) {
    // A serialised error: its message and code, not its stack (one line per entry).
    const err = value as unknown as { message: string; code?: unknown };
    return JSON.stringify(err.code === undefined ? err.message : `${err.message} (${String(err.code)})`);
  }
  try {
    return JSON.stringify(value);
  } catch {
    return JSON.stringify(inspect(value));
  }
}

/**
 * One JSON entry (as pino writes it) as one readable line: time, level name, message, then the fields as
 * `key=value`. Pure, for tests. `colour`: the level name in colour (a terminal without NO_COLOR).
 */
export function readableLine(json: string, colour = false): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const { level, time, msg, ...fields } = entry;
  const number = typeof level === 'number' ? level : 30;
  const name = (LABELS[number] ?? String(level)).padEnd(5);
  const shownLevel = colour ? `\x1b[${COLOURS[number] ?? 39}m${name}\x1b[39m` : name;
  const stamp = typeof time === 'number' ? new Date(time).toISOString() : String(time ?? new Date().toISOString());
  let line = `${stamp} ${shownLevel} ${typeof msg === 'string' ? msg.replace(/\n/g, '\\n') : ''}`;
  const keys = Object.keys(fields);
  if (keys.length > 0) line += ' ' + keys.map((key) => `${key}=${fieldText(fields[key])}`).join(' ');
  return `${line}\n`;
}

/** Whether `format` writes readable lines to `file` (`auto`: stderr is a terminal). */
export function isReadable(format: ErrorLogFormat, file: string): boolean {
  if (format !== 'auto') return format === 'pretty';
  return file === 'stderr' && process.stderr.isTTY === true;
}

/** Opens the destination: stderr (fd 2) or a file, appended to, with blocking writes (an error log is short and rare). */
function destination(file: string): pino.DestinationStream & { reopen(): void; flushSync(): void } {
  const dest = pino.destination({ dest: file === 'stderr' ? 2 : file, sync: true, append: true, mkdir: false });
  if (file !== 'stderr') files.add(dest);
  return dest;
}

/**
 * Creates the process's error logger at `level`. In JSON the level is its name and the time ISO 8601 (what log
 * shippers read without a mapping); readable lines are formatted from the same entries.
 */
export function createErrorLog(level: string, options: ErrorLogOptions = {}): Logger {
  const file = options.file ?? 'stderr';
  const dest = destination(file);
  if (isReadable(options.format ?? 'auto', file)) {
    const colour = file === 'stderr' && process.stderr.isTTY === true && (process.env.NO_COLOR ?? '') === '' && process.env.TERM !== 'dumb';
    // pino hands each entry to `write` as one JSON line: reformatted here (the error log is not a hot path).
    const readable = { write: (json: string) => void dest.write(readableLine(json.trimEnd(), colour)) };
    return pino({ level, base: undefined }, readable);
  }
  return pino(
    {
      level,
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
}

/**
 * Reopens every error-log file of this process at its path (after logrotate renamed it: the next line goes to a
 * new file). Returns the count reopened. stderr is never reopened.
 */
export function reopenErrorLogFiles(): number {
  for (const dest of files) {
    try {
      dest.flushSync();
    } catch {
      // Nothing buffered (writes are blocking).
    }
    dest.reopen();
  }
  return files.size;
}
