/**
 * The client side of `portico reload | deploy | upgrade | status`: finds the control socket from the config file,
 * sends the operation, prints its progress line by line and a summary (`status`: tables, see status-view.ts), and
 * returns the exit status (0 done, 1 failed or no Portico running). Colour (green ok, red failed) only when the output is a terminal and NO_COLOR is
 * not set.
 */
import path from 'node:path';
import { controlSocketsOfFile } from '../config/control.js';
import { displayPath } from '../config/load.js';
import { callControl } from './client.js';
import { displayError, type OperationName, type OperationResult, type ProgressEvent } from './protocol.js';
import { fetchStatusReport } from './report-client.js';
import { paint, statusLines } from './status-view.js';

/** How a control command was asked for. */
export interface ControlCommand {
  operation: OperationName;
  /** The config file naming the Portico to talk to (its state directory holds the socket). */
  file: string;
  /** deploy: the upstream. */
  upstream?: string;
  /** Print progress and result as JSON lines, no colour. */
  json: boolean;
}

/** Whether a stream gets colour: a terminal, NO_COLOR unset or empty, TERM not `dumb`. */
function colourFor(stream: NodeJS.WriteStream): boolean {
  return stream.isTTY === true && (process.env.NO_COLOR ?? '') === '' && process.env.TERM !== 'dumb';
}

/** One replaced slot of a deploy's report. */
interface DeployedSlot {
  slot: string;
  oldPid?: number;
  oldPort?: number;
  newPid?: number;
  newPort: number;
  readyMs: number;
  drainMs: number;
}

/** The summary of a finished deploy: each slot's old and new pid and port, its readiness and drain times. */
function deployLines(result: Record<string, unknown>): string[] {
  const slots = ((result.report as { slots?: DeployedSlot[] } | undefined)?.slots ?? []) as DeployedSlot[];
  const lines = slots.map(
    (s) =>
      `  ${s.slot}: pid ${s.oldPid ?? '-'} → ${s.newPid ?? '-'}, port ${s.oldPort ?? '-'} → ${s.newPort}, ready in ${s.readyMs} ms, drained in ${s.drainMs} ms`,
  );
  return [`summary: ${slots.length} instance${slots.length === 1 ? '' : 's'} replaced`, ...lines];
}

/** What a successful operation says besides "ok". */
function okSummary(result: Record<string, unknown>): string {
  const parts: string[] = [];
  if (typeof result.id === 'number') parts.push(`#${result.id}`);
  if (typeof result.started === 'string' && typeof result.finished === 'string') parts.push(`${Date.parse(result.finished) - Date.parse(result.started)} ms`);
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`;
}

/** Runs a control command; resolves with the exit status. */
export async function runControlCommand(command: ControlCommand): Promise<number> {
  const { operation, json } = command;
  const out = process.stdout;
  const err = process.stderr;
  let sockets: string[];
  try {
    sockets = controlSocketsOfFile(command.file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'it does not exist' : (error as Error).message;
    err.write(`portico: cannot read the config file ${displayPath(command.file)}: ${reason}\n`);
    return 1;
  }
  const progress = (event: ProgressEvent) => {
    if (json) out.write(`${JSON.stringify({ progress: event })}\n`);
    else out.write(`  ${event.message}\n`);
  };
  const asked = { operation, config: path.resolve(command.file), upstream: command.upstream };
  let socket = sockets[0]!;
  let result: OperationResult = await callControl(socket, asked, { progress });
  // No Portico at the state_dir the file names now: one started before that key was written listens at the default.
  if (!result.ok && result.error.code === 'PORTICO_NOT_RUNNING' && sockets[1] !== undefined) {
    const fallback = await callControl(sockets[1], asked, { progress });
    if (fallback.ok || fallback.error.code !== 'PORTICO_NOT_RUNNING') {
      result = fallback;
      socket = sockets[1];
    }
  }
  if (json) {
    // status: the /v1/status result with the admin API's whole report (traffic, servers, caches, certificates).
    const report = operation === 'status' && result.ok ? await fetchStatusReport(socket) : undefined;
    out.write(`${JSON.stringify(report === undefined ? result : { ...result, ...report })}\n`);
    return result.ok ? 0 : 1;
  }
  const label = command.upstream === undefined ? operation : `${operation} ${command.upstream}`;
  if (result.ok) {
    if (operation === 'status') {
      // The tables come from the admin API's report on the same socket (a Portico without it: the lines alone).
      const report = await fetchStatusReport(socket);
      out.write(`${statusLines({ ...result, ...report }, { colour: colourFor(out) }).join('\n')}\n`);
    }
    else {
      for (const warning of (result.warnings as string[] | undefined) ?? []) err.write(`${warning}\n`);
      if (operation === 'deploy') out.write(`${deployLines(result).join('\n')}\n`);
      out.write(`portico: ${label} ${paint(colourFor(out), 'green', 'ok')}${okSummary(result)}\n`);
    }
    return 0;
  }
  const red = colourFor(err);
  const { error } = result;
  const shown = displayError(error, command.file);
  err.write(`portico: ${label} ${paint(red, 'red', 'failed')}: ${shown.message} (${error.code})\n`);
  for (const issue of shown.issues) err.write(`${issue}\n`);
  if (operation === 'reload' && error.code !== 'PORTICO_NOT_RUNNING' && error.code !== 'PORTICO_CONTROL') {
    err.write('portico: the previous config is still serving\n');
  }
  return 1;
}
