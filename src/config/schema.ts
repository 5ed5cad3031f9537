/**
 * The config's shape: every key, its type, its default. Objects are strict (an unknown key is an error, as in
 * Caddy), durations and sizes are turned into milliseconds and bytes here, and route paths are parsed once.
 * What needs the file system or the whole config (a root that must exist, a name that must be defined) is
 * checked afterwards in `validate.ts`.
 */
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { checkLogTemplate } from '../http/log-template.js';
import { configErrorMap } from './messages.js';
import { parseDuration, parseSize } from './units.js';

/** A duration (`2s`, `500ms`, `1m`, bare number = seconds) as milliseconds. */
export const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ms = parseDuration(value);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a duration such as "2s", "500ms" or "1m", got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return ms;
});

/** A size (`512KB`, `10MB`, bare number = bytes) as bytes. */
export const size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a size such as "512KB" or "10MB", got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return bytes;
});

/** A bare port (`8080`, which YAML reads as a number): read as text, for the message that says what to write. */
function portAsText(value: unknown): unknown {
  return typeof value === 'number' ? String(value) : value;
}

/** `host:port`, `:port` or `[v6]:port`, parsed; a bare port is refused with the two addresses it may have meant. */
const address = z.preprocess(portAsText, z.string()).transform((value, ctx) => {
  const port = value.trim();
  if (/^\d{1,5}$/.test(port) && Number(port) <= 65535) {
    ctx.addIssue({ code: 'custom', message: `expected an address in quotes: "127.0.0.1:${port}" (this machine only) or ":${port}" (all IPv4 interfaces), got ${port}` });
    return z.NEVER;
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(value.trim());
  if (match === null || Number(match[3]) > 65535) {
    ctx.addIssue({ code: 'custom', message: `expected "host:port", ":port" or "[::1]:port", got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  const host = match[1] ?? (match[2] === '' ? '0.0.0.0' : match[2]!);
  return { host, port: Number(match[3]), text: value.trim() };
});

/** A certificate and key read from their files at load (and on reload), for the runtime: it reads no file. */
export interface PemPair {
  cert: string;
  key: string;
}

/** TLS protocol versions a listener may allow (older ones are not offered: RFC 8996 deprecates them). */
const tlsVersion = z.enum(['TLSv1.2', 'TLSv1.3']);

/** A certificate and its key, as files; `pem` is filled in by the checks of `tls.ts` when the files are read. */
const certificateFiles = {
  /** PEM certificate chain (leaf first). */
  cert: z.string().min(1).optional(),
  /** PEM private key of the leaf certificate. */
  key: z.string().min(1).optional(),
};

/**
 * The TLS 1.2 suites a listener offers unless `tls.ciphers` says otherwise: Mozilla's "intermediate" ECDHE
 * suites, AEAD only (AES-GCM, ChaCha20-Poly1305), ECDSA before RSA. No CBC suite (LUCKY13, which testssl flagged
 * in Node's default list), no static RSA key exchange (no forward secrecy), and not Mozilla's DHE suites either:
 * Portico sets no DH parameters, so OpenSSL never agrees them. TLS 1.3 suites are OpenSSL's, whatever this says.
 */
export const DEFAULT_TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** A listener's `tls` (exported for `--dev`, which gives one to listeners without). */
export const listenerTls = z
  .strictObject({
    ...certificateFiles,
    min_version: tlsVersion.default('TLSv1.2'),
    max_version: tlsVersion.default('TLSv1.3'),
    /** OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's); ECDHE with AEAD only by default. */
    ciphers: z.string().min(1).default(DEFAULT_TLS12_CIPHERS),
    /** PEM bundle of the CAs whose client certificates are accepted: with it, a client without one is refused. */
    client_ca: z.string().min(1).optional(),
  })
  .transform((tls) => ({ ...tls, pem: undefined as PemPair | undefined, client_ca_pem: undefined as string | undefined }));

/** HTTP/2 settings a listener announces (RFC 9113 §6.5.2); the defaults are Caddy's and nginx's order of size. */
export const http2Settings = z.strictObject({
  max_concurrent_streams: z.number().int().min(1).max(10_000).default(100),
  /**
   * Largest header list (decoded, as RFC 9113 §6.5.2 counts it: name + value + 32 per field) a request may have.
   * Unset: the listener's max_header_size plus 32 per allowed field, so HTTP/2 admits the heads HTTP/1.1 does.
   */
  max_header_list_size: size.optional(),
  /** The flow-control window of each stream, in bytes (65,535 is the protocol's own). */
  initial_window_size: z.number().int().min(65_535).max(2 ** 31 - 1).default(65_535),
  /** Largest frame payload the peer may send. */
  max_frame_size: z.number().int().min(16_384).max(16_777_215).default(16_384),
});

/** The HTTP/2 settings of a listener (its header list size worked out), or `false` when it speaks HTTP/1.1 only. */
export type Http2Settings = z.output<typeof http2Settings> & { max_header_list_size: number };

const listenerFields = z.strictObject({
  addr: address,
  /** Largest request head (request line and headers) accepted; larger gets 431. */
  max_header_size: size.default(16 * 1024),
  /** Most header lines in a request head; more gets 431 (Apache's LimitRequestFields; HAProxy's maxhdr is 101). */
  max_header_count: z.number().int().min(1).max(10_000).default(100),
  /** Time allowed to receive a complete request head. */
  header_timeout: duration.default(30_000),
  /** Time allowed to receive a complete request, body included. */
  request_timeout: duration.default(300_000),
  /** How long an idle keep-alive connection is kept open. */
  keepalive_timeout: duration.default(75_000),
  /** Requests served on one connection before it is closed (0 = no limit). */
  max_requests_per_conn: z.number().int().min(0).default(0),
  /** A client that takes none of its answer's bytes for this long is disconnected (nginx's send_timeout; 0 = never). */
  send_timeout: duration.default(60_000),
  /** Open connections on this listener (0 = no limit); past it a new one is turned away at once. */
  max_connections: z.number().int().min(0).default(0),
  /** Open connections from one client address (the PROXY protocol's when on; 0 = no limit). */
  max_connections_per_ip: z.number().int().min(0).default(0),
  /** Every connection starts with a PROXY protocol header (v1 or v2) from a `trusted_proxies` peer. */
  proxy_protocol: z.boolean().default(false),
  /** Serve TLS on this address (certificates chosen by SNI among the sites' and this default). */
  tls: listenerTls.optional(),
  /**
   * HTTP/2 beside HTTP/1.1. On a TLS listener by ALPN `h2`, on by default. On a plain listener, off by default: on,
   * a connection that opens with HTTP/2's preface (prior knowledge, h2c: gRPC's insecure channels, a proxy in
   * front) speaks HTTP/2, any other HTTP/1.1 (nginx's `http2 on`, Envoy's `codec_type: AUTO`).
   */
  http2: z.union([z.boolean(), http2Settings]).optional(),
  /** Answer every request for a configured host with 308 to https on this port. */
  redirect_https: z.number().int().min(1).max(65_535).optional(),
});

const listenerObject = listenerFields
  .superRefine((value, ctx) => {
    if (value.tls !== undefined && value.redirect_https !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['redirect_https'], message: 'redirect_https is for a plain listener: this one already serves TLS' });
    }
  })
  .transform(({ http2, ...value }) => {
    const settings = typeof http2 === 'object' ? http2 : http2Settings.parse({});
    const headerList = settings.max_header_list_size ?? value.max_header_size + 32 * value.max_header_count;
    return {
      ...value,
      // A plain listener speaks HTTP/2 (prior knowledge) only when asked: an HTTP/1.1 client never meets it.
      http2: http2 === false || (value.tls === undefined && http2 === undefined) ? (false as const) : { ...settings, max_header_list_size: headerList },
    };
  });

const listener = z.preprocess(portAsText, z.union([
  z.string().transform((addr, ctx) => {
    const parsed = listenerObject.safeParse({ addr }, { error: configErrorMap });
    if (!parsed.success) {
      for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: issue.message });
      return z.NEVER;
    }
    return parsed.data;
  }),
  listenerObject,
]));

/** A parsed route path: `= /x` exact, `^~ /x` prefix that skips regexes, `~ re` / `~* re` regex, else prefix. */
export type RoutePath =
  | { kind: 'exact'; path: string; text: string }
  | { kind: 'prefix'; path: string; stopRegex: boolean; text: string }
  | { kind: 'regex'; regex: RegExp; text: string };

const routePath = z.string().transform((text, ctx): RoutePath => {
  const value = text.trim();
  const regex = /^(~\*?)\s+(.+)$/.exec(value);
  if (regex !== null) {
    try {
      return { kind: 'regex', regex: new RegExp(regex[2]!, regex[1] === '~*' ? 'i' : ''), text: value };
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `invalid regular expression: ${(err as Error).message}` });
      return z.NEVER;
    }
  }
  const prefixed = /^(=|\^~)\s+(.*)$/.exec(value);
  const path = prefixed ? prefixed[2]! : value;
  if (!path.startsWith('/')) {
    ctx.addIssue({ code: 'custom', message: `a route path must start with "/" (or be "= /x", "^~ /x", "~ regex"), got ${JSON.stringify(text)}` });
    return z.NEVER;
  }
  if (prefixed?.[1] === '=') return { kind: 'exact', path, text: value };
  return { kind: 'prefix', path, stopRegex: prefixed?.[1] === '^~', text: value };
});

/** Response or request header fields by name (values as written). */
export const headerMap = z.record(z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'not a valid header name'), z.string());

/** A status range list such as `200-399` or `200,204,300-399`. */
export const statusRanges = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ranges: Array<[number, number]> = [];
  for (const part of String(value).split(',')) {
    const m = /^\s*([1-5]\d\d)\s*(?:-\s*([1-5]\d\d)\s*)?$/.exec(part);
    if (m === null || (m[2] !== undefined && Number(m[2]) < Number(m[1]))) {
      ctx.addIssue({ code: 'custom', message: `expected statuses such as "200-399" or "200,204", got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    ranges.push([Number(m[1]), Number(m[2] ?? m[1])]);
  }
  return ranges;
});

const tlsClient = z.strictObject({
  /** CA bundle (PEM file) to verify the server with; the system's CAs when absent. */
  ca: z.string().optional(),
  /** SNI and certificate name to expect; the URL's host when absent. */
  servername: z.string().optional(),
  /** Only for tests against self-signed servers; never in production. */
  insecure_skip_verify: z.boolean().default(false),
});

/** An upstream server's URL: `http://host:port[/base]`, `https://…`, `h2c://host:port` (HTTP/2 without TLS), `unix:/path` or `fcgi://host:port` (FastCGI). */
export const upstreamUrl = z.string().transform((value, ctx) => {
  const text = value.trim();
  if (text.startsWith('fcgi://')) {
    const address = /^fcgi:\/\/(\[[0-9a-fA-F:.]+\]|[^/:[\]]+):(\d{1,5})\/?$/.exec(text);
    if (address === null || Number(address[2]) < 1 || Number(address[2]) > 65535) {
      ctx.addIssue({ code: 'custom', message: `expected "fcgi://host:port" (FastCGI over TCP), got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return { kind: 'fcgi' as const, origin: `fcgi://${address[1]}:${address[2]}`, socketPath: undefined, basePath: '', text };
  }
  if (text.startsWith('unix:')) {
    const socketPath = text.slice(5);
    if (!socketPath.startsWith('/') && !socketPath.startsWith('.')) {
      ctx.addIssue({ code: 'custom', message: `expected "unix:/path/to.sock", got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return { kind: 'unix' as const, origin: 'http://localhost', socketPath, basePath: '', text };
  }
  // `127.0.0.1:3000` or `localhost:3000` (which URL reads as the scheme "localhost"): the scheme is missing.
  if (!text.includes('://') && /^[^/:]+:\d+(\/|$)/.test(text)) {
    ctx.addIssue({ code: 'custom', message: `a server URL needs its scheme: write "http://${text}" (or https://), got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: `not a valid URL: ${JSON.stringify(value)} (expected http://host:port, https://host:port or unix:/path)` });
    return z.NEVER;
  }
  if (url.protocol === 'h2c:') {
    // HTTP/2 by prior knowledge (RFC 9113 §3.3): the URL reads as `http://` everywhere else (origin, Location rewriting).
    if (url.username !== '' || url.search !== '' || url.hash !== '' || url.port === '') {
      ctx.addIssue({ code: 'custom', message: `expected "h2c://host:port" (a port, no user, query or fragment), got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    const basePath = url.pathname === '/' || url.pathname === '' ? '' : url.pathname.replace(/\/+$/, '');
    return { kind: 'h2c' as const, origin: `http://${url.host}`, socketPath: undefined, basePath, text };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.addIssue({ code: 'custom', message: `unsupported scheme "${url.protocol.slice(0, -1)}" (expected http, https, h2c or unix)` });
    return z.NEVER;
  }
  if (url.username !== '' || url.search !== '' || url.hash !== '') {
    ctx.addIssue({ code: 'custom', message: 'an upstream URL has no user, query or fragment' });
    return z.NEVER;
  }
  const basePath = url.pathname === '/' ? '' : url.pathname.replace(/\/+$/, '');
  return { kind: url.protocol === 'https:' ? ('https' as const) : ('http' as const), origin: url.origin, socketPath: undefined, basePath, text };
});

const upstreamServer = z.strictObject({
  url: upstreamUrl,
  /**
   * The server's id in the admin API, /status and metrics (`POST /upstreams/app/servers/{name}/drain`): unique in
   * its upstream. Unset: the URL, percent-encoded (`http%3A%2F%2F127.0.0.1%3A3001`); a spawned slot's id is its name.
   */
  name: z.string().regex(/^[A-Za-z0-9_.~-]+$/, 'a server name uses letters, digits, "_", "-", ".", "~" (it is a path segment of the admin API)').optional(),
  weight: z.number().int().min(1).max(1000).default(1),
  /** Used only when every primary server is unavailable. */
  backup: z.boolean().default(false),
  tls: tlsClient.optional(),
  /**
   * The HTTP version spoken to an `https://` server, chosen by ALPN: `http1.1` (the default), `h2` (HTTP/2 only:
   * a server that does not offer it fails to connect) or `auto` (HTTP/2 when the server offers it). `h2c://` is h2.
   */
  protocol: z.enum(['http1.1', 'h2', 'auto']).optional(),
  /** Per-server cap of requests in flight (overrides the upstream's). */
  max_conns: z.number().int().min(0).optional(),
  /** The server's name in the app's session ids (Tomcat's jvmRoute: `ABC123.tc1`), for `sticky.app_cookie`. */
  route: z.string().regex(/^[!#$%&'*+\-^_`|~0-9A-Za-z]+$/, 'a route is a token without "." (Tomcat\'s jvmRoute, e.g. tc1): it is read after the last "." of a session id').optional(),
});

/** A server, or its URL alone (`"http://10.0.0.1:3000"`), which means `{ url: ... }` with the defaults. */
const upstreamServerEntry = z.union([
  z.string().transform((url, ctx) => {
    const parsed = upstreamServer.safeParse({ url }, { error: configErrorMap });
    if (!parsed.success) {
      for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: issue.message });
      return z.NEVER;
    }
    return parsed.data;
  }),
  upstreamServer,
]);

const healthCheck = z.strictObject({
  path: z.string().startsWith('/').default('/'),
  interval: duration.default(2000),
  timeout: duration.default(1000),
  rise: z.number().int().min(1).default(2),
  fall: z.number().int().min(1).default(3),
  expect: statusRanges.prefault('200-399'),
  /** Host header for checks; the server's own host when absent. */
  host: z.string().optional(),
  /**
   * `http`: a GET of `path`, passing on an `expect` status. `grpc`: the gRPC health checking protocol
   * (`grpc.health.v1.Health/Check` for `service`), passing on SERVING; needs HTTP/2 servers (h2c://, protocol: h2).
   */
  type: z.enum(['http', 'grpc']).default('http'),
  /** The service a gRPC check asks about (`''`: the server as a whole). */
  service: z.string().default(''),
});

/** `3001-3010`: the ports spawned instances (and a deploy's surge instances) take, as `{ from, to }`. */
const portRange = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const match = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(String(value));
  const from = match === null ? NaN : Number(match[1]);
  const to = match === null ? NaN : Number(match[2] ?? match[1]);
  if (!(from >= 1 && to <= 65535 && from <= to)) {
    ctx.addIssue({ code: 'custom', message: `expected a port range such as "3001-3010" (from <= to, 1-65535), got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return { from, to };
});

/** A signal name a spawned instance is stopped with. */
const signalName = z.enum(['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH']);

/**
 * App servers Portico starts and supervises itself (`upstreams.<name>.spawn`): `instances` processes, each in a
 * stable slot (`app#1`, `app#2`, ...) that outlives its port and pid, each given a free port of `ports`.
 */
export const spawnSchema = z
  .strictObject({
    /** An argv list run as is, or a string run by `/bin/sh -c`; `{port}`, `{slot}` and `{route}` are replaced. */
    command: z.union([z.string().min(1), z.array(z.string()).min(1)]),
    /** The instances' working directory, relative to the config file's folder. */
    cwd: z.string().min(1).optional(),
    instances: z.number().int().min(1).max(64).default(1),
    ports: portRange,
    env: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]).transform(String)).default({}),
    stop_signal: signalName.default('SIGTERM'),
    /** How long an instance may take to finish its requests and exit after stop_signal; then SIGKILL. */
    stop_timeout: duration.default(10_000),
    /** Run the instances as this user / group (only when Portico runs as root). */
    user: z.string().min(1).optional(),
    group: z.string().min(1).optional(),
    /** A deploy's instances started at once before old ones are stopped. */
    max_surge: z.number().int().min(1).default(1),
    /** How long a new instance may take to pass its readiness checks before the start (or deploy) fails. */
    health_timeout: duration.default(60_000),
    /**
     * What the instances speak over HTTP: `http1.1`, or `h2c` (HTTP/2 without TLS, prior knowledge: a gRPC app).
     * In a FastCGI upstream (`protocol: fastcgi`, or named by a `php` route) they speak FastCGI (PHP-FPM pools).
     */
    protocol: z.enum(['http1.1', 'h2c']).default('http1.1'),
  })
  .superRefine((spawn, ctx) => {
    if (spawn.health_timeout <= 0) {
      // 0 would fail every start before its first check: a crash loop, not what anyone means.
      ctx.addIssue({ code: 'custom', path: ['health_timeout'], message: 'must be more than 0: a new instance needs time to pass its readiness checks' });
    }
    for (const name of ['PORT', 'PORTICO_SLOT', 'PORTICO_ROUTE']) {
      // Portico sets these per instance, after env: a value here would be silently replaced.
      if (Object.hasOwn(spawn.env, name)) ctx.addIssue({ code: 'custom', path: ['env', name], message: `${name} is set by Portico for each instance (its own value); remove it here` });
    }
    const room = spawn.ports.to - spawn.ports.from + 1;
    if (room < spawn.instances + spawn.max_surge) {
      ctx.addIssue({
        code: 'custom',
        path: ['ports'],
        message: `${room} port${room === 1 ? '' : 's'} for ${spawn.instances} instance${spawn.instances === 1 ? '' : 's'} and ${spawn.max_surge} surge: a deploy needs instances + max_surge ports (an upgrade of Portico needs twice the instances)`,
      });
    }
  });

/** The slot names of an upstream's spawned instances: `app#1` ... `app#N`. */
export function slotName(upstream: string, index: number): string {
  return `${upstream}#${index + 1}`;
}

/** The route (Tomcat's jvmRoute, for `sticky.app_cookie`) of an upstream's spawned slot: `app1`, `app2`, ... */
export function slotRoute(upstream: string, index: number): string {
  return `${upstream.replace(/[^A-Za-z0-9_-]/g, '_')}${index + 1}`;
}

/**
 * Session cookies that apps set themselves (Tomcat, PHP, Django, Express, ASP.NET, Laravel). Portico's own sticky
 * cookie under one of these names would overwrite the app's session with every answer.
 */
export const APP_SESSION_COOKIES = ['JSESSIONID', 'PHPSESSID', 'sessionid', 'connect.sid', 'ASP.NET_SessionId', 'laravel_session'];

/** How to route on an app's session cookie, as a message says it: PHP's ids cannot hold a `.`, so its route follows a `-`. */
export function appCookieAdvice(session: string): string {
  return `sticky: { app_cookie: ${session}${session === 'PHPSESSID' ? ', separator: "-"' : ''} }`;
}

const cookieName = z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'a cookie name is a token (letters, digits and !#$%&\'*+-.^_`|~)');

/**
 * How a client is kept on one server: Portico's own cookie (`cookie`, an HMAC naming the server), or the app's
 * session cookie (`app_cookie`), whose id ends in the server's `route` as Tomcat's jvmRoute does.
 */
const stickySchema = z
  .strictObject({
    cookie: cookieName.optional(),
    /** The app's own session cookie (JSESSIONID): routed on its `.route` suffix; Portico sets no cookie. */
    app_cookie: cookieName.optional(),
    /** Key of the cookie's HMAC (16+ characters); a random one per process when absent. */
    secret: z.string().min(16, 'a sticky secret has at least 16 characters').optional(),
    /**
     * What precedes the route in an `app_cookie` session id (`.`, Tomcat's; mod_proxy_balancer's stickysessionsep):
     * `-` for PHP, whose session ids may hold only A-Z a-z 0-9 `,` `-`.
     */
    separator: z.string().regex(/^[!#$%&'*+\-.^_`|~:,]$/, 'a separator is one character such as . - , ! ~ :').optional(),
  })
  .superRefine((sticky, ctx) => {
    const session = APP_SESSION_COOKIES.find((name) => name.toLowerCase() === sticky.cookie?.toLowerCase());
    if (session !== undefined && sticky.app_cookie === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['cookie'],
        message:
          `${sticky.cookie} is the app's session cookie: Portico's own sticky cookie under that name would overwrite it and ` +
          `every request would start a new session. To route on the app's session write ${appCookieAdvice(session)} ` +
          // Cookie names are case-sensitive: suggest the name as apps send it, not the spelling found here.
          (session === sticky.cookie ? '' : `(cookie names are case-sensitive: ${session} is how the app sends it) `) +
          `and give each server its route (Tomcat's jvmRoute), or keep Portico's cookie under another name (the default is portico_route)`,
      });
    }
    if (sticky.cookie !== undefined && sticky.app_cookie !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['app_cookie'], message: 'sticky routes on Portico\'s own cookie or on the app\'s (app_cookie), not both' });
    }
    if (sticky.secret !== undefined && sticky.app_cookie !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['secret'], message: 'secret keys Portico\'s own sticky cookie: with app_cookie Portico sets none' });
    }
    if (sticky.separator !== undefined && sticky.app_cookie === undefined) {
      ctx.addIssue({ code: 'custom', path: ['separator'], message: 'separator is where a route starts in the app\'s session id: it goes with app_cookie' });
    }
  })
  .transform(({ cookie, app_cookie, secret, separator }) =>
    app_cookie === undefined
      ? { cookie: cookie ?? 'portico_route', app_cookie, secret, separator: undefined }
      : { cookie: undefined, app_cookie, secret, separator: separator ?? '.' },
  );

/** Routes are for `sticky.app_cookie`: each names one server, and that mode needs some (spawned slots have theirs). */
function checkRoutes(
  upstream: {
    servers: ReadonlyArray<{ url: { text: string }; route?: string | undefined; name?: string | undefined }>;
    sticky?: { app_cookie: string | undefined; separator: string | undefined } | undefined;
    spawn?: unknown;
  },
  ctx: z.RefinementCtx,
): void {
  // Each server's id (admin API, /status, metrics, servers.json) is its name, else its URL: unique in the upstream.
  const ids = new Map<string, number>();
  upstream.servers.forEach((server, i) => {
    const id = server.name ?? encodeURIComponent(server.url.text);
    const first = ids.get(id);
    if (first === undefined) ids.set(id, i);
    else if (server.name !== undefined) ctx.addIssue({ code: 'custom', path: ['servers', i, 'name'], message: `name "${server.name}" already names servers[${first}]: a name is unique in its upstream` });
    else {
      ctx.addIssue({
        code: 'custom',
        path: ['servers', i],
        message: `servers[${first}] has the same URL ${server.url.text}: each server needs an id of its own (the admin API's), so give one of them a name (name: b), or give the server a weight instead of listing it twice`,
      });
    }
  });
  const seen = new Map<string, number>();
  const appCookie = upstream.sticky?.app_cookie;
  upstream.servers.forEach((server, i) => {
    if (server.route === undefined) return;
    const first = seen.get(server.route);
    if (first !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['servers', i, 'route'], message: `route "${server.route}" already names servers[${first}]: a route names one server` });
    } else {
      seen.set(server.route, i);
    }
    if (appCookie === undefined) {
      ctx.addIssue({ code: 'custom', path: ['servers', i, 'route'], message: 'a route is read from the app\'s session cookie: set sticky: { app_cookie: JSESSIONID } (or the app\'s cookie name) on this upstream' });
    }
    const separator = upstream.sticky?.separator;
    // A "." is no token character of a route already (the route's own message says so).
    if (separator !== undefined && separator !== '.' && server.route.includes(separator)) {
      ctx.addIssue({ code: 'custom', path: ['servers', i, 'route'], message: `a route is read after the last "${separator}" of a session id (sticky.separator): it cannot hold one` });
    }
  });
  // Spawned slots have their routes (`slotRoute`: app1, app2, ...), given to each instance as PORTICO_ROUTE.
  if (appCookie !== undefined && seen.size === 0 && upstream.spawn === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['sticky', 'app_cookie'],
      message: `app_cookie routes on the suffix of ${appCookie} ("ABC123.tc1"): give the servers their route (route: tc1, Tomcat's jvmRoute)`,
    });
  }
}

/** A fixed server's route may not be one a spawned slot of its upstream has (`app1`): a route names one server. */
function checkSlotRoutes(upstreams: Record<string, { servers: ReadonlyArray<{ route?: string | undefined }>; spawn?: { instances: number } | undefined }>, ctx: z.RefinementCtx): void {
  for (const [name, upstream] of Object.entries(upstreams)) {
    if (upstream.spawn === undefined) continue;
    const slots = new Map(Array.from({ length: upstream.spawn.instances }, (_, i) => [slotRoute(name, i), slotName(name, i)] as const));
    upstream.servers.forEach((server, i) => {
      const slot = server.route === undefined ? undefined : slots.get(server.route);
      if (slot !== undefined) ctx.addIssue({ code: 'custom', path: [name, 'servers', i, 'route'], message: `route "${server.route}" is the route of the spawned slot ${slot}: a route names one server` });
    });
  }
}

/** The shortest re-resolution period of `discover` (a record's TTL of 0 or 1 s is not a query per request). */
export const DISCOVER_FLOOR_MS = 1000;

/**
 * App servers found through DNS (`upstreams.<name>.discover`): the name's A, AAAA or SRV records, re-resolved at
 * their TTL (at most `interval`, at least 1 s) without a reload (docs/proxy.md, "Servers found through DNS").
 */
export const discoverSchema = z
  .strictObject({
    /** The name asked: `app.internal`, or for SRV `_http._tcp.app.internal`. */
    dns: z
      .string()
      .regex(/^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$/, 'expected a DNS name such as app.internal or _http._tcp.app.internal'),
    type: z.enum(['A', 'AAAA', 'SRV']).default('A'),
    /** The app servers' port (A and AAAA records carry none); refused with SRV, whose records carry theirs. */
    port: z.number().int().min(1).max(65535).optional(),
    /** The longest time between two resolutions (a record's TTL shortens it, down to 1 s). */
    interval: duration.default(5000),
  })
  .superRefine((discover, ctx) => {
    if (isIP(discover.dns.replace(/\.$/, '')) !== 0) {
      ctx.addIssue({ code: 'custom', path: ['dns'], message: `is an address, not a DNS name: list it in servers ("http://${discover.dns}:…") instead` });
    }
    if (discover.type === 'SRV' && discover.port !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['port'], message: 'SRV records carry each server\'s port: remove port (it is for A and AAAA records)' });
    }
    if (discover.type !== 'SRV' && discover.port === undefined) {
      ctx.addIssue({ code: 'custom', path: ['port'], message: `${discover.type} records carry no port: give the app servers' port (port: 8080)` });
    }
    if (discover.interval < DISCOVER_FLOOR_MS) {
      ctx.addIssue({ code: 'custom', path: ['interval'], message: `must be at least ${DISCOVER_FLOOR_MS / 1000} s (the shortest time between two resolutions)` });
    }
  })
  // `resolver` is filled in from the top-level `resolver` (see `checkDiscovery` in validate.ts): an upstream built
  // from this section asks those DNS servers, and a reload that changes them builds the upstream anew.
  .transform((discover) => ({ ...discover, resolver: undefined as string[] | undefined }));

/** A DNS server to ask: `127.0.0.1`, `127.0.0.1:5353`, `::1` or `[::1]:5353` (an address: no name to resolve first). */
const dnsServer = z.preprocess(portAsText, z.string()).superRefine((value, ctx) => {
  const text = value.trim();
  const bracketed = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/.exec(text);
  const v4 = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(text);
  const host = bracketed?.[1] ?? v4?.[1] ?? text;
  const port = bracketed?.[2] ?? v4?.[2];
  const family = isIP(host);
  if (family === 0 || (v4 !== null && family !== 4) || (port !== undefined && (Number(port) < 1 || Number(port) > 65535))) {
    ctx.addIssue({ code: 'custom', message: `expected a DNS server's address such as "127.0.0.1:5353", "10.0.0.2" or "[::1]:53", got ${JSON.stringify(value)}` });
  }
});

const RETRY_CONDITIONS = ['connect_error', 'timeout', 'reset', '500', '502', '503', '504', '429'] as const;
/** A retry / passive-health condition; a status may be written bare (`502`, which YAML reads as a number). */
const retryCondition = z.preprocess((value) => (typeof value === 'number' ? String(value) : value), z.enum(RETRY_CONDITIONS));

/** An upstream's keys (for the message that says where a misplaced key belongs). */
export const upstreamObject = z.strictObject({
  policy: z.string().default('round_robin'),
  /**
   * What the servers speak: `http`, or `fastcgi` (PHP-FPM; see docs/php.md). Unset: `fastcgi` when a server is
   * `fcgi://` or a `php` route names the upstream, else `http`.
   */
  protocol: z.enum(['http', 'fastcgi']).optional(),
  /** Key template for `policy: hash`, e.g. "$cookie_uid", "$request_uri", "$header_x_user". */
  hash_key: z.string().default('$request_uri'),
  /** Fixed servers; optional with `spawn` (both may be used together). */
  servers: z.array(upstreamServerEntry).default([]),
  /** App servers Portico starts and supervises (see docs/apps.md). */
  spawn: spawnSchema.optional(),
  /** App servers found through DNS, re-resolved as their records change (docs/proxy.md, "Servers found through DNS"). */
  discover: discoverSchema.optional(),
  sticky: stickySchema.optional(),
  health: healthCheck.optional(),
  passive: z
    .strictObject({
      max_fails: z.number().int().min(0).default(3),
      fail_timeout: duration.default(10_000),
      max_ejection_percent: z.number().int().min(0).max(100).default(50),
      on: z.array(retryCondition).default(['connect_error', 'timeout', '502', '503', '504']),
    })
    .prefault({}),
  slow_start: duration.default(0),
  keepalive: z.number().int().min(1).default(64),
  /** FastCGI servers (PHP-FPM): whether connections are kept between requests. */
  fastcgi: z
    .strictObject({
      /**
       * FCGI_KEEP_CONN: each connection is kept for the next request (saves a connect per request, as nginx's
       * `fastcgi_keep_conn on`). Off by default, as nginx and Caddy: a PHP-FPM worker that exits after
       * `pm.max_requests` closes its kept connection just as the next request goes out on it, which fails a POST.
       */
      keep_conn: z.boolean().default(false),
    })
    .prefault({}),
  /** HTTP/2 servers (h2c://, https:// with protocol h2 or auto): their connections, each carrying many requests. */
  http2: z
    .strictObject({
      /** Connections per server; a new one is opened only when the open ones have no free stream. */
      connections: z.number().int().min(1).max(64).default(1),
      /** Requests in flight on one connection (the server's SETTINGS may lower it). */
      max_concurrent_streams: z.number().int().min(1).max(10_000).default(100),
      /** A PING on each connection this often; 0: none. */
      ping_interval: duration.default(10_000),
      /** A connection whose PING is not answered within this is closed (its requests fail as resets). */
      ping_timeout: duration.default(5000),
    })
    .prefault({}),
  timeouts: z
    .strictObject({
      connect: duration.default(2000),
      response_header: duration.default(30_000),
      /** Idle time allowed between body chunks from the server. */
      read: duration.default(60_000),
      /** Idle keep-alive connections are closed after this; keep it below the app's own keep-alive timeout. */
      idle: duration.default(4000),
    })
    .prefault({}),
  retries: z.number().int().min(0).max(10).default(2),
  /** `reset` (the connection broke before any answer) is only ever retried for idempotent requests. */
  retry_on: z.array(retryCondition).default(['connect_error', 'timeout', 'reset', '502', '503', '504']),
  retry_deadline: duration.default(10_000),
  /** Largest request body kept in memory so that it can be replayed on a retry. */
  retry_buffer: size.default(64 * 1024),
  max_conns: z.number().int().min(0).default(0),
  queue: z.strictObject({ size: z.number().int().min(0).default(1000), timeout: duration.default(5000) }).prefault({}),
  /** How long a request waits for a server to become available before 503. */
  try_duration: duration.default(0),
  try_interval: duration.default(250),
});

/**
 * One upstream's config (exported so a route's `proxy.url` can make a one-server upstream with defaults). It
 * needs servers, spawned ones or both (checked once its keys are valid, as every whole-object rule is).
 */
export const upstreamSchema = upstreamObject.superRefine((upstream, ctx) => {
  if (upstream.servers.length === 0 && upstream.spawn === undefined && upstream.discover === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['servers'],
      input: upstream.servers,
      message: 'an upstream needs at least one server (servers:), app servers that Portico starts (spawn:) or servers found through DNS (discover:)',
    });
  }
  checkRoutes(upstream, ctx);
  checkProtocol(upstream, ctx);
});

