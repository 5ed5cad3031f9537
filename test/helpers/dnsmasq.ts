/**
 * A real DNS server for tests: Debian's dnsmasq on a free loopback port, answering only from a hosts file the test
 * rewrites (re-read on SIGHUP) and from SRV records given at start (dnsmasq reads `--srv-host` only then, so a
 * change of them is a restart on the same port). Records have a TTL of 1 s (`--local-ttl=1`). Tests call
 * `requireTool(t, 'dnsmasq')` first (test/helpers/tools.ts finds it in /usr/sbin too).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './pebble.js';
import { eventually } from './supervise.js';
import { toolPath } from './tools.js';

/** An SRV record: `name` (`_http._tcp.app.test`) → `target`:`port` with its priority and weight. */
export interface SrvRecord {
  name: string;
  target: string;
  port: number;
  priority: number;
  weight: number;
}

/** What the server answers: names → IPv4 addresses, and SRV records. */
export interface DnsRecords {
  hosts: Record<string, readonly string[]>;
  srv?: readonly SrvRecord[];
}

/** A dnsmasq serving `DnsRecords` on 127.0.0.1:`port`. */
export class DnsServer {
  readonly port: number;
  readonly #dir: string;
  #records: DnsRecords;
  #child: ChildProcess | undefined = undefined;
  #output = '';

  private constructor(port: number, dir: string, records: DnsRecords) {
    this.port = port;
    this.#dir = dir;
    this.#records = records;
  }

  /** `127.0.0.1:PORT`: what Portico's `resolver` names. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** What dnsmasq printed (for failure messages). */
  get output(): string {
    return this.#output;
  }

  /** Starts dnsmasq with `records` on a free port and waits until it answers. */
  static async start(records: DnsRecords): Promise<DnsServer> {
    const dir = mkdtempSync(path.join(tmpdir(), 'portico-dns-'));
    // Run as root, dnsmasq drops to an unprivileged user that must still read the hosts file on SIGHUP.
    chmodSync(dir, 0o755);
    const server = new DnsServer(await freePort(), dir, records);
    await server.#spawn();
    return server;
  }

  #hostsFile(): string {
    return path.join(this.#dir, 'hosts');
  }

  #writeHosts(): void {
    const lines = Object.entries(this.#records.hosts).flatMap(([name, ips]) => ips.map((ip) => `${ip} ${name}`));
    writeFileSync(this.#hostsFile(), `${lines.join('\n')}\n`, { mode: 0o644 });
  }

  async #spawn(): Promise<void> {
    this.#writeHosts();
    const args = [
      '--no-daemon',
      `--port=${this.port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--no-resolv',
      '--no-hosts',
      `--addn-hosts=${this.#hostsFile()}`,
      '--local-ttl=1',
      // No cache: a re-read hosts file is answered at once.
      '--cache-size=0',
      ...(this.#records.srv ?? []).map((r) => `--srv-host=${r.name},${r.target},${r.port},${r.priority},${r.weight}`),
    ];
    const child = spawn(toolPath('dnsmasq') ?? 'dnsmasq', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    child.stdout!.on('data', (chunk: Buffer) => (this.#output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (this.#output += chunk.toString()));
    const first = Object.keys(this.#records.hosts)[0];
    await eventually(async () => child.exitCode === null && (first === undefined || (await this.#ask(first)) !== undefined), `dnsmasq answering on ${this.address}: ${this.#output}`);
  }

  /** The addresses dnsmasq answers for `name` now, sorted (undefined: no answer). */
  async #ask(name: string): Promise<string | undefined> {
    const resolver = new Resolver({ timeout: 500, tries: 1 });
    resolver.setServers([this.address]);
    try {
      return (await resolver.resolve4(name)).sort().join(',');
    } catch {
      return undefined;
    }
  }

  /** Answers `hosts` from now on (the file rewritten, SIGHUP): resolves once dnsmasq answers the change. */
  async setHosts(hosts: Record<string, readonly string[]>): Promise<void> {
    this.#records = { ...this.#records, hosts };
    this.#writeHosts();
    this.#child!.kill('SIGHUP');
    for (const [name, ips] of Object.entries(hosts)) {
      const want = [...ips].sort().join(',');
      await eventually(async () => (await this.#ask(name)) === want, `dnsmasq answering ${name} → ${want}`);
    }
  }

  /** Stops dnsmasq (the port then answers nothing: queries are refused). */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  }

  /** Starts dnsmasq again on the same port, with `records` if given (SRV records change only so). */
  async restart(records: DnsRecords = this.#records): Promise<void> {
    await this.stop();
    this.#records = records;
    await this.#spawn();
  }

  /** Stops dnsmasq and removes its files. */
  async close(): Promise<void> {
    await this.stop();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
