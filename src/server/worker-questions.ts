/**
 * The primary's questions to its workers (`workers: N`): one message sent to some workers, each of whom answers
 * with a message carrying the question's `seq`. One counter and one table for every kind of question (a move, a
 * reload, status, an operator's action or purge, a log reopen), so that each caller only says whom it asks, what,
 * for how long, and what it makes of each reply.
 */
/** What a question needs of a worker (node:cluster's `Worker` is one): its id, and a way to send it a message. */
export interface QuestionedWorker {
  readonly id: number;
  send(message: object, callback: (error: Error | null) => void): boolean;
}

/** A worker to ask, and its slot (1…N: how the replies name it). */
export interface Asked {
  readonly slot: number;
  readonly worker: QuestionedWorker;
}

/**
 * A worker's reply to a question: its answer, or why it has none — it did not answer in time (`timeout`), it
 * exited first (`exited`), or the question could not be sent to it (`unsent`, with the IPC error).
 */
export type Reply<A> = { kind: 'answer'; answer: A } | { kind: 'timeout' } | { kind: 'exited' } | { kind: 'unsent'; error: Error };

/** One asked worker's reply, by slot. */
export interface Replied<A> {
  readonly slot: number;
  readonly reply: Reply<A>;
}

/** An open question: the answer kind it waits for, and each asked worker's pending reply, by worker id. */
interface Open<A> {
  readonly answer: string;
  readonly waits: Map<number, (reply: Reply<A>) => void>;
}

/**
 * The questions open between the primary and its workers: `ask` sends one, `answered` takes each worker's answer
 * (every answer kind goes through it), `gone` says a worker exited (it answers nothing more). `Q` is what the
 * primary sends, `A` what the workers answer.
 */
export class WorkerQuestions<Q extends object, A extends { readonly t: string; readonly seq: number }> {
  #seq = 0;
  readonly #open = new Map<number, Open<A>>();

  /**
   * Sends `make(seq)` to every worker of `asked` and resolves, once each has replied or `timeoutMs` passed (one
   * bound for the whole question), with each one's reply in the order asked: its `answer` message, or why it has
   * none. A late answer is dropped.
   */
  async ask<K extends A['t']>(answer: K, asked: readonly Asked[], make: (seq: number) => Q, timeoutMs: number): Promise<Array<Replied<Extract<A, { t: K }>>>> {
    const seq = ++this.#seq;
    const waits = new Map<number, (reply: Reply<A>) => void>();
    this.#open.set(seq, { answer, waits });
    const message = make(seq);
    const replies = asked.map(({ slot, worker }) => {
      return new Promise<Replied<A>>((resolve) => {
        waits.set(worker.id, (reply) => {
          waits.delete(worker.id);
          resolve({ slot, reply });
        });
        worker.send(message, (err: Error | null) => {
          if (err !== null) waits.get(worker.id)?.({ kind: 'unsent', error: err });
        });
      });
    });
    const timer = setTimeout(() => {
      for (const done of [...waits.values()]) done({ kind: 'timeout' });
    }, timeoutMs);
    try {
      // `answered` lets through only answers of kind `answer`.
      return (await Promise.all(replies)) as Array<Replied<Extract<A, { t: K }>>>;
    } finally {
      clearTimeout(timer);
      this.#open.delete(seq);
    }
  }

  /** Worker `workerId` answered: the question with the answer's `seq` (if still open and of its kind) has its reply. */
  answered(workerId: number, message: A): void {
    const open = this.#open.get(message.seq);
    if (open === undefined || open.answer !== message.t) return;
    open.waits.get(workerId)?.({ kind: 'answer', answer: message });
  }

  /** Worker `workerId` exited: every open question it had not answered has its reply (`exited`). */
  gone(workerId: number): void {
    for (const open of this.#open.values()) open.waits.get(workerId)?.({ kind: 'exited' });
  }
}
