/**
 * A small pool of worker threads that check passwords against bcrypt hashes, so that a check (tens to hundreds
 * of milliseconds of CPU by design) never blocks the event loop. One per process, shared by every `basic_auth`
 * of every config (a reload keeps it): at most two workers, and one fewer than the cores, so that the event
 * loop keeps a core even while checks run back to back. Checks wait in a bounded queue; a full queue refuses
 * at once (the caller answers 503) instead of growing. Workers start on the first check, never hold the
 * process open while idle (unref), and end after a while without checks.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Queued checks at most, beyond those running. */
const MAX_QUEUED = 32;
/** Workers end after this long without a check. */
const IDLE_MS = 30_000;

interface Job {
  id: number;
  password: string;
  hash: string;
  settle(ok: boolean | Error): void;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
}

/** Worker threads checking bcrypt hashes, with a bounded queue. */
export class HashPool {
  readonly #size: number;
  readonly #maxQueued: number;
  readonly #slots: Slot[] = [];
  readonly #queue: Job[] = [];
  #nextId = 0;
  #started = 0;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(size: number, maxQueued: number) {
    this.#size = size;
    this.#maxQueued = maxQueued;
  }

  /** Checks in a worker whether `password` matches `hash`; `undefined` when the queue is full (try later). */
  verify(password: string, hash: string): Promise<boolean> | undefined {
    if (this.#queue.length >= this.#maxQueued) return undefined;
    return new Promise<boolean>((resolve, reject) => {
      const job: Job = { id: this.#nextId++, password, hash, settle: (ok) => (ok instanceof Error ? reject(ok) : resolve(ok)) };
      this.#queue.push(job);
      this.#dispatch();
    });
  }

  /** Checks handed to a worker since the pool was made (for tests and metrics). */
  get started(): number {
    return this.#started;
  }

  /** Checks running or waiting now. */
  get pending(): number {
    return this.#queue.length + this.#slots.filter((slot) => slot.job !== undefined).length;
  }

  /** Ends every worker; checks still queued or running fail. */
  async close(): Promise<void> {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const slots = this.#slots.splice(0);
    const closed = new Error('hash pool closed');
    for (const job of this.#queue.splice(0)) job.settle(closed);
    for (const slot of slots) slot.job?.settle(closed);
    await Promise.all(slots.map((slot) => slot.worker.terminate()));
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      let slot = this.#slots.find((candidate) => candidate.job === undefined);
      if (slot === undefined) {
        if (this.#slots.length >= this.#size) return;
        slot = this.#spawn();
      }
      const job = this.#queue.shift()!;
      slot.job = job;
      slot.worker.ref();
      this.#started++;
      clearTimeout(this.#idleTimer);
      this.#idleTimer = undefined;
      slot.worker.postMessage({ id: job.id, password: job.password, hash: job.hash });
    }
  }

  #spawn(): Slot {
    const worker = new Worker(new URL('./hash-worker.js', import.meta.url));
    const slot: Slot = { worker, job: undefined };
    worker.on('message', (message: { id: number; ok: boolean }) => {
      const job = slot.job;
      slot.job = undefined;
      worker.unref();
      if (job !== undefined && job.id === message.id) job.settle(message.ok);
      this.#dispatch();
      this.#armIdle();
    });
    // A worker that dies fails its check (a 500 for that request) and is replaced by the next dispatch.
    const lost = (err: Error) => {
      const index = this.#slots.indexOf(slot);
      if (index === -1) return;
      this.#slots.splice(index, 1);
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

/** The process's pool: two workers at most, and one fewer than the cores (at least one). */
export function sharedHashPool(): HashPool {
  shared ??= new HashPool(Math.min(2, Math.max(1, availableParallelism() - 1)), MAX_QUEUED);
  return shared;
}
