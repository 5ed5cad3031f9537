/**
 * The `portico` command: `run` serves a config, `check` validates one (like `nginx -t`); `reload`, `deploy`,
 * `upgrade`, `status` and `reopen` talk to the running Portico over its control socket.
 */
// First: SIGUSR1's handler is installed before any other module's code runs (without one, Node would open its
// inspector on 127.0.0.1:9229). Every process runs this file: a single one, the primary, each worker. Only it and
// Node's own modules are imported statically: the rest of Portico (a few hundred milliseconds to load) is imported
// below, after the handler is in place.
import { onReopenSignal } from './log/reopen-signal.js';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import cluster from 'node:cluster';
import type { Config } from './server/config.js';
import type { OperationResult } from './control/protocol.js';
import type { LoadedConfig } from './server/workers.js';
import type { Logger } from 'pino';

const { loadConfigFile, parseConfig } = await import('./server/config.js');
const { displayPath, withDevCertificate } = await import('./config/load.js');
const { runControlCommand } = await import('./control/commands.js');
const { displayError } = await import('./control/protocol.js');
const { ConfigError, describeError, formatConfigIssue, PorticoError } = await import('./errors.js');
const { Portico } = await import('./server/portico.js');
const { Successor, Upgrader } = await import('./server/upgrade.js');
const { Primary, serveWorker } = await import('./server/workers.js');
const { createErrorLog } = await import('./log/error-log.js');

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;

const HELP = `portico ${version} — a front-end web server: static files, reverse proxy, load balancing

Usage:
  portico run   [-c FILE]   start serving (FILE defaults to ./portico.yaml)
  portico run --dev [-c FILE]
                            the same over HTTPS: every listener without tls (and without redirect_https)
                            serves TLS with a self-signed certificate for localhost, 127.0.0.1 and ::1,
                            made at start in a temporary folder (its path is printed)
  portico check [-c FILE]   validate a config (like nginx -t): exit 0 if it is valid; else exit 1 and print
                            the errors as file:line:col key.path: message, in passes: the first YAML
                            syntax error; else every error of the file's shape (keys, types, values);
                            else every error of the checks that need the file system or the whole config
  portico reload [-c FILE]  make the running Portico re-read FILE: exit 0 once the new config serves; else
                            exit 1 and print the errors as file:line:col (the previous config serves on)
  portico deploy UPSTREAM [-c FILE]
                            roll the spawned instances of UPSTREAM one at a time; exit 1 with the reason
                            if it stops (the old instances keep serving)
  portico upgrade [-c FILE] replace the running Portico process by a new one without dropping a connection
  portico status [-c FILE] [--json]
                            what the running Portico serves: version, pid, uptime, config, listeners
  portico reopen [-c FILE]  make the running Portico reopen its log files (after logrotate moved them;
                            as SIGUSR1), every worker's too
                            reload, deploy, upgrade, status and reopen reach the Portico serving FILE through its
                            control socket, control.sock in its state directory (state_dir, else
                            ./var/NAME beside FILE, NAME being FILE's name without its extension);
                            they run one at a time, in order

Options:
  -c, --config FILE   the config file (YAML or JSON)
      --dev           run: serve HTTPS with a self-signed development certificate
      --json          reload, deploy, upgrade, status, reopen: print the progress and the result as JSON lines
  -h, --help          show this help
  -v, --version       show the version

Signals (run): SIGTERM/SIGINT stop gracefully, SIGHUP reloads the config file (as portico reload), SIGUSR2
upgrades Portico in place (as portico upgrade: a new process from the installed code takes the listening
sockets over; the old one drains and exits), SIGUSR1 reopens the log files (as portico reopen). With
\`workers: N\`, send them to the primary (the process \`portico run\` started, named in the pid file): it
stops, reloads or reopens every worker.

Output (run): every line goes through the error log (log.error, log.error_format): one readable line each on a
terminal, JSON lines otherwise. Only what comes before the config is read stays plain: the config's errors
(file:line:col) when it cannot be loaded, and usage errors.

Exit status: 0 done, 1 failed (or no Portico running), 2 usage error.
`;

/**
 * The config file's content (or `text`, read from it), or undefined after its errors were printed (and put into
 * `errors` when given).
 */
