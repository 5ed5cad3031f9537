/**
 * Debian's pebble (an ACME test server) for tests: started on free loopback ports with a TLS certificate made at
 * test time (its own directory is served over HTTPS), nonce fuzzing and random sleeps off. `pebble-challtestsrv`
 * serves it DNS (every name → 127.0.0.1) for real http-01 validations.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

/** A free TCP port on 127.0.0.1 (bound, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A child process whose output is collected; `waitFor` resolves when a line matches. */
class Child {
  readonly process: ChildProcess;
  output = '';
  readonly #waiters: Array<{ pattern: RegExp; resolve: () => void }> = [];
  readonly exited: Promise<void>;

  constructor(command: string, args: string[], env: NodeJS.ProcessEnv, cwd: string) {
    this.process = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const take = (chunk: Buffer) => {
      this.output += chunk.toString();
      for (const waiter of [...this.#waiters]) {
        if (waiter.pattern.test(this.output)) {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          waiter.resolve();
        }
      }
    };
    this.process.stdout!.on('data', take);
    this.process.stderr!.on('data', take);
    this.exited = new Promise((resolve) => this.process.once('exit', () => resolve()));
  }

  /** Resolves when the output matches `pattern`; rejects if the process exits first. */
  waitFor(pattern: RegExp): Promise<void> {
    if (pattern.test(this.output)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#waiters.push({ pattern, resolve });
      void this.exited.then(() => reject(new Error(`exited before ${pattern}:\n${this.output}`)));
    });
  }

  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGTERM');
    await this.exited;
  }
}

/** A running pebble. */
export interface Pebble {
  /** The ACME directory URL. */
  directory: string;
  /** PEM file of the certificate pebble serves its API with (to trust as `trusted_roots`). */
  caFile: string;
  /** How many certificates it has issued so far. */
  issued(): number;
  /** How many accounts it has made so far. */
  accounts(): number;
  stop(): Promise<void>;
}

/** A self-signed certificate for 127.0.0.1 and localhost, written as `name.pem` and `name.key` into `dir`. */
export function selfSigned(dir: string, name: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', '/CN=pebble test API', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  return { cert, key };
}

/**
 * Starts pebble in `dir`. `alwaysValid` skips validation; otherwise it validates http-01 on `httpPort` of the
 * address `dnsServer` resolves names to. With `eab` (kid → base64url HMAC key) it requires external account binding.
 */
export async function startPebble(dir: string, options: { alwaysValid: boolean; httpPort?: number; dnsServer?: string; validitySeconds?: number; eab?: Record<string, string> }): Promise<Pebble> {
  const { cert, key } = selfSigned(dir, 'pebble-api');
  const [api, management, tls] = [await freePort(), await freePort(), await freePort()];
  const config = path.join(dir, 'pebble.json');
  writeFileSync(config, JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${api}`,
      managementListenAddress: `127.0.0.1:${management}`,
      certificate: cert,
      privateKey: key,
      httpPort: options.httpPort ?? (await freePort()),
      tlsPort: tls,
      ocspResponderURL: '',
      externalAccountBindingRequired: options.eab !== undefined,
      ...(options.eab === undefined ? {} : { externalAccountMACKeys: options.eab }),
      certificateValidityPeriod: options.validitySeconds ?? 90 * 86_400,
    },
  }));
  const env: NodeJS.ProcessEnv = { PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' };
  if (options.alwaysValid) env.PEBBLE_VA_ALWAYS_VALID = '1';
  const args = ['-config', config];
  if (options.dnsServer !== undefined) args.push('-dnsserver', options.dnsServer);
  const child = new Child('pebble', args, env, dir);
  await child.waitFor(/Listening on: /);
  return {
    directory: `https://127.0.0.1:${api}/dir`,
    caFile: cert,
    issued: () => child.output.match(/Issued certificate serial/g)?.length ?? 0,
    accounts: () => child.output.match(/There are now \d+ accounts in memory/g)?.length ?? 0,
    stop: () => child.stop(),
  };
}

/** Starts pebble-challtestsrv as DNS only (every A query → 127.0.0.1, no AAAA, its challenge servers off). */
export async function startChallengeDns(dir: string): Promise<{ address: string; stop(): Promise<void> }> {
  const [dns, management] = [await freePort(), await freePort()];
  const child = new Child(
    'pebble-challtestsrv',
    ['-defaultIPv4', '127.0.0.1', '-defaultIPv6', '', '-dns01', `127.0.0.1:${dns}`, '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${management}`],
    {},
    dir,
  );
  await child.waitFor(/Starting challenge servers/);
  return { address: `127.0.0.1:${dns}`, stop: () => child.stop() };
}

/** A pino logger whose lines are kept (parsed) and can be waited for, by message. */
export function capturingLogger(onLine?: (line: { msg: string; [key: string]: unknown }) => void): {
  logger: Logger;
  lines: Array<{ msg: string; [key: string]: unknown }>;
  waitFor(msg: string, count?: number): Promise<Array<{ msg: string; [key: string]: unknown }>>;
} {
  const lines: Array<{ msg: string; [key: string]: unknown }> = [];
  const waiters: Array<{ msg: string; count: number; resolve: (found: typeof lines) => void }> = [];
  const check = () => {
    for (const waiter of [...waiters]) {
      const found = lines.filter((line) => line.msg === waiter.msg);
      if (found.length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(found);
      }
    }
  };
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      done();
    },
  });
  // pino writes each line synchronously through `write`: hooks see it before the logging call returns.
  stream.write = (chunk: string | Buffer) => {
    for (const text of chunk.toString().split('\n')) {
      if (text === '') continue;
      const line = JSON.parse(text) as { msg: string };
      lines.push(line);
      onLine?.(line);
    }
    check();
    return true;
  };
  return {
    logger: pino({ level: 'info', base: undefined }, stream),
    lines,
    waitFor(msg, count = 1) {
      return new Promise((resolve) => {
        waiters.push({ msg, count, resolve });
        check();
      });
    },
  };
}
