/**
 * The route a request's app session names, read the way mod_jk and mod_proxy_balancer read Tomcat's: a session id
 * ends in `.` and its server's jvmRoute (`JSESSIONID=9A1F…C2.tc1`), in the app's cookie or, when the browser
 * keeps no cookies, as a path parameter of the raw request target (`/cart;jsessionid=9A1F…C2.tc1?x=1`). The
 * separator may be another character (`sticky.separator`, mod_proxy_balancer's stickysessionsep): PHP's are `-`.
 */

/**
 * The route of the request's session, or undefined when it names none. `cookieHeader` is the request's Cookie
 * (Node joins several Cookie fields, HTTP/2's included, with `; `); `target` is the request target as received.
 *
 * The cookie wins over the path parameter: Tomcat itself takes the cookie's id when both are sent (a bookmarked
 * URL keeps an old `;jsessionid=`), so routing on the path would send such a request to a server that then finds
 * no session for the cookie it reads. mod_jk and mod_proxy_balancer read the path first.
 */
export function sessionRoute(cookieHeader: string | undefined, target: string, cookieName: string, separator = '.'): string | undefined {
  const fromCookie = cookieHeader === undefined ? undefined : cookieValue(cookieHeader, cookieName);
  if (fromCookie !== undefined) return routeOf(fromCookie, separator);
  const fromPath = pathParameter(target, cookieName);
  return fromPath === undefined ? undefined : routeOf(fromPath, separator);
}

/** The first value of the cookie `name` (the name as written, RFC 6265), unquoted; undefined when absent. */
function cookieValue(header: string, name: string): string | undefined {
  let at = 0;
  while (at < header.length) {
    let end = header.indexOf(';', at);
    if (end === -1) end = header.length;
    const eq = header.indexOf('=', at);
    if (eq !== -1 && eq < end && header.slice(at, eq).trim() === name) {
      const value = header.slice(eq + 1, end).trim();
      return value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
    }
    at = end + 1;
  }
  return undefined;
}

/**
 * The value of the path parameter `;name=` in the path part of a raw target, the name in any case (Tomcat writes
 * the cookie `JSESSIONID` but the parameter `jsessionid`); undefined when absent.
 */
function pathParameter(target: string, name: string): string | undefined {
  if (!target.includes(';')) return undefined;
  let pathEnd = target.length;
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === 63 /* ? */ || c === 35 /* # */) {
      pathEnd = i;
      break;
    }
  }
  const path = target.slice(0, pathEnd).toLowerCase();
  const needle = `;${name.toLowerCase()}=`;
  const at = path.indexOf(needle);
  if (at === -1) return undefined;
  const start = at + needle.length;
  let end = start;
  while (end < pathEnd) {
    const c = target.charCodeAt(end);
    if (c === 59 /* ; */ || c === 47 /* / */) break;
    end++;
  }
  return target.slice(start, end);
}

/**
 * The route of a session id: what follows its last `separator` (`.`, or `-` for PHP's ids, which cannot hold a
 * `.`; a route has none); undefined when there is none.
 */
function routeOf(sessionId: string, separator: string): string | undefined {
  const at = sessionId.lastIndexOf(separator);
  return at === -1 || at === sessionId.length - 1 ? undefined : sessionId.slice(at + 1);
}