/** FastCGI servers (`fcgi://`, or `unix:` in a `protocol: fastcgi` upstream) are not mixed with HTTP ones. */
function checkProtocol(upstream: z.output<typeof upstreamObject>, ctx: z.RefinementCtx): void {
  const fcgi = upstream.servers.findIndex((server) => server.url.kind === 'fcgi');
  if (fcgi !== -1 && upstream.protocol === 'http') {
    ctx.addIssue({ code: 'custom', path: ['servers', fcgi], input: upstream.servers[fcgi]!.url.text, message: 'an fcgi:// server in a "protocol: http" upstream: write protocol: fastcgi' });
  }
  if (fcgi !== -1 || upstream.protocol === 'fastcgi') {
    const http = upstream.servers.findIndex((server) => server.url.kind === 'http' || server.url.kind === 'https');
    if (http !== -1) {
      ctx.addIssue({ code: 'custom', path: ['servers', http], input: upstream.servers[http]!.url.text, message: 'an http(s) server in a FastCGI upstream: FastCGI servers are fcgi://host:port or unix:/path' });
    }
    if (upstream.spawn?.protocol === 'h2c') {
      ctx.addIssue({ code: 'custom', path: ['spawn', 'protocol'], input: 'h2c', message: 'the instances of a FastCGI upstream speak FastCGI (PHP-FPM pools): h2c is for HTTP/2 app servers' });
    }
  }
}

