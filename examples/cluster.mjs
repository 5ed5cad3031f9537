// The cluster showcase (`npm run cluster`): three Portico boxes of examples/cluster.yaml as one cluster on this
// machine, box N on 127.0.0.N, with what a fleet has around it, all on loopback and stopped together by Ctrl-C:
//   redis-server on 127.0.0.1:6390   the cluster's shared state (Debian: apt-get install redis-server)
//   dnsmasq on 127.0.0.1:5390        answers app.portico.test with the app servers (apt-get install dnsmasq)
//   two app servers                  examples/app/server.mjs on 127.0.0.11:3201 and 127.0.0.12:3201
// The cluster's secret is made once in examples/var/cluster.key (0600, git-ignored) and handed to every box as
// PORTICO_CLUSTER_KEY; the boxes' configs are written to examples/var/cluster/boxN.yaml from examples/cluster.yaml.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.dirname(here);
const folder = path.join(here, 'var/cluster');
const BOXES = 3;
const REDIS_PORT = 6390;
const DNS_PORT = 5390;
const APPS = [
  { host: '127.0.0.11', name: 'app-a' },
  { host: '127.0.0.12', name: 'app-b' },
];

/** The program's path when it is installed (Debian puts dnsmasq in /usr/sbin, which a user's PATH may lack). */
function find(program) {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    try {
      accessSync(path.join(dir, program), constants.X_OK);
      return path.join(dir, program);
    } catch {}
  }
  return undefined;
}

/** The cluster's secret, made once. */
function clusterKey() {
  const file = path.join(here, 'var/cluster.key');
  if (existsSync(file)) {
    const key = readFileSync(file, 'utf8').trim();
    if (key.length >= 32) return key;
  }
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const key = randomBytes(32).toString('hex');
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  return key;
}

/** Box `n`'s config: examples/cluster.yaml with its addresses, name and state folder, its paths from var/cluster/. */
function boxConfig(n) {
  const template = readFileSync(path.join(here, 'cluster.yaml'), 'utf8');
  return template
    .replaceAll('127.0.0.1:8081', `127.0.0.${n}:8081`)
    .replaceAll('127.0.0.1:8444', `127.0.0.${n}:8444`)
    .replaceAll('127.0.0.1:9911', `127.0.0.${n}:9911`)
    .replace(/^( {2}name:) box1$/m, `$1 box${n}`)
    .replace('./var/cluster/box1', `./var/cluster/box${n}`)
    .replaceAll('./var/', '../')
    .replaceAll('./site', '../../site');
}

const children = [];
let stopping = false;

/** Starts `command`, its output lines prefixed with `label`; resolves once a line matches `ready`. */
function start(label, command, args, ready, env = {}) {
  const child = spawn(command, args, { cwd: repo, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push({ label, child });
  return new Promise((resolve, reject) => {
    let seen = false;
    let partial = '';
    const take = (chunk) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop();
      for (const line of lines) {
        if (line !== '') process.stderr.write(`[${label}] ${line}\n`);
        if (!seen && ready.test(line)) {
          seen = true;
          resolve(child);
        }
      }
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.once('exit', (code, signal) => {
      if (!seen) reject(new Error(`${label} exited (${signal ?? code}) before it was ready`));
      // Ctrl-C reaches the whole process group at once: a child may exit before this script's handler ran.
      else setTimeout(() => stopping || process.stderr.write(`[${label}] exited (${signal ?? code})\n`), 200).unref();
    });
    const timer = setTimeout(() => {
      if (!seen) reject(new Error(`${label} was not ready within 30 s`));
    }, 30_000);
    timer.unref();
  });
}

/** Stops everything started, the boxes first, and exits. */
async function stop(code) {
  if (stopping) return;
  stopping = true;
  process.stderr.write('stopping the boxes, the app servers, dnsmasq and redis-server\n');
  for (const { child } of [...children].reverse()) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000).unref())]);
    }
  }
  process.exit(code);
}

async function main() {
  const redis = find('redis-server');
  const dnsmasq = find('dnsmasq');
  if (redis === undefined || dnsmasq === undefined) {
    const missing = [redis === undefined ? 'redis-server' : '', dnsmasq === undefined ? 'dnsmasq' : ''].filter(Boolean).join(' ');
    process.stderr.write(`the cluster showcase needs ${missing}: on Debian or Ubuntu, sudo apt-get install -y ${missing}\n`);
    process.exit(1);
  }
  mkdirSync(folder, { recursive: true, mode: 0o700 });
  const key = clusterKey();
  const hosts = path.join(folder, 'hosts');
  writeFileSync(hosts, APPS.map((app) => `${app.host} app.portico.test\n`).join(''));
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));

  process.stderr.write(`[1/4] redis-server on 127.0.0.1:${REDIS_PORT}\n`);
  await start('redis', redis, ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', folder], /Ready to accept connections/);
  process.stderr.write(`[2/4] dnsmasq on 127.0.0.1:${DNS_PORT} (app.portico.test → ${APPS.map((a) => a.host).join(', ')}; edit ${path.relative(repo, hosts)}, then kill -HUP it)\n`);
  const dnsArgs = ['--no-daemon', '--conf-file=/dev/null', `--port=${DNS_PORT}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${hosts}`, '--local-ttl=2', '--log-facility=-'];
  if (process.getuid?.() === 0) dnsArgs.push('--user=root');
  await start('dnsmasq', dnsmasq, dnsArgs, /started, version/);
  process.stderr.write('[3/4] two app servers\n');
  for (const app of APPS) await start(app.name, process.execPath, [path.join(here, 'app/server.mjs'), '3201', app.name], /listening on/, { HOST: app.host });
  process.stderr.write(`[4/4] ${BOXES} Portico boxes\n`);
  for (let n = 1; n <= BOXES; n++) {
    const file = path.join(folder, `box${n}.yaml`);
    writeFileSync(file, boxConfig(n));
    await start(`box${n}`, process.execPath, [path.join(repo, 'dist/src/cli.js'), 'run', '-c', file], /admin API on/, { PORTICO_CLUSTER_KEY: key });
  }
  process.stdout.write(
    [
      '',
      'the cluster is up: three boxes, one Redis, app servers found through DNS',
      '  http://127.0.0.1:8081/  http://127.0.0.2:8081/  http://127.0.0.3:8081/     the same site on every box',
      "  curl -i -H 'Host: shop.test' http://127.0.0.1:8081/api/hello   box 1 asks an app server, fills the shared cache",
      "  curl -i -H 'Host: shop.test' http://127.0.0.2:8081/api/hello   box 2 answers from it (Cache-Status: ...; detail=shared)",
      '  http://127.0.0.1:9911/  dashboard of box 1 (also :9911 on 127.0.0.2 and .3), with the cluster\'s boxes',
      '  curl -s http://127.0.0.1:9911/status      the boxes, Redis up, every box\'s servers',
      '  redis-cli -p 6390 shutdown nosave         Redis away: the boxes keep serving on their fallbacks',
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
}

main().catch((err) => {
  process.stderr.write(`cluster showcase: ${err.message}\n`);
  void stop(1);
});
