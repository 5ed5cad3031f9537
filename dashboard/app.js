/*
 * Portico's operations dashboard: one page, no framework, no build step, no external asset. Served by the admin
 * listener (`GET /` and `/assets/…`) under `Content-Security-Policy: default-src 'self'`, so no inline script or
 * style: the page's code is these ES modules (app.js, the page; api.js, dom.js, format.js, traffic.js, chart.js)
 * and style.css, and styles set from here go through the CSSOM (allowed by CSP).
 *
 * Data: `GET /status` once, then `EventSource('/events')`: `event: status` carries a StatusReport (see
 * src/control/admin-types.ts) every second, `event: job` a job whenever it changes. Requests/s and the p50/p99 of
 * the charts are differences of two reports' `totals` (traffic.js).
 * Auth: `POST /login` with the token sets an HttpOnly session cookie (EventSource cannot send a header); every POST
 * sends `X-Portico-Admin: 1` and `Content-Type: application/json`, the admin API's guard against cross-site forms.
 */
import { api } from './api.js';
import { drawChart } from './chart.js';
import { $, el, setText, toast } from './dom.js';
import { ago, bytes, count, date, duration, ms, percent, rate, shortId } from './format.js';
import { HISTORY_S, TrafficHistory } from './traffic.js';

/** A status older than this marks the page stale. */
const STALE_MS = 5000;
/** Reconnect delays after the event stream closes, growing to the last. */
const RECONNECT_MS = [1000, 2000, 5000, 10000, 30000];
/** How often the page reads GET /status when it may read but not follow the stream (open_reads, no session). */
const POLL_MS = 2000;
/** Jobs listed, newest first. */
const JOBS_SHOWN = 8;

const state = {
  /** Traffic over the last minutes, from the reports' `totals`. */
  traffic: new TrafficHistory(),
  /** The last StatusReport drawn. */
  report: null,
  lastAt: 0,
  events: null,
  reconnects: 0,
  reconnectTimer: 0,
  poll: 0,
  /** Jobs by id (from GET /jobs, event: job, and the deploys started here). */
  jobs: new Map(),
  /** The upstream of each deploy job started here (a Job does not name its upstream). */
  jobUpstream: new Map(),
  started: false,
};

// ---------------------------------------------------------------------------------------------------------------
// The admin API.

/** What to do with an action's failure: a missing or expired session opens the login form. */
function failedAction(what, error) {
  if (error.status === 401 || (error.status === 403 && !loggedIn())) {
    // The session expired or never was: forget it, and ask for the token.
    setLoggedIn(false);
    toast(`${what}: log in first (${error.message})`, true);
    showLogin(true);
    return;
  }
  toast(`${what} failed: ${error.message}`, true);
}

// ---------------------------------------------------------------------------------------------------------------
// Session.

function loggedIn() {
  return sessionStorage.getItem('portico.session') === '1';
}

function setLoggedIn(on) {
  if (on) sessionStorage.setItem('portico.session', '1');
  else sessionStorage.removeItem('portico.session');
  $('login-open').hidden = on;
  $('logout').hidden = !on;
}

/** Shows the login form; `dismissable` when the page can be read without it. */
function showLogin(dismissable) {
  $('login').hidden = false;
  $('login-open').hidden = true;
  $('login-cancel').hidden = !dismissable;
  $('main').hidden = !dismissable || !state.report;
  $('login-error').hidden = true;
  $('token').focus();
}

function hideLogin() {
  $('login').hidden = true;
  $('login-open').hidden = loggedIn();
  $('token').value = '';
}

