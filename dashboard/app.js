/*
 * Portico's operations dashboard: one page, no framework, no build step, no external asset. Served by the admin
 * listener (`GET /` and `/assets/…`) under `Content-Security-Policy: default-src 'self'`, so no inline script or
 * style: the page's code is these ES modules (app.js, the page; api.js, dom.js, format.js, traffic.js, chart.js,
 * tables.js) and style.css, and styles set from here go through the CSSOM (allowed by CSP).
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
import { count, date, duration, ms, percent, rate, shortId } from './format.js';
import { renderBoxes, renderCaches, renderCertificates, renderRoutes, renderUpstreams, updateServerRow } from './tables.js';
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
  drawTables(report);
  setText($('foot-updated'), `updated ${new Date().toLocaleTimeString()}`);
}

/** The actions the tables' buttons and forms call. */
const ACTIONS = {
  server: (upstream, id, action, button) => serverAction(upstream, id, action, button),
  purge: (zone, kind, url, button, input) => purge(zone, kind, url, button, input),
  deploy: (upstream, button) => startDeploy(upstream, button),
};

function drawUpstreams(r) {
  const servers = renderUpstreams($('upstreams'), r, ACTIONS);
  const upstreams = Array.isArray(r.upstreams) ? r.upstreams : [];
  for (const u of upstreams) renderDeployProgress(u.name);
  setText($('upstreams-sub'), `${upstreams.length} upstream${upstreams.length === 1 ? '' : 's'}, ${servers} server${servers === 1 ? '' : 's'}`);
}

function drawTables(r) {
  drawUpstreams(r);
  renderCaches($('caches'), $('caches-empty'), r, ACTIONS);
  renderCertificates($('certs'), $('certs-empty'), r);
  renderRoutes($('routes'), $('routes-empty'), r);
  renderBoxes($('boxes-panel'), $('boxes'), $('boxes-sub'), $('boxes-mismatch'), r);
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
  if (state.report && Date.now() - state.lastAt > 1500) drawUpstreams(state.report);
}, 1000);
start();
