/**
 * Helpers for the Supervisor's tests: the fixture app's path, a config with spawn upstreams, a recording SlotSink
 * (the data plane's side, which these tests do not need: the instances themselves are real processes), a logger
 * whose lines can be awaited, and the processes of a process group as /proc shows them.
 */
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pino, { type Logger } from 'pino';
import type { Config } from '../../src/config/load.js';
import { parseConfig } from '../../src/server/config.js';
import type { SlotSink } from '../../src/supervise/supervisor.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The fixture app server (test/fixtures/spawn-app.mjs). */
export const APP = path.join(repo, 'test/fixtures/spawn-app.mjs');

/** The compiled Supervisor module, for child scripts that start one. */
export const SUPERVISOR_MODULE = path.join(repo, 'dist/src/supervise/supervisor.js');

/** The compiled config parser, for child scripts. */
export const CONFIG_MODULE = path.join(repo, 'dist/src/server/config.js');

/** A range of `size` ports somewhere in 21000-31999 (away from the ephemeral ports that port 0 hands out). */
export function portRange(size: number): { from: number; to: number; text: string } {
  const from = 21000 + Math.floor(Math.random() * 10_000);
  return { from, to: from + size - 1, text: `${from}-${from + size - 1}` };
}

/** A config whose `upstreams` are `upstreams` (JSON-like objects with spawn), anchored at `dir`. */
export function spawnConfig(dir: string, upstreams: Record<string, unknown>): Config {
  const routes = Object.keys(upstreams).map((name) => ({ path: `/${name}/`, proxy: { upstream: name } }));
  return parseConfig(JSON.stringify({ listen: ['127.0.0.1:0'], upstreams, sites: [{ routes }] }), path.join(dir, 'portico.yaml'), dir);
}

/** One call of `SlotSink.moved`. */
export interface Move {
  upstream: string;
  slot: string;
  port: number | undefined;
  drainMs: number;
}

/** A SlotSink that records every move and resolves at once. */
export class RecordingSink implements SlotSink {
  readonly moves: Move[] = [];
  moved(upstream: string, slot: string, port: number | undefined, drainMs: number): Promise<void> {
    this.moves.push({ upstream, slot, port, drainMs });
    return Promise.resolve();
  }
}

/** A pino logger whose lines (parsed) are kept and can be awaited. */
export class CapturedLog {
  readonly lines: Array<Record<string, unknown> & { msg: string; level: number }> = [];
  readonly logger: Logger;
  #waiters: Array<() => void> = [];

  constructor() {
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const text of chunk.toString().split('\n')) if (text.trim() !== '') this.lines.push(JSON.parse(text));
        for (const wake of this.#waiters.splice(0)) wake();
        done();
      },
    });
    this.logger = pino({ level: 'debug', base: undefined }, sink);
  }

  /** Waits for a line for which `match` holds (bounded); returns it. */
  async waitFor(match: (line: CapturedLog['lines'][number]) => boolean, what: string, timeoutMs = 10_000): Promise<CapturedLog['lines'][number]> {
    const limit = Date.now() + timeoutMs;
    for (;;) {
      const line = this.lines.find(match);
      if (line !== undefined) return line;
      const left = limit - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a log line: ${what}; lines:\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/** Polls `check` every 25 ms until it returns a value other than undefined/false (bounded); returns it. */
export async function eventually<T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 10_000): Promise<T> {
  const limit = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > limit) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Whether a process is alive (a zombie, dead but not yet reaped by its parent, is not). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** The live processes whose process group is one of `groups`. */
export function groupMembers(groups: ReadonlySet<number>): number[] {
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] !== 'Z' && fields[0] !== 'X' && groups.has(Number(fields[2]))) members.push(Number(entry));
    } catch {
      // The process went away while we looked.
    }
  }
  return members;
}

/** GET http://127.0.0.1:`port``path` (fresh connection); resolves to the status and the body parsed as JSON when it is. */
export function getJson(port: number, pathname = '/'): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port, path: pathname, agent: false, timeout: 5000 }, (response) => {
      let text = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (text += chunk)).on('end', () => {
        let body: Record<string, unknown> = {};
        try {
          body = JSON.parse(text);
        } catch {
          body = { text };
        }
        resolve({ status: response.statusCode ?? 0, body });
      });
    });
    request.once('timeout', () => request.destroy(new Error('timeout')));
    request.once('error', reject);
  });
}
