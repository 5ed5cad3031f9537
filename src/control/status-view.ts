/**
 * `portico status` as a person reads it: the process's lines (version, config, listeners, operation, workers,
 * instances), the cluster's boxes (a box of a cluster), then tables of upstream servers, routes, cache zones and
 * certificates from the `StatusReport` (see admin-types.ts). Pure: the caller says whether to colour and what time it is. Every field is read defensively,
 * since an older Portico answers `status` with fewer fields: a missing table is left out, a missing cell is `-`.
 */
import { displayPath } from '../config/load.js';

/** An ANSI colour `paint` knows. */
export type Colour = 'green' | 'red' | 'yellow' | 'cyan' | 'dim' | 'bold';

const OPEN: Record<Colour, number> = { green: 32, red: 31, yellow: 33, cyan: 36, dim: 2, bold: 1 };
const CLOSE: Record<Colour, number> = { green: 39, red: 39, yellow: 39, cyan: 39, dim: 22, bold: 22 };

/** Paints `text` in `colour` (ANSI) when `on`. */
export function paint(on: boolean, colour: Colour, text: string): string {
  return on ? `\x1b[${OPEN[colour]}m${text}\x1b[${CLOSE[colour]}m` : text;
}

/** `3m 12s` for 192 seconds. */
export function duration(seconds: number): string {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  return [d > 0 ? `${d}d` : '', h > 0 ? `${h}h` : '', m > 0 ? `${m}m` : '', `${s}s`].filter((part) => part !== '').join(' ');
}

/** One cell: its text, how it aligns, and an optional colour (applied after padding, so columns stay aligned). */
interface Cell {
  text: string;
  colour?: Colour | undefined;
}

/** A column: its header and whether numbers line up on the right. */
interface Column {
  title: string;
  right?: boolean;
}

/** A table as lines: a header (bold on a terminal), then one line a row, columns two spaces apart. */
function table(colour: boolean, columns: Column[], rows: Cell[][]): string[] {
  const widths = columns.map((c, i) => Math.max(c.title.length, ...rows.map((r) => r[i]?.text.length ?? 0)));
  const line = (cells: Cell[]) =>
    cells
      .map((cell, i) => {
        const pad = ' '.repeat(widths[i]! - cell.text.length);
        const text = cell.colour === undefined ? cell.text : paint(colour, cell.colour, cell.text);
        // The last column is not padded on the right (no trailing blanks).
        return columns[i]!.right === true ? pad + text : i === cells.length - 1 ? text : text + pad;
      })
      .join('  ');
  return [paint(colour, 'bold', line(columns.map((c) => ({ text: c.title }))).trimEnd()), ...rows.map(line)];
}