async function login(event) {
  event.preventDefault();
  const token = $('token').value;
  const button = $('login-submit');
  button.disabled = true;
  try {
    await api('POST', '/login', { token });
    setLoggedIn(true);
    hideLogin();
    stopPolling();
    toast('Logged in');
    if (!state.started) start();
    else {
      connect();
      loadJobs();
    }
  } catch (error) {
    $('login-error').hidden = false;
    $('login-error').textContent = error.status === 401 || error.status === 403 ? `Refused: ${error.message}` : error.message;
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try {
    await api('POST', '/logout');
  } catch {
    // The session is gone either way.
  }
  setLoggedIn(false);
  stopPolling();
  if (state.events) state.events.close();
  state.events = null;
  state.started = false;
  start();
}

// ---------------------------------------------------------------------------------------------------------------
// Live data.

function setLive(kind, text) {
  const node = $('live');
  node.className = `live live-${kind}`;
  setText(node, text);
}

/** Opens the event stream (cookie auth); on a close, reconnects with a growing delay, or asks to log in. */
function connect() {
  if (state.events) state.events.close();
  clearTimeout(state.reconnectTimer);
  const events = new EventSource('/events');
  state.events = events;
  setLive('wait', 'connecting');
  events.addEventListener('open', () => {
    state.reconnects = 0;
    setLive('on', 'live');
  });
  events.addEventListener('status', (event) => {
    try {
      render(JSON.parse(event.data));
    } catch (error) {
      console.error('status event', error);
    }
  });
  events.addEventListener('status_error', (event) => {
    // The report could not be built this time (a worker gone, say): keep the last one and say so.
    try {
      const data = JSON.parse(event.data);
      setLive('wait', 'no report');
      $('live').title = data && data.error ? data.error.message : '';
    } catch (error) {
      console.error('status_error event', error);
    }
  });
  events.addEventListener('job', (event) => {
    try {
      const data = JSON.parse(event.data);
      jobChanged(data && data.job ? data.job : data);
    } catch (error) {
      console.error('job event', error);
    }
  });
  events.addEventListener('error', () => {
    if (events.readyState === EventSource.CONNECTING) {
      setLive('wait', 'reconnecting');
      return;
    }
    // Closed for good (an HTTP error such as 401): find out why, then retry or ask for the token.
    setLive('off', 'offline');
    if (state.events !== events) return;
    state.events = null;
    const delay = RECONNECT_MS[Math.min(state.reconnects++, RECONNECT_MS.length - 1)];
    state.reconnectTimer = setTimeout(() => streamRefused(), delay);
  });
}

/** The HTTP status `GET /events` answers now (0: no answer), read from its headers, the stream then dropped. */
async function eventsStatus() {
  const abort = new AbortController();
  try {
    const res = await fetch('/events', { credentials: 'same-origin', cache: 'no-store', signal: abort.signal });
    return res.status;
  } catch {
    return 0;
  } finally {
    abort.abort();
  }
}

/**
 * After the stream closed: reconnect when it can be had; without a session, ask for the token, or, when reads
 * are open (`open_reads`: GET /status without a token, not the stream), show the figures by polling meanwhile.
 */
async function streamRefused() {
  const status = await eventsStatus();
  if (status !== 401 && status !== 403) {
    stopPolling();
    connect();
    return;
  }
  setLoggedIn(false);
  try {
    render(await api('GET', '/status'));
    startPolling();
    setLive('wait', 'read-only: log in for live');
  } catch (error) {
    stopPolling();
    setLive('off', 'log in');
    showLogin(false);
  }
}

function startPolling() {
  if (state.poll) return;
  state.poll = setInterval(async () => {
    try {
      render(await api('GET', '/status'));
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        stopPolling();
        showLogin(false);
      }
    }
  }, POLL_MS);
}

function stopPolling() {
  clearInterval(state.poll);
  state.poll = 0;
}

/** The first report, then the stream; a Portico that wants a token for reads shows the login form. */
async function start() {
  state.started = true;
  setLoggedIn(loggedIn());
  try {
    const report = await api('GET', '/status');
    $('main').hidden = false;
    render(report);
    connect();
    loadJobs();
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      state.started = false;
      setLoggedIn(false);
      showLogin(false);
      setLive('off', 'log in');
    } else {
      setLive('off', 'offline');
      toast(error.message, true);
      state.started = false;
      setTimeout(start, 3000);
    }
  }
}

async function loadJobs() {
  try {
    const answer = await api('GET', '/jobs');
    const jobs = Array.isArray(answer) ? answer : answer && Array.isArray(answer.jobs) ? answer.jobs : [];
    for (const job of jobs) state.jobs.set(String(job.id), job);
    renderJobs();
  } catch {
    // An older admin API without jobs: the list stays empty.
  }
}

