/**
 * Checks that need more than one key or the file system: roots that must exist, duplicate listeners, host
 * patterns, try_files syntax, certificates and keys (`tls.ts`). It also resolves relative paths against the config's folder, in place, before the
 * config is frozen.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, realpathSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import { checkTrustedEntry } from '../http/client-address.js';
import { checkHostPattern } from '../http/hosts.js';
import { normalizePath } from '../http/request-path.js';
import { templateVariables } from '../http/template.js';
import { APP_SESSION_COOKIES, appCookieAdvice, speaksFastCgi, type ConfigParts, type ParsedConfig, type Problem } from './schema.js';
import { checkTls } from './tls.js';
import { checkAdmin } from './admin.js';
import { checkCluster } from './cluster.js';
import { controlSocketPath, defaultStateDir, socketPathProblem, stateDirFor } from './control.js';

/** Whether `file` is a directory (false when it does not exist or cannot be seen). */
export function isDirectory(file: string): boolean {
  try {
    return statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Whether the system's `database` (passwd, group) has `name` (getent, which also sees NSS sources); true when
 * getent is missing: `portico run` checks again when it starts the instances.
 */
function systemHas(database: 'passwd' | 'group', name: string): boolean {
  if (!existsSync('/usr/bin/getent')) return true;
  try {
    execFileSync('/usr/bin/getent', [database, name], { timeout: 2000, stdio: 'ignore' });
    return true;
  } catch (err) {
    // Exit 2: not found; anything else (a timeout, NSS down) is not the config's fault.
    return (err as { status?: number | null }).status !== 2;
  }
}

/** Whether `file` is a regular file (false when it does not exist or cannot be seen). */
export function isFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Whether `inner` is `outer` or lies below it (both absolute; symbolic links resolved where they exist). */
export function isInside(inner: string, outer: string): boolean {
  const real = (file: string): string => {
    try {
      return realpathSync(file);
    } catch {
      // A path that does not exist yet: its nearest existing parent decides where it will be.
      const parent = path.dirname(file);
      return parent === file ? file : path.join(real(parent), path.basename(file));
    }
  };
  const relative = path.relative(real(outer), real(inner));
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/**
 * Why an existing state directory may not be used (undefined when it may): it must be a directory owned by this
 * user, and neither group- nor world-writable (another user could plant or swap a key or certificate there).
 */
export function stateDirProblem(stats: Stats, uid: number | undefined = process.getuid?.()): string | undefined {
  if (!stats.isDirectory()) return 'is not a directory';
  if (uid !== undefined && stats.uid !== uid) return `is owned by another user (uid ${stats.uid}, this process runs as uid ${uid})`;
  if ((stats.mode & 0o022) !== 0) {
    const who = [(stats.mode & 0o020) !== 0 ? 'group' : '', (stats.mode & 0o002) !== 0 ? 'world' : ''].filter((w) => w !== '').join('- and ');
    return `is ${who}-writable (mode ${(stats.mode & 0o777).toString(8).padStart(4, '0')}): chmod 700 it`;
  }
  return undefined;
}

/**
 * A route path as requests carry it: canonical, non-ASCII as UTF-8 escapes (`/café/` → `/caf%C3%A9/`), so that
 * it can match at all. `null` when no request path can ever have it.
 */
function canonicalRoutePath(routePath: string, exact: boolean): string | null {
  const bytes = Buffer.from(routePath, 'utf8').toString('latin1');
  if (exact) return normalizePath(bytes);
  // A prefix may end inside a segment (`/a/.` matches `/a/.well-known`): canonicalise it as the start of a longer path.
  const longer = normalizePath(bytes + 'z');
  return longer === null ? null : longer.slice(0, -1);
}

/**
 * Resolves relative paths in `config` against `dir` (in place) and returns every problem found. `file` (the
 * config's name) names the default state directory, `./var/NAME`.
 */
export function validateConfig(config: ParsedConfig, dir: string, parts: ConfigParts, file = 'portico.yaml'): Problem[] {
  const problems: Problem[] = [];
  const seen = new Map<string, number>();
  config.listen.forEach((listener, i) => {
    const key = `${listener.addr.host}:${listener.addr.port}`;
    if (seen.has(key) && listener.addr.port !== 0) {
      problems.push({ keys: ['listen', i], message: `address ${listener.addr.text} is already listed at listen[${seen.get(key)}]` });
    }
    seen.set(key, i);
  });

  problems.push(...checkTls(config, dir));
  problems.push(...checkAdmin(config, dir));
  problems.push(...checkCluster(config));

  const access = config.log.access;
  if (!['stdout', 'stderr', 'off'].includes(access)) {
    config.log.access = path.resolve(dir, access);
    if (!isDirectory(path.dirname(config.log.access))) {
      problems.push({ keys: ['log', 'access'], message: `folder ${path.dirname(access)} does not exist` });
    }
  }

  if (config.log.error !== 'stderr') {
    config.log.error = path.resolve(dir, config.log.error);
    if (!isDirectory(path.dirname(config.log.error))) problems.push({ keys: ['log', 'error'], message: `folder ${path.dirname(config.log.error)} does not exist` });
    else if (isDirectory(config.log.error)) problems.push({ keys: ['log', 'error'], message: `${config.log.error} is a directory: name a file` });
  }
  if (config.pid_file !== undefined && config.pid_file !== 'off') {
    config.pid_file = path.resolve(dir, config.pid_file);
    // The state directory is made at start: a pid file in it needs no folder yet.
    const inStateDir = path.dirname(config.pid_file) === stateDirFor(file, dir, config.state_dir);
    if (!inStateDir && !isDirectory(path.dirname(config.pid_file))) problems.push({ keys: ['pid_file'], message: `folder ${path.dirname(config.pid_file)} does not exist` });
    else if (isDirectory(config.pid_file)) problems.push({ keys: ['pid_file'], message: `${config.pid_file} is a directory: name a file` });
  }

  config.listen.forEach((listener, i) => {
    if (listener.proxy_protocol && config.trusted_proxies.length === 0) {
      problems.push({
        keys: ['listen', i, 'proxy_protocol'],
        message: 'proxy_protocol accepts headers only from trusted_proxies, and that list is empty: every connection would be closed (list the load balancers\' addresses in trusted_proxies)',
      });
    }
  });
  config.trusted_proxies.forEach((entry, i) => {
    const reason = checkTrustedEntry(entry);
    if (reason !== undefined) problems.push({ keys: ['trusted_proxies', i], message: `${reason}, got ${JSON.stringify(entry)}` });
  });
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    if (!parts.policies.includes(upstream.policy)) {
      problems.push({ keys: ['upstreams', name, 'policy'], message: `unknown policy "${upstream.policy}" (expected one of: ${parts.policies.join(', ')})` });
    }
    // The DNS servers `discover` asks are the top-level `resolver`'s (undefined: the system's).
    if (upstream.discover !== undefined) upstream.discover.resolver = config.resolver;
    upstream.servers.forEach((server, i) => {
      // `unix:./fpm.sock` is relative to the config's folder, as every path in it (not to the working folder).
      if (server.url.socketPath !== undefined) server.url.socketPath = path.resolve(dir, server.url.socketPath);
      if (server.tls?.ca !== undefined) {
        const ca = path.resolve(dir, server.tls.ca);
        if (!isFile(ca)) problems.push({ keys: ['upstreams', name, 'servers', i, 'tls', 'ca'], message: `file ${server.tls.ca} does not exist` });
        server.tls.ca = ca;
      }
      if (server.tls !== undefined && server.url.kind !== 'https') {
        problems.push({ keys: ['upstreams', name, 'servers', i, 'tls'], message: 'tls options need an https:// URL' });
      }
      if (server.protocol !== undefined && server.url.kind !== 'https') {
        const hint = server.url.kind === 'http' && server.protocol !== 'http1.1' ? ' (HTTP/2 without TLS: write the URL as h2c://host:port)' : '';
        problems.push({ keys: ['upstreams', name, 'servers', i, 'protocol'], message: `protocol is chosen by ALPN, so it needs an https:// URL${hint}` });
      }
      if (upstream.health?.type === 'grpc' && server.url.kind !== 'h2c' && !(server.url.kind === 'https' && server.protocol === 'h2')) {
        problems.push({ keys: ['upstreams', name, 'health', 'type'], message: `gRPC health checks need HTTP/2 servers: servers[${i}] (${server.url.text}) is not h2c:// nor https:// with protocol: h2` });
      }
    });
    if (upstream.health?.type === 'grpc' && upstream.spawn !== undefined && upstream.spawn.protocol !== 'h2c') {
      problems.push({ keys: ['upstreams', name, 'health', 'type'], message: 'gRPC health checks need HTTP/2 servers: spawned app servers speak HTTP/1.1 unless spawn.protocol is h2c' });
    }
    // As a static root: a missing folder is a typo to report now, not a crash loop at run time.
    const cwd = upstream.spawn?.cwd;
    if (cwd !== undefined && !isDirectory(path.resolve(dir, cwd))) {
      problems.push({ keys: ['upstreams', name, 'spawn', 'cwd'], message: `directory ${cwd} does not exist` });
    }
    for (const [key, database] of [['user', 'passwd'], ['group', 'group']] as const) {
      const value = upstream.spawn?.[key];
      if (value !== undefined && !systemHas(database, value)) {
        problems.push({ keys: ['upstreams', name, 'spawn', key], message: `no ${key} "${value}" on this system` });
      }
    }
    // The instances start before the listeners bind: one given a listen port would take it from Portico itself.
    const ports = upstream.spawn?.ports;
    const clash = ports === undefined ? -1 : config.listen.findIndex((l) => l.addr.port >= ports.from && l.addr.port <= ports.to);
    if (ports !== undefined && clash !== -1) {
      problems.push({
        keys: ['upstreams', name, 'spawn', 'ports'],
        message: `${ports.from}-${ports.to} holds port ${config.listen[clash]!.addr.port}, which Portico listens on (listen[${clash}]): an instance could take it first; choose a range apart from the listen ports`,
      });
    }
  }

  const folders = new Map<string, string>();
  for (const [name, zone] of Object.entries(config.caches)) {
    if (zone.disk !== undefined) {
      zone.disk.path = path.resolve(dir, zone.disk.path);
      const other = folders.get(zone.disk.path);
      if (other !== undefined) {
        problems.push({ keys: ['caches', name, 'disk', 'path'], message: `caches.${other} already uses this folder: a disk folder has one zone` });
      }
      folders.set(zone.disk.path, name);
      if (!isDirectory(path.dirname(zone.disk.path))) {
        problems.push({ keys: ['caches', name, 'disk', 'path'], message: `folder ${path.dirname(zone.disk.path)} does not exist` });
      }
    }
    if (zone.max_object > zone.memory) problems.push({ keys: ['caches', name, 'max_object'], message: 'max_object is larger than the memory tier' });
    if (zone.shared !== undefined && config.cluster === undefined) {
      problems.push({ keys: ['caches', name, 'shared'], message: 'a shared tier lives in the cluster\'s Redis: add a `cluster` section (docs/cluster.md), or remove `shared`' });
    }
    if (zone.shared !== undefined && !(zone.shared.lock >= 1)) {
      problems.push({ keys: ['caches', name, 'shared', 'lock'], message: 'the lock of a fetch lives at least 1ms (it is a TTL in Redis, and how long the other boxes wait for the fetch)' });
    }
    if (zone.shared !== undefined && zone.shared.max_object_size > 512 * 1024 * 1024) {
      problems.push({ keys: ['caches', name, 'shared', 'max_object_size'], message: 'a Redis value holds at most 512MB' });
    }
  }

  const upstreams = Object.keys(config.upstreams);
  const caches = Object.keys(config.caches);
  const served: string[] = [];
  const uses: UpstreamUse[] = [];
  let defaults = 0;
  config.sites.forEach((site, s) => {
    if (site.hosts === undefined && ++defaults === 2) {
      problems.push({ keys: ['sites', s], message: 'a second site without "hosts": only one default site can exist' });
    }
    for (const used of site.middlewares) {
      const part = parts.middlewares.find((middleware) => middleware.kind === used.kind);
      const env = { dir, routePath: { kind: 'prefix' as const, path: '/', stopRegex: false, text: '/' }, upstreams, caches };
      for (const problem of part?.check?.(used.options, env) ?? []) {
        problems.push({ keys: ['sites', s, used.kind, ...problem.keys], message: problem.message });
      }
    }
    site.hosts?.forEach((host, h) => {
      const reason = checkHostPattern(host);
      if (reason !== undefined) problems.push({ keys: ['sites', s, 'hosts', h], message: `${reason} (got ${JSON.stringify(host)})` });
    });
    for (const [status, file] of Object.entries(site.error_pages)) {
      const resolved = path.resolve(dir, file);
      site.error_pages[status] = resolved;
      if (!isFile(resolved)) problems.push({ keys: ['sites', s, 'error_pages', status], message: `file ${file} does not exist` });
    }
    const exact = new Map<string, number>();
    site.routes.forEach((route, r) => {
      const keys = ['sites', s, 'routes', r];
      if (route.path.kind !== 'regex') {
        const canonical = canonicalRoutePath(route.path.path, route.path.kind === 'exact');
        if (canonical === null) problems.push({ keys: [...keys, 'path'], message: 'no request path can match this (a NUL, a control character or a broken % escape)' });
        else route.path.path = canonical;
        const id = `${route.path.kind}:${route.path.path}`;
        if (exact.has(id)) problems.push({ keys: [...keys, 'path'], message: `duplicate route path, first defined at routes[${exact.get(id)}]` });
        exact.set(id, r);
      }
      const env = { dir, routePath: route.path, upstreams, caches };
      const handler = parts.handlers.find((part) => part.kind === route.kind);
      for (const implied of handler?.implies?.(route.options) ?? []) {
        if (!implied.fallback && route.middlewares.some((used) => used.kind === implied.kind)) {
          problems.push({
            keys: [...keys, route.kind, ...implied.keys],
            message: `the route sets ${implied.kind} twice (here and as its own "${implied.kind}"): keep one`,
          });
        }
      }
      for (const [part, named] of [
        [handler, route] as const,
        ...route.middlewares.map((used) => [parts.middlewares.find((middleware) => middleware.kind === used.kind), used] as const),
      ]) {
        for (const problem of part?.check?.(named.options, env) ?? []) {
          problems.push({ keys: [...keys, named.kind, ...problem.keys], message: problem.message });
        }
      }
      for (const folder of handler?.servedFolders?.(route.options) ?? []) served.push(folder);
      const use = handler?.upstreamUse?.(route.options);
      if (use !== undefined && config.upstreams[use.name] !== undefined) uses.push({ ...use, keys: [...keys, route.kind, 'upstream'] });
    });
  });
  problems.push(...checkUpstreamProtocols(config, uses));
  problems.push(...checkAcme(config, dir, file));
  problems.push(...checkSecretsServed(config, served));
  return problems;
}

/** A route's use of a named upstream, with the protocol its handler speaks. */
interface UpstreamUse {
  readonly name: string;
  readonly protocol: 'http' | 'fastcgi';
  readonly keys: Array<string | number>;
}

/**
 * Settles each upstream's `protocol` when it is unset (FastCGI when a `php` route names it) and checks that every
 * route speaks its upstream's protocol (a `proxy` to PHP-FPM, or a `php` route to an HTTP app, cannot work).
 */
function checkUpstreamProtocols(config: ParsedConfig, uses: readonly UpstreamUse[]): Problem[] {
  const problems: Problem[] = [];
  for (const use of uses) {
    const upstream = config.upstreams[use.name]!;
    if (use.protocol === 'fastcgi' && upstream.protocol === undefined && upstream.spawn?.protocol !== 'h2c' && !upstream.servers.some((server) => server.url.kind === 'http' || server.url.kind === 'https')) {
      upstream.protocol = 'fastcgi';
    }
  }
  for (const use of uses) {
    const fastcgi = speaksFastCgi(config.upstreams[use.name]!);
    if (fastcgi && use.protocol === 'http') {
      problems.push({ keys: use.keys, message: `upstream "${use.name}" speaks FastCGI: send to it with a php route, not a proxy` });
    } else if (!fastcgi && use.protocol === 'fastcgi') {
      problems.push({ keys: use.keys, message: `upstream "${use.name}" speaks HTTP: a php route needs FastCGI servers (fcgi://host:port, or unix:/path with protocol: fastcgi)` });
    }
  }
  return problems;
}

/**
 * ACME sites (a certificate is ordered for every host: no wildcard, which needs dns-01, and the CA's terms agreed
 * to) and the state directory they need: `./var/NAME` beside the config file NAME.yaml when `state_dir` is unset.
 */
function checkAcme(config: ParsedConfig, dir: string, file: string): Problem[] {
  const problems: Problem[] = [];
  let acme = false;
  config.sites.forEach((site, s) => {
    const settings = site.tls?.acme;
    if (settings === undefined) return;
    acme = true;
    const keys = ['sites', s, 'tls', 'acme'];
    if (!settings.agree_tos) problems.push({ keys: [...keys, 'agree_tos'], message: "ACME needs the CA's terms of service agreed to: set agree_tos: true" });
    if (site.hosts === undefined) problems.push({ keys, message: 'ACME needs the site\'s "hosts": a certificate names them' });
    site.hosts?.forEach((host, h) => {
      if (host.includes('*')) {
        problems.push({ keys: ['sites', s, 'hosts', h], message: `a wildcard host cannot get an ACME certificate here (it needs the dns-01 challenge, which Portico does not do): ${JSON.stringify(host)}` });
      }
    });
    if (settings.trusted_roots !== undefined) {
      const file = path.resolve(dir, settings.trusted_roots);
      if (!isFile(file)) problems.push({ keys: [...keys, 'trusted_roots'], message: `file ${settings.trusted_roots} does not exist` });
      settings.trusted_roots = file;
    }
  });
  if (config.state_dir === undefined && acme) config.state_dir = defaultStateDir(file);
  if (config.state_dir !== undefined) {
    config.state_dir = path.resolve(dir, config.state_dir);
    let stats: Stats | undefined;
    try {
      stats = statSync(config.state_dir);
    } catch {
      // Created at start (0700), with its missing parents.
    }
    const reason = stats === undefined ? undefined : stateDirProblem(stats);
    if (reason !== undefined) problems.push({ keys: ['state_dir'], message: `state directory ${config.state_dir} ${reason}` });
    const socket = socketPathProblem(controlSocketPath(config.state_dir));
    if (socket !== undefined) problems.push({ keys: ['state_dir'], message: socket });
  }
  return problems;
}

/** Keys and cached answers must never be served as files: the state directory and disk caches stay out of static roots. */
function checkSecretsServed(config: ParsedConfig, served: readonly string[]): Problem[] {
  const problems: Problem[] = [];
  const inside = (folder: string) => served.find((root) => isInside(folder, root));
  if (config.state_dir !== undefined) {
    const root = inside(config.state_dir);
    if (root !== undefined) problems.push({ keys: ['state_dir'], message: `the state directory holds private keys and is inside the static root ${root}: move it out` });
  }
  for (const [name, zone] of Object.entries(config.caches)) {
    const root = zone.disk === undefined ? undefined : inside(zone.disk.path);
    if (root !== undefined) problems.push({ keys: ['caches', name, 'disk', 'path'], message: `a cache folder inside the static root ${root} would serve cached answers as files: move it out` });
  }
  return problems;
}

/** Whether a middleware's options say `breach_safe: true` (compress's word that its answers hold no secret). */
function saysBreachSafe(options: unknown): boolean {
  return (options as { breach_safe?: unknown } | undefined)?.breach_safe === true;
}

/**
 * `compress` on a proxy route, unless it says breach_safe: the app's answers may hold a secret beside reflected
 * input, which compression over TLS gives away (BREACH). One warning per compress key, at that key (a site's
 * compress, inherited by its proxy routes, is warned about once, at the site).
 */
function breachWarnings(config: ParsedConfig): Problem[] {
  const warnings: Problem[] = [];
  config.sites.forEach((site, s) => {
    const inherited = site.middlewares.find((middleware) => middleware.kind === 'compress');
    let siteWarned = false;
    site.routes.forEach((route, r) => {
      if (route.kind !== 'proxy') return;
      const own = route.middlewares.find((middleware) => middleware.kind === 'compress');
      const compress = own ?? inherited;
      if (compress === undefined || saysBreachSafe(compress.options)) return;
      if (own === undefined) {
        if (siteWarned) return;
        siteWarned = true;
      }
      warnings.push({
        keys: own === undefined ? ['sites', s, 'compress'] : ['sites', s, 'routes', r, 'compress'],
        message:
          'compress on a proxied route: an answer holding a secret (a CSRF token, a session id) beside text the client chose ' +
          '(a reflected search term) lets an attacker recover the secret from the compressed length over TLS (BREACH). ' +
          'Compress only routes whose answers never mix the two, and say so with breach_safe: true',
      });
    });
  });
  return warnings;
}

/**
 * A cached proxy route whose `host` sends a request value its cache key does not hold (`host: $header_host`, the
 * client's own spelling): the app builds its page for that value, and the page is stored for every client of the
 * key. Portico's own Host (`pass`) is always keyed: a key without `$host` gets the canonical authority added
 * (`ProxyCache`); an operator's template is sent as written, so the key must follow.
 */
function hostKeyWarnings(config: ParsedConfig): Problem[] {
  const warnings: Problem[] = [];
  config.sites.forEach((site, s) => {
    site.routes.forEach((route, r) => {
      if (route.kind !== 'proxy') return;
      const proxy = route.options as { host?: string; cache?: { key?: string } };
      if (proxy.cache?.key === undefined || proxy.host === undefined || proxy.host === 'pass') return;
      const keyed = new Set(templateVariables(proxy.cache.key));
      const missing = templateVariables(proxy.host).filter((variable) => !keyed.has(variable));
      if (missing.length === 0) return;
      warnings.push({
        keys: ['sites', s, 'routes', r, 'proxy', 'host'],
        message:
          `the app is sent a Host made of ${missing.join(', ')}, which the cache key "${proxy.cache.key}" does not hold: a page built ` +
          `for one client's value would be stored for all. Add ${missing.join(', ')} to cache.key`,
      });
    });
  });
  return warnings;
}

/**
 * A `unix:` server whose socket is not there (PHP-FPM not started, or its pool's `listen` elsewhere) or is no socket:
 * valid, since the app may start later, but its requests get 502 until then.
 */
function socketWarnings(config: ParsedConfig): Problem[] {
  const warnings: Problem[] = [];
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    upstream.servers.forEach((server, i) => {
      const socket = server.url.socketPath;
      if (socket === undefined) return;
      let stats: Stats | undefined;
      try {
        stats = statSync(socket);
      } catch {
        stats = undefined;
      }
      if (stats?.isSocket() === true) return;
      const what = speaksFastCgi(upstream) ? 'PHP-FPM listens there (is it running, with this path as its pool\'s listen?)' : 'the app listens there';
      warnings.push({
        keys: ['upstreams', name, 'servers', i],
        message:
          stats === undefined
            ? `${server.url.text}: no such socket (yet); its requests get 502 until ${what}`
            : `${server.url.text} is not a socket: its requests get 502`,
      });
    });
  }
  return warnings;
}

/**
 * What is valid but almost surely not what the author meant: `portico check` prints these after its OK line and
 * `run` logs them; neither refuses the config.
 */
export function configWarnings(config: ParsedConfig): Problem[] {
  const warnings: Problem[] = [...breachWarnings(config), ...hostKeyWarnings(config), ...socketWarnings(config)];
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    if (upstream.policy !== 'hash') continue;
    for (const match of upstream.hash_key.matchAll(/\$cookie_([A-Za-z0-9_-]+)/g)) {
      const session = APP_SESSION_COOKIES.find((cookie) => cookie.toLowerCase() === match[1]!.toLowerCase());
      if (session === undefined) continue;
      warnings.push({
        keys: ['upstreams', name, 'hash_key'],
        message:
          `hashing on the app's session cookie ${session} loses sessions: a new session's first request has no cookie and ` +
          `its second one hashes elsewhere. Route on the session with ${appCookieAdvice(session)} and a route per server`,
      });
    }
  }
  return warnings;
}
