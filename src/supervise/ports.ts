/**
 * The ports of `spawn.ports` that Portico hands to instances. A port goes to one instance of Portico's at a time
 * (a deploy's surge instance never gets the port of the one it replaces), is probed before it is given out (a
 * port another program listens on is skipped), and the ranges are walked round-robin so that a port just given
 * back is the last one taken again. Probing alone is a race (a program may bind between the probe and the
 * instance): the Supervisor also retries an instance that dies with EADDRINUSE on another port.
 */
import net from 'node:net';

/** A range of ports, both ends included. */
export interface PortRange {
  readonly from: number;
  readonly to: number;
}

/** Whether nothing listens on 127.0.0.1:`port` (a listener of ours binds it for a moment and closes it). */
function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The ports in use by Portico's instances, and which to take next. */
export class PortPool {
  readonly #taken = new Set<number>();
  readonly #next = new Map<string, number>();

  /** Takes a free port of `range` that is not in `skip`; undefined when there is none. */
  async take(range: PortRange, skip: ReadonlySet<number> = new Set()): Promise<number | undefined> {
    const key = `${range.from}-${range.to}`;
    const size = range.to - range.from + 1;
    const first = this.#next.get(key) ?? range.from;
    for (let i = 0; i < size; i++) {
      const port = range.from + ((first - range.from + i) % size);
      if (this.#taken.has(port) || skip.has(port)) continue;
      this.#taken.add(port); // held while probing: a concurrent take moves on
      if (await probe(port)) {
        this.#next.set(key, port === range.to ? range.from : port + 1);
        return port;
      }
      this.#taken.delete(port);
    }
    return undefined;
  }

  /** Gives a port back (its instance has exited). */
  release(port: number): void {
    this.#taken.delete(port);
  }

  /** Whether an instance of Portico's holds `port`. */
  has(port: number): boolean {
    return this.#taken.has(port);
  }
}
