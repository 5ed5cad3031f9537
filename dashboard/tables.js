/*
 * Portico's dashboard: the tables of a StatusReport (upstream servers, cache zones, certificates, routes, the
 * cluster's boxes). Rows
 * with controls (servers, zones) are kept between reports and updated in place; the others are rebuilt.
 */
import { el, setText } from './dom.js';
import { ago, bytes, count, date, ms, percent } from './format.js';

/** The row's edge colour for a server's state. */
const STATE_ROW = { healthy: 'row-ok', draining: 'row-warn', ejected: 'row-warn', unhealthy: 'row-bad', down: 'row-bad', disabled: 'row-off' };

/** An upstream's block (kept between reports so that focus and buttons stay put). */
function upstreamBlock(container, u, actions) {
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
    deploy.addEventListener('click', () => actions.deploy(u.name, deploy));
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

function actionButton(label, cls, upstream, server, action, actions) {
  const button = el('button', `btn btn-small ${cls}`, label, { type: 'button', 'data-action': action, 'aria-label': `${label} server ${server} of ${upstream}` });
  button.addEventListener('click', () => actions.server(upstream, server, action, button));
  return button;
}

function serverRow(tbody, upstream, s, actions) {
  let row = tbody.querySelector(`tr[data-server="${CSS.escape(s.id)}"]`);
  if (!row) {
    row = el('tr', '', null, { 'data-upstream': upstream, 'data-server': s.id });
    const name = el('th', 'server-id', null, { scope: 'row' });
    row.append(name);
    for (const cls of ['mono address', 'state', 'num weight', 'num inflight', 'num requests', 'num errors', 'num failures', 'num p50', 'num p99', 'check', 'actions']) row.append(el('td', cls));
    const buttons = row.querySelector('.actions');
    buttons.append(
      actionButton('Drain', 'btn-warn', upstream, s.id, 'drain', actions),
      actionButton('Disable', 'btn-bad', upstream, s.id, 'disable', actions),
      actionButton('Enable', 'btn-ok', upstream, s.id, 'enable', actions),
    );
    tbody.append(row);
  }
  updateServerRow(row, s);
  return row;
}

/** Draws one server's status into its row (also the answer of an action, before the next report). */
export function updateServerRow(row, s) {
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

/**
 * Draws the upstreams of report `r` into `container`, one block each with its servers' table; blocks and rows are
 * kept between reports (focus and buttons stay put). `actions.server(upstream, id, action, button)` and
 * `actions.deploy(upstream, button)` act. Returns how many servers there are.
 */
export function renderUpstreams(container, r, actions) {
  const upstreams = Array.isArray(r.upstreams) ? r.upstreams : [];
  const empty = container.querySelector('.empty');
  if (empty) empty.hidden = upstreams.length > 0;
  const names = new Set(upstreams.map((u) => u.name));
  for (const block of container.querySelectorAll('.upstream')) if (!names.has(block.dataset.upstream)) block.remove();
  let servers = 0;
  for (const u of upstreams) {
    const block = upstreamBlock(container, u, actions);
    const lat = u.latency_ms || {};
    const classes = u.classes || {};
    setText(block.querySelector('.upstream-figures'), `${count(u.requests)} requests · ${count(classes['5xx'])} 5xx · p50 ${ms(lat.p50)} · p99 ${ms(lat.p99)}`);
    const tbody = block.querySelector('tbody');
    const list = Array.isArray(u.servers) ? u.servers : [];
    servers += list.length;
    const ids = new Set(list.map((s) => s.id));
    for (const row of tbody.querySelectorAll('tr[data-server]')) if (!ids.has(row.dataset.server)) row.remove();
    for (const s of list) serverRow(tbody, u.name, s, actions);
  }
  return servers;
}

// ---------------------------------------------------------------------------------------------------------------
// Caches: hit ratio and purge.

function cacheRow(tbody, c, actions) {
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
    actions.purge(c.zone, kind.value, input.value.trim(), button, input);
  });
  row.querySelector('.purge-cell').append(form);
  tbody.append(row);
  return row;
}

/** Draws the cache zones of report `r` into the table `table` (`empty` says there is none); `actions.purge` purges. */
export function renderCaches(table, empty, r, actions) {
  const tbody = table.querySelector('tbody');
  const caches = Array.isArray(r.caches) ? r.caches : [];
  empty.hidden = caches.length > 0;
  table.hidden = caches.length === 0;
  const zones = new Set(caches.map((c) => c.zone));
  for (const row of tbody.querySelectorAll('tr[data-zone]')) if (!zones.has(row.dataset.zone)) row.remove();
  for (const c of caches) {
    const row = cacheRow(tbody, c, actions);
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

/** Draws the certificates of report `r` into `table`, soonest expiry first (`empty` says there is none). */
export function renderCertificates(table, empty, r) {
  const tbody = table.querySelector('tbody');
  const certs = Array.isArray(r.certificates) ? r.certificates.slice() : [];
  certs.sort((a, b) => (a.days_left ?? Infinity) - (b.days_left ?? Infinity));
  empty.hidden = certs.length > 0;
  table.hidden = certs.length === 0;
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

/** Draws the routes of report `r` into `table` (`empty` says there is none yet). */
export function renderRoutes(table, empty, r) {
  const tbody = table.querySelector('tbody');
  const routes = Array.isArray(r.routes) ? r.routes : [];
  empty.hidden = routes.length > 0;
  table.hidden = routes.length === 0;
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

/**
 * Draws the cluster's boxes of report `r` into `table` (the `panel` hidden without a cluster part): this box's
 * Redis link in `sub`, and in `mismatch` the boxes whose config digest is not the cluster's.
 */
export function renderBoxes(panel, table, sub, mismatch, r) {
  const cluster = r.cluster;
  panel.hidden = !cluster;
  if (!cluster) return;
  const redis = cluster.redis || {};
  const fallbacks = Object.entries(redis.fallbacks || {}).map(([feature, n]) => `${feature} ${count(n)}`).join(', ');
  setText(sub, `${cluster.name} in ${cluster.prefix}: ${redis.up ? 'Redis up' : `Redis DOWN${redis.down_since ? ` since ${ago(redis.down_since)}` : ''}: local fallbacks`}, ${count(redis.outages)} outages${fallbacks ? `, fallbacks: ${fallbacks}` : ''}`);
  sub.className = redis.up ? 'muted' : 'bad-text';
  const boxes = Array.isArray(cluster.boxes) ? cluster.boxes : [];
  const odd = boxes.filter((b) => b.digest_differs).map((b) => b.name);
  mismatch.hidden = odd.length === 0;
  setText(mismatch, odd.length === 0 ? '' : `Config digest differs from the cluster's (${cluster.digest}) on: ${odd.join(', ')}`);
  const rows = boxes.map((b) => {
    const row = el('tr', b.digest_differs ? 'row-bad' : 'row-ok');
    row.append(el('th', 'mono', `${b.name}${b.self ? ' (this)' : ''}`, { scope: 'row' }));
    row.append(el('td', '', b.version || '–'));
    row.append(el('td', `mono ${b.digest_differs ? 'bad-text' : ''}`, `${b.digest || '–'}${b.digest_differs ? ' differs' : ''}`));
    row.append(el('td', 'mono', Array.isArray(b.address) && b.address.length ? b.address.join(' ') : '–'));
    row.append(el('td', 'mono', b.admin || '–'));
    row.append(el('td', '', b.last_seen ? ago(b.last_seen) : 'not yet', { title: date(b.last_seen) }));
    return row;
  });
  table.querySelector('tbody').replaceChildren(...rows);
}
