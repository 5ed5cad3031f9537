// Running wrk pinned to a CPU and reading its summary; shared by the bench scenarios.
import { spawn } from 'node:child_process';

const UNIT_MS = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

/** Milliseconds from a wrk duration such as `812.00us`, `2.31ms` or `1.02s`. */
export function parseDuration(text) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (m === null) throw new Error(`unexpected wrk duration: ${text}`);
  return Number(m[1]) * UNIT_MS[m[2]];
}

/** The numbers of one wrk run: requests/s, p99 latency (ms), requests made, and any errors it reported. */
export function parseWrk(output) {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  const requests = /^\s*(\d+) requests in/m.exec(output);
  const p99 = /^\s+99%\s+(\S+)/m.exec(output);
  if (rps === null || p99 === null) throw new Error(`cannot read wrk output:\n${output}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  const errors = (socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return { rps: Number(rps[1]), p99: parseDuration(p99[1]), requests: requests ? Number(requests[1]) : undefined, errors };
}

/**
 * Runs `wrk` pinned to `cpu` (`headers`: extra request fields, as `Name: value`; `script`: a Lua file, e.g. one that
 * makes the requests POSTs) and resolves with its parsed summary (and the raw text).
 */
export function runWrk({ url, cpu, threads = 1, connections = 50, duration = '10s', headers = [], script }) {
  const scriptArgs = script === undefined ? [] : ['-s', script];
  const args = ['-c', String(cpu), 'wrk', `-t${threads}`, `-c${connections}`, `-d${duration}`, '--latency', ...scriptArgs, ...headers.flatMap((h) => ['-H', h]), url];
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.stderr.on('data', (chunk) => (out += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`wrk exited with ${code}:\n${out}`));
      try {
        resolve({ ...parseWrk(out), raw: out });
      } catch (err) {
        reject(err);
      }
    });
  });
}

/** The median of a non-empty list of numbers. */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