/** Whether an upstream's servers speak FastCGI (its `protocol`, or an `fcgi://` server when it is unset). */
export function speaksFastCgi(upstream: { readonly protocol?: 'http' | 'fastcgi' | undefined; readonly servers: ReadonlyArray<{ readonly url: { readonly kind: string } }> }): boolean {
  return upstream.protocol === 'fastcgi' || (upstream.protocol === undefined && upstream.servers.some((server) => server.url.kind === 'fcgi'));
}

/** Let's Encrypt's directories: `directory` defaults to production, `staging: true` picks the staging one. */
export const LETS_ENCRYPT = {
  production: 'https://acme-v02.api.letsencrypt.org/directory',
  staging: 'https://acme-staging-v02.api.letsencrypt.org/directory',
} as const;

/** A site's automatic certificate (ACME, RFC 8555): where to order it and as whom. */
const acmeSchema = z
  .strictObject({
    /** Contact address of the ACME account (the CA's expiry notices go there). */
    email: z.string().regex(/^[^\s@]+@[^\s@]+$/, 'expected an e-mail address'),
    /** The CA's terms of service must be agreed to, explicitly (false is a config error). */
    agree_tos: z.boolean(),
    /** The ACME directory URL; Let's Encrypt production by default. */
    directory: z.url({ protocol: /^https?$/ }).optional(),
    /** Let's Encrypt's staging directory (untrusted certificates, generous rate limits); not with `directory`. */
    staging: z.boolean().default(false),
    /** External account binding, for CAs that require one (ZeroSSL, Google, a private CA). */
    eab: z.strictObject({ kid: z.string().min(1), hmac_key: z.string().min(1) }).optional(),
    /** CA certificates (PEM file) to trust for the ACME server's own HTTPS, for a private or test CA. */
    trusted_roots: z.string().min(1).optional(),
  })
  .transform((acme, ctx) => {
    if (acme.staging && acme.directory !== undefined) {
      ctx.addIssue({ code: 'custom', message: '"staging" picks Let\'s Encrypt\'s staging directory: set it or "directory", not both', path: ['staging'] });
      return z.NEVER;
    }
    const directory = acme.directory ?? (acme.staging ? LETS_ENCRYPT.staging : LETS_ENCRYPT.production);
    return { ...acme, directory };
  });

