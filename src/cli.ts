/**
 * The `portico` command: `run` serves a config, `check` validates one (like `nginx -t`).
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfigFile, parseConfig, type Config } from './server/config.js';
import { displayPath, withDevCertificate } from './config/load.js';
import { ConfigError, formatConfigIssue, PorticoError } from './errors.js';
import cluster from 'node:cluster';
import { Portico } from './server/portico.js';
import { Primary, serveWorker, type LoadedConfig } from './server/workers.js';
import { createErrorLog } from './log/error-log.js';

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

Options:
  -c, --config FILE   the config file (YAML or JSON)
      --dev           run: serve HTTPS with a self-signed development certificate
  -h, --help          show this help
  -v, --version       show the version

Signals (run): SIGTERM/SIGINT stop gracefully, SIGHUP reloads the config file. With \`workers: N\`, send them
to the primary (the process \`portico run\` started): it stops or reloads every worker.
`;

/** Loads the config file (or `text`, read from it), printing its warnings; prints its errors and returns undefined. */
function load(file: string, text?: string): Config | undefined {
  try {
    const config = text === undefined ? loadConfigFile(file) : parseConfig(text, file);
    for (const warning of config.warnings) process.stderr.write(`${formatConfigIssue({ ...warning, message: `warning: ${warning.message}` })}\n`);
    return config;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      // The file as the error lines name it (the absolute path for one that cannot be read).
      process.stderr.write(`portico: ${err.issues.length} error${err.issues.length === 1 ? '' : 's'} in ${err.issues[0]?.file ?? displayPath(file)}\n`);
      return undefined;
    }
    throw err;
  }
}

/** An error for the terminal: its message, and its stable code when it is one of Portico's. */
function describe(err: unknown): string {
  if (err instanceof PorticoError) return `${err.message} (${err.code})`;
  return err instanceof Error ? err.message : String(err);
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
function devPort(config: Config, server: Portico): number | string {
  const i = config.listen.findIndex((listener) => listener.tls !== undefined);
  return i === -1 ? 'PORT' : (server.addresses[i]?.port ?? 'PORT');
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
  const inherited = cluster.isWorker ? process.env[DEV_DIR_ENV] : undefined;
  const certificate = inherited !== undefined && existsSync(inherited) ? await inheritedDevCertificate(inherited) : dev && !cluster.isWorker ? await devCertificate() : undefined;
  if (certificate !== undefined && !cluster.isWorker) process.once('exit', () => rmSync(certificate.dir, { recursive: true, force: true }));
  const loadServed = (text?: string): Config | undefined => {
    const loaded = load(file, text);
    return loaded === undefined || certificate === undefined ? loaded : withDevCertificate(loaded, certificate.files, certificate.pem);
  };
  if (cluster.isWorker) {
    // A worker parses the text the primary validated and sends (its errors are the primary's to report).
    const parse = (text: string): Config | undefined => {
      try {
        const parsed = parseConfig(text, file);
        return certificate === undefined ? parsed : withDevCertificate(parsed, certificate.files, certificate.pem);
      } catch {
        return undefined;
      }
    };
    return serveWorker(createErrorLog(process.env.PORTICO_LOG_LEVEL ?? 'info'), { parse });
  }
  // The text is read once and parsed: with workers, what the primary validated is what every worker is sent.
  const read = (): { config: Config; text: string } | undefined => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      // Reported as a config error (the file's absolute path and why).
      return void loadServed();
    }
    const config = loadServed(text);
    return config === undefined ? undefined : { config, text };
  };
  const first = read();
  if (first === undefined) return 1;
  const config = first.config;
  if (config.workers > 1) return runPrimary(first, read, certificate);
  let server: Portico;
  try {
    // Building the server opens (and locks) the state directory, which may refuse.
    server = new Portico(config);
    await server.start();
  } catch (err) {
    process.stderr.write(`portico: ${describe(err)}\n`);
    return 1;
  }
  // The signals are Portico's before the line that says it serves: a supervisor that sends SIGTERM as soon as it
  // reads that line gets a graceful stop, never Node's default (killed on the spot).
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`portico: ${signal}, stopping\n`);
    server.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => {
    const next = loadServed();
    if (next === undefined) return void process.stderr.write('portico: reload refused, still serving the previous config\n');
    server.reload(next).then(
      () => process.stderr.write('portico: config reloaded\n'),
      (err: unknown) => process.stderr.write(`portico: reload failed: ${describe(err)}; still serving the previous config\n`),
    );
  });
  const urls = server.addresses.map((a, i) => `${config.listen[i]?.tls === undefined ? 'http' : 'https'}://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/`);
  process.stderr.write(`portico ${version} serving ${displayPath(config.file)} on ${urls.join(' ')}\n`);
  if (certificate !== undefined) {
    process.stderr.write(
      `portico: --dev: self-signed certificate for ${certificate.names.join(', ')} in ${certificate.files.cert} ` +
        `(browsers warn about it; curl --cacert ${certificate.files.cert} https://localhost:${devPort(config, server)}/)\n`,
    );
  }

  return new Promise<number>(() => {});
}

/** `portico run` with `workers: N` (N > 1): this process is the primary (see `server/workers.ts`). */
async function runPrimary(
  first: LoadedConfig,
  read: () => LoadedConfig | undefined,
  certificate: Awaited<ReturnType<typeof devCertificate>> | undefined,
): Promise<number> {
  const say = (line: string) => void process.stderr.write(`${line}\n`);
  const config = first.config;
  let primary: Primary;
  try {
    primary = new Primary(config, createErrorLog(config.log.level), {
      text: first.text,
      load: read,
      say,
      // The workers' error log has the primary's level (at start; as with one process, a reload keeps it).
      env: { PORTICO_LOG_LEVEL: config.log.level, ...(certificate === undefined ? {} : { [DEV_DIR_ENV]: certificate.dir }) },
    });
    await primary.start();
  } catch (err) {
    say(`portico: ${describe(err)}`);
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
  process.on('SIGHUP', () => {
    primary.reload().then((result) => {
      if (result.ok) say(`portico: config reloaded (${config.workers} workers)`);
      else if (result.error.code === 'PORTICO_CONFIG_INVALID') say('portico: reload refused, still serving the previous config');
      else say(`portico: reload failed: ${result.error.message} (${result.error.code}); still serving the previous config`);
    });
  });
  const urls = primary.addresses.map((a, i) => `${config.listen[i]?.tls === undefined ? 'http' : 'https'}://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/`);
  say(`portico ${version} serving ${displayPath(config.file)} on ${urls.join(' ')} with ${config.workers} workers (${primary.accept === 'reuseport' ? 'reusePort' : primary.accept === 'shared' ? 'node:cluster, shared socket' : 'node:cluster'})`);
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
