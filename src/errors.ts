/**
 * One table of Portico's errors. Each has a stable `code` (for logs, metrics and tests) and the HTTP status a
 * client sees. Clients only ever see the status and a generic page: never a message, a stack, a file path or an
 * upstream address. `errorPage()` is the one place that turns an error into a response body.
 */

import { STATUS_CODES } from 'node:http';

/** Stable error codes and the HTTP status each maps to. */
export const ERROR_CODES = {
  PORTICO_BAD_REQUEST: 400,
  PORTICO_BAD_PATH: 400,
  PORTICO_BAD_HOST: 400,
  /** The admin API: no credentials, or wrong ones. */
  PORTICO_UNAUTHORIZED: 401,
  PORTICO_FORBIDDEN: 403,
  PORTICO_NOT_FOUND: 404,
  PORTICO_METHOD_NOT_ALLOWED: 405,
  PORTICO_PRECONDITION_FAILED: 412,
  PORTICO_PAYLOAD_TOO_LARGE: 413,
  PORTICO_RANGE_NOT_SATISFIABLE: 416,
  PORTICO_EXPECTATION_FAILED: 417,
  PORTICO_MISDIRECTED: 421,
  /** The admin API: a peer sent too many wrong tokens; it is answered this until its minute is over. */
  PORTICO_TOO_MANY_REQUESTS: 429,
  PORTICO_INTERNAL: 500,
  PORTICO_BAD_GATEWAY: 502,
  PORTICO_UNAVAILABLE: 503,
  PORTICO_GATEWAY_TIMEOUT: 504,
  /** The client closed the connection before its answer was complete (nginx's 499). */
  PORTICO_CLIENT_CLOSED: 499,
  /** A gRPC call's deadline (`grpc-timeout`) passed while Portico was forwarding it (DEADLINE_EXCEEDED). */
  PORTICO_GRPC_DEADLINE: 504,
  /** The app server's answer ended before its promised length. */
  PORTICO_UPSTREAM_INCOMPLETE: 502,
  /** A listener could not be bound (a port in use, a permission): start or reload fails. */
  PORTICO_LISTEN_FAILED: 500,
  /** The state directory cannot be used (unsafe permissions, another owner, locked by another process). */
  PORTICO_STATE_DIR: 500,
  /** A worker process (`workers: N`) could not start. */
  PORTICO_WORKER_FAILED: 500,
  /** A reload with `workers: N`: some worker (or every one) did not take the new config. */
  PORTICO_RELOAD_FAILED: 500,
  /** `portico reopen` / SIGUSR1 with `workers: N`: some worker did not reopen its log files (or did not answer). */
  PORTICO_REOPEN_FAILED: 500,
  /** A certificate handed to the certificate store at runtime (ACME) is no PEM, or its key does not match it. */
  PORTICO_BAD_CERTIFICATE: 500,
  /** An app server Portico runs (`spawn`) cannot be started as configured (user/group without root, no such user). */
  PORTICO_SPAWN_FAILED: 500,
  /** A rolling deploy stopped: a new instance was never ready; the replaced slots were rolled back. */
  PORTICO_DEPLOY_FAILED: 500,
  /** Two parts registered under one name (a handler kind, a policy): a programming error found at start-up. */
  PORTICO_DUPLICATE_NAME: 500,
  /** The control socket cannot be bound (another Portico answers on it, its path is too long) or reached. */
  PORTICO_CONTROL: 500,
  /** An operation names an upstream the config does not have. */
  PORTICO_UNKNOWN_UPSTREAM: 404,
  /** An operation names a server its upstream does not have. */
  PORTICO_UNKNOWN_SERVER: 404,
  /** An operation names a cache zone the config does not have. */
  PORTICO_UNKNOWN_ZONE: 404,
  /** An operation does not apply (a deploy of an upstream without `spawn`, a control call for another config). */
  PORTICO_NOT_APPLICABLE: 409,
  /** An operation this process cannot do (nothing was built in to do it). */
  PORTICO_UNSUPPORTED: 501,
  /** No Portico answers on the control socket (none there, or a stale one left by a crash). */
  PORTICO_NOT_RUNNING: 503,
  /** Portico is stopping: the operation was not started. */
  PORTICO_STOPPING: 503,
  PORTICO_UPGRADE_RUNNING: 409,
  PORTICO_UPGRADE_FAILED: 500,
} as const;

/** One of Portico's stable error codes. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** An error with a stable code and the HTTP status a client should see for it. */
export class PorticoError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PorticoError';
    this.code = code;
    this.status = ERROR_CODES[code];
  }
}

/** A configuration problem, located in the file that caused it. */
export interface ConfigIssue {
  file: string;
  /** 1-based; 0 (and `col` 0) when the issue is the file as a whole (it cannot be read). */
  line: number;
  col: number;
  /** Path of the key, e.g. `sites[0].routes[1].static.root`. */
  keyPath: string;
  message: string;
}

/** Raised when a config cannot be loaded; carries every issue found, not just the first. */
export class ConfigError extends Error {
  readonly code = 'PORTICO_CONFIG_INVALID';
  readonly issues: readonly ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    super(issues.map(formatConfigIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** An error for a terminal or a log line: its message, and its stable code when it is one of Portico's. */
export function describeError(err: unknown): string {
  if (err instanceof PorticoError) return `${err.message} (${err.code})`;
  return err instanceof Error ? err.message : String(err);
}

/** `file:line:col key.path: message`, the form `portico check` prints (`file: message` for the file as a whole). */
export function formatConfigIssue(issue: ConfigIssue): string {
  const where = issue.line === 0 ? `${issue.file}:` : `${issue.file}:${issue.line}:${issue.col}`;
  return issue.keyPath ? `${where} ${issue.keyPath}: ${issue.message}` : `${where} ${issue.message}`;
}

const REASONS: Record<number, string> = {
  200: 'OK',
  204: 'No Content',
  206: 'Partial Content',
  301: 'Moved Permanently',
  302: 'Found',
  303: 'See Other',
  304: 'Not Modified',
  307: 'Temporary Redirect',
  308: 'Permanent Redirect',
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  414: 'URI Too Long',
  416: 'Range Not Satisfiable',
  417: 'Expectation Failed',
  421: 'Misdirected Request',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** The reason phrase for a status: RFC 9110's (Node's list for those not above), or `Error` for an unregistered one. */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? STATUS_CODES[status] ?? 'Error';
}

const pageCache = new Map<number, Buffer>();

/** The generic HTML error page for a status: reveals nothing but the status itself. */
export function errorPage(status: number): Buffer {
  let page = pageCache.get(status);
  if (page === undefined) {
    const title = `${status} ${reasonPhrase(status)}`;
    page = Buffer.from(
      `<!doctype html>\n<html><head><meta charset="utf-8"><title>${title}</title></head>` +
        `<body><h1>${title}</h1><hr><p>Portico</p></body></html>\n`,
    );
    pageCache.set(status, page);
  }
  return page;
}
