/**
 * The requests of an upstream that wait for a server with capacity (under `max_conns`, a pool connection free),
 * within the queue's size and timeout, and the handing out of each turn freed.
 *
 * Waiters alike for selection (the same pin and the same servers tried) share a lane (see `WaitQueue`): a turn
 * goes to the first waiter whose own selection would find a server now (a request pinned to a busy server, or that
 * already tried the one freed, is passed over), and only the head of each lane is asked, so the work does not grow
 * with waiters that cannot use the turn.
 *
 * Scope: one upstream (a reload's new upstream has its own; the two are paired while the old one drains).
 */
import type { UpstreamServer } from './server.js';
import { WaitQueue, type QueueEntry } from './wait-queue.js';

/**
 * A request's place in the capacity queue over its waits (see `CapacityQueue.wait`): `until` is 0 before its first
 * wait, then that wait's deadline, kept by later ones.
 */
export interface QueuePlace {
  until: number;
}

/** A place in the capacity queue: `ready` resolves true when capacity may be free, false on timeout or cancel. */
export interface CapacityWait {
  readonly ready: Promise<boolean>;
  /** Leaves the queue (the client went away): `ready` resolves false. */
  cancel(): void;
}

const NO_ROOM: CapacityWait = Object.freeze({ ready: Promise.resolve(false), cancel() {} });

interface Waiter {
  resolve: (ok: boolean) => void;
  timer: NodeJS.Timeout;
  /** What its request selects with: a turn goes to a waiter that can use it, no other. */
  sticky: string | undefined;
  tried: ReadonlySet<number> | undefined;
}

/** What the queue asks of its upstream. */
export interface CapacitySource {
  /** Whether any server has capacity now (nothing to hand out otherwise). */
  anyCapacity(): boolean;
  /** The server a request selecting with `sticky` and `tried` would get now, without running the policy. */
  probe(tried: ReadonlySet<number> | undefined, sticky: string | undefined): UpstreamServer | undefined;
  /** Counts a turn given on `server` as taken (`Upstream.acquire`), until `unhold`. */
  hold(server: UpstreamServer): void;
  unhold(server: UpstreamServer): void;
}

/** The capacity queue of one upstream (see the file comment). */
export class CapacityQueue {
  readonly #size: number;
  readonly #timeout: number;
  readonly #source: CapacitySource;
  readonly #queue = new WaitQueue<Waiter>();
  /** The server the last successful probe of `#canUse` found. */
  #probed: UpstreamServer | undefined = undefined;
  /** Servers given to woken waiters in one `wake` pass, counted as taken until the pass ends. */
  readonly #promised: UpstreamServer[] = [];
  /** A check, after a turn was given, that it was taken (see `wake`); undefined when none is due. */
  #recheck: NodeJS.Immediate | undefined = undefined;

  constructor(queue: { size: number; timeout: number }, source: CapacitySource) {
    this.#size = queue.size;
    this.#timeout = queue.timeout;
    this.#source = source;
  }

  /**
   * Waits (within the queue's size and timeout) until some server may have capacity for this request: its own
   * selection with `pin` (a sticky value or route that names a server, else undefined) and `tried` would find one.
   * The wait ends false on timeout, or when cancelled (its client went away), and leaves the queue then.
   */
  wait(place: QueuePlace | undefined, pin: string | undefined, tried: ReadonlySet<number> | undefined): CapacityWait {
    if (this.#queue.size >= this.#size) return NO_ROOM;
    // Woken and still without a server (another request took the turn), a request waits again at the queue's
    // head, to its first deadline: its wait is bounded by queue.timeout in all, and later arrivals do not pass it.
    const again = place !== undefined && place.until !== 0;
    if (place !== undefined && !again) place.until = Date.now() + this.#timeout;
    const wait = place === undefined ? this.#timeout : Math.max(0, place.until - Date.now());
    const lane = tried === undefined || tried.size === 0 ? `${pin ?? ''}` : `${pin ?? ''}\0${[...tried].sort((a, b) => a - b).join(',')}`;
    let entry!: QueueEntry<Waiter>;
    const leave = (): void => {
      if (!this.#queue.remove(entry)) return;
      clearTimeout(entry.value.timer);
      entry.value.resolve(false);
    };
    const ready = new Promise<boolean>((resolve) => {
      entry = this.#queue.add(lane, { resolve, timer: setTimeout(leave, wait), sticky: pin, tried }, again);
    });
    return { ready, cancel: leave };
  }

  /**
   * Gives each free turn to the first waiter that can use it now. Capacity freed in bulk (a server back up) is
   * handed out in one pass: each turn given counts as taken on the server its probe found until the pass ends. A
   * turn is a handoff that is taken or passed on, never lost: a woken request selects at once (in its promise
   * reaction), so when the check after it (an immediate, later than every reaction) still finds capacity the queue
   * can use, a turn was not taken (its client went away, it chose to give up, another server went down, or it chose
   * another server than its probe) and goes on.
   */
  wake(): void {
    const queue = this.#queue;
    if (queue.size === 0 || !this.#source.anyCapacity()) return;
    const promised = this.#promised;
    try {
      for (let entry = queue.first(this.#canUse); entry !== undefined; entry = queue.first(this.#canUse)) {
        const server = this.#probed!;
        this.#source.hold(server);
        promised.push(server);
        queue.remove(entry);
        clearTimeout(entry.value.timer);
        entry.value.resolve(true);
      }
    } finally {
      for (const server of promised) this.#source.unhold(server);
      if (promised.length > 0) this.#recheck ??= setImmediate(this.#recheckTurn);
      promised.length = 0;
    }
  }

  /** Lets every waiter go (its request answers 503) and leaves no timer. */
  clear(): void {
    if (this.#recheck !== undefined) clearImmediate(this.#recheck);
    this.#recheck = undefined;
    for (const waiter of this.#queue.clear()) {
      clearTimeout(waiter.timer);
      waiter.resolve(false);
    }
  }

  /** Whether `waiter`'s own selection would find a server now (kept in `#probed`). */
  readonly #canUse = (waiter: Waiter): boolean => {
    const server = this.#source.probe(waiter.tried, waiter.sticky);
    if (server === undefined) return false;
    this.#probed = server;
    return true;
  };

  readonly #recheckTurn = (): void => {
    this.#recheck = undefined;
    this.wake();
  };
}
