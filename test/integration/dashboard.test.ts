/**
 * The dashboard end to end: a real `portico run` with an admin listener, two real backends with active health
 * checks, and Debian's Chromium driven by playwright-core (a fresh profile, no network beyond loopback). The page
 * loads, logs in with the token, shows a server going down within seconds of its health check failing, and a
 * drain click takes effect (the row says draining and GET /status agrees). A screenshot is kept in
 * test-artifacts/dashboard.png. Without /usr/bin/chromium the test skips, or fails with CI=true (.ci/run installs it).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page, type Request } from 'playwright-core';
import { freePort } from '../helpers/pebble.js';
import { PorticoProcess } from '../helpers/process.js';
import { APP, eventually, portRange } from '../helpers/supervise.js';
import { requireExecutable } from '../helpers/tools.js';
import { startUpstream, type TestUpstream } from '../helpers/upstream.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CHROMIUM = '/usr/bin/chromium';
/** The flags the issue names: headless, no sandbox (root), no GPU, and nothing that reaches outside the machine. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const TOKEN_ENV = 'PORTICO_DASHBOARD_TEST_TOKEN';
/** Where the screenshots go (gitignored). */
const ARTIFACTS = path.join(repo, 'test-artifacts');
/** How soon a failed health check must show on the page: the check's interval, one status event, drawing. */
const DOWN_WITHIN_MS = 5_000;

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  delete process.env[TOKEN_ENV];
});
mkdirSync(ARTIFACTS, { recursive: true });

/** A backend answering its name, whose `/health` answers 200 or 503 as `health.ok` says. */
async function backend(name: string): Promise<{ upstream: TestUpstream; health: { ok: boolean } }> {
  const health = { ok: true };
  const upstream = await startUpstream((req, res) => {
    if (req.url === '/health') {
      res.writeHead(health.ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(health.ok ? 'ok' : 'down');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
    res.end(name);
  });
  cleanups.push(() => upstream.stop());
  return { upstream, health };
}

/** One server's status from `GET /status` with the Bearer token. */
async function serverStatus(admin: string, token: string, upstream: string, id: string): Promise<Record<string, unknown> | undefined> {
  const res = await fetch(`${admin}/status`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200, `GET /status: ${res.status}`);
  const report = (await res.json()) as { upstreams: Array<{ name: string; servers: Array<Record<string, unknown>> }> };
  return report.upstreams.find((u) => u.name === upstream)?.servers.find((s) => s.id === id);
}

/** The pids of the spawned instances, from `GET /status`. */
async function instancePids(admin: string, token: string): Promise<number[]> {
  const res = await fetch(`${admin}/status`, { headers: { authorization: `Bearer ${token}` } });
  const report = (await res.json()) as { instances: Array<{ pid?: number }> };
  return report.instances.flatMap((i) => (i.pid === undefined ? [] : [i.pid]));
}

/** A real `portico run` of `lines` (an admin section on a free port is added) and its admin URL and token. */
async function porticoWithAdmin(lines: string[], adminExtra = ''): Promise<{ portico: PorticoProcess; admin: string; token: string; dir: string }> {
  const adminPort = await freePort();
  const admin = `http://127.0.0.1:${adminPort}`;
  const token = randomBytes(24).toString('hex');
  // The child inherits the token through its environment.
  process.env[TOKEN_ENV] = token;
  const dir = mkdtempSync(path.join(tmpdir(), 'portico-dashboard-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'portico.yaml');
  const head = ['listen: ["127.0.0.1:0"]', 'log: { access: off }', `admin: { listen: "127.0.0.1:${adminPort}", token_env: ${TOKEN_ENV}${adminExtra} }`];
  writeFileSync(file, [...head, ...lines, ''].join('\n'));
  const portico = await PorticoProcess.start(file, dir);
  cleanups.push(async () => {
    await portico.stop();
  });
  await eventually(async () => (await fetch(`${admin}/healthz`).catch(() => undefined))?.status === 200, 'the admin listener', 10_000);
  return { portico, admin, token, dir };
}

/** A page in a fresh Chromium profile, recording its requests, script errors and CSP refusals. */
async function openBrowser(): Promise<{ page: Page; requests: Request[]; problems: string[] }> {
  const profile = mkdtempSync(path.join(tmpdir(), 'portico-chromium-'));
  cleanups.push(() => rmSync(profile, { recursive: true, force: true }));
  const browser: BrowserContext = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1400, height: 1000 },
  });
  cleanups.push(() => browser.close());
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.setDefaultTimeout(10_000);
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  const requests: Request[] = [];
  page.on('request', (request) => requests.push(request));
  return { page, requests, problems };
}

/** Saves a screenshot of `page` as test-artifacts/`name` when `failed()` says the test did not pass. */
function screenshotOnFailure(page: Page, name: string, failed: () => boolean): void {
  cleanups.push(async () => {
    if (failed()) await page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true }).catch(() => {});
  });
}

