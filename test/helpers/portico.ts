/**
 * Test helpers: start a real Portico on port 0 from config text, with files laid out in a temporary folder.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { parseConfig } from '../../src/server/config.js';
import { Portico } from '../../src/server/portico.js';

/** A temporary folder with the given files (path → content); folders are made as needed. */
export function makeTree(files: Record<string, string | Buffer> = {}): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-test-'));
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(dir, name);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
  }
  return dir;
}

/** A running Portico for a test. */
export interface RunningPortico {
  server: Portico;
  /** `http://127.0.0.1:PORT` of the first listener. */
  url: string;
  port: number;
  /** The folder the config was resolved against (holds the test's files). */
  dir: string;
  stop(): Promise<void>;
}

/**
 * Starts Portico from YAML text. `listen` defaults to 127.0.0.1:0 and the access log to off unless the text
 * sets them. Files are written into a fresh temporary folder that relative paths resolve against.
 */
export async function startPortico(yaml: string, files: Record<string, string | Buffer> = {}): Promise<RunningPortico> {
  const dir = makeTree(files);
  let text = yaml;
  if (!/^listen:/m.test(text)) text = `listen: ["127.0.0.1:0"]\n${text}`;
  if (!/^log:/m.test(text)) text = `log: { access: off }\n${text}`;
  const config = parseConfig(text, path.join(dir, 'portico.yaml'), dir);
  const server = new Portico(config, pino({ level: 'silent' }));
  await server.start();
  const port = server.addresses[0]!.port;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    port,
    dir,
    async stop() {
      await server.stop(100);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
