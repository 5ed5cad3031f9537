/**
 * The admin API's HTTP helpers: JSON answers and errors, the bounded JSON body, and the checks of the bodies of a
 * server action and a purge (400 with what was expected).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { PorticoError } from '../errors.js';
import type { PurgeTarget, ServerAction } from './admin-types.js';
import { readJsonBody } from './json-body.js';

/** A JSON answer, never cached, never sniffed. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = status === 204 ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(status === 204 ? {} : { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) }),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

/** A JSON error: `{ "error": { "code", "message" } }`. */
export function sendError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { error: { code, message } }, headers);
}

/** The request's JSON body: an object (empty body: `{}`), bounded in size (`readJsonBody`). */
export function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  return readJsonBody(req, 'an admin request');
}

/** Unknown fields a refusal names; past them it counts ("and 5995 more"): a 6,000-field body gets a short answer. */
const NAMED_FIELDS = 5;

/**
 * Refuses (400) a body with a field not in `allowed`, naming the first few unknown ones and what the route takes
 * (`takes`): one rule for every POST body, so that a misspelt field is never ignored silently.
 */
export function onlyFields(body: Record<string, unknown>, allowed: readonly string[], takes: string): void {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length === 0) return;
  const named = unknown.slice(0, NAMED_FIELDS).map((key) => JSON.stringify(key.length > 64 ? `${key.slice(0, 64)}…` : key)).join(', ');
  const more = unknown.length > NAMED_FIELDS ? ` and ${unknown.length - NAMED_FIELDS} more` : '';
  throw new PorticoError('PORTICO_BAD_REQUEST', `unknown field${unknown.length === 1 ? '' : 's'} ${named}${more}: ${takes}`);
}

/** The action a server route and its body ask for (400 for a bad weight). */
export function serverAction(action: 'drain' | 'enable' | 'disable' | 'weight', body: Record<string, unknown>): ServerAction {
  if (action !== 'weight') {
    onlyFields(body, [], `${action} takes no fields`);
    return { action };
  }
  onlyFields(body, ['weight'], 'weight takes "weight"');
  const weight = body.weight;
  if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 1 || weight > 1000) {
    throw new PorticoError('PORTICO_BAD_REQUEST', `"weight" must be an integer from 1 to 1000, got ${JSON.stringify(weight) ?? 'nothing'}`);
  }
  return { action, weight };
}

/** The purge target of a body: exactly one of `url` and `url_prefix`, a string (400 otherwise). */
export function purgeTarget(body: Record<string, unknown>): PurgeTarget {
  const { url, url_prefix: prefix } = body;
  onlyFields(body, ['url', 'url_prefix'], 'a purge takes "url" or "url_prefix"');
  if (typeof url === 'string' && prefix === undefined && url !== '') return { url };
  if (typeof prefix === 'string' && url === undefined && prefix !== '') return { url_prefix: prefix };
  throw new PorticoError('PORTICO_BAD_REQUEST', 'a purge takes one of "url" (an absolute URL) or "url_prefix", as a non-empty string');
}

/** Any error as a status and a JSON error; an unexpected one is logged and answered without its details. */
export function errorAnswer(err: unknown, logger: Logger): { status: number; code: string; message: string } {
  if (err instanceof PorticoError) return { status: err.status, code: err.code, message: err.message };
  logger.error({ err }, 'admin API: unexpected error');
  return { status: 500, code: 'PORTICO_INTERNAL', message: 'internal error (see the error log)' };
}
