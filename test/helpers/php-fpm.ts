/**
 * Debian's php-fpm (`/usr/sbin/php-fpm8.2`, package php8.2-fpm) for FastCGI tests: one master with one pool
 * listening on a unix socket in a temp folder, started in the foreground (`-F`) with its own php-fpm.conf (`-y`)
 * and prefix (`-p`), as root with `-R`; stopped (SIGQUIT: graceful), killed, and started again on the same socket.
 * Tests needing it call `requireTool(t, 'php-fpm8.2')` first (.ci/run installs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { toolPath } from './tools.js';

/** What a pool looks like. */
export interface PhpFpmOptions {
  /** Worker processes (pm = static). */
  readonly workers?: number;
  /** Extra php.ini settings (`php_admin_value[...]`), e.g. `{ upload_max_filesize: '8M' }`. */
  readonly ini?: Readonly<Record<string, string>>;
  /** Listen on TCP at `host:port` (`127.0.0.2:9000`) instead of the unix socket. */
  readonly listen?: string;
  /**
   * Pool directives besides the defaults, e.g. `{ 'pm.max_requests': '2' }` (workers recycled after 2 requests),
   * `{ 'env[POOL]': 'a' }` (an environment variable of the pool's scripts, to tell pools apart).
   */
  readonly pool?: Readonly<Record<string, string>>;
}

/** A running (or stopped, to be restarted) php-fpm master with one pool. */
export class PhpFpm {
  readonly dir: string;
  readonly socket: string;
  /** `host:port` when it listens on TCP (`listen`), else undefined. */
  readonly tcp: string | undefined;
  readonly #conf: string;
  #child: ChildProcess | undefined;
  #output = '';

  private constructor(dir: string, options: PhpFpmOptions) {
    this.dir = dir;
    this.socket = path.join(dir, 'fpm.sock');
    this.tcp = options.listen;
    this.#conf = path.join(dir, 'php-fpm.conf');
    const ini = Object.entries({ post_max_size: '16M', upload_max_filesize: '16M', ...options.ini })
      .map(([name, value]) => `php_admin_value[${name}] = ${value}`)
      .join('\n');
    writeFileSync(
      this.#conf,
      `[global]
pid = ${path.join(dir, 'fpm.pid')}
error_log = ${path.join(dir, 'fpm.log')}
log_level = notice
daemonize = no

[www]
listen = ${options.listen ?? this.socket}
listen.mode = 0666
pm = static
pm.max_children = ${options.workers ?? 2}
ping.path = /fpm-ping
catch_workers_output = yes
decorate_workers_output = no
clear_env = yes
${ini}
${Object.entries(options.pool ?? {}).map(([name, value]) => `${name} = ${value}`).join('\n')}
`,
    );
  }

  /** What the master printed (its log; for a failing test's message). */
  get output(): string {
    return this.#output;
  }

  /** `unix:/tmp/…/fpm.sock` (or `fcgi://host:port` on TCP), as a server of an upstream. */
  get url(): string {
    return this.tcp === undefined ? `unix:${this.socket}` : `fcgi://${this.tcp}`;
  }

  /** The master's pid while it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts a php-fpm master in a new temp folder and waits until it accepts connections. */
  static async start(options: PhpFpmOptions = {}): Promise<PhpFpm> {
    const fpm = new PhpFpm(mkdtempSync(path.join(tmpdir(), 'portico-fpm-')), options);
    await fpm.restart();
    return fpm;
  }

  /** Starts the master again (after `stop` or `kill`) on the same socket. */
  async restart(): Promise<void> {
    if (this.#child !== undefined) throw new Error('php-fpm is running');
    const args = ['-F', '-y', this.#conf, '-p', this.dir, '-n', '-d', 'opcache.enable=0'];
    if (process.getuid?.() === 0) args.push('-R');
    // The master logs to a file (a pipe is no file it can open): its folder is watched for the ready line.
    const log = path.join(this.dir, 'fpm.log');
    writeFileSync(log, '');
    let ready: () => void = () => {};
    const started = new Promise<void>((resolve) => (ready = resolve));
    this.#output = '';
    const look = (): void => {
      this.#output = readFileSync(log, 'utf8');
      if (/ready to handle connections/.test(this.#output)) ready();
    };
    const watcher = watch(this.dir, look);
    const child = spawn(toolPath('php-fpm8.2') ?? '/usr/sbin/php-fpm8.2', args, { stdio: ['ignore', 'ignore', 'ignore'] });
    this.#child = child;
    started.then(() => watcher.close(), () => watcher.close());
    look();
    const exited = once(child, 'exit').then(([code]) => {
      look();
      throw new Error(`php-fpm exited (${String(code)}) before it was ready: ${this.#output.slice(-2000)}`);
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`php-fpm not ready within 10 s: ${this.#output.slice(-2000)}`)), 10_000);
    });
    try {
      await Promise.race([started, exited, timeout]);
    } finally {
      clearTimeout(timer);
      watcher.close();
      exited.catch(() => {});
    }
  }

  /** Stops the master gracefully (SIGQUIT: workers finish their request) and waits for it to exit. */
  async stop(signal: NodeJS.Signals = 'SIGQUIT'): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, 10_000);
    });
    await Promise.race([exited, late]);
    clearTimeout(timer);
  }

  /** Kills the master (SIGTERM: php-fpm's fast shutdown, workers cut). */
  kill(): Promise<void> {
    return this.stop('SIGTERM');
  }

  /** Stops it and removes its folder. */
  async close(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A config whose upstream `php` has `upstreamLines` (each written as at the upstream's level, without indent) and
 * whose one site sends `/` to a php route on `./app`; `head` goes first (`resolver: …`).
 */
export function phpConfig(upstreamLines: string, head = ''): string {
  const upstream = upstreamLines
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => `    ${line}`)
    .join('\n');
  return `${head}upstreams:
  php:
${upstream}
sites:
  - routes:
      - path: /
        php: { root: ./app, upstream: php }
`;
}