/** A site's ACME settings after parsing (directory filled in). */
export type AcmeConfig = z.output<typeof acmeSchema>;

/** A named cache zone: memory tier, optional disk tier. */
const cacheZone = z
  .strictObject({
    /** Bytes kept in memory (bodies and headers counted). */
    memory: size.default(256 * 1024 * 1024),
    /** Optional second tier that survives restarts. */
    disk: z.strictObject({ path: z.string().min(1), size: size.default(1024 * 1024 * 1024) }).optional(),
    /** Larger responses stream through without being stored; 16MB by default, at most the memory tier. */
    max_object: size.optional(),
    /**
     * A tier in the cluster's Redis behind memory and disk (docs/cluster.md, "A shared cache tier"): needs `cluster`.
     * `max_object_size`: larger answers are kept on the box only; `lock`: how long one box's fetch holds the
     * cluster-wide lock of its key at most (its TTL), and how long the other boxes wait for its answer.
     */
    shared: z.strictObject({ max_object_size: size.default(1024 * 1024), lock: duration.default(5000) }).optional(),
  })
  // A default larger than a small memory tier would refuse `memory: 1MB` for a key the user never wrote.
  .transform((zone) => ({ ...zone, max_object: zone.max_object ?? Math.min(16 * 1024 * 1024, zone.memory) }));

