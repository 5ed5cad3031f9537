/**
 * The control client: sends one operation to a running Portico over its control socket, hands each progress event
 * to a callback as it arrives, and resolves with the operation's result. Every failure to reach Portico is a
 * result too (`ok: false`), with a message that says what to do.
 */
import { request as httpRequest } from 'node:http';
import { socketPathProblem } from '../config/control.js';
import { failed, type AnswerLine, type OperationRequest, type OperationResult, type Progress } from './protocol.js';
import { PorticoError } from '../errors.js';

/** How long the client waits without a line from Portico (it sends a heartbeat every few seconds). */
const IDLE_TIMEOUT_MS = 60_000;

/** Options of one call. */
export interface CallOptions {
  /** Called with each progress event, in order. */
  progress?: Progress;
  /** How long to wait without any line from Portico (default 60 s; Portico sends a heartbeat every 5 s). */
  idleTimeoutMs?: number;
}

/** A connection error as the result a person can act on. */
function unreachable(socket: string, err: NodeJS.ErrnoException): OperationResult {
  switch (err.code) {
    case 'ENOENT':
      return failed(new PorticoError('PORTICO_NOT_RUNNING', `no Portico is running for this config: there is no control socket ${socket}`));
    case 'ECONNREFUSED':
      return failed(new PorticoError('PORTICO_NOT_RUNNING', `no Portico is running for this config: nothing answers on ${socket} (a socket left by a Portico that crashed)`));
    case 'EACCES':
    case 'EPERM':
      return failed(new PorticoError('PORTICO_CONTROL', `permission denied on the control socket ${socket}: only the user Portico runs as (or root) may use it`));
    default:
      return failed(new PorticoError('PORTICO_CONTROL', `cannot reach Portico on ${socket}: ${err.message}`));
  }
}

/** Sends `operation` to the Portico listening on `socket`; resolves with its result (never rejects). */
export function callControl(socket: string, operation: OperationRequest, options: CallOptions = {}): Promise<OperationResult> {
  const tooLong = socketPathProblem(socket);
  if (tooLong !== undefined) return Promise.resolve(failed(new PorticoError('PORTICO_CONTROL', tooLong)));
  const idleMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  const body = JSON.stringify({ config: operation.config, upstream: operation.upstream });
  return new Promise<OperationResult>((resolve) => {
    let settled = false;
    const finish = (result: OperationResult) => {
      if (settled) return;
      settled = true;
      req.destroy();
      resolve(result);
    };
    const req = httpRequest({
      socketPath: socket,
      method: 'POST',
      path: `/v1/${operation.operation}`,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' },
      agent: false,
    });
    req.setTimeout(idleMs, () =>
      finish(failed(new PorticoError('PORTICO_CONTROL', `Portico sent nothing for ${idleMs < 1000 ? `${idleMs} ms` : `${Math.round(idleMs / 1000)} s`} on ${socket}: it may be hung`))),
    );
    req.once('error', (err: NodeJS.ErrnoException) => finish(unreachable(socket, err)));
    req.once('response', (res) => {
      res.setEncoding('utf8');
      let buffered = '';
      const take = (line: string) => {
        if (line.trim() === '') return;
        let parsed: AnswerLine;
        try {
          parsed = JSON.parse(line) as AnswerLine;
        } catch {
          return finish(failed(new PorticoError('PORTICO_CONTROL', `Portico answered a line that is not JSON: ${line.slice(0, 200)}`)));
        }
        if ('result' in parsed) finish(parsed.result);
        else if ('progress' in parsed) options.progress?.(parsed.progress);
      };
      res.on('data', (chunk: string) => {
        buffered += chunk;
        for (let end = buffered.indexOf('\n'); end !== -1; end = buffered.indexOf('\n')) {
          const line = buffered.slice(0, end);
          buffered = buffered.slice(end + 1);
          take(line);
        }
      });
      res.once('end', () => {
        take(buffered);
        finish(failed(new PorticoError('PORTICO_CONTROL', `the connection to Portico closed before the result (did it stop?)`)));
      });
      res.once('error', (err) => finish(failed(new PorticoError('PORTICO_CONTROL', `the connection to Portico failed before the result: ${err.message}`))));
    });
    req.end(body);
  });
}
