// `npm start`: runs the showcase. Makes the showcase's self-signed HTTPS certificate if needed
// (examples/dev-certificate.mjs), starts the example app instances that examples/portico.yaml proxies to,
// then Portico itself, and stops them all together on Ctrl-C. (A later release lets Portico start its app
// servers itself; until then this script plays the process manager.)
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureDevCertificate } from './dev-certificate.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
await ensureDevCertificate();
const apps = [3001, 3002].map((port, i) =>
  spawn(process.execPath, [path.join(here, 'app/server.mjs'), String(port), `app-${i + 1}`, `a${i + 1}`], { stdio: ['ignore', 'inherit', 'inherit'] }),
);
const portico = spawn(process.execPath, [path.join(here, '../dist/src/cli.js'), 'run', '-c', path.join(here, 'portico.yaml')], {
  stdio: 'inherit',
});
const stopAll = (signal) => {
  for (const child of [...apps, portico]) if (child.exitCode === null) child.kill(signal);
};
process.on('SIGINT', () => stopAll('SIGINT'));
process.on('SIGTERM', () => stopAll('SIGTERM'));
portico.on('exit', (code) => {
  stopAll('SIGTERM');
  process.exitCode = code ?? 0;
});
