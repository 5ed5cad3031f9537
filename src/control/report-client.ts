/**
 * `GET /status` of the admin API over the control socket: the whole report (traffic, servers, caches,
 * certificates) that `portico status` draws as tables. The socket's folder mode is its guard: no token.
 */
import { request as httpRequest } from 'node:http';

/** How long `portico status` waits for the report (it is built at once, with workers within their 2 s). */
const REPORT_TIMEOUT_MS = 5_000;

/**
 * The StatusReport of the Portico on `socket`, or undefined when it cannot give one (a Portico from before the
 * admin API answers 404; an error or a timeout): the caller then prints what `/v1/status` said alone.
 */
export function fetchStatusReport(socket: string, timeoutMs = REPORT_TIMEOUT_MS): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (report: Record<string, unknown> | undefined) => {
      if (settled) return;
      settled = true;
      req.destroy();
      resolve(report);
    };
    const req = httpRequest({ socketPath: socket, method: 'GET', path: '/status', headers: { accept: 'application/json', connection: 'close' }, agent: false });
    req.setTimeout(timeoutMs, () => finish(undefined));
    req.on('error', () => finish(undefined));
    req.on('response', (res) => {
      if (res.statusCode !== 200 || !/^application\/json\b/.test(res.headers['content-type'] ?? '')) {
        res.resume();
        return finish(undefined);
      }
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', () => finish(undefined));
      res.on('end', () => {
        try {
          const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
          finish(parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined);
        } catch {
          finish(undefined);
        }
      });
    });
    req.end();
  });
}
