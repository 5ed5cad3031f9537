// Settings and terminal helpers shared by every benchmark driver: the same knobs (BENCH_RUNS, BENCH_DURATION,
// BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_NOISE, BENCH_RETRIES, BENCH_QUIET_WAIT, BENCH_QUICK) and colour only
// on a TTY (stdout's for results, stderr's for progress).
import { execFileSync } from 'node:child_process';

const quick = process.env.BENCH_QUICK === '1';
/** The measuring knobs, from the environment. */
export const settings = {
  runs: Number(process.env.BENCH_RUNS ?? 3),
  duration: process.env.BENCH_DURATION ?? (quick ? '2s' : '10s'),
  warmup: process.env.BENCH_WARMUP ?? (quick ? '1s' : '3s'),
  connections: Number(process.env.BENCH_CONNECTIONS ?? 50),
  threads: 1,
  /** A sample during which other processes used more than this share of the machine is taken again. */
  noise: Number(process.env.BENCH_NOISE ?? 0.05),
  retries: Number(process.env.BENCH_RETRIES ?? 4),
  quietWaitMs: Number(process.env.BENCH_QUIET_WAIT ?? 300) * 1000,
};

const tty = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code) => (text) => (tty ? `\x1b[${code}m${text}\x1b[0m` : String(text));
export const bold = paint(1);
export const dim = paint(2);
export const green = paint(32);
export const red = paint(31);
export const yellow = paint(33);

/** Progress for a person watching, on stderr (stdout keeps the results), dim when stderr is a terminal. */
export function progress(text) {
  const line = process.stderr.isTTY && !process.env.NO_COLOR ? `\x1b[2m${text}\x1b[0m` : text;
  process.stderr.write(`${line}\n`);
}

export function has(command) {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The first line a command prints about its version (several print it on stderr). */
export function versionOf(command) {
  try {
    return execFileSync('sh', ['-c', `${command} 2>&1 || true`], { encoding: 'utf8' }).trim().split('\n')[0];
  } catch {
    return 'unknown';
  }
}

/** A share of the machine (0..1) as a percentage. */
export const pct = (share) => `${(share * 100).toFixed(1)}%`;
export const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
export const fmtMs = (n) => (Number.isFinite(n) ? `${n.toFixed(2)} ms` : 'n/a');
/** Ratios are cut, never rounded, so a missed target can never read as met. */
export const fmtRatio = (r) => (r === undefined ? 'n/a' : `${(Math.floor(r * 100) / 100).toFixed(2)}×`);

/** A Markdown table, padded so that it also reads well in a terminal. */
export function table(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
  return [line(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}
