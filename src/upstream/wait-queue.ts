/**
 * The capacity queue's waiters, in lanes: a lane holds the waiters that are alike for selection (pinned to the
 * same server, the same servers already tried), so that the head of a lane speaks for all of it: when it cannot
 * use what is free, none behind it can. A release then looks at one waiter per lane, not at every waiter (a
 * thousand requests pinned to a busy server cost one look, not a thousand). Arrival order across lanes is kept by
 * a sequence number, so the oldest head that can use a turn is the first waiter, in queue order, that can.
 */

/** A place in a `WaitQueue`: hand it back to `remove`. */
export interface QueueEntry<T> {
  readonly value: T;
  /** Queue order: lower is earlier (an entry put at the head gets a number below every other). */
  readonly seq: number;
  prev: QueueEntry<T> | undefined;
  next: QueueEntry<T> | undefined;
  /** Its lane, undefined once it left the queue. */
  lane: Lane<T> | undefined;
}

interface Lane<T> {
  readonly key: string;
  head: QueueEntry<T> | undefined;
  tail: QueueEntry<T> | undefined;
}

/** A FIFO of waiters in lanes of alike ones; removal anywhere is O(1). */
export class WaitQueue<T> {
  readonly #lanes = new Map<string, Lane<T>>();
  #size = 0;
  /** The sequence numbers last given at the head and at the tail. */
  #first = 0;
  #last = 0;

  /** Waiters queued. */
  get size(): number {
    return this.#size;
  }

  /** Queues `value` in the lane `key`, at the tail of the whole queue, or at its head with `atHead`. */
  add(key: string, value: T, atHead: boolean): QueueEntry<T> {
    let lane = this.#lanes.get(key);
    if (lane === undefined) {
      lane = { key, head: undefined, tail: undefined };
      this.#lanes.set(key, lane);
    }
    const entry: QueueEntry<T> = { value, seq: atHead ? --this.#first : ++this.#last, prev: undefined, next: undefined, lane };
    // Every entry put at the head is earlier than every other, so a lane stays in queue order.
    if (atHead) {
      entry.next = lane.head;
      if (lane.head === undefined) lane.tail = entry;
      else lane.head.prev = entry;
      lane.head = entry;
    } else {
      entry.prev = lane.tail;
      if (lane.tail === undefined) lane.head = entry;
      else lane.tail.next = entry;
      lane.tail = entry;
    }
    this.#size++;
    return entry;
  }

  /** Takes `entry` out of the queue; false when it had already left. */
  remove(entry: QueueEntry<T>): boolean {
    const lane = entry.lane;
    if (lane === undefined) return false;
    if (entry.prev === undefined) lane.head = entry.next;
    else entry.prev.next = entry.next;
    if (entry.next === undefined) lane.tail = entry.prev;
    else entry.next.prev = entry.prev;
    entry.prev = entry.next = entry.lane = undefined;
    if (lane.head === undefined) this.#lanes.delete(lane.key);
    this.#size--;
    return true;
  }

  /**
   * The first entry in queue order whose value `usable` accepts, asking only the head of each lane (the lane's
   * others are alike and later), and no head later than one already accepted. It stays queued.
   */
  first(usable: (value: T) => boolean): QueueEntry<T> | undefined {
    let best: QueueEntry<T> | undefined;
    for (const lane of this.#lanes.values()) {
      const head = lane.head!;
      if (best !== undefined && head.seq > best.seq) continue;
      if (usable(head.value)) best = head;
    }
    return best;
  }

  /** Empties the queue, returning what it held. */
  clear(): T[] {
    const values: T[] = [];
    for (const lane of this.#lanes.values()) {
      for (let entry = lane.head; entry !== undefined; entry = entry.next) {
        values.push(entry.value);
        entry.lane = undefined;
      }
    }
    this.#lanes.clear();
    this.#size = 0;
    return values;
  }
}
