/**
 * A small pool of worker threads that check passwords against bcrypt hashes, so that a check (tens to hundreds
 * of milliseconds of CPU by design) never blocks the event loop. One per process, shared by every `basic_auth`
 * of every config (a reload keeps it): at most two workers, and one fewer than the cores, so that the event
 * loop keeps a core even while checks run back to back. Workers start on the first check, never hold the
 * process open while idle (unref), and end after a while without checks.
 *
 * Checks wait in a queue per client address, ranked by the client's recent failed attempts (given by the caller:
 * `basic_auth` counts them per address for `failure_limit`), so that clients flooding it with wrong passwords
 * cannot lock out another: the clients with the fewest failures are served first, in turn (round robin) among
 * equals, so a client with none (or whose last check succeeded) waits at most for the checks already running.
 * A client holds at most PER_CLIENT checks (running or queued), and when all the queues together hold
 * MAX_QUEUED, a newcomer's check takes the place of the newest check of the client with the most failures
 * (the longest queue among equals) when that client has more failures than the newcomer's, or as many and a
 * queue longer than the newcomer's would be; so only MAX_QUEUED clients with no failure, each with one check
 * waiting, can fill it against a clean newcomer.
 * A refused check resolves `undefined` (the caller answers 503): the queue never grows past its bound. A queued
 * check whose signal aborts (its client left) leaves the queue unrun and resolves `undefined` too; one running
 * goes to its end (a worker is not interrupted mid-hash).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Queued checks at most, beyond those running, over all clients. */
const MAX_QUEUED = 32;
/** Checks one client may have running or queued. */
const PER_CLIENT = 4;
/** Workers end after this long without a check. */
const IDLE_MS = 30_000;

interface Job {
  id: number;
  client: string;
  password: string;
  hash: string;
  settle(ok: boolean | undefined | Error): void;
  /** Takes the job out of the queue when its signal aborts; undefined without a signal. */
  leave: (() => void) | undefined;
  signal: AbortSignal | undefined;
}

/** One client's queued checks and its failed attempts when it last asked (its rank: fewer is served first). */
interface ClientQueue {
  jobs: Job[];
  failures: number;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
}

