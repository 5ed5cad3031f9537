/**
 * `php`: PHP behind PHP-FPM over FastCGI, with Caddy's `php_fastcgi` behaviour. A path that names an existing file
 * that is not a script is served as a static file (the `static` handler, with its validators, ranges and
 * compression); a directory runs its `index.php`; a path with a `.php` segment runs that script, the rest being
 * PATH_INFO; anything else runs the front controller (`/index.php`). Which script runs is decided in `script.ts`
 * (never a non-`.php` file, never outside the root), its variables in `params.ts`. The request then goes through
 * the proxy's attempt loop to a FastCGI upstream: balancing, health, retries, timeouts, request buffering and
 * `intercept_errors` are the proxy's.
 */
import { realpathSync } from 'node:fs';
import { LRUCache } from 'lru-cache';
import path from 'node:path';
import { z } from 'zod';
import { duration, size, type CheckEnv, type Problem } from '../../config/schema.js';
import { isDirectory } from '../../config/validate.js';
import type { RequestContext } from '../../http/context.js';
import { sendError } from '../../http/send.js';
import { compileTemplate } from '../../http/template.js';
import { SpooledBody } from '../proxy/body.js';
import { Forwarder } from '../proxy/forward.js';
import { cacheOptions, impliedBodySize, routeCache, unknownName } from '../proxy/handler.js';
import { interceptedStatuses, interceptOption } from '../proxy/intercept.js';
import { RequestPreparer } from '../proxy/prepare.js';
import type { PreparedRequest } from '../proxy/sink.js';
import { staticKind } from '../static/handler.js';
import { defineHandler } from '../types.js';
import { cgiParams, utf8Bytes, type ParamsOptions, type ScriptTarget } from './params.js';
import { locate, type LocateOptions, type PhpTarget } from './script.js';

const MAX_BUFFER_MEMORY = 64 * 1024 * 1024;

const options = z.strictObject({
  /** The folder of the PHP application (DOCUMENT_ROOT; its real path, symlinks resolved, is what PHP sees). */
  root: z.string().min(1),
  /** The upstream of FastCGI servers (PHP-FPM pools). */
  upstream: z.string(),
  /** Index names tried in a directory: a script runs, another file (index.html) is served as a file. */
  index: z.preprocess((value) => (typeof value === 'string' ? [value] : value), z.array(z.string().min(1).regex(/^[^/]+$/, 'an index is a file name, without "/"'))).default(['index.php']),
  /** The script that answers paths that are neither a file nor a script (a framework's router); false: 404. */
  front_controller: z.union([z.string().startsWith('/'), z.literal(false)]).default('/index.php'),
  /** Extensions after which a path is split into SCRIPT_NAME and PATH_INFO; only such files ever run. */
  split: z.array(z.string().regex(/^\.[A-Za-z0-9]+$/, 'an extension such as .php')).min(1).default(['.php']),
  /** Variables added to (or overriding) the CGI ones, as nginx's fastcgi_param: `{ APP_ENV: production }`. */
  // Upper-case first: the FastCGI pool sends a name that is not as a request field's HTTP_* (see paramsOf).
  env: z.record(z.string().regex(/^[A-Z][A-Za-z0-9_]*$/, 'a variable name starting with an upper-case letter (APP_ENV)'), z.string()).default({}),
  /** `deny`: a path with a segment starting with `.` is 404 (scripts and files alike), except under `/.well-known/`. */
  dotfiles: z.enum(['deny', 'allow']).default('deny'),
  /** `within_root`: a script or file reached through a symlink runs or is served only inside root. */
  symlinks: z.enum(['within_root', 'follow']).default('within_root'),
  /** Largest request body (413 beyond it): the route's max_body_size; 10MB when neither it nor its site sets one. */
  max_body_size: size.optional(),
  /** A request body past this is held in a temporary file before PHP gets it (PHP-FPM needs its length). */
  request_buffer_memory: size.refine((bytes) => bytes <= MAX_BUFFER_MEMORY, 'at most 64MB').default(64 * 1024),
  /** How much of an answer a slow client may leave for Portico to hold, so a PHP worker is freed at once. */
  buffer_response: size.default(32 * 1024 * 1024),
  response_buffer_memory: size.refine((bytes) => bytes <= MAX_BUFFER_MEMORY, 'at most 64MB').default(256 * 1024),
  /** Replace PHP's answers with these statuses (true: every 4xx and 5xx) by the site's error page. */
  intercept_errors: interceptOption,
  /** Store PHP's answers in a cache zone, as a proxy route does (docs/cache.md): `{ zone: main }`. */
  cache: cacheOptions.optional(),
  /** How long where a path leads (a script, a file, the front controller) is kept before the disk is asked again. */
  file_cache_valid: duration.default(1000),
});

/** Options of a `php` route, as the schema gives them. */
export type PhpOptions = z.output<typeof options>;

function checkPhp(php: PhpOptions, env: CheckEnv): Problem[] {
  const problems: Problem[] = [];
  const root = path.resolve(env.dir, php.root);
  if (!isDirectory(root)) problems.push({ keys: ['root'], message: `directory ${php.root} does not exist` });
  php.root = root;
  if (!env.upstreams.includes(php.upstream)) {
    problems.push({ keys: ['upstream'], message: unknownName('upstream', php.upstream, env.upstreams) });
  }
  if (php.cache !== undefined && !env.caches.includes(php.cache.zone)) {
    problems.push({ keys: ['cache', 'zone'], message: unknownName('cache', php.cache.zone, env.caches) });
  }
  if (php.front_controller !== false && !php.split.some((ext) => (php.front_controller as string).toLowerCase().endsWith(ext.toLowerCase()))) {
    problems.push({ keys: ['front_controller'], message: `the front controller is a script (ending in ${php.split.join(' or ')})` });
  }
  return problems;
}

