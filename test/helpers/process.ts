/**
 * A real `portico run` child process, for tests of what only the process does: signals (SIGHUP reload,
 * SIGTERM), its stderr lines, `--dev`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A line of `portico run`'s stderr as text to match: a JSON error-log entry (stderr is not a terminal) with no
 * field but its level, time and message becomes its message (`portico: config reloaded`, as `run` printed its
 * own lines before they went through the error log); any other line is itself.
 */
export function readableStderrLine(line: string): string {
  if (!line.startsWith('{')) return line;
  try {
    const { msg, level, time, ...fields } = JSON.parse(line) as Record<string, unknown>;
    void level;
    void time;
    if (typeof msg !== 'string') return line;
    // An entry with fields stays as written (tests match its fields and message in pino's order).
    return Object.keys(fields).length === 0 ? msg : line;
  } catch {
    return line;
  }
}

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CLI = path.join(repo, 'dist/src/cli.js');

/** A `portico run` child process whose stderr can be awaited line by line. */
export class PorticoProcess {
  readonly child: ChildProcess;
  readonly file: string;
  port = 0;
  /** stderr's complete lines, each as `readableStderrLine` shows it. */
  #stderr = '';
  /** stderr as written. */
  #raw = '';
  /** The start of a line not complete yet. */
  #partial = '';
  #waiters: Array<() => void> = [];
  #exited = false;
  /** Resolves with the exit code (null: killed by a signal) once this process has exited. */
  readonly exited: Promise<number | null>;
  /**
   * Resolves once the stderr pipe has closed: this process and every process that inherited its stderr (the new
   * process of an upgrade) have exited.
   */
  readonly streamClosed: Promise<void>;

  private constructor(file: string, cwd: string, args: readonly string[], env: NodeJS.ProcessEnv) {
    this.file = file;
    this.child = spawn(process.execPath, [CLI, 'run', ...args, '-c', file], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      this.#raw += text;
      const lines = (this.#partial + text).split('\n');
      this.#partial = lines.pop()!;
      for (const line of lines) this.#stderr += `${readableStderrLine(line)}\n`;
      this.#wake();
    });
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code) => {
        this.#exited = true;
        this.#wake();
        resolve(code);
      }),
    );
    this.streamClosed = new Promise((resolve) =>
      this.child.stderr!.once('close', () => {
        this.#stderrOpen = false;
        this.#wake();
        resolve();
      }),
    );
  }

  /** Sends a signal to the process. */
  signal(name: NodeJS.Signals): void {
    this.child.kill(name);
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /**
   * Starts `portico run [args] -c file` in `cwd` (with `env` added to this process's environment) and waits for the
   * line that names the port it serves on (the first; any 127.x.y.z address: a cluster test's boxes are 127.0.0.2, ...).
   */
  static async start(file: string, cwd: string, args: readonly string[] = [], env: NodeJS.ProcessEnv = {}): Promise<PorticoProcess> {
    const running = new PorticoProcess(file, cwd, args, env);
    try {
      const line = await running.waitForLine(/serving .* on https?:\/\/127\.\d+\.\d+\.\d+:(\d+)\//, 0);
      running.port = Number(/ on https?:\/\/127\.\d+\.\d+\.\d+:(\d+)\//.exec(line)![1]);
      return running;
    } catch (err) {
      await running.stop();
      throw err;
    }
  }

  /** Whether some process still holds stderr (an upgrade's new process outlives this one). */
  #stderrOpen = true;

  /** Every complete line written to stderr so far, JSON error-log entries shown as their messages (see `readableStderrLine`). */
  get stderr(): string {
    return this.#stderr;
  }

  /** stderr exactly as written. */
  get rawStderr(): string {
    return this.#raw;
  }

  /** Waits for a stderr line matching `pattern` that starts at or after offset `from`; returns it. */
  async waitForLine(pattern: RegExp, from: number, timeoutMs = 15_000): Promise<string> {
    const limit = Date.now() + timeoutMs;
    for (;;) {
      const line = this.#stderr
        .slice(from)
        .split('\n')
        .find((l) => pattern.test(l));
      if (line !== undefined) return line;
      if (this.#exited && !this.#stderrOpen) throw new Error(`portico exited while waiting for ${pattern}; stderr:\n${this.#stderr}`);
      const left = limit - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${pattern}; stderr:\n${this.#stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Rewrites the config file, sends SIGHUP, and waits for the line that tells how the reload went. */
  async reload(text: string): Promise<{ line: string; log: string }> {
    writeFileSync(this.file, text);
    const mark = this.#stderr.length;
    this.child.kill('SIGHUP');
    const line = await this.waitForLine(/^portico: (config reloaded|reload refused|reload failed)/, mark);
    return { line, log: this.#stderr.slice(mark) };
  }

  /** SIGTERM, then waits for the exit; returns the exit code. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    const exited = once(this.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    this.child.kill('SIGTERM');
    const [code] = await exited;
    return code;
  }
}

/** What a `portico CMD` child process printed and how it exited. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `portico ...args` (dist/src/cli.js) as a child process in `cwd`, bounded (SIGKILL after `timeoutMs`). */
export async function runCli(args: readonly string[], cwd: string, timeoutMs = 30_000): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  // 'close', not 'exit': the output may still be in the pipes when the process has exited.
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}
