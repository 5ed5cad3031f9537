/**
 * The config's shape: every key, its type, its default. Objects are strict (an unknown key is an error, as in
 * Caddy), durations and sizes are turned into milliseconds and bytes here, and route paths are parsed once.
 * What needs the file system or the whole config (a root that must exist, a name that must be defined) is
 * checked afterwards in `validate.ts`.
 */
import { z } from 'zod';
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

/** `host:port`, `:port` or `[v6]:port`, parsed. */
const address = z.string().transform((value, ctx) => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(value.trim());
  const port = match ? Number(match[3]) : NaN;
  if (match === null || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `expected "host:port", ":port" or "[::1]:port", got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  const host = match[1] ?? (match[2] === '' ? '0.0.0.0' : match[2]!);
  return { host, port, text: value.trim() };
});

const listenerObject = z.strictObject({
  addr: address,
  /** Largest request head (request line and headers) accepted; larger gets 431. */
  max_header_size: size.default(16 * 1024),
  /** Time allowed to receive a complete request head. */
  header_timeout: duration.default(30_000),
  /** Time allowed to receive a complete request, body included. */
  request_timeout: duration.default(300_000),
  /** How long an idle keep-alive connection is kept open. */
  keepalive_timeout: duration.default(75_000),
  /** Requests served on one connection before it is closed (0 = no limit). */
  max_requests_per_conn: z.number().int().min(0).default(0),
});

const listener = z.union([
  z.string().transform((addr, ctx) => {
    const parsed = listenerObject.safeParse({ addr });
    if (!parsed.success) {
      for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: issue.message });
      return z.NEVER;
    }
    return parsed.data;
  }),
  listenerObject,
]);

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

const headerMap = z.record(z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'not a valid header name'), z.string());

const staticHandler = z.strictObject({
  root: z.string().min(1),
  index: z.array(z.string().min(1)).default(['index.html']),
  /** Like nginx's try_files: `$uri`, `$uri/`, or a path tried in order; the last may be `=404`. */
  try_files: z.array(z.string().min(1)).optional(),
  autoindex: z.boolean().default(false),
  /** On-the-fly gzip/br for compressible types, and `.br`/`.gz` siblings when present. */
  compress: z.boolean().default(true),
  /** Serve `file.br` / `file.gz` siblings when present and not older than the file. */
  precompressed: z.boolean().default(true),
  cache_control: z.string().optional(),
  headers: headerMap.default({}),
  /** `deny`: any path segment starting with `.` is 404, except under `/.well-known/`. */
  dotfiles: z.enum(['deny', 'allow']).default('deny'),
  /** `within_root`: a symlink is followed only while its target stays inside root; `follow`: always. */
  symlinks: z.enum(['within_root', 'follow']).default('within_root'),
  /** Most ranges honoured in one multi-range request; beyond it the whole file is sent (200). */
  max_ranges: z.number().int().min(1).max(1000).default(16),
  /** In-memory cache of small hot files; a changed file is seen within `valid`. */
  file_cache: z
    .strictObject({
      enabled: z.boolean().default(true),
      valid: duration.default(1000),
      max_file_size: size.default(1024 * 1024),
      max_size: size.default(64 * 1024 * 1024),
      max_entries: z.number().int().min(1).default(10_000),
    })
    .prefault({}),
});

const redirectHandler = z.strictObject({
  /** Target; may use `$scheme`, `$host`, `$request_uri`, `$uri` and `$args`. */
  to: z.string().min(1),
  status: z.union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)]).default(302),
});

const respondHandler = z.strictObject({
  status: z.number().int().min(200).max(599).default(200),
  body: z.string().default(''),
  content_type: z.string().default('text/plain; charset=utf-8'),
  headers: headerMap.default({}),
});

/** The handler kinds a route may name; exactly one per route. */
export const HANDLER_KINDS = ['static', 'redirect', 'respond'] as const;

const route = z
  .strictObject({
    path: routePath,
    static: staticHandler.optional(),
    redirect: redirectHandler.optional(),
    respond: respondHandler.optional(),
  })
  .superRefine((value, ctx) => {
    const kinds = HANDLER_KINDS.filter((kind) => value[kind] !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          kinds.length === 0
            ? `a route needs one handler: ${HANDLER_KINDS.join(', ')}`
            : `a route has one handler, found ${kinds.join(' and ')}`,
      });
    }
  });

const site = z.strictObject({
  /** Host names this site answers; omitted = the default site. `*.example.com` matches subdomains only. */
  hosts: z.array(z.string().min(1)).min(1).optional(),
  routes: z.array(route).default([]),
  /** Custom error pages: status → file (relative to the config's folder). */
  error_pages: z.record(z.string().regex(/^[45]\d\d$/, 'expected a 4xx or 5xx status'), z.string()).default({}),
});

const log = z.strictObject({
  /** `stdout`, `stderr`, `off`, or a file path. */
  access: z.string().default('stdout'),
  format: z.enum(['combined', 'json', 'off']).default('combined'),
  /** Error log level (to stderr). */
  level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
});

/** The whole config file. */
export const configSchema = z.strictObject({
  listen: z.array(listener).min(1).prefault(['127.0.0.1:8080']),
  log: log.prefault({}),
  /** Value of the `Server` response header; empty to send none. */
  server_header: z.string().default('Portico'),
  sites: z.array(site).min(1),
});

/** The config as parsed by the schema, before paths are resolved and it is frozen. */
export type ParsedConfig = z.output<typeof configSchema>;
