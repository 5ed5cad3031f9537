/**
 * SIGUSR1: reopen the log files (after a rotation), as nginx does. Installed by importing this module, which the
 * `portico` command imports first: with no handler, Node answers SIGUSR1 by starting its inspector on
 * 127.0.0.1:9229, which any local user could then attach to and run code as Portico. So every process (a single
 * one, the primary of `workers`, each worker) holds a handler from the start of its code, before anything slow;
 * until the server registers what reopening means (`onReopenSignal`), a SIGUSR1 has nothing to reopen and is
 * only counted.
 */

/**
 * Node's flag that keeps SIGUSR1 from starting the inspector at all (Node ≥ 22.14 and ≥ 23.7): with it there is no
 * window between a process's start and its handler. Empty where this Node has no such flag (Node 20).
 */
const NO_INSPECTOR_SIGNAL: readonly string[] = process.allowedNodeEnvironmentFlags.has('--disable-sigusr1') ? ['--disable-sigusr1'] : [];

/**
 * The Node options for a process Portico starts of itself (a worker, an upgrade's successor): `execArgv` and, where
 * this Node has it, `--disable-sigusr1`, so that a SIGUSR1 sent while the child loads can never open the inspector.
 */
export function childExecArgv(execArgv: readonly string[] = process.execArgv): string[] {
  return [...execArgv, ...NO_INSPECTOR_SIGNAL.filter((flag) => !execArgv.includes(flag))];
}

let reopen: (() => void) | undefined;
let early = 0;

/** The handler: what the server registered, or nothing yet (no log is open before it is). */
function onSignal(): void {
  if (reopen === undefined) early++;
  else reopen();
}

process.on('SIGUSR1', onSignal);

/** Registers what a SIGUSR1 does from now on (the server's `reopenLogs`); undefined: nothing again. */
export function onReopenSignal(handler: (() => void) | undefined): void {
  reopen = handler;
}

/** How many SIGUSR1 arrived before a handler was registered (ignored: no log file was open yet). */
export function earlyReopenSignals(): number {
  return early;
}

/** Whether this process holds its SIGUSR1 handler (so Node's inspector cannot be started by the signal). */
export function holdsReopenSignal(): boolean {
  return process.listeners('SIGUSR1').includes(onSignal);
}