// Marks the page stale when the reports stop coming.
setInterval(() => {
  if (state.lastAt !== 0 && Date.now() - state.lastAt > STALE_MS && state.events && state.events.readyState === EventSource.OPEN) {
    setLive('wait', `stale ${duration((Date.now() - state.lastAt) / 1000)}`);
  }
}, 1000);

function drawCharts() {
  const points = state.traffic.points();
  drawChart($('chart-rps'), points, [{ key: 'rps', colour: '--rps', fill: true }], (v) => (v >= 1000 ? `${Number((v / 1000).toFixed(2))}k` : `${Number(v.toFixed(v < 10 ? 2 : 0))}`), HISTORY_S);
  drawChart($('chart-latency'), points, [{ key: 'p50', colour: '--p50' }, { key: 'p99', colour: '--p99' }], (v) => (v >= 1000 ? `${Number((v / 1000).toFixed(2))} s` : `${Number(v.toFixed(v < 10 ? 2 : 0))} ms`), HISTORY_S);
  return points;
}

window.addEventListener('resize', () => drawCharts());

// ---------------------------------------------------------------------------------------------------------------
// Rendering a report.

function render(report) {
  if (!report || typeof report !== 'object') return;
  state.report = report;
  state.lastAt = Date.now();
  if (state.events && state.events.readyState === EventSource.OPEN) {
    setLive('on', 'live');
    $('live').title = '';
  }
  $('main').hidden = !$('login').hidden && $('login-cancel').hidden;
  state.traffic.add(report, Date.now());
  renderFacts(report);
  const points = drawCharts();
  renderTiles(report, points);
  renderUpstreams(report);
  renderCaches(report);
  renderCertificates(report);
  renderRoutes(report);
  setText($('foot-updated'), `updated ${new Date().toLocaleTimeString()}`);
}

function renderFacts(r) {
  setText($('fact-version'), r.version || '–');
  setText($('fact-pid'), r.pid ?? '–');
  setText($('fact-uptime'), duration(r.uptime_s));
  const config = typeof r.config === 'string' ? r.config : '–';
  setText($('fact-config'), r.config_digest ? `${config} · ${r.config_digest}` : config);
  $('fact-config').title = config;
  const workers = Array.isArray(r.workers) ? r.workers : null;
  setText($('fact-workers'), workers ? `${workers.filter((w) => typeof w.pid === 'number').length} / ${workers.length}` : 'single process');
  const running = r.running;
  setText($('fact-operation'), running ? `${running.operation} #${running.id}, ${duration(running.for_ms / 1000)}${r.queued > 0 ? ` (+${r.queued} queued)` : ''}` : 'idle');
  const missing = workers ? workers.filter((w) => w.answered === false) : [];
  $('workers-missing').hidden = missing.length === 0;
  if (missing.length > 0) setText($('workers-missing'), `Worker${missing.length === 1 ? '' : 's'} ${missing.map((w) => w.slot).join(', ')} did not answer in time: the figures leave ${missing.length === 1 ? 'it' : 'them'} out.`);
  $('counting-off').hidden = r.counting !== false;
  const listeners = Array.isArray(r.listeners) ? r.listeners.map((l) => l.url).join('  ') : '';
  setText($('foot-listeners'), listeners ? `serving ${listeners}` : '');
  document.title = `Portico ${r.version || ''} — operations`;
}

function tileClass(node, kind) {
  node.classList.toggle('bad', kind === 'bad');
  node.classList.toggle('warn', kind === 'warn');
  node.classList.toggle('ok', kind === 'ok');
}

