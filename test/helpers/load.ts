/**
 * A steady, bounded loopback load for the zero-downtime tests: requests sent at a fixed rate (open loop: a slow
 * answer does not slow the sending), over keep-alive connections and, for a share of them, new ones. Every
 * outcome is counted; a 5xx, a transport error and an answer served stale from the cache are failures.
 */
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

/** The counts of a load run, and a few samples of each kind of failure. */
export interface LoadReport {
  sent: number;
  ok: number;
  /** 5xx answers, by status. */
  failedStatus: Record<number, number>;
  /**
   * Answers served stale from the cache (a failure here): `Cache-Status: ...; detail=unreachable-stale`,
   * `detail=stale-if-error`, `detail=stale-while-revalidate`, or a `hit` with a negative `ttl`. Not `fwd=stale`
   * alone: that is a stored response that was stale and therefore forwarded (RFC 9211), answered fresh.
   */
  stale: number;
  refused: number;
  reset: number;
  otherErrors: number;
  /** Up to 10 failure descriptions. */
  samples: string[];
  /** The `X-Instance` (or chosen) header values seen on successful answers, with their counts. */
  seen: Map<string, number>;
}

/** A Cache-Status of an answer served stale (see `LoadReport.stale`). */
const STALE = /detail=(unreachable-stale|stale-if-error|stale-while-revalidate)|\bhit\b.*\bttl=-/;

/** Options of `startLoad`. */
export interface LoadOptions {
  /** `http://127.0.0.1:PORT` */
  base: string;
  /** Paths requested in turn. */
  paths: readonly string[];
  /** Requests per second (default 200). */
  rate?: number;
  /** One request in this many opens a new connection (default 10); the others reuse keep-alive ones. */
  freshEvery?: number;
  /** A response header whose values are counted in `seen`. */
  header?: string;
  /** Hard bound on the run (default 60 s). */
  maxMs?: number;
}

/** A running load: `stop()` ends the sending, waits for the answers outstanding and returns the report. */
export interface RunningLoad {
  stop(): Promise<LoadReport>;
  /** The report so far. */
  readonly report: LoadReport;
}

/** Whether a report has no failure at all. */
export function failures(report: LoadReport): number {
  const statuses = Object.values(report.failedStatus).reduce((a, b) => a + b, 0);
  return statuses + report.stale + report.refused + report.reset + report.otherErrors;
}

/** A one-line summary for `t.diagnostic`. */
export function describeLoad(report: LoadReport): string {
  const seen = [...report.seen].map(([k, v]) => `${k}=${v}`).join(' ');
  return (
    `sent ${report.sent}, ok ${report.ok}, 5xx ${JSON.stringify(report.failedStatus)}, stale ${report.stale}, refused ${report.refused}, ` +
    `reset ${report.reset}, other ${report.otherErrors}${seen === '' ? '' : `; seen ${seen}`}${report.samples.length === 0 ? '' : `; e.g. ${report.samples.slice(0, 3).join(' | ')}`}`
  );
}

/** Starts sending; bounded by `maxMs` even if never stopped. */
export function startLoad(options: LoadOptions): RunningLoad {
  const rate = options.rate ?? 200;
  const freshEvery = options.freshEvery ?? 10;
  const maxMs = options.maxMs ?? 60_000;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const report: LoadReport = { sent: 0, ok: 0, failedStatus: {}, stale: 0, refused: 0, reset: 0, otherErrors: 0, samples: [], seen: new Map() };
  const pending = new Set<Promise<void>>();
  let running = true;
  const note = (what: string) => {
    if (report.samples.length < 10) report.samples.push(what);
  };
  const one = (path: string, fresh: boolean): Promise<void> =>
    new Promise<void>((resolve) => {
      const req = http.get(`${options.base}${path}`, fresh ? { agent: false, headers: { connection: 'close' } } : { agent }, (res) => {
        res.resume();
        res.once('end', () => {
          const status = res.statusCode ?? 0;
          const cacheStatus = String(res.headers['cache-status'] ?? '');
          if (status >= 500) {
            report.failedStatus[status] = (report.failedStatus[status] ?? 0) + 1;
            note(`${status} ${path}`);
          } else if (STALE.test(cacheStatus)) {
            report.stale++;
            note(`stale ${path}: ${cacheStatus}`);
          } else {
            report.ok++;
            if (options.header !== undefined) {
              const value = String(res.headers[options.header] ?? '');
              report.seen.set(value, (report.seen.get(value) ?? 0) + 1);
            }
          }
          resolve();
        });
        res.once('error', (err: NodeJS.ErrnoException) => {
          report.reset++;
          note(`${err.code ?? err.message} in body of ${path}`);
          resolve();
        });
      });
      req.setTimeout(20_000, () => req.destroy(new Error('timeout')));
      req.once('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED') report.refused++;
        else if (err.code === 'ECONNRESET' || err.code === 'EPIPE') report.reset++;
        else report.otherErrors++;
        note(`${err.code ?? err.message} ${path}`);
        resolve();
      });
    });
  const started = Date.now();
  const loop = (async () => {
    const gap = 1000 / rate;
    for (let i = 0; running && Date.now() - started < maxMs; i++) {
      const due = started + i * gap;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      if (!running) break;
      report.sent++;
      const p = one(options.paths[i % options.paths.length]!, i % freshEvery === freshEvery - 1);
      pending.add(p);
      void p.then(() => pending.delete(p));
    }
  })();
  return {
    report,
    async stop() {
      running = false;
      await loop;
      await Promise.all(pending);
      agent.destroy();
      return report;
    },
  };
}
