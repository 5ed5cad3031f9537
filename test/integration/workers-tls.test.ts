/**
 * `workers: 2` and TLS in a real `portico run`: one ACME order for one site, made by the primary, its http-01
 * token answered by whichever worker pebble's validation reaches, the certificate installed in every worker; and
 * TLS sessions resumed on any worker (the primary's shared session-ticket keys).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { after, describe, test } from 'node:test';
import { makeTree } from '../helpers/portico.js';
import { freePort, startChallengeDns, startPebble } from '../helpers/pebble.js';
import { PorticoProcess } from '../helpers/process.js';
import { requireTool } from '../helpers/tools.js';
import { startUpstream } from '../helpers/upstream.js';

const dir = makeTree({});
after(() => rmSync(dir, { recursive: true, force: true }));

interface Visit {
  issuer: string;
  reused: boolean;
  /** The worker's pid, as the backend was told it. */
  worker: string;
  session: Buffer | undefined;
}

/** A TLS connection (resuming `session` when given) that sends one GET and reads the worker pid the backend echoes. */
async function visit(port: number, servername: string, session?: Buffer): Promise<Visit> {
  const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], ...(session === undefined ? {} : { session }) });
  let ticket: Buffer | undefined;
  socket.on('session', (s: Buffer) => (ticket = s));
  await once(socket, 'secureConnect');
  const issuer = socket.getPeerX509Certificate()?.issuer ?? '';
  const reused = socket.isSessionReused();
  socket.write(`GET / HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`);
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  await once(socket, 'end');
  socket.destroy();
  return { issuer, reused, worker: text.slice(text.indexOf('\r\n\r\n') + 4), session: ticket };
}

describe('workers: 2 with TLS', () => {
  test('one ACME order for one site, validated through any worker; the certificate is served by both; a TLS session resumes on either worker', async (t) => {
    if (!requireTool(t, 'pebble') || !requireTool(t, 'pebble-challtestsrv') || !requireTool(t, 'openssl')) return;
    const dns = await startChallengeDns(dir);
    t.after(() => dns.stop());
    const port = await freePort();
    const pebble = await startPebble(dir, { alwaysValid: false, httpPort: port, dnsServer: dns.address });
    t.after(() => pebble.stop());
    const backend = await startUpstream((req, res) => res.end(String(req.headers['x-worker'])));
    t.after(() => backend.stop());
    const file = path.join(dir, 'workers-tls.yaml');
    writeFileSync(
      file,
      `listen: ["127.0.0.1:${port}", { addr: "127.0.0.1:0", tls: {} }]
workers: 2
log: { access: off }
state_dir: ./state
upstreams:
  app: { servers: ["${backend.url}"] }
sites:
  - hosts: [b.test]
    tls: { acme: { email: ops@b.test, agree_tos: true, directory: "${pebble.directory}", trusted_roots: ${pebble.caFile} } }
    routes:
      - path: /
        proxy: { upstream: app, set_headers: { X-Worker: "$pid" } }
`,
    );
    const portico = await PorticoProcess.start(file, dir);
    t.after(() => portico.stop());
    await portico.waitForLine(/acme: certificate obtained/, 0, 20_000);
    const tlsPort = Number(/ on http:\/\/127\.0\.0\.1:\d+\/ https:\/\/127\.0\.0\.1:(\d+)\//.exec(portico.stderr)![1]);
    // The certificate reaches the workers by IPC after the primary's log line: wait (bounded) until it is served.
    let first = await visit(tlsPort, 'b.test');
    for (let i = 0; i < 50 && !/Pebble Intermediate CA/.test(first.issuer); i++) first = await visit(tlsPort, 'b.test');
    assert.match(first.issuer, /Pebble Intermediate CA/, portico.stderr);
    const workers = new Set<string>([first.worker]);
    const reuses: boolean[] = [];
    let session = first.session;
    assert.ok(session !== undefined, 'a session ticket was issued');
    for (let i = 0; i < 8; i++) {
      const resumed = await visit(tlsPort, 'b.test', session);
      // A resumed session sends no certificate; a full handshake must send the ACME one.
      if (!resumed.reused) assert.match(resumed.issuer, /Pebble Intermediate CA/);
      reuses.push(resumed.reused);
      workers.add(resumed.worker);
      session = resumed.session ?? session;
    }
    t.diagnostic(`orders issued: ${pebble.issued()}; workers seen: ${[...workers].join(', ')}; sessions reused: ${reuses.join(' ')}`);
    assert.equal(pebble.issued(), 1);
    assert.equal(workers.size, 2, 'both workers answered');
    assert.ok(reuses.every(Boolean), 'every resumption succeeded, whichever worker took it');
    assert.equal(portico.stderr.match(/acme: ordering a certificate/g)?.length, 1);
  });
});
