/* Portico's dashboard: calls to the admin API (same origin, session cookie). */

/** A refused or failed call: its HTTP status (0: no answer), the error code and message of the admin API. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** One call: JSON in and out; a POST carries the admin header and JSON content type. Throws ApiError. */
export async function api(method, path, body) {
  // referrerPolicy same-origin (as the listener's pages say too): under no-referrer a browser sends `Origin: null`
  // with a POST, which the CSRF check refuses; same-origin keeps the page's own origin there.
  const init = { method, credentials: 'same-origin', referrerPolicy: 'same-origin', headers: { accept: 'application/json' }, cache: 'no-store' };
  if (method !== 'GET') {
    init.headers['content-type'] = 'application/json';
    init.headers['x-portico-admin'] = '1';
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, 'NETWORK', `Portico did not answer (${error.message})`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = text === '' ? null : JSON.parse(text);
  } catch {
    json = null;
  }
  if (!res.ok) {
    const err = json && json.error ? json.error : {};
    throw new ApiError(res.status, err.code || `HTTP_${res.status}`, err.message || `${method} ${path}: HTTP ${res.status}`);
  }
  return json;
}
