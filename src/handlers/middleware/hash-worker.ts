/**
 * The body of a hash-pool worker thread: checks one password against one bcrypt hash per message, off the
 * event loop of the server (see `hash-pool.ts`).
 */
import { parentPort } from 'node:worker_threads';
import bcrypt from 'bcryptjs';

/** A check the pool sends: an id to answer with, the password and the hash. */
interface HashJob {
  id: number;
  password: string;
  hash: string;
}

parentPort!.on('message', function checkPassword(job: HashJob) {
  let ok = false;
  try {
    ok = bcrypt.compareSync(job.password, job.hash);
  } catch {
    // A malformed hash never matches (config load refuses them; this only guards the worker).
  }
  parentPort!.postMessage({ id: job.id, ok });
});
