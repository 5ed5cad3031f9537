/**
 * The admin API's routes as a pure table: a path and method → what the request asks (or why it is refused: 400 for
 * a bad percent-encoding, 404 for no such path, 405 for a path that takes other methods). Names in a path are checked here (an upstream or
 * zone name as the config allows it); whether they exist is the server layer's to say.
 */

/** What a request asks, once routed. */
export type AdminRoute =
  | { kind: 'healthz' }
  | { kind: 'dashboard' }
  | { kind: 'status' }
  | { kind: 'metrics' }
  | { kind: 'events' }
  | { kind: 'jobs' }
  | { kind: 'job'; id: string }
  | { kind: 'job-events'; id: string }
  | { kind: 'server'; upstream: string; server: string; action: 'drain' | 'enable' | 'disable' | 'weight' }
  | { kind: 'purge'; zone: string }
  | { kind: 'operation'; operation: 'reload' | 'upgrade' }
  | { kind: 'deploy'; upstream: string }
  | { kind: 'reopen' }
  | { kind: 'login' }
  | { kind: 'logout' };

/** A route, or why there is none. */
export type Routed = { route: AdminRoute; method: 'GET' | 'POST' } | { status: 400 | 404 | 405; allow?: string; message: string };

/** Whether every `%` of a path starts a valid escape of UTF-8 (`%ZZ`, `%FF%FE` and the overlong `%C0%AF` do not). */
function wellEncoded(pathname: string): boolean {
  if (!pathname.includes('%')) return true;
  try {
    decodeURIComponent(pathname);
    return true;
  } catch {
    return false;
  }
}

/** A name as the config allows for upstreams and cache zones. */
const NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * The server id a path segment names: the id as `/status` shows it, whichever way the client escaped it. A
 * config name (`blue`) is itself, and so is a discovered server's address and port (`10.0.0.5:8080`); a slot name comes percent-encoded (`app%231` → `app#1`); an address id is the
 * URL-encoded address (`http%3A%2F%2F127.0.0.1%3A3001`), whether the client sent it as shown or encoded once more.
 */
export function serverIdOf(segment: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    return undefined;
  }
  if (decoded === '') return undefined;
  // A server found through DNS is its address and port (`10.0.0.5:8080`, `[fd00::5]:8080`): itself too (a URL's
  // id always has a "/", and is encoded).
  if (/^[A-Za-z0-9_.~#-]+$/.test(decoded) || /^[0-9A-Fa-f.:[\]]+:\d+$/.test(decoded)) return decoded;
  // Encoded once more by the client: the id as shown.
  if (decoded.includes('%')) return decoded;
  return encodeURIComponent(decoded);
}

/** A route (GET or POST) or the refusal, for `method` on `pathname`. HEAD is GET without the body. */
export function routeAdmin(method: string, pathname: string): Routed {
  if (!wellEncoded(pathname)) return { status: 400, message: `the path's percent-encoding is bad (not %XX escapes of UTF-8): ${pathname}` };
  const found = match(pathname);
  if (found === undefined) return { status: 404, message: `no such admin route: ${pathname}` };
  const want = found.method;
  const asked = method === 'HEAD' ? 'GET' : method;
  if (asked !== want) {
    return { status: 405, allow: want === 'GET' ? 'GET, HEAD' : 'POST', message: `${pathname} takes ${want}, not ${method}` };
  }
  return found;
}

function match(pathname: string): { route: AdminRoute; method: 'GET' | 'POST' } | undefined {
  switch (pathname) {
    case '/healthz':
      return { route: { kind: 'healthz' }, method: 'GET' };
    case '/':
    case '/index.html':
      return { route: { kind: 'dashboard' }, method: 'GET' };
    case '/status':
      return { route: { kind: 'status' }, method: 'GET' };
    case '/metrics':
      return { route: { kind: 'metrics' }, method: 'GET' };
    case '/events':
      return { route: { kind: 'events' }, method: 'GET' };
    case '/jobs':
      return { route: { kind: 'jobs' }, method: 'GET' };
    case '/reload':
      return { route: { kind: 'operation', operation: 'reload' }, method: 'POST' };
    case '/upgrade':
      return { route: { kind: 'operation', operation: 'upgrade' }, method: 'POST' };
    case '/reopen':
      return { route: { kind: 'reopen' }, method: 'POST' };
    case '/login':
      return { route: { kind: 'login' }, method: 'POST' };
    case '/logout':
      return { route: { kind: 'logout' }, method: 'POST' };
  }
  if (pathname.startsWith('/assets/')) return { route: { kind: 'dashboard' }, method: 'GET' };
  const parts = pathname.split('/').slice(1);
  if (parts[0] === 'jobs' && parts.length === 2 && /^[A-Za-z0-9-]{1,64}$/.test(parts[1]!)) return { route: { kind: 'job', id: parts[1]! }, method: 'GET' };
  if (parts[0] === 'jobs' && parts.length === 3 && parts[2] === 'events' && /^[A-Za-z0-9-]{1,64}$/.test(parts[1]!)) {
    return { route: { kind: 'job-events', id: parts[1]! }, method: 'GET' };
  }
  if (parts[0] === 'caches' && parts.length === 3 && parts[2] === 'purge' && NAME.test(parts[1]!)) return { route: { kind: 'purge', zone: parts[1]! }, method: 'POST' };
  if (parts[0] === 'upstreams' && NAME.test(parts[1] ?? '')) {
    const upstream = parts[1]!;
    if (parts.length === 3 && parts[2] === 'deploy') return { route: { kind: 'deploy', upstream }, method: 'POST' };
    const action = parts[4];
    if (parts.length === 5 && parts[2] === 'servers' && (action === 'drain' || action === 'enable' || action === 'disable' || action === 'weight')) {
      const server = serverIdOf(parts[3]!);
      if (server !== undefined) return { route: { kind: 'server', upstream, server, action }, method: 'POST' };
    }
  }
  return undefined;
}