/** The `php` handler kind. */
export const phpKind = defineHandler({
  kind: 'php',
  options,
  readsBody: true,
  check: checkPhp,
  servedFolders: (options) => [options.root],
  upstreamUse: (options) => ({ name: options.upstream, protocol: 'fastcgi' }),
  implies: (options) => impliedBodySize(options.max_body_size),
  create(options, env) {
    const upstream = env.upstreams.get(options.upstream)!;
    const config = upstream.config;
    const realRoot = realpathSync(options.root);
    const located: LocateOptions = {
      realRoot,
      split: options.split.map((ext) => ext.toLowerCase()),
      index: options.index,
      frontController: options.front_controller === false ? undefined : options.front_controller,
      dotfiles: options.dotfiles,
      symlinks: options.symlinks,
    };
    const files = staticKind.create(
      // A directory's index that is no script (index.html) is the static handler's to serve; scripts never are.
      staticKind.options.parse({
        root: options.root,
        index: options.index.filter((name) => !located.split.some((ext) => name.toLowerCase().endsWith(ext))),
        dotfiles: options.dotfiles,
        symlinks: options.symlinks,
        file_cache: { valid: options.file_cache_valid },
      }),
      env,
    );
    /** The request's header list replaced by its CGI variables (the FastCGI pool sends them as PARAMS). */
    const withParams = (ctx: RequestContext, prepared: PreparedRequest): PreparedRequest => {
      const body = prepared.body;
      const sized = body === null ? (ctx.req.method === 'POST' || ctx.req.method === 'PUT' || ctx.req.method === 'PATCH' ? 0 : -1) : Buffer.isBuffer(body) ? body.length : body instanceof SpooledBody ? body.length : -1;
      prepared.headers = cgiParams(ctx, scripts.get(ctx)!, sized, paramsOptions);
      return prepared;
    };
    const paramsOptions: ParamsOptions = {
      documentRoot: realRoot,
      underscores: env.underscoresInHeaders,
      env: Object.entries(options.env).flatMap(([name, value]) => [name, utf8Bytes(value)]),
    };
    const preparer = new RequestPreparer({
      host: 'pass',
      setHeaders: {},
      stripPrefix: '',
      retryBuffer: config.retry_buffer,
      underscores: env.underscoresInHeaders,
      allowTrace: false,
      // PHP-FPM needs CONTENT_LENGTH: a body is read whole first (memory, then a temporary file).
      requestBuffering: true,
      requestBufferMemory: options.request_buffer_memory,
      tempSpace: env.tempSpace,
      logger: env.logger,
      httpHeaders: false,
      grpc: false,
    });
    const intercept = interceptedStatuses(options.intercept_errors);
    // The script each request runs, found before it is forwarded (or looked up in the cache).
    const scripts = new WeakMap<RequestContext, ScriptTarget>();
    const forwarder = new Forwarder({
      upstream,
      preparer: {
        prepare(ctx) {
          const prepared = preparer.prepare(ctx);
          if (prepared === undefined) return undefined;
          if (prepared instanceof Promise) return prepared.then((ready) => (ready === undefined ? undefined : withParams(ctx, ready)));
          return withParams(ctx, prepared);
        },
      },
      shared: {
        upstream,
        passiveOn: new Set<string>(config.passive.on),
        retryOn: new Set(config.retry_on),
        hide: new Set(['portico-cache-control']),
        serverHeader: env.serverHeader,
        serverOrigins: [],
        strippedPrefix: '',
        intercept,
        logger: env.logger,
      },
      hashKey: config.policy === 'hash' ? compileTemplate(config.hash_key) : undefined,
      responseBuffering: { limit: options.buffer_response, memory: options.response_buffer_memory, space: env.tempSpace, logger: env.logger },
      logger: env.logger,
      grpcWeb: false,
    });

    const cache = options.cache === undefined ? undefined : routeCache(options.cache, intercept, env, forwarder);
    const answer = (ctx: RequestContext, target: PhpTarget): Promise<void> | void => {
      switch (target.kind) {
        case 'file':
          return files.handle(ctx);
        case 'redirect':
          // Canonical (one leading slash, never `//host`): never an open redirect. 308, as Caddy's php_fastcgi.
          return sendError(ctx, 308, { Location: ctx.query === '' ? target.location : `${target.location}?${ctx.query}` });
        case 'status':
          return sendError(ctx, target.status);
        case 'script':
          scripts.set(ctx, target);
          return cache === undefined ? forwarder.handle(ctx) : cache.handle(ctx);
      }
    };
    // Where a path leads is kept for file_cache_valid (as a static route's answers): a hot script costs no stat.
    const valid = options.file_cache_valid;
    const known = new LRUCache<string, { target: PhpTarget; until: number }>({ max: 10_000, maxSize: 16 * 1024 * 1024, sizeCalculation: (_v, key) => key.length + 256 });
    const remember = (ctx: RequestContext, target: PhpTarget): Promise<void> | void => {
      if (valid > 0) known.set(ctx.path, { target, until: Date.now() + valid });
      return answer(ctx, target);
    };
    return {
      handle: function php(ctx) {
        const hit = valid > 0 ? known.peek(ctx.path) : undefined;
        if (hit !== undefined && hit.until > Date.now()) return answer(ctx, hit.target);
        return locate(ctx.path, located).then((target) => remember(ctx, target));
      },
      start: files.start,
      stop: files.stop,
    };
  },
});