function load(file: string, errors?: string[], text?: string, quiet = false): Config | undefined {
  try {
    const config = text === undefined ? loadConfigFile(file) : parseConfig(text, file);
    // `run` logs them through its error log, once it has one (`quiet`).
    if (!quiet) for (const warning of warningLines(config)) process.stderr.write(`${warning}\n`);
    return config;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      errors?.push(...err.issues.map(formatConfigIssue));
      // The file as the error lines name it (the absolute path for one that cannot be read).
      process.stderr.write(`portico: ${err.issues.length} error${err.issues.length === 1 ? '' : 's'} in ${err.issues[0]?.file ?? displayPath(file)}\n`);
      return undefined;
    }
    throw err;
  }
}

/** A config's warnings as `file:line:col key: warning: …` lines. */
function warningLines(config: Config): string[] {
  return config.warnings.map((warning) => formatConfigIssue({ ...warning, message: `warning: ${warning.message}` }));
}

/** The error log `run` writes every line to, as the config says (`log.level`, `log.error`, `log.error_format`). */
function errorLogOf(config: Config): Logger {
  return createErrorLog(config.log.level, { format: config.log.error_format, file: config.log.error });
}

/** The environment variables that hand the error log's settings from the primary to its workers. */
const LOG_ENV = { level: 'PORTICO_LOG_LEVEL', format: 'PORTICO_LOG_FORMAT', file: 'PORTICO_LOG_FILE' } as const;

/** A worker's error log, as the primary's (its workers write to the same place in the same shape). */
function workerErrorLog(): Logger {
  const format = process.env[LOG_ENV.format];
  return createErrorLog(process.env[LOG_ENV.level] ?? 'info', {
    format: format === 'pretty' || format === 'json' ? format : 'auto',
    file: process.env[LOG_ENV.file] ?? 'stderr',
  });
}

/** The self-signed certificate of `--dev`, written to a fresh temporary folder (removed on exit). */
async function devCertificate(): Promise<{ files: { cert: string; key: string }; pem: { cert: string; key: string }; dir: string; names: readonly string[] }> {
  // Loaded only for --dev: the X.509 library is not needed otherwise (start-up time).
  const { createCertificate, DEV_NAMES } = await import('./tls/self-signed.js');
  const pem = await createCertificate({ names: DEV_NAMES, days: 30 });
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-dev-'));
  const files = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
  writeFileSync(files.cert, pem.cert);
  writeFileSync(files.key, pem.key, { mode: 0o600 });
  chmodSync(files.key, 0o600);
  return { files, pem, dir, names: DEV_NAMES };
}

/** The port of the first listener serving HTTPS (with --dev: the first without redirect_https), for the hint. */
function devPort(config: Config, server: InstanceType<typeof Portico>): number | string {
  const i = config.listen.findIndex((listener) => listener.tls !== undefined);
  return i === -1 ? 'PORT' : (server.addresses[i]?.port ?? 'PORT');
}

/** How `run` logs the outcome of a reload (by SIGHUP or `portico reload`): one entry per line. */
function reportReload(logger: Logger, file: string, result: OperationResult): void {
  if (result.ok) {
    for (const warning of (result.warnings as string[] | undefined) ?? []) logger.warn(warning);
    logger.info('portico: config reloaded');
    return;
  }
  const { error } = result;
  if (error.issues !== undefined) {
    const shown = displayError(error, file);
    for (const issue of shown.issues) logger.error(issue);
    logger.error(`portico: ${shown.message}`);
    logger.error('portico: reload refused, still serving the previous config');
    return;
  }
  logger.error(`portico: reload failed: ${error.message} (${error.code}); still serving the previous config`);
}

/** `portico run`'s SIGUSR1 (and its workers' by IPC): the server's logs are reopened; a failure is logged. */
function reopenOnSignal(logger: Logger, reopen: () => Promise<void>): void {
  onReopenSignal(() => void reopen().catch((err: unknown) => logger.error(`portico: reopening the logs failed: ${describeError(err)}`)));
}

/** The environment variable that hands `--dev`'s certificate folder from the primary to its workers. */
const DEV_DIR_ENV = 'PORTICO_DEV_DIR';