/** A problem found by a semantic check, at a path of keys below where the check looked. */
export interface Problem {
  keys: PropertyKey[];
  message: string;
}

/** What a handler kind's semantic check may look at besides its own options. */
export interface CheckEnv {
  /** The config's folder: relative paths resolve against it. */
  readonly dir: string;
  readonly routePath: RoutePath;
  /** Names of the config's upstreams and cache zones. */
  readonly upstreams: readonly string[];
  readonly caches: readonly string[];
}

/**
 * What the config needs to know of a handler kind: its key in a route, the schema of its options, and the
 * checks that need the file system or the rest of the config. The handler kinds live above `config/` and own
 * these; whoever loads a config hands them in (see `server/config.ts`).
 */
export interface HandlerSchema {
  readonly kind: string;
  readonly options: z.ZodType;
  /** May resolve relative paths in `options` in place: it runs before the config is frozen. */
  check?(options: unknown, env: CheckEnv): Problem[];
  /** The folders whose files the part serves to clients (after `check` resolved them): nothing secret may live there. */
  servedFolders?(options: unknown): string[];
  /** Middleware settings the part's own options carry for its route (see `ImpliedMiddleware`). */
  implies?(options: unknown): ImpliedMiddleware[];
  /** The named upstream the part sends to and the protocol it needs of it (`php`: fastcgi; `proxy`: http). */
  upstreamUse?(options: unknown): { readonly name: string; readonly protocol: 'http' | 'fastcgi' } | undefined;
}

