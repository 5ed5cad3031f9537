/**
 * Claims of docs/configuration.md about `redirect:` routes (status, and a `to` that may use $scheme $host
 * $request_uri $uri $args), and of README.md about the showcase config: `portico check examples/portico.yaml` exits
 * 0 with one OK line.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';
import { httpRequest } from './proxy-support.js';

describe('redirect routes', () => {
  let server: RunningPortico;
  before(async () => {
    server = await startPortico(`sites:
  - routes:
      - path: = /old
        redirect: { to: /new, status: 301 }
      - path: /moved/
        redirect: { to: "https://$host$request_uri", status: 308 }
      - path: /parts/
        redirect: { to: "$scheme://other.example$uri?was=$args", status: 307 }
      - path: /temp
        redirect: { to: "/elsewhere", status: 302 }
      - path: /see
        redirect: { to: "/result", status: 303 }
`);
  });
  after(() => server.stop());

  /** Status and Location of a redirect (node:http does not follow it). */
  async function redirect(target: string, host = 'www.example.com'): Promise<{ status: number; location: string | undefined }> {
    const res = await httpRequest(server.port, target, { headers: { Host: host } });
    return { status: res.status, location: res.headers.location };
  }

  test('redirect { to: /new, status: 301 }: 301 with Location: /new exactly (a fixed target does not take the query)', async () => {
    assert.deepEqual(await redirect('/old'), { status: 301, location: '/new' });
    assert.deepEqual(await redirect('/old?a=1'), { status: 301, location: '/new' });
  });

  test('each configured status (302, 303, 307, 308) is the one sent', async () => {
    assert.equal((await redirect('/temp')).status, 302);
    assert.equal((await redirect('/see')).status, 303);
    assert.equal((await redirect('/parts/x')).status, 307);
    assert.equal((await redirect('/moved/x')).status, 308);
  });

  test('"https://$host$request_uri": the host (lower-cased, no port) and the path with its query are kept', async () => {
    assert.deepEqual(await redirect('/moved/a/b?x=1&y=two', 'WWW.Example.COM:8080'), {
      status: 308,
      location: 'https://www.example.com/moved/a/b?x=1&y=two',
    });
    assert.deepEqual(await redirect('/moved/plain'), { status: 308, location: 'https://www.example.com/moved/plain' });
  });

  test('"$scheme://other.example$uri?was=$args": $scheme is http, $uri the path without query, $args the query without "?"', async () => {
    assert.deepEqual(await redirect('/parts/p?k=v&w=1'), { status: 307, location: 'http://other.example/parts/p?was=k=v&w=1' });
    assert.deepEqual(await redirect('/parts/p'), { status: 307, location: 'http://other.example/parts/p?was=' });
  });

  test('$request_uri and $uri are the canonical path: //a/../b/%61 is redirected to /b/a, never to //...', async () => {
    assert.deepEqual(await redirect('/moved//x/../y/%61?q=1'), { status: 308, location: 'https://www.example.com/moved/y/a?q=1' });
    assert.deepEqual(await redirect('/parts//z'), { status: 307, location: 'http://other.example/parts/z?was=' });
  });
});

describe('the showcase config', () => {
  const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

  test('portico check -c examples/portico.yaml (run from the repository root) exits 0 with one OK line and nothing on stderr', async () => {
    // The showcase's HTTPS listener names the certificate `npm start` makes (examples/dev-certificate.mjs).
    const devCertificate = (await import(pathToFileURL(path.join(repo, 'examples/dev-certificate.mjs')).href)) as { ensureDevCertificate(): Promise<unknown> };
    await devCertificate.ensureDevCertificate();
    // And its admin section names the token file `npm start` makes (examples/dev-token.mjs), as `npm run check` does.
    const devToken = (await import(pathToFileURL(path.join(repo, 'examples/dev-token.mjs')).href)) as { ensureDevToken(): string };
    devToken.ensureDevToken();
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(repo, 'dist/src/cli.js'), 'check', '-c', 'examples/portico.yaml'], {
        cwd: repo,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stderr, '');
    const lines = out.stdout.trim().split('\n');
    assert.equal(lines.length, 1, out.stdout);
    assert.match(lines[0]!, /examples\/portico\.yaml.* valid/);
  });
});