function renderTiles(r, points) {
  const last = points[points.length - 1];
  const recent = points.slice(-3).filter((p) => typeof p.rps === 'number');
  const rps = recent.length ? recent.reduce((a, p) => a + p.rps, 0) / recent.length : null;
  setText($('tile-rps'), rate(rps));
  setText($('tile-total'), `${count(r.totals && r.totals.requests)} since start`);
  setText($('tile-latency'), last ? `${ms(last.p50)} / ${ms(last.p99)}` : '–');
  const classes = (r.totals && r.totals.classes) || {};
  const total = Number(r.totals && r.totals.requests) || 0;
  const errors = Number(classes['5xx']) || 0;
  const recentErrors = points.slice(-60).reduce((a, p) => a + Math.max(0, p.errors || 0), 0);
  setText($('tile-errors'), total > 0 ? percent(errors / total) : '–');
  tileClass($('tile-errors'), recentErrors > 0 ? 'bad' : undefined);
  setText($('tile-errors-sub'), `${count(errors)} since start, ${count(recentErrors)} in the last minute`);

  let up = 0;
  let all = 0;
  let draining = 0;
  for (const u of r.upstreams || []) {
    for (const s of u.servers || []) {
      all++;
      if (s.state === 'healthy') up++;
      if (s.state === 'draining') draining++;
    }
  }
  setText($('tile-servers'), all ? `${up} / ${all}` : '–');
  tileClass($('tile-servers'), all === 0 ? undefined : up === all ? 'ok' : up === 0 ? 'bad' : 'warn');
  setText($('tile-servers-sub'), all ? `${all - up - draining} out, ${draining} draining` : 'no upstream');

  let hits = 0;
  let lookups = 0;
  for (const c of r.caches || []) {
    hits += Number(c.hits) || 0;
    lookups += (Number(c.hits) || 0) + (Number(c.misses) || 0);
  }
  setText($('tile-cache'), lookups ? percent(hits / lookups) : '–');
  setText($('tile-cache-sub'), (r.caches || []).length ? `${count(lookups)} lookups, ${(r.caches || []).length} zone${(r.caches || []).length === 1 ? '' : 's'}` : 'no cache zone');
  const conns = r.connections || {};
  setText($('tile-conns'), count(conns.open));
  setText($('tile-streams'), `${count(conns.streams)} HTTP/2 streams`);
}

const STATE_ROW = { healthy: 'row-ok', draining: 'row-warn', ejected: 'row-warn', unhealthy: 'row-bad', down: 'row-bad', disabled: 'row-off' };

/** An upstream's block (kept between reports so that focus and buttons stay put). */
function upstreamBlock(container, u) {
  let block = container.querySelector(`.upstream[data-upstream="${CSS.escape(u.name)}"]`);
  if (block) return block;
  block = el('div', 'upstream', null, { 'data-upstream': u.name });
  const head = el('div', 'upstream-head');
  head.append(el('span', 'upstream-name', u.name));
  if (u.spawned) head.append(el('span', 'tag', 'spawned'));
  head.append(el('span', 'upstream-figures'));
  head.append(el('span', 'spacer'));
  if (u.spawned) {
    head.append(el('span', 'deploy-progress muted', '', { 'aria-live': 'polite' }));
    const deploy = el('button', 'btn btn-small', 'Deploy', { type: 'button', 'aria-label': `Deploy upstream ${u.name} (rolling restart of its instances)` });
    deploy.addEventListener('click', () => startDeploy(u.name, deploy));
    head.append(deploy);
  }
  const scroll = el('div', 'scroll');
  const table = el('table', 'grid servers');
  table.setAttribute('aria-label', `Servers of upstream ${u.name}`);
  const headRow = el('tr');
  for (const [title, num] of [
    ['Server', false],
    ['Address', false],
    ['State', false],
    ['Weight', true],
    ['In flight', true],
    ['Requests', true],
    ['5xx', true],
    ['Failures', true],
    ['p50', true],
    ['p99', true],
    ['Last check', false],
    ['Actions', true],
  ]) {
    headRow.append(el('th', num ? 'num' : '', title, { scope: 'col' }));
  }
  const thead = el('thead');
  thead.append(headRow);
  table.append(thead, el('tbody'));
  scroll.append(table);
  block.append(head, scroll);
  container.append(block);
  return block;
}

function actionButton(label, cls, upstream, server, action) {
  const button = el('button', `btn btn-small ${cls}`, label, { type: 'button', 'data-action': action, 'aria-label': `${label} server ${server} of ${upstream}` });
  button.addEventListener('click', () => serverAction(upstream, server, action, button));
  return button;
}

