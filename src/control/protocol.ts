/**
 * The control channel's protocol: HTTP/1.1 over a unix socket. Each operation is `POST /v1/<operation>` with a
 * JSON body (`GET /v1/status` too); the answer is `200` with `application/x-ndjson`: one JSON object a line,
 * `{"progress": {...}}` as the operation goes, `{"heartbeat": true}` every few seconds while it runs or waits in
 * the queue, and last `{"result": {...}}`. A request that is refused before any operation starts (unknown route,
 * bad body) gets a 4xx status with the single `result` line. HTTP rather than bare JSON lines so that the admin
 * API (a later issue) serves the very same routes and handler on TCP, and `curl --unix-socket` can drive it.
 */
import path from 'node:path';
import { displayPath } from '../config/load.js';
import { ConfigError, formatConfigIssue, PorticoError } from '../errors.js';

/** The operations the channel carries. */
export const OPERATIONS = ['reload', 'deploy', 'upgrade', 'status', 'reopen'] as const;

/** One operation's name. */
export type OperationName = (typeof OPERATIONS)[number];

/** What a client asks: the operation, the config file it thinks the Portico serves, and the operation's argument. */
export interface OperationRequest {
  operation: OperationName;
  /** The absolute path of the client's config file: a Portico serving another file refuses (PORTICO_NOT_APPLICABLE). */
  config?: string;
  /** deploy: the upstream to roll. */
  upstream?: string;
}

/** A failed operation's error: a stable code, a message, and for a config that cannot be loaded every issue. */
export interface OperationError {
  code: string;
  message: string;
  /** `file:line:col key.path: message`, one per config issue. */
  issues?: string[];
}

/** An operation's outcome: `ok` with what it did, or the error. The one shape every operation answers with. */
export type OperationResult = ({ ok: true } & Record<string, unknown>) | { ok: false; error: OperationError; [key: string]: unknown };

/** One step of an operation under way, as a line a person can read plus whatever data goes with it. */
export interface ProgressEvent {
  message: string;
  [key: string]: unknown;
}

/** Where an operation reports its progress. */
export type Progress = (event: ProgressEvent) => void;

/** How often the server writes a heartbeat line while an operation runs or waits. */
export const HEARTBEAT_MS = 5_000;

/** One line of an answer. */
export type AnswerLine = { progress: ProgressEvent } | { heartbeat: true } | { result: OperationResult };

/** Any error as an operation's error: a config's issues each as a line; a Portico error with its code. */
export function operationError(err: unknown): OperationError {
  if (err instanceof ConfigError) {
    const count = err.issues.length;
    return {
      code: err.code,
      message: `${count} error${count === 1 ? '' : 's'} in ${path.resolve(err.issues[0]?.file ?? 'the config')}`,
      // Absolute file names: the client that prints them may run in another folder than the server.
      issues: err.issues.map((issue) => formatConfigIssue({ ...issue, file: path.resolve(issue.file) })),
    };
  }
  if (err instanceof PorticoError) {
    // An error that carries its own issue lines (an upgrade's new process that found errors in the config).
    const issues = (err as { issues?: unknown }).issues;
    return Array.isArray(issues) ? { code: err.code, message: err.message, issues: issues.map(String) } : { code: err.code, message: err.message };
  }
  return { code: 'PORTICO_INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

/** A failed result for an error. */
export function failed(err: unknown): OperationResult {
  return { ok: false, error: operationError(err) };
}

/** A progress event's line from whatever a part reported (its `message`, else its JSON). */
export function progressOf(event: unknown): ProgressEvent {
  if (event !== null && typeof event === 'object') {
    const message = (event as { message?: unknown }).message;
    if (typeof message === 'string') return event as ProgressEvent;
    return { ...(event as object), message: JSON.stringify(event) };
  }
  return { message: String(event) };
}

/**
 * An error's message and issue lines with the config's absolute file name (as the server sends them) shown as
 * `displayPath` shows it here: relative when below the working folder.
 */
export function displayError(error: OperationError, file: string): { message: string; issues: string[] } {
  const absolute = path.resolve(file);
  const shown = displayPath(absolute);
  return {
    message: error.message.replaceAll(absolute, shown),
    issues: (error.issues ?? []).map((issue) => (issue.startsWith(`${absolute}:`) ? `${shown}${issue.slice(absolute.length)}` : issue)),
  };
}
