/**
 * The access log: one line per request in nginx's `combined` format or as JSON, written through pino's
 * asynchronous destination (sonic-boom), so logging never blocks the request path on a slow disk or pipe.
 */
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import type { RequestContext } from '../server/context.js';

/** Writes access-log lines; `close()` flushes. */
export interface AccessLog {
  write(ctx: RequestContext): void;
  close(): Promise<void>;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
let stampSecond = -1;
let stamp = '';

/** `25/Nov/2026:14:13:06 +0000`, recomputed at most once a second. */
function timeLocal(now: number): string {
  const second = Math.floor(now / 1000);
  if (second !== stampSecond) {
    const d = new Date(second * 1000);
    const p = (n: number) => (n < 10 ? '0' + n : String(n));
    stamp = `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
    stampSecond = second;
  }
  return stamp;
}

/** Escapes `"`, `\` and non-printable bytes as nginx does (`\x22`), so a line can always be parsed back. */
function escapeField(value: string): string {
  // eslint-disable-next-line no-control-regex
  return /["\\\x00-\x1f\x7f-\uffff]/.test(value)
    ? value.replace(/["\\\x00-\x1f\x7f-\uffff]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'))
    : value;
}

function header(ctx: RequestContext, name: 'referer' | 'user-agent'): string {
  const value = ctx.req.headers[name];
  return value === undefined ? '-' : escapeField(value);
}

function combinedLine(ctx: RequestContext): string {
  const { req } = ctx;
  const request = escapeField(`${req.method} ${req.url} HTTP/${req.httpVersion}`);
  const upstream = ctx.upstream === undefined ? '' : ` ${ctx.upstream}`;
  return `${req.socket.remoteAddress ?? '-'} - - [${timeLocal(Date.now())}] "${request}" ${ctx.status} ${ctx.bytesSent} "${header(ctx, 'referer')}" "${header(ctx, 'user-agent')}"${upstream}\n`;
}

function jsonLine(ctx: RequestContext): string {
  const { req } = ctx;
  return (
    JSON.stringify({
      time: new Date().toISOString(),
      remote_addr: req.socket.remoteAddress,
      method: req.method,
      uri: req.url,
      protocol: `HTTP/${req.httpVersion}`,
      host: ctx.host,
      status: ctx.status,
      bytes_sent: ctx.bytesSent,
      request_time: Math.round(performance.now() - ctx.start) / 1000,
      referer: req.headers.referer,
      user_agent: req.headers['user-agent'],
      upstream: ctx.upstream,
    }) + '\n'
  );
}

/** Opens the access log described by the config, or returns `null` when it is off. */
export function openAccessLog(target: string, format: 'combined' | 'json' | 'off'): AccessLog | null {
  if (target === 'off' || format === 'off') return null;
  const fd = target === 'stdout' ? 1 : target === 'stderr' ? 2 : undefined;
  const dest = pino.destination({ dest: fd ?? target, sync: false, mkdir: false });
  const line = format === 'json' ? jsonLine : combinedLine;
  let open = true;
  return {
    write(ctx) {
      if (open) dest.write(line(ctx));
    },
    close() {
      if (!open) return Promise.resolve();
      open = false;
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