function serverRow(tbody, upstream, s) {
  let row = tbody.querySelector(`tr[data-server="${CSS.escape(s.id)}"]`);
  if (!row) {
    row = el('tr', '', null, { 'data-upstream': upstream, 'data-server': s.id });
    const name = el('th', 'server-id', null, { scope: 'row' });
    row.append(name);
    for (const cls of ['mono address', 'state', 'num weight', 'num inflight', 'num requests', 'num errors', 'num failures', 'num p50', 'num p99', 'check', 'actions']) row.append(el('td', cls));
    const actions = row.querySelector('.actions');
    actions.append(
      actionButton('Drain', 'btn-warn', upstream, s.id, 'drain'),
      actionButton('Disable', 'btn-bad', upstream, s.id, 'disable'),
      actionButton('Enable', 'btn-ok', upstream, s.id, 'enable'),
    );
    tbody.append(row);
  }
  updateServerRow(row, s);
  return row;
}

function updateServerRow(row, s) {
  const name = row.querySelector('.server-id');
  const label = s.backup ? `${s.id} (backup)` : s.id;
  if (name.textContent !== label) {
    name.textContent = s.id;
    if (s.backup) name.append(el('span', 'tag', 'backup'));
  }
  setText(row.querySelector('.address'), s.address || '–');
  const stateCell = row.querySelector('.state');
  let badge = stateCell.firstElementChild;
  if (!badge) {
    badge = el('span', 'badge');
    stateCell.append(badge);
  }
  const st = s.state || 'unknown';
  badge.className = `badge state-${st}`;
  setText(badge, st);
  row.setAttribute('data-state', st);
  row.className = STATE_ROW[st] || '';
  setText(row.querySelector('.weight'), s.weight === undefined ? '–' : s.configured_weight !== undefined && s.configured_weight !== s.weight ? `${s.weight} (${s.configured_weight})` : s.weight);
  setText(row.querySelector('.inflight'), count(s.in_flight));
  setText(row.querySelector('.requests'), count(s.requests));
  const errors = s.classes ? s.classes['5xx'] : undefined;
  const errorsCell = row.querySelector('.errors');
  setText(errorsCell, count(errors));
  errorsCell.classList.toggle('bad-text', errors > 0);
  setText(row.querySelector('.failures'), count(s.failures));
  setText(row.querySelector('.p50'), ms(s.latency_ms && s.latency_ms.p50));
  setText(row.querySelector('.p99'), ms(s.latency_ms && s.latency_ms.p99));
  const check = s.last_check;
  const checkCell = row.querySelector('.check');
  setText(checkCell, check ? `${check.ok ? 'ok' : 'failed'}, ${ago(check.at)}` : '–');
  checkCell.classList.toggle('bad-text', !!check && !check.ok);
  const admin = s.admin || 'enabled';
  for (const button of row.querySelectorAll('button[data-action]')) {
    if (button.dataset.busy === '1') continue;
    const action = button.dataset.action;
    button.disabled = (action === 'drain' && admin !== 'enabled') || (action === 'disable' && admin === 'disabled') || (action === 'enable' && admin === 'enabled');
  }
}

function renderUpstreams(r) {
  const container = $('upstreams');
  const upstreams = Array.isArray(r.upstreams) ? r.upstreams : [];
  const empty = container.querySelector('.empty');
  if (empty) empty.hidden = upstreams.length > 0;
  const names = new Set(upstreams.map((u) => u.name));
  for (const block of container.querySelectorAll('.upstream')) if (!names.has(block.dataset.upstream)) block.remove();
  let servers = 0;
  for (const u of upstreams) {
    const block = upstreamBlock(container, u);
    const lat = u.latency_ms || {};
    const classes = u.classes || {};
    setText(block.querySelector('.upstream-figures'), `${count(u.requests)} requests · ${count(classes['5xx'])} 5xx · p50 ${ms(lat.p50)} · p99 ${ms(lat.p99)}`);
    const tbody = block.querySelector('tbody');
    const list = Array.isArray(u.servers) ? u.servers : [];
    servers += list.length;
    const ids = new Set(list.map((s) => s.id));
    for (const row of tbody.querySelectorAll('tr[data-server]')) if (!ids.has(row.dataset.server)) row.remove();
    for (const s of list) serverRow(tbody, u.name, s);
    renderDeployProgress(u.name);
  }
  setText($('upstreams-sub'), `${upstreams.length} upstream${upstreams.length === 1 ? '' : 's'}, ${servers} server${servers === 1 ? '' : 's'}`);
}

