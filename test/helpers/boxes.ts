/**
 * Cluster tests: N `portico run` processes as N boxes of one cluster, box i (1…N) listening on 127.0.0.i (the
 * whole of 127/8 is loopback on Linux), each with its own folder, config and name (`box1`…), one Redis, one secret.
 * Each box's admin API (when its config has `admin.listen`) is found from its log line `admin API on URL`.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PorticoProcess } from './process.js';

/** The cluster secret every test box uses. */
export const CLUSTER_KEY = 'test-cluster-secret-0123456789abcdef0123456789';

/** One box of a test cluster. */
export interface Box {
  /** 1…N. */
  index: number;
  /** `box1`…: its `cluster.name`. */
  name: string;
  /** 127.0.0.i. */
  host: string;
  /** Its folder (the config file, state_dir `./var`). */
  dir: string;
  process: PorticoProcess;
  /** The first listener's port. */
  port: number;
  /** `http://127.0.0.i:PORT`. */
  origin: string;
  /** The admin API's URL (`http://127.0.0.i:PORT/`) when its config has one. */
  admin: string | undefined;
}

/** What a test says about the cluster's configs. */
export interface BoxesOptions {
  /** How many boxes (default 3). */
  count?: number;
  /** The Redis URL every box's `cluster.redis` names. */
  redis: string;
  /** A prefix of the test's own (default a random one), so tests sharing a Redis do not meet. */
  prefix?: string;
  /**
   * The rest of box i's config (YAML after the `cluster` section): listeners, sites, upstreams. `host` is the box's
   * address (listen on `${host}:0`).
   */
  config(box: { index: number; name: string; host: string; dir: string }): string;
  /** Environment added to every box's (the cluster secret is set). */
  env?: NodeJS.ProcessEnv;
  /** More of the `cluster` section (indented YAML lines such as `  timeout: 100ms\n`). */
  cluster?: string;
}

/** The config text of box i: the cluster section then the test's part. */
export function boxConfig(options: BoxesOptions, box: { index: number; name: string; host: string; dir: string }, prefix: string): string {
  return `cluster:\n  redis: ${options.redis}\n  prefix: ${prefix}\n  name: ${box.name}\n${options.cluster ?? ''}state_dir: ./var\n${options.config(box)}`;
}

/** A test cluster's boxes, started one by one. */
export class Boxes {
  readonly boxes: Box[] = [];
  readonly prefix: string;
  readonly #options: BoxesOptions;

  private constructor(options: BoxesOptions) {
    this.#options = options;
    this.prefix = options.prefix ?? `test:${Math.random().toString(36).slice(2, 10)}`;
  }

  /** Starts `count` boxes (in order) and waits until each serves. */
  static async start(options: BoxesOptions): Promise<Boxes> {
    const boxes = new Boxes(options);
    try {
      for (let i = 1; i <= (options.count ?? 3); i++) boxes.boxes.push(await boxes.#startBox(i, mkdtempSync(path.join(tmpdir(), `portico-box${i}-`))));
    } catch (err) {
      await boxes.stop();
      throw err;
    }
    return boxes;
  }

  /** Box i (1…N). */
  box(index: number): Box {
    return this.boxes[index - 1]!;
  }

  /** Stops box i (SIGTERM, or SIGKILL with `kill`) and starts it again in its folder with the same config. */
  async restart(index: number, kill = false): Promise<Box> {
    const old = this.box(index);
    if (kill) {
      old.process.child.kill('SIGKILL');
      await old.process.exited;
    } else await old.process.stop();
    const fresh = await this.#startBox(index, old.dir);
    this.boxes[index - 1] = fresh;
    return fresh;
  }

  /** Stops every box (SIGTERM), in parallel. */
  async stop(): Promise<void> {
    await Promise.all(this.boxes.map((box) => box.process.stop()));
  }

  async #startBox(index: number, dir: string): Promise<Box> {
    const host = `127.0.0.${index}`;
    const name = `box${index}`;
    const file = path.join(dir, 'portico.yaml');
    const text = boxConfig(this.#options, { index, name, host, dir }, this.prefix);
    writeFileSync(file, text);
    const running = await PorticoProcess.start(file, dir, [], { PORTICO_CLUSTER_KEY: CLUSTER_KEY, ...this.#options.env });
    // `portico run` names the admin listener just after the serving line it waited for: wait for it too when there is one.
    const hasAdmin = /^admin:.*\blisten:|^admin:\n(?: .*\n)*? {2}listen:/m.test(text);
    const adminLine = hasAdmin ? /admin API on (https?:\/\/[^\s"]+)/.exec(await running.waitForLine(/admin API on https?:\/\//, 0)) : null;
    return { index, name, host, dir, process: running, port: running.port, origin: `http://${host}:${running.port}`, admin: adminLine?.[1] };
  }
}
