/**
 * The bounded JSON body of a request to Portico's own servers (the control socket and the admin API): a few short
 * fields, so a body past 64 KiB is refused rather than held.
 */
import type { IncomingMessage } from 'node:http';
import { PorticoError } from '../errors.js';
import { readAtMost } from '../http/read-at-most.js';

/** The largest request body accepted: requests are a few short fields. */
const MAX_BODY = 64 * 1024;

/**
 * The request's JSON body: an object (an empty body: `{}`), at most 64 KiB. `what` names the request in the
 * too-large error ("an admin request", "a control request"); a body that is not a JSON object is a 400.
 */
export async function readJsonBody(req: IncomingMessage, what: string): Promise<Record<string, unknown>> {
  const bytes = await readAtMost(req as AsyncIterable<Buffer>, MAX_BODY);
  if (bytes === undefined) throw new PorticoError('PORTICO_PAYLOAD_TOO_LARGE', `${what} body is at most ${MAX_BODY} bytes`);
  const text = bytes.toString('utf8').trim();
  if (text === '') return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new PorticoError('PORTICO_BAD_REQUEST', `the request body is not JSON: ${(err as Error).message}`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new PorticoError('PORTICO_BAD_REQUEST', 'the request body must be a JSON object');
  return body as Record<string, unknown>;
}