/**
 * A middleware setting carried by a handler's own options: `proxy.max_body_size` is its route's
 * `max_body_size`. An explicit one counts as the route's own (it beats the site's, and the route may not set
 * the kind again); a `fallback` one (a handler's default) applies only when neither the route nor its site sets
 * that kind.
 */
export interface ImpliedMiddleware {
  kind: string;
  options: unknown;
  fallback: boolean;
  /** Where the setting is, below the handler's key (for error messages). */
  keys: PropertyKey[];
}

/**
 * The parts a config is validated against: the handler kinds, the middleware kinds (same shape: a route names
 * any of them by key beside its one handler) and the load-balancing policies that exist.
 */
export interface ConfigParts {
  readonly handlers: readonly HandlerSchema[];
  readonly middlewares: readonly HandlerSchema[];
  readonly policies: readonly string[];
}

/** A route after parsing: its path, the one handler kind it names with its options, and its middlewares. */
export interface RouteConfig {
  path: RoutePath;
  kind: string;
  options: unknown;
  /** Middleware kinds the route names, with their options (the chain orders them by stage). */
  middlewares: Array<{ kind: string; options: unknown }>;
}

function routeSchema(parts: ConfigParts) {
  const names = parts.handlers.map((handler) => handler.kind);
  const middlewares = parts.middlewares.map((middleware) => middleware.kind);
  const shape: Record<string, z.ZodType> = { path: routePath };
  for (const part of [...parts.handlers, ...parts.middlewares]) shape[part.kind] = part.options.optional();
  return z
    .strictObject(shape)
    .superRefine((value, ctx) => {
      const kinds = names.filter((kind) => value[kind] !== undefined);
      if (kinds.length !== 1) {
        ctx.addIssue({
          code: 'custom',
          message: kinds.length === 0 ? `a route needs one handler: ${names.join(', ')}` : `a route has one handler, found ${kinds.join(' and ')}`,
        });
      }
    })
    .transform((value): RouteConfig => {
      const kind = names.find((name) => value[name] !== undefined)!;
      const used = middlewares.filter((name) => value[name] !== undefined).map((name) => ({ kind: name, options: value[name] }));
      return { path: value.path as RoutePath, kind, options: value[kind], middlewares: used };
    });
}