async function serverAction(upstream, server, action, button) {
  button.dataset.busy = '1';
  button.disabled = true;
  try {
    const status = await api('POST', `/upstreams/${encodeURIComponent(upstream)}/servers/${encodeURIComponent(server)}/${action}`, {});
    toast(`${upstream}/${server}: ${action} done, now ${status && status.state ? status.state : 'updated'}`);
    delete button.dataset.busy;
    // Draw the answer at once; the next report confirms it.
    const row = button.closest('tr');
    if (row && status && status.id) updateServerRow(row, status);
  } catch (error) {
    delete button.dataset.busy;
    button.disabled = false;
    failedAction(`${action} ${upstream}/${server}`, error);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Caches: hit ratio and purge.

function cacheRow(tbody, c) {
  let row = tbody.querySelector(`tr[data-zone="${CSS.escape(c.zone)}"]`);
  if (row) return row;
  row = el('tr', '', null, { 'data-zone': c.zone });
  row.append(el('th', 'mono zone', c.zone, { scope: 'row' }));
  for (const cls of ['num entries', 'num size', 'num hits', 'num misses', 'num stale', 'ratio', 'purge-cell']) row.append(el('td', cls));
  const meter = el('span', 'meter');
  const track = el('span', 'meter-track', null, { 'aria-hidden': 'true' });
  track.append(el('span', 'meter-fill'));
  meter.append(track, el('span', 'meter-text'));
  row.querySelector('.ratio').append(meter);

  const form = el('form', 'purge', null, { 'aria-label': `Purge cache zone ${c.zone}` });
  const kind = el('select', '', null, { 'aria-label': `What to purge in ${c.zone}` });
  kind.append(el('option', '', 'URL', { value: 'url' }), el('option', '', 'URL prefix', { value: 'url_prefix' }));
  const input = el('input', 'mono', null, { type: 'url', required: '', placeholder: 'https://a.example/path', 'aria-label': `URL to purge from ${c.zone}`, spellcheck: 'false' });
  const button = el('button', 'btn btn-small btn-bad', 'Purge', { type: 'submit', 'aria-label': `Purge from cache zone ${c.zone}` });
  form.append(kind, input, button);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    purge(c.zone, kind.value, input.value.trim(), button, input);
  });
  row.querySelector('.purge-cell').append(form);
  tbody.append(row);
  return row;
}

async function purge(zone, kind, url, button, input) {
  if (url === '') return;
  if (kind === 'url_prefix' && !window.confirm(`Purge every URL under ${url} from ${zone}?`)) return;
  button.disabled = true;
  try {
    const answer = await api('POST', `/caches/${encodeURIComponent(zone)}/purge`, kind === 'url' ? { url } : { url_prefix: url });
    const n = answer && typeof answer.purged === 'number' ? answer.purged : 0;
    toast(`${zone}: ${n} entr${n === 1 ? 'y' : 'ies'} purged (${kind === 'url' ? url : `under ${url}`})`);
    input.value = '';
  } catch (error) {
    failedAction(`purge ${zone}`, error);
  } finally {
    button.disabled = false;
  }
}

