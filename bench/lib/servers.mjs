// Starting and stopping the servers under test: pinned to a CPU, ready when they answer, stopped by pid.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** One GET over h2 (ALPN h2, a self-signed certificate accepted): status, body and the protocol agreed. */
export function fetchH2(url) {
  return new Promise((resolve, reject) => {
    const { origin, pathname } = new URL(url);
    const session = http2.connect(origin, { rejectUnauthorized: false });
    session.on('error', reject);
    const req = session.request({ ':path': pathname });
    const chunks = [];
    let status = 0;
    req.on('response', (headers) => (status = headers[':status']));
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      session.close();
      resolve({ status, body: Buffer.concat(chunks), alpn: session.alpnProtocol });
    });
    req.on('error', reject);
    req.end();
  });
}

/** One GET on a fresh connection (http or https; a benchmark's self-signed certificate is accepted): resolves with status and body. */
export function fetchOnce(url, timeoutMs = 2000) {
  const client = url.startsWith('https:') ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.get(url, { agent: false, timeout: timeoutMs, rejectUnauthorized: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/**
 * Spawns `command args` pinned to `cpu` and waits until `readyUrl` answers (any status). Resolves with a
 * handle whose `stop()` ends that process (and only it) and waits for it to exit.
 */
export async function startPinned({ name, cpu, command, args, readyUrl, env, timeoutMs = 15_000 }) {
  const child = spawn('taskset', ['-c', String(cpu), command, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let log = '';
  child.stdout.on('data', (c) => (log = (log + c).slice(-4000)));
  child.stderr.on('data', (c) => (log = (log + c).slice(-4000)));
  let exited = false;
  const exit = once(child, 'exit').then(() => (exited = true));

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error(`${name} exited before it was ready:\n${log}`);
    try {
      await fetchOnce(readyUrl, 500);
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`${name} did not answer ${readyUrl} within ${timeoutMs} ms:\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  return {
    pid: child.pid,
    log: () => log,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    },
  };
}

/**
 * The `portico-base` contender when BENCH_BASE named a commit to compare with (bench/lib/common.sh built it into
 * PORTICO_BASE_DIR): `start` runs that build. Empty otherwise, so it can be spread into a contender list.
 */
export function baseContender(start) {
  const dir = process.env.PORTICO_BASE_DIR;
  if (dir === undefined || dir === '') return [];
  return [{ id: 'portico-base', label: `Portico ${process.env.PORTICO_BASE_VERSION ?? 'base'} (BENCH_BASE)`, start, node: true }];
}

/**
 * The `portico-node24` contender when NODE24_BIN names the folder of a Node 24 `node` (`npm run bench -- pair SCENARIO
 * portico portico-node24` sets it, from .ci/node24.sh): `start` gets the options with `node` set to that runtime, so
 * the same build runs on it. Empty otherwise, so it can be spread into a contender list.
 */
export function node24Contender(start) {
  const bin = process.env.NODE24_BIN;
  if (bin === undefined || bin === '') return [];
  return [{ id: 'portico-node24', label: 'Portico on Node 24 (NODE24_BIN)', start: (options) => start({ ...options, node: path.join(bin, 'node') }), node: true }];
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Portico's CLI on a config file written to `outDir` (every scenario's Portico; `dir` holds the build, BENCH_REF's or
 * BENCH_BASE's; `node` the runtime, this driver's own unless `npm run bench -- node24` names another).
 */
export function startPortico({ name = 'portico', config, outDir, cpu, readyUrl, nodeArgs = [], dir = process.env.PORTICO_DIR ?? ROOT, node = process.execPath }) {
  const file = path.join(outDir, 'portico.yaml');
  writeFileSync(file, config);
  return startPinned({
    name,
    cpu,
    command: node,
    args: [...nodeArgs, path.join(dir, 'dist/src/cli.js'), 'run', '-c', file],
    readyUrl,
  });
}