/** A record's field as an object, or undefined. */
function obj(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** A field as an array of records (anything else: empty). */
function list(value: unknown): Array<Record<string, unknown>> {
  return Array.isArray(value) ? value.map((v) => obj(v) ?? {}) : [];
}

/** A number field, or undefined. */
function num(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** A string field, or `-`. */
function str(value: unknown): string {
  return typeof value === 'string' && value !== '' ? value : '-';
}

/** A count with thousands grouped (`12,345`), `-` when absent. */
function count(value: unknown): string {
  const n = num(value);
  return n === undefined ? '-' : Math.round(n).toLocaleString('en-US');
}

/** A latency in milliseconds as `0.8ms`, `12ms`, `1.2s`; `-` when absent or null (no request yet). */
export function millis(value: unknown): string {
  const n = num(value);
  if (n === undefined) return '-';
  if (n >= 1000) return `${(n / 1000).toFixed(n >= 10_000 ? 0 : 1)}s`;
  return n < 10 ? `${Number(n.toFixed(1))}ms` : `${Math.round(n)}ms`;
}

/** A byte count as `512 B`, `1.5 KiB`, `12 MiB`. */
function bytes(value: unknown): string {
  const n = num(value);
  if (n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** How a server's state is coloured: green up, yellow on its way out or cooling off, red out, dim switched off. */
const STATE_COLOUR: Record<string, Colour> = { healthy: 'green', draining: 'yellow', ejected: 'yellow', unhealthy: 'red', down: 'red', disabled: 'dim' };

/** A spawned instance as `status` reports it (the Supervisor's slot status). */
interface InstanceLine {
  slot: string;
  state: string;
  pid?: number;
  port?: number;
  restarts: number;
  recentCrashes?: number;
}

/** An instance's state as status prints it: a slot left down by a crash loop says so, and what starts it again. */
function stateText(i: InstanceLine): string {
  if (i.state !== 'failed') return i.state;
  return `failed: crash loop (${i.recentCrashes ?? '?'} crashes within a minute), not restarted until a deploy or a reload`;
}

/** The process's own lines (what `status` printed before the tables existed). */
function processLines(result: Record<string, unknown>, colour: boolean): string[] {
  const listeners = list(result.listeners);
  const running = obj(result.running);
  const queued = num(result.queued) ?? 0;
  const now = running
    ? `${str(running.operation)} #${String(running.id)} for ${Math.round((num(running.for_ms) ?? 0) / 1000)} s${queued > 0 ? `, ${queued} queued` : ''}`
    : 'idle';
  const connections = obj(result.connections);
  const workers = Array.isArray(result.workers) ? list(result.workers) : undefined;
  return [
    `portico ${String(result.version)}: pid ${String(result.pid)}, up ${duration(num(result.uptime_s) ?? 0)}`,
    `config    ${typeof result.config === 'string' ? displayPath(result.config) : '-'}${typeof result.config_digest === 'string' ? ` (${result.config_digest})` : ''}`,
    `listen    ${listeners.map((l) => str(l.url)).join(' ')}`,
    ...(typeof result.admin === 'string' ? [`admin     ${result.admin}`] : []),
    `state     ${typeof result.state_dir === 'string' ? displayPath(result.state_dir) : '-'}`,
    `control   ${typeof result.control_socket === 'string' ? displayPath(result.control_socket) : '-'}`,
    `operation ${now}`,
    ...(connections ? [`open      ${count(connections.open)} connections, ${count(connections.streams)} HTTP/2 streams`] : []),
    // With `workers: N`: this is the primary; the workers serve.
    ...(workers
      ? [
          `workers   ${workers
            .map((w) => `${String(w.slot)}: ${num(w.pid) === undefined ? 'starting' : `pid ${String(w.pid)}`}${w.answered === false ? ` ${paint(colour, 'red', '(no answer)')}` : ''}`)
            .join(', ')}`,
        ]
      : []),
    ...(list(result.instances) as unknown as InstanceLine[]).map(
      (i) =>
        `instance  ${i.slot} ${stateText(i)}${i.pid === undefined ? '' : ` pid ${i.pid}`}${i.port === undefined ? '' : ` port ${i.port}`}${(i.restarts ?? 0) > 0 ? `, ${i.restarts} restarts` : ''}`,
    ),
  ];
}

/** The 5xx count of a traffic figure, red on a terminal when not zero. */
function errorsCell(classes: Record<string, unknown> | undefined, key: '4xx' | '5xx'): Cell {
  const n = num(classes?.[key]);
  return { text: count(n), colour: key === '5xx' && n !== undefined && n > 0 ? 'red' : undefined };
}

/** How long ago an ISO time was, as `3s ago`. */
function ago(iso: unknown, now: number): string {
  const at = typeof iso === 'string' ? Date.parse(iso) : NaN;
  if (Number.isNaN(at)) return '-';
  return `${duration(Math.max(0, Math.round((now - at) / 1000)))} ago`;
}

/** The upstream servers' table. */
function serverTable(result: Record<string, unknown>, colour: boolean, now: number): string[] {
  const rows: Cell[][] = [];
  for (const upstream of list(result.upstreams)) {
    for (const server of list(upstream.servers)) {
      const state = str(server.state);
      const check = obj(server.last_check);
      const weight = num(server.weight);
      const configured = num(server.configured_weight);
      const latency = obj(server.latency_ms);
      rows.push([
        { text: str(upstream.name) },
        { text: str(server.id) },
        { text: str(server.address) + (server.discovered === true ? ' (dns)' : '') + protocolNote(server.protocol) },
        { text: state + (server.backup === true ? ' (backup)' : ''), colour: STATE_COLOUR[state] },
        { text: weight === undefined ? '-' : `${weight}${configured !== undefined && configured !== weight ? ` (${configured})` : ''}` },
        { text: count(server.in_flight) },
        { text: count(server.requests) },
        errorsCell(obj(server.classes), '5xx'),
        { text: count(server.failures) },
        { text: millis(latency?.p50) },
        { text: millis(latency?.p99) },
        check ? { text: `${check.ok === true ? 'ok' : 'failed'} ${ago(check.at, now)}`, colour: check.ok === true ? undefined : 'red' } : { text: '-' },
      ]);
    }
  }
  if (rows.length === 0) return [];
  const columns: Column[] = [
    { title: 'UPSTREAM' },
    { title: 'SERVER' },
    { title: 'ADDRESS' },
    { title: 'STATE' },
    { title: 'WEIGHT', right: true },
    { title: 'IN FLIGHT', right: true },
    { title: 'REQUESTS', right: true },
    { title: '5XX', right: true },
    { title: 'FAILS', right: true },
    { title: 'P50', right: true },
    { title: 'P99', right: true },
    { title: 'LAST CHECK' },
  ];
  return ['', ...table(colour, columns, rows)];
}

/** The routes' table, with the totals as its last row. */
function routeTable(result: Record<string, unknown>, colour: boolean): string[] {
  const row = (id: string, handler: string, figures: Record<string, unknown>): Cell[] => {
    const classes = obj(figures.classes);
    const latency = obj(figures.latency_ms);
    return [
      { text: id },
      { text: handler },
      { text: count(figures.requests) },
      { text: count(classes?.['2xx']) },
      { text: count(classes?.['3xx']) },
      errorsCell(classes, '4xx'),
      errorsCell(classes, '5xx'),
      { text: millis(latency?.p50) },
      { text: millis(latency?.p99) },
    ];
  };
  const rows = list(result.routes).map((r) => row(str(r.id), str(r.handler), r));
  if (rows.length === 0) return [];
  const columns: Column[] = [
    { title: 'ROUTE' },
    { title: 'HANDLER' },
    { title: 'REQUESTS', right: true },
    { title: '2XX', right: true },
    { title: '3XX', right: true },
    { title: '4XX', right: true },
    { title: '5XX', right: true },
    { title: 'P50', right: true },
    { title: 'P99', right: true },
  ];
  return ['', ...table(colour, columns, rows)];
}

/** An HTTP/2 server's protocol beside its address, when the address does not say it (`h2c://` does). */
function protocolNote(protocol: unknown): string {
  return typeof protocol === 'string' && protocol !== 'h2c' ? ` (${protocol})` : '';
}

/** gRPC calls by route: how many, how many ended OK, and each status seen (`0:12 14:1`); none: no table. */
function grpcTable(result: Record<string, unknown>, colour: boolean): string[] {
  const rows: Cell[][] = [];
  for (const route of list(result.routes)) {
    const grpc = obj(route.grpc);
    if (grpc === undefined) continue;
    const counts = Object.entries(grpc).map(([status, n]) => [status, num(n) ?? 0] as const);
    const calls = counts.reduce((sum, [, n]) => sum + n, 0);
    const ok = counts.find(([status]) => status === '0')?.[1] ?? 0;
    rows.push([
      { text: str(route.id) },
      { text: count(calls) },
      { text: count(ok) },
      { text: count(calls - ok), colour: calls > ok ? 'red' : undefined },
      { text: counts.map(([status, n]) => `${status}:${n}`).join(' ') },
    ]);
  }
  if (rows.length === 0) return [];
  const columns: Column[] = [{ title: 'GRPC ROUTE' }, { title: 'CALLS', right: true }, { title: 'OK', right: true }, { title: 'NOT OK', right: true }, { title: 'BY GRPC-STATUS' }];
  return ['', ...table(colour, columns, rows)];
}

/** The cache zones' table. */
function cacheTable(result: Record<string, unknown>, colour: boolean): string[] {
  const rows = list(result.caches).map((c): Cell[] => {
    const ratio = num(c.hit_ratio);
    return [
      { text: str(c.zone) },
      { text: count(c.entries) },
      { text: bytes(c.bytes) },
      { text: count(c.hits) },
      { text: count(c.misses) },
      { text: count(c.stale) },
      { text: ratio === undefined ? '-' : `${(ratio * 100).toFixed(1)}%` },
    ];
  });
  if (rows.length === 0) return [];
  const columns: Column[] = [
    { title: 'CACHE' },
    { title: 'ENTRIES', right: true },
    { title: 'SIZE', right: true },
    { title: 'HITS', right: true },
    { title: 'MISSES', right: true },
    { title: 'STALE', right: true },
    { title: 'HIT RATIO', right: true },
  ];
  return ['', ...table(colour, columns, rows)];
}

/** The certificates' table: days left red under a week, yellow under a month. */
function certificateTable(result: Record<string, unknown>, colour: boolean): string[] {
  const rows = list(result.certificates).map((c): Cell[] => {
    const days = num(c.days_left);
    const hosts = Array.isArray(c.hosts) ? c.hosts.map(String).join(' ') : '-';
    const error = typeof c.last_renewal_error === 'string' && c.last_renewal_error !== '' ? c.last_renewal_error : undefined;
    return [
      { text: hosts === '' ? '-' : hosts },
      { text: str(c.source) },
      { text: typeof c.not_after === 'string' ? c.not_after.slice(0, 10) : '-' },
      { text: days === undefined ? '-' : String(Math.floor(days)), colour: days === undefined ? undefined : days < 7 ? 'red' : days < 30 ? 'yellow' : 'green' },
      error ? { text: `error: ${error}`, colour: 'red' } : { text: typeof c.last_renewal === 'string' ? `renewed ${c.last_renewal.slice(0, 10)}` : '-' },
    ];
  });
  if (rows.length === 0) return [];
  const columns: Column[] = [{ title: 'CERTIFICATE' }, { title: 'SOURCE' }, { title: 'EXPIRES' }, { title: 'DAYS LEFT', right: true }, { title: 'RENEWAL' }];
  return ['', ...table(colour, columns, rows)];
}

/**
 * The cluster's lines (a box of a cluster): this box, its Redis link, a warning when a box's config digest differs,
 * then the boxes' table.
 */
function clusterLines(result: Record<string, unknown>, colour: boolean, now: number): string[] {
  const cluster = obj(result.cluster);
  if (!cluster) return [];
  const redis = obj(cluster.redis) ?? {};
  const fallbacks = Object.entries(obj(redis.fallbacks) ?? {})
    .map(([feature, n]) => `${feature} ${count(n)}`)
    .join(', ');
  const link =
    redis.up === true
      ? paint(colour, 'green', 'Redis up')
      : paint(colour, 'red', `Redis DOWN${typeof redis.down_since === 'string' ? ` since ${ago(redis.down_since, now)}` : ''}: local fallbacks`);
  const boxes = list(cluster.boxes);
  const odd = boxes.filter((b) => b.digest_differs === true).map((b) => str(b.name));
  const otherSecret = boxes.filter((b) => b.secret_differs === true).map((b) => str(b.name));
  const lines = [
    `cluster   ${str(cluster.name)} in ${str(cluster.prefix)}: ${link}, ${count(redis.outages)} outages${fallbacks === '' ? '' : `, fallbacks: ${fallbacks}`}`,
    ...(cluster.digest_differs === true
      ? [paint(colour, 'red', `MISMATCH  config digest differs from the cluster's (${str(cluster.digest)}) on: ${odd.join(', ')}`)]
      : []),
    ...(cluster.secret_differs === true
      ? [paint(colour, 'red', `MISMATCH  cluster secret (key_env) differs from most boxes' on: ${otherSecret.join(', ')} (sealed keys, sticky cookies and TLS tickets do not carry across)`)]
      : []),
  ];
  if (boxes.length === 0) return lines;
  const rows = boxes.map((b): Cell[] => [
    { text: `${str(b.name)}${b.self === true ? ' (this)' : ''}${b.secret_differs === true ? ' OTHER SECRET' : ''}`, colour: b.secret_differs === true ? 'red' : undefined },
    { text: str(b.version) },
    { text: `${str(b.digest)}${b.digest_differs === true ? ' DIFFERS' : ''}`, colour: b.digest_differs === true ? 'red' : undefined },
    { text: Array.isArray(b.address) && b.address.length > 0 ? b.address.map(String).join(' ') : '-' },
    { text: str(b.admin) },
    { text: b.last_seen === null ? 'not yet' : ago(b.last_seen, now) },
  ]);
  const columns: Column[] = [{ title: 'BOX' }, { title: 'VERSION' }, { title: 'DIGEST' }, { title: 'ADDRESS' }, { title: 'ADMIN' }, { title: 'LAST SEEN' }];
  return [...lines, '', ...table(colour, columns, rows)];
}

/** A whole-traffic summary line from `totals`, when the report counts traffic. */
function totalsLines(result: Record<string, unknown>): string[] {
  const totals = obj(result.totals);
  if (!totals) return [];
  const classes = obj(totals.classes);
  const counting = result.counting === false ? ' (not counted: the config has no admin section)' : '';
  const byClass = (['2xx', '3xx', '4xx', '5xx'] as const).map((k) => `${k} ${count(classes?.[k])}`).join(', ');
  return [`traffic   ${count(totals.requests)} requests (${byClass})${counting}`];
}

/** `portico status` as lines: the process, then servers, routes, caches and certificates as tables. */
export function statusLines(result: Record<string, unknown>, options: { colour: boolean; now?: number }): string[] {
  const { colour } = options;
  const now = options.now ?? Date.now();
  return [
    ...processLines(result, colour),
    ...totalsLines(result),
    ...clusterLines(result, colour, now),
    ...serverTable(result, colour, now),
    ...routeTable(result, colour),
    ...grpcTable(result, colour),
    ...cacheTable(result, colour),
    ...certificateTable(result, colour),
  ];
}
