/**
 * Whether a new instance is ready to take requests, checked by the Supervisor itself before the data plane is
 * told its port: the upstream's active health check when it has one (GET `path`, `rise` passes in a row, a status
 * within `expect`, each answer within `timeout`; an instance speaking FastCGI or HTTP/2 is probed by the data
 * plane's own check, given as a `Probe`), else a TCP connect. Bounded by a deadline and an abort signal.
 */
import http from 'node:http';
import net from 'node:net';

/** The upstream's `health` keys that readiness uses. */
export interface ReadinessCheck {
  readonly path: string;
  readonly interval: number;
  readonly timeout: number;
  readonly rise: number;
  readonly expect: ReadonlyArray<readonly number[]>;
  readonly host?: string | undefined;
}

/** The pause between two readiness probes: the check's interval, but no more than this (a start is waited on). */
const MAX_PAUSE_MS = 250;

/** One probe's result: undefined when it passed, else why not. */
type ProbeResult = string | undefined;

function probeTcp(port: number, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => finish(`no connection within ${timeoutMs} ms`), timeoutMs);
    const finish = (result: ProbeResult): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    socket.once('connect', () => finish(undefined));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(`TCP connect: ${err.code ?? err.message}`));
  });
}

function probeHttp(port: number, check: ReadinessCheck, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: check.path, agent: false, headers: { host: check.host ?? `127.0.0.1:${port}`, connection: 'close' } });
    const timer = setTimeout(() => finish(`GET ${check.path}: no answer within ${timeoutMs} ms`), timeoutMs);
    const finish = (result: ProbeResult): void => {
      clearTimeout(timer);
      request.destroy();
      resolve(result);
    };
    request.once('response', (response) => {
      const status = response.statusCode ?? 0;
      response.resume();
      finish(check.expect.some(([low = 0, high = 0]) => status >= low && status <= high) ? undefined : `GET ${check.path} answered ${status}`);
    });
    request.once('error', (err: NodeJS.ErrnoException) => finish(`GET ${check.path}: ${err.code ?? err.message}`));
  });
}

/**
 * One readiness probe of the instance on 127.0.0.1:`port` in what it speaks, given by the data plane for instances
 * that speak FastCGI or HTTP/2 (see `Supervisor`): undefined when it passed, else why not.
 */
export type Probe = (port: number, timeoutMs: number) => Promise<ProbeResult>;

/** Waits `ms`, or less when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Resolves once the instance on 127.0.0.1:`port` is ready (`check`, made by `probe` when the instance speaks
 * FastCGI or HTTP/2, or a TCP connect when there is no check); rejects
 * with an Error saying why not (its last probe) once `deadline` (ms since the epoch) passes or `signal` aborts.
 */
export async function waitReady(port: number, check: ReadinessCheck | undefined, deadline: number, signal: AbortSignal, probe?: Probe): Promise<void> {
  const rise = check?.rise ?? 1;
  const gap = Math.max(10, Math.min(check?.interval ?? MAX_PAUSE_MS, MAX_PAUSE_MS));
  let passes = 0;
  let last = 'not probed yet';
  let probes = 0;
  // Bounded: every round waits at least `gap` or ends the loop; the deadline ends it.
  while (!signal.aborted) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const full = check?.timeout ?? 1000;
    const timeout = Math.min(full, left);
    const result = check === undefined ? await probeTcp(port, timeout) : probe !== undefined ? await probe(port, timeout) : await probeHttp(port, check, timeout);
    if (signal.aborted) break;
    if (result === undefined) {
      passes += 1;
      if (passes >= rise) return;
    } else {
      passes = 0;
      // A probe cut short by the deadline says less than the one before it.
      if (timeout === full || probes === 0) last = result;
    }
    probes += 1;
    await pause(Math.min(gap, Math.max(0, deadline - Date.now())), signal);
  }
  throw new Error(signal.aborted ? `readiness check stopped (${last})` : `not ready in time (last check: ${last})`);
}
