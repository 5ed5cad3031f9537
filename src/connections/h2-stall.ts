/**
 * send_timeout for HTTP/2 (HTTP/1.1's is the keep-alive sweep's, `keepalive.ts`). One non-reading h2 client can
 * hold many streams, each of them an answer from an app server that waits for Portico to take more, for as
 * long as it keeps its connection open: flow control stalls a stream without any error, and `keepalive_timeout`
 * does not apply while streams are open. A sweep looks at each session a few times per timeout:
 *
 * - a stream with bytes waiting (its window exhausted: the client sends no WINDOW_UPDATE) that made no progress
 *   for `send_timeout` is reset (RST_STREAM CANCEL); its request's `close` aborts what it held upstream. The
 *   session goes on for its other streams.
 * - a session with bytes waiting to go out on its socket (the client does not read at all) that made no
 *   progress for `send_timeout` is closed with a TCP reset, every stream with it.
 *
 * And a disconnect that Node does not see: while a write of a session is stuck (the peer reads nothing), Node's
 * HTTP/2 session stops reading its socket, so a peer that then closes (FIN or RST) goes unnoticed, and its
 * streams — and the app-server requests behind them — stay open for good. A session whose writes have made no
 * progress for a sweep has its socket's reading restarted (`probePeer`), which makes such a close arrive.
 */
import type { ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import { constants } from 'node:http2';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import { probePeer, queuedInKernelWrite, wrappedSocket } from './node-internals.js';
import { resetConnection, sweepInterval } from './keepalive.js';

interface SessionWatch {
  /** Bytes the accepted socket had written, at the last change seen. */
  written: number;
  /** When the session last made progress or began to have bytes waiting. */
  since: number;
  /** The session's open streams. */
  readonly streams: Set<WatchedStream>;
}

/** What a stream's sweep saw: bytes waiting and drains so far, and since when neither has moved. */
interface StreamWatch {
  waiting: number;
  drains: number;
  since: number;
}

const kStreams = Symbol('portico.h2.streams');
const kWatch = Symbol('portico.h2.watch');
const kDrains = Symbol('portico.h2.drains');
type WatchedStream = ServerHttp2Stream & { [kStreams]?: Set<WatchedStream>; [kWatch]?: StreamWatch; [kDrains]?: number };

/**
 * Counts a stream's drains: a reader that is slow but steady leaves the same number of bytes waiting at every
 * look (one chunk going out, the next queued behind it), so the count waiting alone would call it stalled; each
 * drain is a chunk that went out. (One shared listener, no closure per stream.)
 */
function countDrain(this: WatchedStream): void {
  this[kDrains] = (this[kDrains] ?? 0) + 1;
}

/** A stream closed: it leaves its session's set (one shared listener, no closure per stream). */
function untrackStream(this: WatchedStream): void {
  this[kStreams]?.delete(this);
}

/** What the watch tells the listener when it cut a session, or `streams` streams of one (once per sweep, not per stream). */
export type StallHandler = (what: 'streams' | 'session', session: ServerHttp2Session, streams: number) => void;

/** Enforces send_timeout on the HTTP/2 sessions of one listener (0: none; disconnects are still probed). */
export class H2StallWatch {
  readonly #sessions = new Map<ServerHttp2Session, SessionWatch>();
  readonly #onCut: StallHandler;
  readonly #now: () => number;
  #sendTimeout: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(sendTimeoutMs: number, onCut: StallHandler = () => {}, now: () => number = () => performance.now()) {
    this.#sendTimeout = sendTimeoutMs;
    this.#onCut = onCut;
    this.#now = now;
  }

  /** How often sessions are looked at: a quarter of send_timeout, and at least every second (for the probe). */
  #interval(): number {
    return Math.min(1000, this.#sendTimeout > 0 ? sweepInterval(this.#sendTimeout) : 1000);
  }

  /** Starts watching a new session (until it closes). */
  watch(session: ServerHttp2Session): void {
    const streams = new Set<WatchedStream>();
    this.#sessions.set(session, { written: 0, since: this.#now(), streams });
    session.on('stream', (stream: WatchedStream) => {
      streams.add(stream);
      stream[kStreams] = streams;
      stream.once('close', untrackStream);
      stream.on('drain', countDrain);
    });
    session.once('close', () => {
      this.#sessions.delete(session);
      if (this.#sessions.size === 0) this.#stopTimer();
    });
    this.#timer ??= setInterval(() => this.sweep(), this.#interval()).unref();
  }

  /** Changes the timeout (a reload). */
  setTimeout(sendTimeoutMs: number): void {
    if (sendTimeoutMs === this.#sendTimeout) return;
    this.#sendTimeout = sendTimeoutMs;
    if (this.#timer === undefined) return;
    this.#stopTimer();
    this.#timer = setInterval(() => this.sweep(), this.#interval()).unref();
  }

  /** Stops sweeping (the listener closed); sessions still open are the listener's to cut. */
  stop(): void {
    this.#stopTimer();
    this.#sessions.clear();
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One look at every session (run by the timer). */
  sweep(): void {
    const now = this.#now();
    for (const [session, watch] of this.#sessions) {
      if (session.destroyed) continue;
      const tls = session.socket as unknown as TLSSocket;
      const raw = wrappedSocket(tls) ?? tls;
      if (this.#sessionStalled(tls, raw, watch, now)) {
        this.#sessions.delete(session);
        this.#onCut('session', session, watch.streams.size);
        resetConnection(raw);
        session.destroy();
        continue;
      }
      if (this.#sendTimeout === 0) continue;
      let cut = 0;
      for (const stream of watch.streams) {
        const waiting = stream.writableLength;
        const drains = stream[kDrains] ?? 0;
        // Most streams never have bytes waiting at a sweep: their record is made only when one does.
        const sw = stream[kWatch];
        if (sw === undefined) {
          if (waiting > 0) stream[kWatch] = { waiting, drains, since: now };
          continue;
        }
        if (waiting === 0 || waiting !== sw.waiting || drains !== sw.drains) {
          sw.waiting = waiting;
          sw.drains = drains;
          sw.since = now;
          continue;
        }
        if (now - sw.since < this.#sendTimeout || stream.destroyed) continue;
        watch.streams.delete(stream);
        cut++;
        stream.close(constants.NGHTTP2_CANCEL);
      }
      if (cut > 0) this.#onCut('streams', session, cut);
    }
  }

  /** Whether the session's socket has had bytes waiting without progress for send_timeout; probes the peer meanwhile. */
  #sessionStalled(tls: TLSSocket, raw: Socket, watch: SessionWatch, now: number): boolean {
    const waiting = tls.writableLength + queuedInKernelWrite(tls) + raw.writableLength;
    const written = raw.bytesWritten ?? 0;
    if (waiting === 0 || written !== watch.written) {
      watch.written = written;
      watch.since = now;
      return false;
    }
    // Stuck: Node's session reads nothing now; a close of the peer's shows only if its socket reads again.
    probePeer(raw);
    return this.#sendTimeout > 0 && now - watch.since >= this.#sendTimeout;
  }
}