/** Logs in on the page with `token` and waits for the live stream. */
async function logIn(page: Page, token: string): Promise<void> {
  await page.getByLabel('Admin token').fill(token);
  await page.locator('#login-submit').click();
  await page.locator('#live.live-on').waitFor();
}

describe('the dashboard in headless Chromium (Debian chromium + playwright-core)', () => {
  test('the page loads, refuses a wrong token, logs in, shows a server down within seconds of its failed health check, and a drain click takes effect (the row and GET /status say draining)', async (t) => {
    if (!requireExecutable(t, CHROMIUM, 'chromium')) return;
    const one = await backend('one');
    const two = await backend('two');
    const { portico, admin, token } = await porticoWithAdmin([
      'upstreams:',
      '  app:',
      `    servers: [{ url: "${one.upstream.url}", name: one }, { url: "${two.upstream.url}", name: two }]`,
      '    health: { path: /health, interval: 250ms, timeout: 500ms, rise: 1, fall: 1 }',
      'sites:',
      '  - routes: [{ path: /, proxy: { upstream: app } }]',
    ]);
    // Some traffic for the tables.
    for (let i = 0; i < 20; i++) assert.equal((await fetch(`http://127.0.0.1:${portico.port}/x${i}`)).status, 200);

    const { page, requests, problems } = await openBrowser();
    let passed = false;
    screenshotOnFailure(page, 'dashboard-failure.png', () => !passed);

    // The page loads from the admin listener and asks for the token (reads are not open in this config).
    await page.goto(`${admin}/`);
    const tokenField = page.getByLabel('Admin token');
    await tokenField.waitFor({ state: 'visible' });

    // A wrong token is refused on the page.
    await tokenField.fill('not-the-token');
    await page.locator('#login-submit').click();
    await page.locator('#login-error').waitFor({ state: 'visible' });

    await logIn(page, token);
    const row = (id: string, state: string) => page.locator(`tr[data-upstream="app"][data-server="${id}"][data-state="${state}"]`);
    await row('one', 'healthy').waitFor();
    await row('two', 'healthy').waitFor();

    // Traffic while the page is open (the charts start with it): ~50 requests/s, bounded in count and time.
    const load = { on: true, sent: 0 };
    const loading = (async () => {
      const until = Date.now() + 25_000;
      while (load.on && load.sent < 1500 && Date.now() < until) {
        load.sent++;
        await fetch(`http://127.0.0.1:${portico.port}/load`).then((res) => res.arrayBuffer()).catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    cleanups.push(async () => {
      load.on = false;
      await loading;
    });
    // Requests/s and the p50/p99 tile come from the difference of two status events' totals.
    await eventually(async () => Number((await page.locator('#tile-rps').textContent())?.replace(/,/g, '')) > 0, 'requests/s above 0 on the page', 5_000);
    await eventually(async () => /\d/.test((await page.locator('#tile-latency').textContent()) ?? ''), 'a p50/p99 on the page', 5_000);
    assert.match((await page.locator('tr[data-server="two"] .badge').textContent()) ?? '', /healthy/i, 'the state is written, not only coloured');

    // two's health check starts failing: the page shows it down within seconds, with no reload.
    const navigations = requests.filter((r) => r.isNavigationRequest()).length;
    two.health.ok = false;
    const failedAt = Date.now();
    await row('two', 'unhealthy')
      .waitFor({ timeout: DOWN_WITHIN_MS + 5_000 })
      .catch(async (error: Error) => {
        throw new Error(`${error.message}\nGET /status says of two: ${JSON.stringify(await serverStatus(admin, token, 'app', 'two'))}`);
      });
    const shownIn = Date.now() - failedAt;
    t.diagnostic(`server two shown unhealthy ${shownIn} ms after its health endpoint turned 503`);
    assert.ok(shownIn <= DOWN_WITHIN_MS, `shown after ${shownIn} ms, over ${DOWN_WITHIN_MS} ms`);
    assert.equal(requests.filter((r) => r.isNavigationRequest()).length, navigations, 'no page reload: the update came over the event stream');

    // Drain one with its button: the row says draining, and so does the admin API.
    await page.getByRole('button', { name: 'Drain server one of app' }).click();
    await row('one', 'draining').waitFor({ timeout: 5_000 });
    const drained = await serverStatus(admin, token, 'app', 'one');
    assert.equal(drained?.state, 'draining', JSON.stringify(drained));
    assert.equal(drained?.admin, 'draining');
    // The next status events keep saying so (the page is not just showing the POST's answer).
    await page.locator('#foot-updated').waitFor();
    const before = await page.locator('#foot-updated').textContent();
    await eventually(async () => (await page.locator('#foot-updated').textContent()) !== before, 'a later status event', 5_000);
    assert.equal(await row('one', 'draining').count(), 1);

    // Accessible: every button has a name, every table column a header.
    const unnamed = await page.evaluate(() =>
      Array.from(document.querySelectorAll('button'))
        .filter((b) => (b.getAttribute('aria-label') ?? b.textContent ?? '').trim() === '')
        .map((b) => b.outerHTML),
    );
    assert.deepEqual(unnamed, [], 'every button has a label');
    const headless = await page.evaluate(() => Array.from(document.querySelectorAll('table')).filter((table) => table.querySelectorAll('thead th').length === 0).length);
    assert.equal(headless, 0, 'every table has column headers');

    // Chart and tiles are drawn from the reports.
    assert.notEqual(await page.locator('#tile-total').textContent(), '–');

    load.on = false;
    await loading;
    t.diagnostic(`${load.sent} requests sent while the page was open`);
    const shot = path.join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);

    // Every request stayed on the admin listener (no external asset), and every POST carried the CSRF guards.
    const foreign = requests.map((r) => r.url()).filter((u) => !u.startsWith(`${admin}/`));
    assert.deepEqual(foreign, [], 'the page asks nothing of any other origin');
    const posts = requests.filter((r) => r.method() === 'POST');
    assert.ok(posts.length >= 3, `the logins and the drain were POSTs (${posts.length})`);
    for (const post of posts) {
      const headers = post.headers();
      assert.equal(headers['content-type'], 'application/json', post.url());
      assert.equal(headers['x-portico-admin'], '1', post.url());
    }
    assert.deepEqual(problems, [], 'no script error and no CSP violation');
    passed = true;
  });

  test('a Deploy click on a spawned upstream runs a deploy job whose progress the page shows until done (new instances), and a purge by URL answers with its count', async (t) => {
    if (!requireExecutable(t, CHROMIUM, 'chromium')) return;
    const ports = portRange(6);
    const { portico, admin, token } = await porticoWithAdmin([
      'caches:',
      '  pages: { memory: 1MB }',
      'upstreams:',
      '  app:',
      `    spawn: { command: ["${process.execPath}", "${APP}"], instances: 2, ports: ${ports.text} }`,
      '    health: { path: /healthz, interval: 250ms, rise: 1, fall: 1 }',
      'sites:',
      '  - routes: [{ path: /, proxy: { upstream: app, cache: { zone: pages } } }]',
    ]);
    const pidsBefore = await instancePids(admin, token);
    assert.equal(pidsBefore.length, 2, 'two instances run');
    assert.equal((await fetch(`http://127.0.0.1:${portico.port}/`)).status, 200);

    const { page, requests, problems } = await openBrowser();
    let passed = false;
    screenshotOnFailure(page, 'dashboard-deploy-failure.png', () => !passed);
    page.on('dialog', (dialog) => void dialog.accept());
    await page.goto(`${admin}/`);
    await logIn(page, token);
    await page.locator('tr[data-upstream="app"][data-server="app#1"]').waitFor();

    await page.getByRole('button', { name: /^Deploy upstream app/ }).click();
    const progress = page.locator('.upstream[data-upstream="app"] .deploy-progress');
    await progress.filter({ hasText: /running|queued|done/ }).waitFor();
    await page.locator('.job .badge.job-done').waitFor({ timeout: 30_000 });
    assert.match((await progress.textContent()) ?? '', /^deploy \S+ done: /);
    const steps = await page.locator('.job .job-events li').allTextContents();
    t.diagnostic(`deploy steps shown: ${steps.length}`);
    assert.ok(steps.some((step) => /ready/.test(step)), steps.join('\n'));
    const pidsAfter = await instancePids(admin, token);
    assert.equal(pidsAfter.filter((pid) => pidsBefore.includes(pid)).length, 0, `new instances: ${pidsBefore} → ${pidsAfter}`);

    await page.getByLabel('URL to purge from pages').fill(`http://127.0.0.1:${portico.port}/`);
    await page.getByRole('button', { name: 'Purge from cache zone pages' }).click();
    await page.locator('.toast', { hasText: /pages: \d+ entr(y|ies) purged/ }).waitFor();
    const purge = requests.find((r) => r.method() === 'POST' && r.url().endsWith('/caches/pages/purge'));
    assert.deepEqual(purge?.postDataJSON(), { url: `http://127.0.0.1:${portico.port}/` });
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-deploy.png'), fullPage: true });
    assert.deepEqual(problems, [], 'no script error and no CSP violation');
    passed = true;
  });

  test('with open_reads, the page shows the servers without a login (read-only, polled), and an action asks for the token, then goes live', async (t) => {
    if (!requireExecutable(t, CHROMIUM, 'chromium')) return;
    const one = await backend('one');
    const { admin, token } = await porticoWithAdmin(
      ['upstreams:', `  app: { servers: [{ url: "${one.upstream.url}", name: one }] }`, 'sites:', '  - routes: [{ path: /, proxy: { upstream: app } }]'],
      ', open_reads: true',
    );
    const { page, problems } = await openBrowser();
    let passed = false;
    screenshotOnFailure(page, 'dashboard-open-reads-failure.png', () => !passed);
    await page.goto(`${admin}/`);
    await page.locator('tr[data-server="one"][data-state="healthy"]').waitFor();
    assert.equal(await page.locator('#login').isVisible(), false, 'no login form to read');
    await page.locator('#live', { hasText: 'read-only' }).waitFor();
    await page.getByRole('button', { name: 'Drain server one of app' }).click();
    await page.getByLabel('Admin token').waitFor({ state: 'visible' });
    await logIn(page, token);
    await page.getByRole('button', { name: 'Drain server one of app' }).click();
    await page.locator('tr[data-server="one"][data-state="draining"]').waitFor();
    assert.deepEqual(problems, [], 'no script error and no CSP violation');
    passed = true;
  });
});