/** A site's certificate: its files (`cert` and `key`), or obtained and renewed automatically (`acme`). */
const siteTls = z
  .strictObject({ ...certificateFiles, acme: acmeSchema.optional() })
  .superRefine((tls, ctx) => {
    const files = tls.cert !== undefined || tls.key !== undefined;
    if (files && tls.acme !== undefined) ctx.addIssue({ code: 'custom', path: ['acme'], message: 'a site has cert and key, or acme: not both' });
    if (!files && tls.acme === undefined) ctx.addIssue({ code: 'custom', message: 'a site\'s tls needs cert and key, or acme' });
  })
  .transform((tls) => ({ ...tls, pem: undefined as PemPair | undefined }));

const hsts = z.strictObject({
  /** How long browsers remember to use https only (sent in seconds). */
  max_age: duration.default(365 * 86_400_000),
  include_subdomains: z.boolean().default(false),
  /** Asks for the browsers' preload list (which needs include_subdomains and at least a year). */
  preload: z.boolean().default(false),
});

function siteSchema(parts: ConfigParts) {
  const names = parts.middlewares.map((middleware) => middleware.kind);
  const shape: Record<string, z.ZodType> = {
    /** Host names this site answers; omitted = the default site. `*.example.com` matches subdomains only. */
    hosts: z.array(z.string().min(1)).min(1).optional(),
    routes: z.array(routeSchema(parts)).default([]),
    /** Custom error pages: status → file (relative to the config's folder). */
    error_pages: z.record(z.string().regex(/^[45]\d\d$/, 'expected a 4xx or 5xx status'), z.string()).default({}),
    /** The site's certificate on TLS listeners, chosen by SNI. */
    tls: siteTls.optional(),
    /** Strict-Transport-Security, sent on answers over TLS only. */
    hsts: hsts.optional(),
  };
  // A middleware set on a site applies to each of its routes that does not set its own.
  for (const middleware of parts.middlewares) shape[middleware.kind] = middleware.options.optional();
  return z.strictObject(shape).transform((value): SiteConfig => {
    const middlewares = names.filter((name) => value[name] !== undefined).map((name) => ({ kind: name, options: value[name] }));
    return {
      hosts: value.hosts as string[] | undefined,
      routes: value.routes as RouteConfig[],
      error_pages: value.error_pages as Record<string, string>,
      tls: value.tls as SiteConfig['tls'],
      hsts: value.hsts as SiteConfig['hsts'],
      middlewares,
    };
  });
}

/** A site after parsing, with the middlewares it sets for its routes. */
export interface SiteConfig {
  hosts: string[] | undefined;
  routes: RouteConfig[];
  error_pages: Record<string, string>;
  tls: z.output<typeof siteTls> | undefined;
  hsts: z.output<typeof hsts> | undefined;
  /** Middleware kinds the site names, with their options: each route that names none of that kind inherits it. */
  middlewares: Array<{ kind: string; options: unknown }>;
}

const log = z.strictObject({
  /** `stdout`, `stderr`, `off`, or a file path. */
  access: z.string().default('stdout'),
  /** `combined` (nginx's), `upstream` (combined plus upstream fields), `json`, or `off`. */
  format: z.enum(['combined', 'upstream', 'json', 'off']).default('combined'),
  /** Error log level. */
  level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  /** Where the error log goes: `stderr` or a file path (appended to; reopened by SIGUSR1 and `portico reopen`). */
  error: z.string().min(1).default('stderr'),
  /** The error log's lines: `pretty` (one readable line each), `json`, or `auto` (pretty on a terminal, else JSON). */
  error_format: z.enum(['pretty', 'json', 'auto']).default('auto'),
  /**
   * An access-log line of your own (nginx's log_format): text and variables (docs/operations.md, "Access log");
   * when set, `format` is not used. An unknown variable is an error here.
   */
  template: z
    .string()
    .min(1)
    .superRefine((value, ctx) => {
      const problem = checkLogTemplate(value);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
    })
    .optional(),
  /** How `template` escapes values: `default` (nginx's `\xHH`) or `json` (as inside a JSON string). */
  template_escape: z.enum(['default', 'json']).default('default'),
});

/**
 * Traces (docs/operations.md, "Request ids and traces"): Portico records one span per sampled request and exports
 * it over OTLP/HTTP (JSON) to `otlp`. Without this section no span is recorded, and a started traceparent says
 * "not sampled".
 */
const tracing = z.strictObject({
  /** The OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`; a URL without a path gets `/v1/traces`); unset: nothing exported. */
  otlp: z.url({ protocol: /^https?$/ }).optional(),
  /** Share of requests sampled (0 to 1) when no trusted proxy decided it. */
  sample: z.number().min(0).max(1).default(0.01),
  /** The `service.name` of the exported spans. */
  service_name: z.string().min(1).default('portico'),
});

/**
 * The admin API (docs/operations.md, "Admin API"): served on the control socket always; on TCP at `listen` when
 * set. Its presence also turns counting on (metrics, the traffic figures of /status): without it nothing is counted.
 */
