/**
 * The cluster showcase: `npm run cluster` (examples/cluster.mjs) runs three boxes of examples/cluster.yaml with a
 * redis-server, a dnsmasq and two app servers, on the fixed loopback addresses README and docs/cluster.md give
 * (127.0.0.1-3:8081, :9911, Redis 6390, DNS 5390, apps 127.0.0.11-12:3201: they must be free). This runs it as the
 * script does (the suite built Portico already), opens what it prints, and stops it with SIGINT: nothing is left.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import { Redis } from 'ioredis';
import { once } from 'node:events';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { requireTool } from '../helpers/tools.js';
import { eventually } from '../helpers/supervise.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** GET `url` with `Host: shop.test`, as the showcase's curl lines (fetch cannot set Host). */
function getShop(url: string): Promise<{ status: number; cacheStatus: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { host: 'shop.test' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, cacheStatus: String(res.headers['cache-status'] ?? ''), body }));
    });
    req.on('error', reject);
  });
}

test('npm run cluster: three boxes share one cache and list each other, app servers found through DNS; Ctrl-C stops every process', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  if (!requireTool(t, 'dnsmasq')) return;
  const script = JSON.parse(spawnSync('node', ['-e', 'process.stdout.write(JSON.stringify(require("./package.json").scripts))'], { cwd: repo, encoding: 'utf8' }).stdout) as Record<string, string>;
  assert.match(script.cluster ?? '', /node examples\/cluster\.mjs$/);
  for (const step of ['examples/dev-certificate.mjs', 'examples/dev-token.mjs']) {
    const made = spawnSync(process.execPath, [path.join(repo, step)], { cwd: repo, stdio: 'ignore' });
    assert.equal(made.status, 0, step);
  }
  const child = spawn(process.execPath, [path.join(repo, 'examples/cluster.mjs')], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const exited = once(child, 'exit');
  try {
    await eventually(() => /the cluster is up/.test(out) || (child.exitCode !== null ? assert.fail(`cluster.mjs exited: ${err}`) : false), 'the cluster showcase up', 60_000);
    // The app servers come in through DNS and their health checks: the first answer through box 1 fills the tier.
    const first = await eventually(async () => {
      const res = await getShop('http://127.0.0.1:8081/api/hello');
      return res.status === 200 ? res : false;
    }, 'an answer from the app through box 1', 20_000);
    assert.match(first.body, /"instance":"app-[ab]"/);
    // Box 1 writes the answer to Redis once its client has it: wait for the entry, as a second client would come later.
    const redis = new Redis('redis://127.0.0.1:6390/0', { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      await eventually(async () => (await redis.keys('portico:showcase:cache:main:*')).length > 0, 'the answer in the shared tier', 5000);
    } finally {
      redis.disconnect();
    }
    const shared = await getShop('http://127.0.0.2:8081/api/hello');
    assert.equal(shared.status, 200);
    assert.match(shared.cacheStatus, /hit.*detail=shared/);
    assert.equal(shared.body, first.body, 'box 2 serves the object box 1 fetched');
    const boxes = await eventually(async () => {
      const status = (await (await fetch('http://127.0.0.3:9911/status')).json()) as { cluster?: { boxes: Array<{ name: string }> } };
      const names = (status.cluster?.boxes ?? []).map((box) => box.name).sort();
      return names.length === 3 ? names : false;
    }, 'box 3 lists three boxes', 10_000);
    assert.deepEqual(boxes, ['box1', 'box2', 'box3']);
    const site = await fetch('http://127.0.0.3:8081/');
    assert.equal(site.status, 200);
  } finally {
    child.kill('SIGINT');
    const [code] = await exited;
    assert.equal(code, 0, err.slice(-2000));
  }
  // Nothing it started is left: the fixed ports are free again.
  for (const url of ['http://127.0.0.1:8081/', 'http://127.0.0.11:3201/healthz']) await assert.rejects(fetch(url));
});
