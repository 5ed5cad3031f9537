/**
 * Jobs: a reload, upgrade or deploy asked through the admin API runs on the one serialised path of the CLI and is
 * answered at once with a job id; its progress and result are kept here (the last `MAX_JOBS`, each with at most
 * `MAX_EVENTS` progress events) for `GET /jobs/{id}`, its event stream and the dashboard's `event: job`.
 */
import { randomUUID } from 'node:crypto';
import type { OperationResult, ProgressEvent } from './protocol.js';

/** Jobs kept (the oldest finished ones go first). */
const MAX_JOBS = 50;
/** Progress events kept per job (a long deploy's first ones go first; `dropped` counts them). */
const MAX_EVENTS = 500;

/** One operation asked through the admin API, as `GET /jobs/{id}` shows it. */
export interface Job {
  id: string;
  /** `reload`, `upgrade`, or `deploy NAME`. */
  operation: string;
  state: 'queued' | 'running' | 'done' | 'failed';
  created: string;
  started?: string;
  finished?: string;
  events: ProgressEvent[];
  /** Progress events dropped from the front of `events` (past MAX_EVENTS). */
  dropped?: number;
  result?: OperationResult;
}

/** What a job's watcher hears: a progress event, or the job's end. */
export type JobListener = (change: { progress: ProgressEvent } | { result: OperationResult }) => void;

/** How a job reports as it runs. */
export interface JobReporter {
  /** The operation left the queue and runs. */
  started(): void;
  progress(event: ProgressEvent): void;
  finished(result: OperationResult): void;
}

/** The admin API's jobs. */
export class Jobs {
  readonly #jobs = new Map<string, Job>();
  readonly #watchers = new Map<string, Set<JobListener>>();
  readonly #changed: (job: Job) => void;

  /** Jobs telling `changed` whenever one is created, starts, reports or ends. */
  constructor(changed: (job: Job) => void = () => {}) {
    this.#changed = changed;
  }

  /** A new queued job for `operation`, and how it reports. */
  create(operation: string): { job: Job; reporter: JobReporter } {
    const job: Job = { id: randomUUID(), operation, state: 'queued', created: new Date().toISOString(), events: [] };
    this.#jobs.set(job.id, job);
    this.#prune();
    this.#changed(job);
    const reporter: JobReporter = {
      started: () => {
        if (job.state !== 'queued') return;
        job.state = 'running';
        job.started = new Date().toISOString();
        this.#changed(job);
      },
      progress: (event) => {
        if (job.result !== undefined) return;
        job.events.push(event);
        if (job.events.length > MAX_EVENTS) {
          job.events.shift();
          job.dropped = (job.dropped ?? 0) + 1;
        }
        for (const watch of this.#watchers.get(job.id) ?? []) watch({ progress: event });
        this.#changed(job);
      },
      finished: (result) => {
        if (job.result !== undefined) return;
        job.result = result;
        job.state = result.ok ? 'done' : 'failed';
        job.finished = new Date().toISOString();
        for (const watch of this.#watchers.get(job.id) ?? []) watch({ result });
        this.#watchers.delete(job.id);
        this.#changed(job);
      },
    };
    return { job, reporter };
  }

  /** A job by id. */
  get(id: string): Job | undefined {
    return this.#jobs.get(id);
  }

  /** Every job kept, newest first. */
  list(): Job[] {
    return [...this.#jobs.values()].reverse();
  }

  /** Hears a running job's progress and end; returns the unsubscription. A finished job is never heard. */
  watch(id: string, listener: JobListener): () => void {
    const job = this.#jobs.get(id);
    if (job === undefined || job.result !== undefined) return () => {};
    let set = this.#watchers.get(id);
    if (set === undefined) this.#watchers.set(id, (set = new Set()));
    set.add(listener);
    return () => void set.delete(listener);
  }

  /** Drops the oldest finished jobs past MAX_JOBS (running ones are kept: their clients wait on them). */
  #prune(): void {
    for (const [id, job] of this.#jobs) {
      if (this.#jobs.size <= MAX_JOBS) return;
      if (job.result !== undefined) this.#jobs.delete(id);
    }
  }
}