const admin = z
  .strictObject({
    /** The admin listener (`127.0.0.1:9901`); unset: the API is served on the control socket only. */
    listen: address.optional(),
    /** The environment variable holding the Bearer token (every POST needs it, loopback too). */
    token_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').default('PORTICO_ADMIN_TOKEN'),
    /**
     * A file holding the token (relative to the config's folder; read at load and at every reload, surrounding
     * whitespace trimmed): wins over `token_env`. For systemd's `LoadCredential=` and the showcase.
     */
    token_file: z.string().min(1).optional(),
    /** GET /status and /metrics without a token, from loopback peers only. */
    open_reads: z.boolean().default(false),
    /** Host names the admin listener also answers to (DNS-rebinding guard: otherwise only its own address). */
    hosts: z.array(z.string().min(1)).default([]),
    /** TLS for the admin listener: required when `listen` is not a loopback address. */
    tls: z
      .strictObject({ cert: z.string().min(1), key: z.string().min(1) })
      .transform((tls) => ({ ...tls, pem: undefined as PemPair | undefined }))
      .optional(),
  })
  // `token` is filled in by the checks of `admin.ts` when `token_file` is read.
  .transform((admin) => ({ ...admin, token: undefined as string | undefined }));

/**
 * Several boxes as one cluster through Redis (docs/cluster.md): what they share (certificates, rate limits, keys,
 * operator actions, a cache tier) and how each box runs while Redis is away.
 */
const cluster = z
  .strictObject({
    /**
     * `redis://[user:password@]host:port/db` or `rediss://…` (TLS). With `sentinels`, its host is the master's name
     * in Sentinel (`redis://:password@mymaster/0`, as redis-rb and Sidekiq write it).
     */
    redis: z.string().regex(/^rediss?:\/\/[^\s]+$/, 'expected a redis:// or rediss:// URL (redis://127.0.0.1:6379/0)'),
    /** Redis Sentinel's addresses (`host:port`): the master is asked of them, and found again after a failover. */
    sentinels: z
      .array(z.string().regex(/^([^\s:[\]]+|\[[0-9A-Fa-f:.]+\]):([1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d{2}|655[0-2]\d|6553[0-5])$/, 'a sentinel is host:port, the port 1 to 65535 (10.0.0.1:26379, [::1]:26379)'))
      .min(1)
      .optional(),
    /** Every key and channel starts with it: two clusters may share one Redis. */
    prefix: z.string().regex(/^[A-Za-z0-9_.:-]+$/, 'a prefix uses letters, digits, "_", "-", ".", ":"').default('portico'),
    /** The environment variable holding the cluster's secret (32+ characters): encryption at rest and the shared HMAC keys. */
    key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').default('PORTICO_CLUSTER_KEY'),
    /** This box's name in the cluster (unique in it); default the host name. */
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'a box name uses letters, digits, "_", "-", "."').optional(),
    /** The deadline of a call to Redis on a request's path (a rate limit, a shared-cache lookup): past it, the local fallback. */
    timeout: duration.default(50),
    /**
     * The boxes the cluster is meant to have: while Redis is away a cluster-wide rate limit allows each box its rate
     * / the boxes the heartbeat last counted, and at least this many (a box started during an outage has counted none).
     */
    boxes: z.number().int().min(1).default(1),
    /**
     * The lease of the cluster's lock on one site's ACME order: renewed while the order runs; when its box dies, the
     * lease ends and another box takes the order over (docs/cluster.md#certificates-and-acme).
     */
    acme_lease: duration.default(30_000),
  })
  // `key` is filled in by the checks of `cluster.ts` from the environment variable `key_env` names.
  .transform((section) => ({ ...section, name: section.name ?? '', key: '' }));

/** The schema of the whole config file, for the handler kinds given. */
export function configSchema(parts: ConfigParts) {
  return z.strictObject({
    listen: z.array(listener).min(1).prefault(['127.0.0.1:8080']),
    log: log.prefault({}),
    tracing: tracing.optional(),
    admin: admin.optional(),
    cluster: cluster.optional(),
    /**
     * The DNS servers `discover` asks (`127.0.0.1:5353`, or a list): unset, the system's (/etc/resolv.conf). Asked in
     * order, the next when one does not answer.
     */
    resolver: z
      .union([dnsServer, z.array(dnsServer).min(1)])
      .transform((value) => (Array.isArray(value) ? value : [value]).map((server) => server.trim()))
      .optional(),
    /** Value of the `Server` response header; empty to send none. */
    server_header: z.string().default('Portico'),
    /** Peers (addresses or CIDRs) whose X-Forwarded-* / Forwarded headers are believed. */
    trusted_proxies: z.array(z.string()).default([]),
    /** Forward request fields whose names contain `_` (dropped by default, as nginx's underscores_in_headers). */
    underscores_in_headers: z.boolean().default(false),
    caches: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'a cache name uses letters, digits, "_", "-", "."'), cacheZone).default({}),
    upstreams: z
      .record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'an upstream name uses letters, digits, "_", "-", "."'), upstreamSchema)
      .superRefine(checkSlotRoutes)
      .default({}),
    sites: z.array(siteSchema(parts)).min(1),
    /**
     * Where Portico keeps keys and certificates (ACME accounts and certificates, the sticky-cookie key), relative to
     * the config's folder; unset: `./var/NAME` beside the config file NAME.yaml (its lock and control socket; see `config/control.ts`).
     */
    state_dir: z.string().min(1).optional(),
    /**
     * The file `portico run` writes its process id to at start and removes at stop (an upgrade's new process
     * takes it over), relative to the config's folder; `off` for none. Default: `portico.pid` in the state directory.
     */
    pid_file: z.string().min(1).optional(),
    /**
     * Temporary files (request bodies and answers buffered for slow clients): `max_size` bounds the bytes all of
     * them hold at once; past it answers go at their client's pace and request bodies that need a file get 503.
     */
    temp_files: z.strictObject({ max_size: size.default(1024 * 1024 * 1024) }).prefault({}),
    /**
     * How long a stopping Portico (SIGTERM/SIGINT, or the old process of an upgrade) lets requests and tunnels in
     * flight finish before it cuts them (nginx's worker_shutdown_timeout).
     */
    shutdown_timeout: duration.default(10_000),
    /**
     * Worker processes serving the listeners: `1` (one process, the default), a number, or `auto` (one per core,
     * `os.availableParallelism()`). With more than one, the process `portico run` starts is the primary: it holds
     * the control plane (state directory, health checks, ACME) and the workers serve (docs/operations.md, "Workers").
     */
    workers: z
      .union([z.literal('auto'), z.number().int().min(1).max(256)], { error: 'expected "auto" or a number of worker processes (1 to 256)' })
      .default(1)
      .transform((value) => (value === 'auto' ? availableParallelism() : value)),
  });
}

/** The config as parsed by the schema, before paths are resolved and it is frozen. */
export type ParsedConfig = z.output<ReturnType<typeof configSchema>>;