/** Worker threads checking bcrypt hashes, with a bounded queue per client served in turn. */
export class HashPool {
  readonly #size: number;
  readonly #maxQueued: number;
  readonly #perClient: number;
  readonly #slots: Slot[] = [];
  /** Queued checks by client, in the order of their turns (a client served goes to the back). */
  readonly #queues = new Map<string, ClientQueue>();
  /** Checks by client, running or queued. */
  readonly #held = new Map<string, number>();
  #queued = 0;
  #nextId = 0;
  #started = 0;
  #withdrawn = 0;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(size: number, maxQueued: number, perClient = PER_CLIENT) {
    this.#size = size;
    this.#maxQueued = maxQueued;
    this.#perClient = perClient;
  }

  /**
   * Checks in a worker whether `password` matches `hash`, in the turn of `client` (its address), which has
   * `failures` recent failed attempts (its rank: clients with fewer are served first); resolves `undefined` when
   * the check is refused (the client holds its share, or the queue is full of clients with no more failures:
   * try later), or withdrawn: `signal` aborted while it was still queued (every request waiting for it went away).
   */
  verify(password: string, hash: string, client: string, signal?: AbortSignal, failures = 0): Promise<boolean | undefined> {
    if (signal?.aborted === true) return Promise.resolve(undefined);
    const held = this.#held.get(client) ?? 0;
    if (held >= this.#perClient) return Promise.resolve(undefined);
    if (this.#queued >= this.#maxQueued && !this.#makeRoom(this.#queues.get(client)?.jobs.length ?? 0, failures)) return Promise.resolve(undefined);
    return new Promise<boolean | undefined>((resolve, reject) => {
      const job: Job = {
        id: this.#nextId++,
        client,
        password,
        hash,
        settle: (ok) => {
          job.signal?.removeEventListener('abort', job.leave!);
          if (ok instanceof Error) reject(ok);
          else resolve(ok);
        },
        leave: undefined,
        signal,
      };
      if (signal !== undefined) {
        job.leave = () => this.#withdraw(job);
        signal.addEventListener('abort', job.leave, { once: true });
      }
      this.#held.set(client, held + 1);
      // Looked up again: making room may have emptied this client's own queue.
      const queue = this.#queues.get(client);
      if (queue === undefined) this.#queues.set(client, { jobs: [job], failures });
      else {
        queue.jobs.push(job);
        queue.failures = failures;
      }
      this.#queued++;
      this.#dispatch();
    });
  }

  /**
   * Refuses the newest check of the client ranked last (most failures, then longest queue) when it ranks below
   * the newcomer: more failures than `failures`, or as many and a queue longer than `own` + 1 (the newcomer's
   * would be).
   */
  #makeRoom(own: number, failures: number): boolean {
    let last: [string, ClientQueue] | undefined;
    for (const entry of this.#queues) {
      const queue = entry[1];
      if (last === undefined || queue.failures > last[1].failures || (queue.failures === last[1].failures && queue.jobs.length > last[1].jobs.length)) last = entry;
    }
    if (last === undefined) return false;
    const [client, queue] = last;
    if (queue.failures < failures || (queue.failures === failures && queue.jobs.length <= own + 1)) return false;
    const dropped = queue.jobs.pop()!;
    if (queue.jobs.length === 0) this.#queues.delete(client);
    this.#queued--;
    this.#done(dropped.client);
    dropped.settle(undefined);
    return true;
  }

  /** Takes a queued check out unrun (its requests went away); one already running is left to end. */
  #withdraw(job: Job): void {
    const queue = this.#queues.get(job.client);
    const at = queue?.jobs.indexOf(job) ?? -1;
    if (at === -1) return;
    queue!.jobs.splice(at, 1);
    if (queue!.jobs.length === 0) this.#queues.delete(job.client);
    this.#queued--;
    this.#withdrawn++;
    this.#done(job.client);
    job.settle(undefined);
    this.#armIdle();
  }

  /** A check of `client` ended or was refused. */
  #done(client: string): void {
    const held = this.#held.get(client)! - 1;
    if (held === 0) this.#held.delete(client);
    else this.#held.set(client, held);
  }

  /** Checks handed to a worker since the pool was made (for tests and metrics). */
  get started(): number {
    return this.#started;
  }

  /** Queued checks taken out unrun because their requests went away (for tests and metrics). */
  get withdrawn(): number {
    return this.#withdrawn;
  }

  /** Checks running or waiting now. */
  get pending(): number {
    return this.#queued + this.#slots.filter((slot) => slot.job !== undefined).length;
  }

  /** Ends every worker; checks still queued or running fail. */
  async close(): Promise<void> {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const slots = this.#slots.splice(0);
    const closed = new Error('hash pool closed');
    for (const queue of this.#queues.values()) for (const job of queue.jobs) job.settle(closed);
    this.#queues.clear();
    this.#held.clear();
    this.#queued = 0;
    for (const slot of slots) slot.job?.settle(closed);
    await Promise.all(slots.map((slot) => slot.worker.terminate()));
  }

  #dispatch(): void {
    while (this.#queued > 0) {
      let slot = this.#slots.find((candidate) => candidate.job === undefined);
      if (slot === undefined) {
        if (this.#slots.length >= this.#size) return;
        slot = this.#spawn();
      }
      const job = this.#next();
      slot.job = job;
      slot.worker.ref();
      this.#started++;
      clearTimeout(this.#idleTimer);
      this.#idleTimer = undefined;
      slot.worker.postMessage({ id: job.id, password: job.password, hash: job.hash });
    }
  }

  /** The first check of the next client with the fewest failures; that client goes to the back of the turns. */
  #next(): Job {
    let first: [string, ClientQueue] | undefined;
    for (const entry of this.#queues) if (first === undefined || entry[1].failures < first[1].failures) first = entry;
    const [client, queue] = first!;
    const job = queue.jobs.shift()!;
    this.#queues.delete(client);
    if (queue.jobs.length > 0) this.#queues.set(client, queue);
    this.#queued--;
    return job;
  }

  #spawn(): Slot {
    const worker = new Worker(new URL('./hash-worker.js', import.meta.url));
    const slot: Slot = { worker, job: undefined };
    worker.on('message', (message: { id: number; ok: boolean }) => {
      const job = slot.job;
      slot.job = undefined;
      worker.unref();
      if (job !== undefined) this.#done(job.client);
      if (job !== undefined && job.id === message.id) job.settle(message.ok);
      this.#dispatch();
      this.#armIdle();
    });
    // A worker that dies fails its check (a 500 for that request) and is replaced by the next dispatch.
    const lost = (err: Error) => {
      const index = this.#slots.indexOf(slot);
      if (index === -1) return;
      this.#slots.splice(index, 1);
      if (slot.job !== undefined) this.#done(slot.job.client);
      slot.job?.settle(err);
      slot.job = undefined;
      this.#dispatch();
    };
    worker.on('error', lost);
    worker.on('exit', (code) => lost(new Error(`hash worker exited with code ${code}`)));
    // Held open only while it checks (after the listeners: adding a `message` listener refs the worker again).
    worker.unref();
    this.#slots.push(slot);
    return slot;
  }

  #armIdle(): void {
    if (this.pending > 0 || this.#idleTimer !== undefined) return;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.pending === 0) void this.close();
    }, IDLE_MS);
    this.#idleTimer.unref();
  }
}

let shared: HashPool | undefined;

/** The process's pool: two workers at most, and one fewer than the cores (at least one); see MAX_QUEUED, PER_CLIENT. */
export function sharedHashPool(): HashPool {
  shared ??= new HashPool(Math.min(2, Math.max(1, availableParallelism() - 1)), MAX_QUEUED);
  return shared;
}
