// Noise guard for a shared machine: how much CPU was used by processes that are not part of the benchmark.
//
// Busy time of the whole machine comes from /proc/stat; the benchmark's own share is the server's process tree
// plus this driver and the children it has reaped (wrk, which exits before the second reading). What is left
// was someone else's: a test run or a compile in the same machine skews req/s, so such samples are retried.
import { readdirSync, readFileSync } from 'node:fs';
import { pct } from './common.mjs';

const HZ = 100; // USER_HZ: /proc times are in 1/100 s on Linux.
const CPUS = readFileSync('/proc/stat', 'utf8').split('\n').filter((l) => /^cpu\d/.test(l)).length;

/** Busy jiffies of all CPUs (everything but idle and iowait; steal counts: the CPU was not ours). */
function machineBusy() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return user + nice + system + irq + softirq + steal;
}

/** [pid, ppid, utime + stime, cutime + cstime] of a process, or null when it is gone. */
function procStat(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return [Number(pid), Number(f[1]), Number(f[11]) + Number(f[12]), Number(f[13]) + Number(f[14])];
  } catch {
    return null;
  }
}

/** CPU jiffies (1/100 s: utime + stime, all threads) used so far by `rootPid` and its living descendants (nginx's worker, Varnish's child). */
export function treeJiffies(rootPid) {
  const stats = readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(procStat).filter((s) => s !== null);
  const inTree = new Set([rootPid]);
  let total = 0;
  // Parents have lower pids almost always, but loop until stable to be safe.
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of stats) if (!inTree.has(pid) && inTree.has(ppid)) (inTree.add(pid), (grew = true));
  }
  for (const [pid, , own] of stats) if (inTree.has(pid)) total += own;
  return total;
}

function ours(serverPid) {
  const self = procStat(process.pid);
  return (self ? self[2] + self[3] : 0) + (serverPid === undefined ? 0 : treeJiffies(serverPid));
}

/** Starts measuring; `stop()` returns the share of the machine (0..1) used by others since. */
export function foreignMeter(serverPid) {
  const t0 = Date.now();
  const busy0 = machineBusy();
  const ours0 = ours(serverPid);
  return () => {
    const seconds = (Date.now() - t0) / 1000;
    const foreign = machineBusy() - busy0 - (ours(serverPid) - ours0);
    return Math.max(0, foreign) / (seconds * HZ * CPUS);
  };
}

/**
 * Waits until the machine is quiet (others use less than `threshold` of it over one second) or `maxWaitMs`
 * has passed. Resolves with the last share seen and how long it waited.
 */
export async function waitForQuiet(serverPid, { threshold, maxWaitMs, onWait }) {
  const start = Date.now();
  for (let announced = false; ; ) {
    const stop = foreignMeter(serverPid);
    await new Promise((r) => setTimeout(r, 1000));
    const share = stop();
    if (share < threshold || Date.now() - start > maxWaitMs) return { share, waitedMs: Date.now() - start };
    if (!announced) onWait?.(share);
    announced = true;
  }
}

/**
 * One benchmark sample taken on a quiet machine: waits for quiet, runs `run(settings.warmup)` as a warm-up, then
 * `run(settings.duration)` while watching the rest of the machine; a sample disturbed by other processes (a test
 * run, a compile) is taken again after the machine is quiet, up to `settings.retries` times. `run` resolves with
 * a result object, to which `noise` (the share others used) is added. `log` prints progress lines.
 */
export async function measureQuietly(serverPid, run, what, settings, log) {
  const quiet = () =>
    waitForQuiet(serverPid, {
      threshold: settings.noise,
      maxWaitMs: settings.quietWaitMs,
      onWait: (share) => log(`    waiting for a quiet machine (others use ${pct(share)} of the CPUs)…`),
    });
  await quiet();
  await run(settings.warmup);
  for (let attempt = 0; ; attempt++) {
    const stop = foreignMeter(serverPid);
    const result = await run(settings.duration);
    result.noise = stop();
    if (result.noise < settings.noise || attempt === settings.retries) return result;
    log(`    ${what}: others used ${pct(result.noise)} of the CPUs during the run; measuring again`);
    await quiet();
  }
}
