/**
 * The access log: one line per request in nginx's `combined` format, `upstream` (combined plus timings), JSON, or
 * a template of the operator's (`log.template`, see http/log-template.ts), gathered in memory and written in
 * batches through pino's destination (sonic-boom). Requests Node's parser refused get a line too (App.parserRefused).
 */
import { statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import type { TLSSocket } from 'node:tls';
import type { RequestContext, UpstreamAttemptLog } from '../http/context.js';
import { compileLogTemplate, escapeField, loggedGrpcStatus, seconds, timeLocal, usesTls, type LogEscape } from '../http/log-template.js';

export { seconds };

/** Writes access-log lines; `close()` flushes. */
export interface AccessLog {
  write(ctx: RequestContext): void;
  /** Writes what is buffered, then reopens the file at its path (after a rotation); stdout/stderr stay. */
  reopen(): void;
  /** Reads what the line needs of the connection while it is there (the request just arrived); `null`: nothing. */
  readonly arrived: ((ctx: RequestContext) => void) | null;
  close(): Promise<void>;
}

/** How the lines are made: a named format, or a template (`log.template`, which then wins over `format`). */
export interface AccessLogFormat {
  format: 'combined' | 'upstream' | 'json' | 'off';
  template?: string | undefined;
  escape?: LogEscape | undefined;
}

/** Reads the connection's TLS version into the context (`$tls_version`). */
function readTls(ctx: RequestContext): void {
  const socket = ctx.req.socket as TLSSocket | null;
  ctx.tlsVersion = (typeof socket?.getProtocol === 'function' ? socket.getProtocol() : null) ?? undefined;
}

/** Longest time a line waits in the buffer before it is written. */
const FLUSH_INTERVAL_MS = 1000;
/** Size of a batch handed to the writer. */
const BATCH_CHARS = 32 * 1024;

function header(ctx: RequestContext, name: 'referer' | 'user-agent'): string {
  const value = ctx.req.headers[name];
  return value === undefined ? '-' : escapeField(value);
}

/** The `combined` fields, without the line end. */
function combinedFields(ctx: RequestContext): string {
  const { req } = ctx;
  // A request Node's parser refused may have no readable request line: `-`, as nginx logs an empty one.
  const request = req.method === undefined ? '-' : escapeField(`${req.method} ${req.url} HTTP/${req.httpVersion}`);
  return `${ctx.clientAddress() || '-'} - - [${timeLocal(Date.now())}] "${request}" ${ctx.status} ${ctx.bytesSent} "${header(ctx, 'referer')}" "${header(ctx, 'user-agent')}"`;
}

function combinedLine(ctx: RequestContext): string {
  return combinedFields(ctx) + '\n';
}

function formatUpstream(log: readonly UpstreamAttemptLog[]): string {
  // One loop for the five per-attempt lists (nginx's `, `-separated values); one attempt is the common case.
  let addr = '';
  let status = '';
  let connect = '';
  let headerTime = '';
  let response = '';
  for (let i = 0; i < log.length; i++) {
    const l = log[i]!;
    const sep = i === 0 ? '' : ', ';
    addr += sep + l.addr;
    status += sep + l.status;
    connect += sep + seconds(l.connectMs);
    headerTime += sep + seconds(l.headerMs);
    response += sep + seconds(l.responseMs);
  }
  return ` upstream_addr="${addr}" upstream_status="${status}" upstream_connect_time="${connect}" upstream_header_time="${headerTime}" upstream_response_time="${response}"`;
}

/** `combined` plus request time and nginx's per-attempt upstream fields. */
function upstreamLine(ctx: RequestContext): string {
  const time = seconds(performance.now() - ctx.start);
  return `${combinedFields(ctx)} request_time=${time}${ctx.upstreamLog === undefined ? '' : formatUpstream(ctx.upstreamLog)}\n`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const HIGH_BYTE = /[\x80-\xff]/;

/**
 * A header value as text for the JSON log. Node reads header bytes as latin1; UTF-8 text (the usual non-ASCII)
 * is decoded back to what the client wrote, as nginx's `escape=json` passes the bytes through. Bytes that are
 * not UTF-8 stay latin1, one character per byte, so they can still be recovered exactly.
 */
function headerText(value: string | undefined): string | undefined {
  if (value === undefined || !HIGH_BYTE.test(value)) return value;
  try {
    return utf8.decode(Buffer.from(value, 'latin1'));
  } catch {
    return value;
  }
}

/** The JSON line with the process id first (with `workers`: which worker answered). */
function jsonLineWithPid(ctx: RequestContext): string {
  return `{"pid":${process.pid},${jsonLine(ctx).slice(1)}`;
}

function jsonLine(ctx: RequestContext): string {
  const { req } = ctx;
  return (
    JSON.stringify({
      time: new Date().toISOString(),
      remote_addr: ctx.clientAddress(),
      method: req.method,
      uri: req.url,
      protocol: `HTTP/${req.httpVersion}`,
      host: ctx.host,
      status: ctx.status,
      bytes_sent: ctx.bytesSent,
      request_time: Math.round(performance.now() - ctx.start) / 1000,
      request_id: ctx.requestId,
      referer: headerText(req.headers.referer),
      user_agent: headerText(req.headers['user-agent']),
      upstream_addr: ctx.upstreamLog?.map((l) => l.addr),
      upstream_status: ctx.upstreamLog?.map((l) => l.status),
      upstream_connect_time: ctx.upstreamLog?.map((l) => l.connectMs / 1000),
      upstream_header_time: ctx.upstreamLog?.map((l) => l.headerMs / 1000),
      upstream_response_time: ctx.upstreamLog?.map((l) => l.responseMs / 1000),
      // Only on a gRPC call's line (undefined is left out).
      grpc_status: loggedGrpcStatus(ctx) || undefined,
    }) + '\n'
  );
}

/** Whether `target` is (or will be created as) a regular file: only those get blocking writes. */
function isRegularFile(target: string): boolean {
  try {
    return statSync(target).isFile();
  } catch {
    // Not there yet: it will be created as a regular file.
    return true;
  }
}

/**
 * Opens the access log described by the config, or returns `null` when it is off. A failed write (disk full,
 * reader gone) loses that batch and is reported through `onError`; it never throws into a request.
 */
export function openAccessLog(
  target: string,
  how: AccessLogFormat,
  onError: (err: Error) => void = () => {},
  /** `json` lines begin with `"pid"` (with `workers`, several processes write one log). */
  withPid = false,
): AccessLog | null {
  const { format, template } = how;
  if (target === 'off' || (format === 'off' && template === undefined)) return null;
  const fd = target === 'stdout' ? 1 : target === 'stderr' ? 2 : undefined;
  // Lines are gathered here and written in batches of about 32 KB, and at least once a second (like nginx's
  // `buffer=32k flush=1s`): one write per line would cost a system call, and sonic-boom's own batching measures
  // its whole buffer on every write. To a file each batch is one synchronous write(), as nginx does: a copy into
  // the page cache, a few µs per batch, where an asynchronous write copies the string and round-trips through
  // the thread pool (measured: 5–10× the CPU). Anything else (stdout, stderr, /dev/stdout, a FIFO, a socket)
  // stays asynchronous: a reader that stalls must not stall the server.
  const sync = fd === undefined && isRegularFile(target);
  const dest = pino.destination({ dest: fd ?? target, sync, mkdir: false });
  dest.on('error', onError);
  let pending = '';
  const handOver = () => {
    if (pending === '') return;
    const batch = pending;
    pending = '';
    try {
      dest.write(batch);
    } catch (err) {
      onError(err as Error);
    }
  };
  const flusher = setInterval(handOver, FLUSH_INTERVAL_MS);
  flusher.unref();
  let line: (ctx: RequestContext) => string;
  if (template !== undefined) {
    const render = compileLogTemplate(template, how.escape);
    line = (ctx) => render(ctx) + '\n';
  } else line = format === 'json' ? (withPid ? jsonLineWithPid : jsonLine) : format === 'upstream' ? upstreamLine : combinedLine;
  let open = true;
  return {
    arrived: template !== undefined && usesTls(template) ? readTls : null,
    write(ctx) {
      if (!open) return;
      pending += line(ctx);
      if (pending.length >= BATCH_CHARS) handOver();
    },
    reopen() {
      if (!open || fd !== undefined) return;
      // The lines gathered so far belong to the file as it was: written there (the renamed file) first.
      handOver();
      try {
        dest.flushSync();
      } catch {
        // Nothing buffered (blocking writes), or an asynchronous write under way: reopen waits for it.
      }
      try {
        dest.reopen();
      } catch (err) {
        onError(err as Error);
      }
    },
    close() {
      if (!open) return Promise.resolve();
      open = false;
      handOver();
      clearInterval(flusher);
      return new Promise((resolve) => {
        try {
          dest.flushSync();
        } catch {
          // Nothing buffered, or the destination is gone: nothing more to save.
        }
        if (fd !== undefined) return resolve();
        dest.end();
        dest.once('close', () => resolve());
        dest.once('error', () => resolve());
      });
    },
  };
}