/** In a worker: the primary's `--dev` certificate, read from the folder it named. */
async function inheritedDevCertificate(dir: string): Promise<Awaited<ReturnType<typeof devCertificate>>> {
  const { DEV_NAMES } = await import('./tls/self-signed.js');
  const files = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
  return { files, pem: { cert: readFileSync(files.cert, 'utf8'), key: readFileSync(files.key, 'utf8') }, dir, names: DEV_NAMES };
}

async function run(file: string, dev: boolean): Promise<number> {
  const inheritedDev = cluster.isWorker ? process.env[DEV_DIR_ENV] : undefined;
  const certificate =
    inheritedDev !== undefined && existsSync(inheritedDev) ? await inheritedDevCertificate(inheritedDev) : dev && !cluster.isWorker ? await devCertificate() : undefined;
  if (certificate !== undefined && !cluster.isWorker) process.once('exit', () => rmSync(certificate.dir, { recursive: true, force: true }));
  const withDev = (loaded: Config): Config => (certificate === undefined ? loaded : withDevCertificate(loaded, certificate.files, certificate.pem));
  if (cluster.isWorker) {
    // A worker parses the text the primary validated and sends (its errors are the primary's to report).
    const parse = (text: string): Config | undefined => {
      try {
        return withDev(parseConfig(text, file));
      } catch {
        return undefined;
      }
    };
    return serveWorker(workerErrorLog(), { parse });
  }
  // Started by an upgrade (see server/upgrade.ts): the old process hands over its sockets, then the rest once this
  // one is ready; whatever fails is reported to it (it stops this one and goes on serving).
  const successor = Successor.fromEnvironment();
  const fail = async (message: string, issues: string[] = []): Promise<number> => {
    if (successor !== undefined) {
      await successor.failed(message, issues);
      successor.detach();
    }
    return 1;
  };
  // The text is read once and parsed: with workers, what the primary validated is what every worker is sent.
  const read = (errors?: string[]): LoadedConfig | undefined => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      // Reported as a config error (the file's absolute path and why).
      const loaded = load(file, errors);
      return loaded === undefined ? undefined : { config: withDev(loaded), text: '' };
    }
    const loaded = load(file, errors, text, true);
    return loaded === undefined ? undefined : { config: withDev(loaded), text };
  };
  const errors: string[] = [];
  const first = read(errors);
  if (first === undefined) return fail(`the config ${displayPath(file)} has ${errors.length} error${errors.length === 1 ? '' : 's'}`, errors);
  const config = first.config;
  // From here every line goes through the error log (one format on stderr, or the log.error file).
  const logger = errorLogOf(config);
  // `portico run`'s own lines (serving, stopping, reloaded, a worker replaced…): at info whatever log.level says
  // (a supervisor or an operator waits for them), in the same log, unless the log is silent.
  const out = logger.child({}, { level: config.log.level === 'silent' ? 'silent' : 'info' });
  for (const warning of warningLines(config)) out.warn(warning);
  if (config.workers > 1) {
    // A reload in the primary (SIGHUP, `portico reload`): the file read and parsed once; its errors go to the one
    // who asked (ConfigError, every issue at file:line:col).
    const reread = (): LoadedConfig => {
      let text: string | undefined;
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        // Reported by loadConfigFile as a config error (the file's absolute path and why).
      }
      return text === undefined ? { config: withDev(loadConfigFile(file)), text: '' } : { config: withDev(parseConfig(text, file)), text };
    };
    return runPrimary(first, reread, certificate, logger, out);
  }
  let server: InstanceType<typeof Portico>;
  /** SIGHUP while `run` starts: ignored, said. */
  const whileStarting = () => out.warn('portico: SIGHUP ignored: still starting (send it again once the serving line is printed)');
  try {
    const sockets = successor === undefined ? undefined : await successor.sockets();
    // Building the server opens (and locks) the state directory, which may refuse; starting it binds the control
    // socket, which refuses when another Portico answers there (an upgrade's new process binds it once in charge).
    server = new Portico(config, logger, {
      // The logger is this process's own: a reload's log.level applies to it.
      followLogLevel: true,
      control: true,
      version,
      loadConfig: (path) => withDev(loadConfigFile(path)),
      // `portico upgrade` and SIGUSR2 take the one serialised path; a failure is reported as an error result.
      upgrade: async (progress) => {
        progress({ message: `starting a new Portico process (this one is ${process.pid})` });
        const result = await upgrader.upgrade();
        if (result.ok) {
          progress({ message: `process ${result.pid} serves now; process ${result.previous} drains and exits` });
          return result;
        }
        throw Object.assign(new PorticoError(result.error.code, result.error.message), { issues: result.error.issues });
      },
      ...(sockets === undefined ? {} : { successorOf: { predecessor: successor!.predecessor, sockets } }),
    });
    // Starting may take a while (app instances pass their readiness checks first): a SIGHUP meanwhile is not
    // Node's default (the process would end), nor a reload of a config not serving yet.
    process.on('SIGHUP', whileStarting);
    await server.start();
  } catch (err) {
    out.error(`portico: ${describeError(err)}`);
    return fail(describeError(err));
  } finally {
    process.off('SIGHUP', whileStarting);
  }
  // The signals are Portico's before the line that says it serves: a supervisor that sends SIGTERM as soon as it
  // reads that line gets a graceful stop, never Node's default (killed on the spot).
  let stopping = false;
  // False until this process serves on its own (an upgrade's new process: until the old one handed over).
  let serving = successor === undefined;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    out.info(`portico: ${signal}, stopping`);
    // A new process of an upgrade under way is stopped first: it must not take over from a stopping Portico.
    void upgrader
      .cancel()
      .then(() => server.stop(server.config.shutdown_timeout))
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  // The entry point of an upgrade (SIGUSR2 below; `portico upgrade` over the control socket calls upgrader.upgrade()).
  // The control socket's listener is closed by the `release` option (its connections stay, so the reply to
  // `portico upgrade` can be written), reopened by `restore` if the new process dies just then.
  const upgrader = new Upgrader(server, logger, {
    release: () => server.releaseControl(),
    restore: () => server.restoreControl(),
    retire: (pid) => {
      if (stopping) return;
      stopping = true;
      out.info(`portico: upgraded: process ${pid} serves now; process ${process.pid} stops accepting and drains (up to ${server.config.shutdown_timeout} ms)`);
      // Idle keep-alive connections linger (their next answer says Connection: close): see Listeners.stop.
      server.stop(server.config.shutdown_timeout, true).then(
        () => process.exit(0),
        () => process.exit(1),
      );
    },
  });
  process.on('SIGUSR2', () => {
    if (stopping || !serving) return void out.warn(`portico: SIGUSR2 ignored: ${stopping ? 'stopping' : 'still taking over'}`);
    out.info(`portico: SIGUSR2, upgrading: starting a new process`);
    void server.operations.upgrade().then((result) => {
      if (result.ok) return;
      out.error(`portico: upgrade failed: ${result.error.message} (${result.error.code}); still serving (process ${process.pid})`);
      for (const issue of result.error.issues ?? []) out.error(issue);
    });
  });
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // SIGHUP takes the same path as `portico reload`: queued behind any operation under way, the file read here.
  process.on('SIGHUP', () => {
    // The old process of an upgrade drains the config it had; one still taking over is sent it again once it serves.
    if (stopping || !serving) return void out.warn(`portico: SIGHUP ignored: ${stopping ? 'stopping' : 'still taking over'}`);
    void server.operations.reload().then((result) => reportReload(out, file, result));
  });
  // SIGUSR1 reopens the log files (its handler was installed first thing; see log/reopen-signal.ts).
  reopenOnSignal(out, () => server.reopenLogs());
  if (successor !== undefined) {
    try {
      await successor.ready(server.stateDir);
      await server.succeeded();
    } catch (err) {
      out.error(`portico: ${describeError(err)}`);
      successor.detach();
      await server.stop(0);
      return 1;
    }
    // What only one Portico may hold is this one's from here: the control socket is bound now, not earlier (the old
    // process's close of its listener would unlink the socket file under it).
    successor.detach();
    serving = true;
    out.info(`portico: process ${process.pid} took over from process ${successor.predecessor}`);
  }
  const urls = server.addresses.map((a, i) => `${config.listen[i]?.tls === undefined ? 'http' : 'https'}://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/`);
  out.info(`portico ${version} serving ${displayPath(config.file)} on ${urls.join(' ')}`);
  if (server.adminUrl !== null) out.info(`portico: admin API on ${server.adminUrl}`);
  if (certificate !== undefined) {
    out.info(
      `portico: --dev: self-signed certificate for ${certificate.names.join(', ')} in ${certificate.files.cert} ` +
        `(browsers warn about it; curl --cacert ${certificate.files.cert} https://localhost:${devPort(config, server)}/)`,
    );
  }

  return new Promise<number>(() => {});
}

