/**
 * The bounded JSON body of a request to Portico's own servers (the control socket and the admin API): a few short
 * fields, so a body past 64 KiB is refused rather than held.
 */
import type { IncomingMessage } from 'node:http';
import { PorticoError } from '../errors.js';

/** The largest request body accepted: requests are a few short fields. */
const MAX_BODY = 64 * 1024;

/**
 * The request's JSON body: an object (an empty body: `{}`), at most 64 KiB. `what` names the request in the
 * too-large error ("an admin request", "a control request"); a body that is not a JSON object is a 400.
 */
export async function readJsonBody(req: IncomingMessage, what: string): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new PorticoError('PORTICO_PAYLOAD_TOO_LARGE', `${what} body is at most ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
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
