/**
 * Debian's `redis-server` for cluster tests: started on a free loopback port with nothing saved to disk, stopped,
 * killed (SIGKILL, as a crash) and started again on the same port; a replica of another, or a Sentinel watching
 * one (`redis-server --sentinel`, the same binary). Tests needing it call `requireTool(t, 'redis-server')` first
 * (.ci/run installs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './pebble.js';

/** The master group a `RedisServer.sentinel` watches. */
export const SENTINEL_MASTER = 'mymaster';

/** A running (or stopped, to be restarted) redis-server. */
export class RedisServer {
  readonly port: number;
  #child: ChildProcess | undefined;
  #output = '';
  /** The command line after the program, and the line that says it is ready. */
  readonly #args: string[];
  readonly #ready: RegExp;
  /** The server's folder (a Sentinel's config file, which it rewrites; a replica's RDB), removed by `stop`. */
  readonly #dir: string | undefined;

  private constructor(port: number, args: string[], ready = /Ready to accept connections/, dir?: string) {
    this.port = port;
    this.#args = args;
    this.#ready = ready;
    this.#dir = dir;
  }

  /** `redis://127.0.0.1:PORT/0`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  /** What the server printed (for a failing test's message). */
  get output(): string {
    return this.#output;
  }

  /**
   * Starts a redis-server on a free port and waits until it accepts connections; `args` add to its command line.
   * Its folder is its own (a replica writes the RDB it receives there; another server started where the tests run
   * would load it), removed by `stop`.
   */
  static async start(args: string[] = []): Promise<RedisServer> {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), 'portico-redis-'));
    const server = new RedisServer(port, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'notice', ...args], undefined, dir);
    await server.restart();
    return server;
  }

  /** Starts a replica of `master` and waits until it accepts connections. */
  static replicaOf(master: RedisServer): Promise<RedisServer> {
    return RedisServer.start(['--replicaof', '127.0.0.1', String(master.port)]);
  }

  /**
   * Starts a Sentinel watching `master` as `SENTINEL_MASTER`, alone in its quorum, that calls it down after
   * `downAfterMs` without an answer and fails over to a replica; resolves once it watches.
   */
  static async sentinel(master: RedisServer, downAfterMs = 500): Promise<RedisServer> {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), 'portico-sentinel-'));
    const config = path.join(dir, 'sentinel.conf');
    writeFileSync(
      config,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        'protected-mode no',
        `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${master.port} 1`,
        `sentinel down-after-milliseconds ${SENTINEL_MASTER} ${downAfterMs}`,
        `sentinel failover-timeout ${SENTINEL_MASTER} 2000`,
        '',
      ].join('\n'),
    );
    const server = new RedisServer(port, [config, '--sentinel'], /\+monitor master/, dir);
    await server.restart();
    return server;
  }

  /** Starts the server again on its port (after `stop` or `kill`); an empty database. */
  async restart(): Promise<void> {
    if (this.#child !== undefined) throw new Error('redis-server is running');
    // `stop` removed the folder.
    if (this.#dir !== undefined) mkdirSync(this.#dir, { recursive: true });
    const child = spawn('redis-server', this.#args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    let ready: () => void = () => {};
    const started = new Promise<void>((resolve) => (ready = resolve));
    const take = (chunk: Buffer) => {
      this.#output += chunk.toString();
      if (this.#ready.test(this.#output.slice(-4096))) ready();
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
    if (this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
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
