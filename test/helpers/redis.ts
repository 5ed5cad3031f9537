/**
 * Debian's `redis-server` for cluster tests: started on a free loopback port with nothing saved to disk, stopped,
 * killed (SIGKILL, as a crash) and started again on the same port. Tests needing it call `requireTool(t,
 * 'redis-server')` first (.ci/run installs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { freePort } from './pebble.js';

/** A running (or stopped, to be restarted) redis-server. */
export class RedisServer {
  readonly port: number;
  #child: ChildProcess | undefined;
  #output = '';

  private constructor(port: number) {
    this.port = port;
  }

  /** `redis://127.0.0.1:PORT/0`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  /** What the server printed (for a failing test's message). */
  get output(): string {
    return this.#output;
  }

  /** Starts a redis-server on a free port and waits until it accepts connections. */
  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort());
    await server.restart();
    return server;
  }

  /** Starts the server again on its port (after `stop` or `kill`); an empty database. */
  async restart(): Promise<void> {
    if (this.#child !== undefined) throw new Error('redis-server is running');
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'notice'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#child = child;
    let ready: () => void = () => {};
    const started = new Promise<void>((resolve) => (ready = resolve));
    const take = (chunk: Buffer) => {
      this.#output += chunk.toString();
      if (/Ready to accept connections/.test(this.#output.slice(-4096))) ready();
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
    const exited = once(child, 'exit').then(([code]) => {
      throw new Error(`redis-server exited (${String(code)}) before it was ready: ${this.#output.slice(-2000)}`);
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`redis-server not ready within 10 s: ${this.#output.slice(-2000)}`)), 10_000);
    });
    try {
      await Promise.race([started, exited, timeout]);
    } finally {
      clearTimeout(timer);
      exited.catch(() => {});
    }
    this.#output = '';
  }

  /**
   * Freezes the server (SIGSTOP): its connections stay open and nothing answers, as a Redis hung on a slow disk or
   * a stalled VM. `resume` (SIGCONT) thaws it; `stop` and `kill` thaw it first.
   */
  pause(): void {
    this.#child?.kill('SIGSTOP');
  }

  /** Thaws a server `pause` froze (SIGCONT). */
  resume(): void {
    this.#child?.kill('SIGCONT');
  }

  /** Stops the server (SIGTERM) and waits for it to exit. */
  async stop(): Promise<void> {
    await this.#end('SIGTERM');
  }

  /** Kills the server (SIGKILL: a crash, no goodbye to its clients) and waits for it to exit. */
  async kill(): Promise<void> {
    await this.#end('SIGKILL');
  }

  async #end(signal: NodeJS.Signals): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill(signal);
      // A paused server handles a SIGTERM only once it runs again.
      child.kill('SIGCONT');
      await exited;
    }
  }
}
