/** The contract every handler kind implements, and what the app gives it when the config is loaded. */
import type { Logger } from 'pino';
import type { Handler } from '../server/context.js';

/** What a handler factory may use besides its own options. */
export interface HandlerEnv {
  logger: Logger;
  /** Value of the `Server` header, or `''` for none. */
  serverHeader: string;
}

/** A compiled handler plus whatever it runs in the background (caches, timers), with their lifetimes. */
export interface HandlerInstance {
  handle: Handler;
  start?(): Promise<void> | void;
  /** Leaves no timer, socket or file handle behind. */
  stop?(): Promise<void> | void;
}

/** A handler kind: its config key and the factory that resolves its options once. */
export interface HandlerKind<Options> {
  readonly kind: string;
  create(options: Options, env: HandlerEnv): HandlerInstance;
}
