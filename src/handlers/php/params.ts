/**
 * The CGI/1.1 variables (RFC 3875 §4.1) of a request to PHP, as nginx's `fastcgi_params` and Caddy's
 * `php_fastcgi` pass them: the script and its path info, the request line, the body's type and length, the
 * server's name and port, the client's address (the trusted one: `trusted_proxies` applied), HTTPS, and each
 * request field as `HTTP_NAME` — never `HTTP_PROXY` (httpoxy: a client's `Proxy:` field would become the proxy
 * that PHP's HTTP clients use), never a name with `_` unless `underscores_in_headers` allows it (`X_Real_IP` and
 * `X-Real-IP` would both become HTTP_X_REAL_IP).
 */
import type { RequestContext } from '../../http/context.js';

/** Fields that become variables of their own (or none), not `HTTP_*`. */
const NOT_HTTP = new Set(['content-type', 'content-length', 'proxy', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'trailer', 'proxy-connection', 'expect', 'http2-settings']);

/** What the variables need of the route, resolved once. */
export interface ParamsOptions {
  /** The real root (DOCUMENT_ROOT). */
  readonly documentRoot: string;
  readonly underscores: boolean;
  /** The route's `env`: added last, so they may override any variable (as nginx's fastcgi_param). */
  readonly env: readonly string[];
}

/** The script a request runs (see `locate`). */
export interface ScriptTarget {
  readonly scriptName: string;
  readonly filename: string;
  readonly pathInfo: string;
}

const NOT_ASCII = /[^\x00-\x7f]/;

/** A Unicode string (a file name, a decoded path) as its UTF-8 bytes, one character each (see `encodeNameValuePairs`). */
export function utf8Bytes(text: string): string {
  return NOT_ASCII.test(text) ? Buffer.from(text, 'utf8').toString('latin1') : text;
}

/**
 * The flat name/value list of a request's CGI variables; its request fields are given by their lower-case field
 * names, which the FastCGI pool turns into `HTTP_NAME` (see `paramsOf` in upstream/fastcgi/pool.ts).
 */
export function cgiParams(ctx: RequestContext, script: ScriptTarget, bodyLength: number, o: ParamsOptions): string[] {
  const req = ctx.req;
  const socket = req.socket;
  const uri = req.url ?? '/';
  const params: string[] = [
    'GATEWAY_INTERFACE', 'CGI/1.1',
    'SERVER_SOFTWARE', 'Portico',
    'SERVER_PROTOCOL', `HTTP/${req.httpVersionMajor === 2 ? '2.0' : req.httpVersion}`,
    'REQUEST_METHOD', req.method ?? 'GET',
    'REQUEST_URI', uri,
    'DOCUMENT_URI', utf8Bytes(script.scriptName + script.pathInfo),
    'QUERY_STRING', ctx.query,
    'SCRIPT_NAME', utf8Bytes(script.scriptName),
    'SCRIPT_FILENAME', utf8Bytes(script.filename),
    'DOCUMENT_ROOT', utf8Bytes(o.documentRoot),
    'REQUEST_SCHEME', ctx.scheme,
    'SERVER_NAME', ctx.host,
    'SERVER_ADDR', socket.localAddress ?? '',
    'SERVER_PORT', String(socket.localPort ?? ''),
    'REMOTE_ADDR', ctx.clientAddress(),
    'REMOTE_PORT', ctx.clientAddress() === ctx.peerAddress() ? String(socket.remotePort ?? '') : '',
    // PHP built with force-cgi-redirect wants it; PHP-FPM ignores it.
    'REDIRECT_STATUS', '200',
  ];
  if (script.pathInfo !== '') params.push('PATH_INFO', utf8Bytes(script.pathInfo), 'PATH_TRANSLATED', utf8Bytes(o.documentRoot + script.pathInfo));
  if (ctx.scheme === 'https') params.push('HTTPS', 'on');
  const type = req.headers['content-type'];
  if (type !== undefined) params.push('CONTENT_TYPE', type);
  if (bodyLength >= 0) params.push('CONTENT_LENGTH', String(bodyLength));
  const seen = new Map<string, number>();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (NOT_HTTP.has(name) || name.charCodeAt(0) === 58) continue;
    if (name === 'authorization' && ctx.credentialsConsumed) continue;
    if (!o.underscores && name.includes('_')) continue;
    const value = raw[i + 1]!;
    const at = seen.get(name);
    if (at !== undefined) {
      // Repeated fields are one list (RFC 9110 §5.3); cookies join with `; ` (RFC 6265 §5.4), as PHP parses them.
      params[at] += (name === 'cookie' ? '; ' : ', ') + value;
      continue;
    }
    // Passed by its field name (lower case): the FastCGI pool sends it as HTTP_NAME. The cache's edits of a fetch
    // (its own validators in, the client's out) then apply to it as to a proxied request's fields.
    params.push(name, value);
    seen.set(name, params.length - 1);
  }
  // An h2 request's :authority is its Host.
  if (!seen.has('host') && ctx.authority !== '') params.push('host', ctx.authority);
  params.push(...o.env);
  return params;
}
