// Running h2load (nghttp2-client) pinned to a CPU and reading its summary: requests/s from its report, p99 from
// its per-request log (h2load itself prints no percentiles).
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

/** The numbers of one h2load run, in the shape of bench/lib/wrk.mjs's: rps, p99 (ms), requests, errors. */
export function parseH2load(output, logText) {
  const rps = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(output);
  const reqs = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(output);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(output);
  if (rps === null || reqs === null) throw new Error(`cannot read h2load output:\n${output}`);
  // Log lines: start time (µs since the epoch), status, duration (µs).
  const durations = logText
    .split('\n')
    .map((line) => line.split('\t'))
    .filter((cols) => cols.length >= 3)
    .map((cols) => Number(cols[2]) / 1000)
    .filter((ms) => Number.isFinite(ms))
    .sort((a, b) => a - b);
  const p99 = durations.length > 0 ? durations[Math.min(durations.length - 1, Math.floor(durations.length * 0.99))] : NaN;
  const errors = Number(reqs[4]) + Number(reqs[5]) + Number(reqs[6]) + (codes ? Number(codes[3]) + Number(codes[4]) : 0);
  return { rps: Number(rps[1]), p99, requests: Number(reqs[2]), errors };
}

/** Runs h2load on `url` pinned to `cpu`: `connections` connections with `streams` concurrent streams each. */
export function runH2load({ url, cpu, connections = 10, streams = 10, duration = '10s', warmup, logFile }) {
  const args = ['-c', String(cpu), 'h2load', '-t1', `-c${connections}`, `-m${streams}`, `-D`, duration, `--log-file=${logFile}`];
  if (warmup !== undefined) args.push(`--warm-up-time=${warmup}`);
  args.push(url);
  rmSync(logFile, { force: true });
  return new Promise((resolve, reject) => {
    const child = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.stderr.on('data', (chunk) => (out += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`h2load exited with ${code}:\n${out}`));
      try {
        let log = '';
        try {
          log = readFileSync(logFile, 'utf8');
        } catch {}
        resolve({ ...parseH2load(out, log), raw: out });
      } catch (err) {
        reject(err);
      }
    });
  });
}