/** `portico run` with `workers: N` (N > 1): this process is the primary (see `server/workers.ts`). */
async function runPrimary(
  first: LoadedConfig,
  read: () => LoadedConfig,
  certificate: Awaited<ReturnType<typeof devCertificate>> | undefined,
  logger: Logger,
  out: Logger,
): Promise<number> {
  const say = (line: string, level: 'info' | 'warn' | 'error' = 'info') => void out[level](line);
  const config = first.config;
  let primary: InstanceType<typeof Primary>;
  try {
    primary = new Primary(config, logger, {
      text: first.text,
      load: read,
      say,
      version,
      // The workers' error log has the primary's level (at start; as with one process, a reload keeps it).
      env: {
        [LOG_ENV.level]: config.log.level,
        [LOG_ENV.format]: config.log.error_format,
        [LOG_ENV.file]: config.log.error,
        ...(certificate === undefined ? {} : { [DEV_DIR_ENV]: certificate.dir }),
      },
    });
    await primary.start();
  } catch (err) {
    say(`portico: ${describeError(err)}`, 'error');
    return 1;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    say(`portico: ${signal}, stopping`);
    primary.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // Not Node's default for SIGUSR2 (the process ends): an upgrade in place is for one process, not yet for workers.
  process.on('SIGUSR2', () => say('portico: SIGUSR2 ignored: an upgrade in place is not supported with workers; restart Portico to run new code', 'warn'));
  // SIGHUP takes the same path as `portico reload` (the primary's control socket): queued behind any operation.
  process.on('SIGHUP', () => {
    if (stopping) return void say('portico: SIGHUP ignored: stopping', 'warn');
    void primary.reload().then((result) => reportReload(out, config.file, result));
  });
  // SIGUSR1 reopens the primary's log files, and every worker's (see Primary.reopenLogs).
  reopenOnSignal(out, () => primary.reopenLogs());
  const urls = primary.addresses.map((a, i) => `${config.listen[i]?.tls === undefined ? 'http' : 'https'}://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/`);
  say(`portico ${version} serving ${displayPath(config.file)} on ${urls.join(' ')} with ${config.workers} workers (${primary.accept === 'reuseport' ? 'reusePort' : primary.accept === 'shared' ? 'node:cluster, shared socket' : 'node:cluster'})`);
  if (primary.adminUrl !== null) say(`portico: admin API on ${primary.adminUrl}`);
  if (certificate !== undefined) say(`portico: --dev: self-signed certificate for ${certificate.names.join(', ')} in ${certificate.files.cert}`);
  return new Promise<number>(() => {});
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        dev: { type: 'boolean' },
        json: { type: 'boolean' },
      },
    });
  } catch (err) {
    process.stderr.write(`portico: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    process.stdout.write(`portico ${version}\n`);
    return 0;
  }
  const command = positionals[0];
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(HELP);
    return values.help || command === 'help' ? 0 : 2;
  }
  const file = values.config ?? 'portico.yaml';
  switch (command) {
    case 'check': {
      const config = load(file);
      if (config === undefined) return 1;
      const warned = config.warnings.length === 0 ? '' : ` (${config.warnings.length} warning${config.warnings.length === 1 ? '' : 's'} above)`;
      process.stdout.write(`portico: configuration ${displayPath(file)} is valid${warned}\n`);
      return 0;
    }
    case 'run':
      return run(file, values.dev === true);
    case 'reload':
    case 'deploy':
    case 'upgrade':
    case 'status':
    case 'reopen': {
      const wanted = command === 'deploy' ? 2 : 1;
      if (positionals.length !== wanted || values.dev === true) {
        const what = command === 'deploy' ? 'deploy needs exactly one upstream name: portico deploy UPSTREAM [-c FILE]' : `${command} takes no argument`;
        process.stderr.write(`portico: ${values.dev === true ? `--dev is an option of run, not of ${command}` : what}\n\n${HELP}`);
        return 2;
      }
      return runControlCommand({ operation: command, file, upstream: positionals[1], json: values.json === true });
    }
    default:
      process.stderr.write(`portico: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`portico: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