function renderCaches(r) {
  const tbody = $('caches').querySelector('tbody');
  const caches = Array.isArray(r.caches) ? r.caches : [];
  $('caches-empty').hidden = caches.length > 0;
  $('caches').hidden = caches.length === 0;
  const zones = new Set(caches.map((c) => c.zone));
  for (const row of tbody.querySelectorAll('tr[data-zone]')) if (!zones.has(row.dataset.zone)) row.remove();
  for (const c of caches) {
    const row = cacheRow(tbody, c);
    setText(row.querySelector('.entries'), count(c.entries));
    setText(row.querySelector('.size'), bytes(c.bytes));
    setText(row.querySelector('.hits'), count(c.hits));
    setText(row.querySelector('.misses'), count(c.misses));
    setText(row.querySelector('.stale'), count(c.stale));
    const ratio = typeof c.hit_ratio === 'number' ? c.hit_ratio : null;
    const fill = row.querySelector('.meter-fill');
    fill.style.width = `${ratio === null ? 0 : Math.round(ratio * 100)}%`;
    fill.classList.toggle('warn', ratio !== null && ratio < 0.8 && ratio >= 0.5);
    fill.classList.toggle('bad', ratio !== null && ratio < 0.5);
    setText(row.querySelector('.meter-text'), percent(ratio));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Certificates and routes (no controls: rebuilt each time).

function renderCertificates(r) {
  const tbody = $('certs').querySelector('tbody');
  const certs = Array.isArray(r.certificates) ? r.certificates.slice() : [];
  certs.sort((a, b) => (a.days_left ?? Infinity) - (b.days_left ?? Infinity));
  $('certs-empty').hidden = certs.length > 0;
  $('certs').hidden = certs.length === 0;
  const rows = certs.map((c) => {
    const row = el('tr');
    row.append(el('th', 'mono', Array.isArray(c.hosts) && c.hosts.length ? c.hosts.join(', ') : '–', { scope: 'row' }));
    row.append(el('td', '', c.source || '–'));
    row.append(el('td', '', typeof c.not_after === 'string' ? c.not_after.slice(0, 10) : '–', { title: date(c.not_after) }));
    const days = typeof c.days_left === 'number' ? Math.floor(c.days_left) : null;
    row.append(el('td', `num ${days === null ? '' : days < 7 ? 'bad-text' : days < 30 ? 'warn-text' : 'ok-text'}`, days === null ? '–' : days));
    row.append(c.last_renewal_error ? el('td', 'bad-text', `error: ${c.last_renewal_error}`) : el('td', 'muted', c.last_renewal ? String(c.last_renewal).slice(0, 10) : '–', { title: date(c.last_renewal) }));
    row.className = days !== null && days < 7 ? 'row-bad' : days !== null && days < 30 ? 'row-warn' : 'row-ok';
    return row;
  });
  tbody.replaceChildren(...rows);
}

function renderRoutes(r) {
  const tbody = $('routes').querySelector('tbody');
  const routes = Array.isArray(r.routes) ? r.routes : [];
  $('routes-empty').hidden = routes.length > 0;
  $('routes').hidden = routes.length === 0;
  const rows = routes.map((route) => {
    const row = el('tr');
    const classes = route.classes || {};
    const lat = route.latency_ms || {};
    row.append(el('th', 'mono', route.id || '–', { scope: 'row' }), el('td', '', route.handler || '–'), el('td', 'num', count(route.requests)));
    for (const k of ['2xx', '3xx', '4xx', '5xx']) row.append(el('td', `num ${k === '5xx' && classes[k] > 0 ? 'bad-text' : ''}`, count(classes[k])));
    row.append(el('td', 'num', ms(lat.p50)), el('td', 'num', ms(lat.p99)));
    return row;
  });
  tbody.replaceChildren(...rows);
}

// ---------------------------------------------------------------------------------------------------------------
// Deploys and jobs.

async function startDeploy(upstream, button) {
  if (!window.confirm(`Deploy ${upstream}: start new instances, move traffic to them and stop the old ones, one slot at a time?`)) return;
  button.disabled = true;
  try {
    const answer = await api('POST', `/upstreams/${encodeURIComponent(upstream)}/deploy`, {});
    const job = answer && answer.job ? answer.job : answer;
    if (job && job.id !== undefined) {
      state.jobUpstream.set(String(job.id), upstream);
      jobChanged(job);
    }
    toast(`Deploy of ${upstream} started${job && job.id !== undefined ? ` (job ${shortId(job.id)})` : ''}`);
  } catch (error) {
    failedAction(`deploy ${upstream}`, error);
  } finally {
    button.disabled = false;
  }
}

async function startReload(button) {
  if (!window.confirm('Reload the config file? A config with errors is refused and the one serving stays.')) return;
  button.disabled = true;
  try {
    const answer = await api('POST', '/reload', {});
    const job = answer && answer.job ? answer.job : answer;
    if (job && job.id !== undefined) jobChanged(job);
    toast(`Reload started${job && job.id !== undefined ? ` (job ${shortId(job.id)})` : ''}: see Jobs`);
  } catch (error) {
    failedAction('reload', error);
  } finally {
    button.disabled = false;
  }
}

function jobChanged(job) {
  if (!job || job.id === undefined) return;
  const id = String(job.id);
  const known = state.jobs.get(id);
  state.jobs.set(id, known ? Object.assign({}, known, job) : job);
  while (state.jobs.size > 50) state.jobs.delete(state.jobs.keys().next().value);
  renderJobs();
  for (const block of $('upstreams').querySelectorAll('.upstream')) renderDeployProgress(block.dataset.upstream);
}

/** The upstream a job deploys: the one it was started for here, else read from its operation (`deploy app`). */
function upstreamOf(job) {
  const mine = state.jobUpstream.get(String(job.id));
  if (mine) return mine;
  if (typeof job.upstream === 'string') return job.upstream;
  const words = String(job.operation || '').split(/\s+/);
  return words[0] === 'deploy' && words[1] ? words[1] : null;
}

function lastMessage(job) {
  const events = Array.isArray(job.events) ? job.events : [];
  if (job.state === 'failed') return (job.result && job.result.error && job.result.error.message) || (events.length ? events[events.length - 1].message : 'failed');
  return events.length ? events[events.length - 1].message : job.state;
}

function renderDeployProgress(upstream) {
  const block = $('upstreams').querySelector(`.upstream[data-upstream="${CSS.escape(upstream)}"]`);
  const node = block && block.querySelector('.deploy-progress');
  if (!node) return;
  let latest = null;
  for (const job of state.jobs.values()) if (upstreamOf(job) === upstream && (!latest || String(job.created) >= String(latest.created))) latest = job;
  if (!latest) {
    setText(node, '');
    return;
  }
  const events = Array.isArray(latest.events) ? latest.events.length : 0;
  setText(node, `deploy ${shortId(latest.id)} ${latest.state}${latest.state === 'running' ? ` (step ${events})` : ''}: ${lastMessage(latest)}`);
  node.className = `deploy-progress ${latest.state === 'failed' ? 'bad-text' : latest.state === 'done' ? 'ok-text' : 'warn-text'}`;
}

function renderJobs() {
  const list = $('jobs');
  const jobs = Array.from(state.jobs.values())
    .sort((a, b) => String(b.created).localeCompare(String(a.created)))
    .slice(0, JOBS_SHOWN);
  $('jobs-empty').hidden = jobs.length > 0;
  const items = jobs.map((job) => {
    const item = el('li', 'job', null, { 'data-job': String(job.id) });
    const head = el('div', 'job-head');
    head.append(el('span', `badge job-${job.state}`, job.state));
    const upstream = upstreamOf(job);
    head.append(el('span', 'job-title', `${job.operation}${upstream && !String(job.operation).includes(upstream) ? ` ${upstream}` : ''}`));
    head.append(el('span', 'mono muted', shortId(job.id), { title: String(job.id) }));
    head.append(el('span', 'muted', `${date(job.created)}${job.finished ? `, took ${duration((Date.parse(job.finished) - Date.parse(job.created)) / 1000)}` : ''}`));
    item.append(head);
    const events = Array.isArray(job.events) ? job.events : [];
    if (events.length) {
      const ol = el('ol', 'job-events');
      for (const e of events.slice(-30)) ol.append(el('li', '', e.message));
      if (job.state === 'failed' && job.result && job.result.error) ol.append(el('li', 'bad-text', `${job.result.error.message} (${job.result.error.code})`));
      item.append(ol);
      // The latest step in view.
      requestAnimationFrame(() => {
        ol.scrollTop = ol.scrollHeight;
      });
    }
    return item;
  });
  list.replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring.

$('login-form').addEventListener('submit', login);
$('login-open').addEventListener('click', () => showLogin(true));
$('login-cancel').addEventListener('click', () => {
  hideLogin();
  $('main').hidden = !state.report;
});
$('logout').addEventListener('click', logout);
$('reload').addEventListener('click', () => startReload($('reload')));
// Relative times ("3s ago") move on between reports.
setInterval(() => {
  if (state.report && Date.now() - state.lastAt > 1500) renderUpstreams(state.report);
}, 1000);
start();
