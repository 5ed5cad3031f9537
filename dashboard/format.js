/* Portico's dashboard: how numbers, sizes, durations and times read. */

/** A count with thousands grouped; – when absent. */
export function count(n) {
  return typeof n === 'number' && Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–';
}

/** A latency in milliseconds (`0.84 ms`, `12.3 ms`, `1.53 s`). */
export function ms(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  if (n >= 1000) return `${(n / 1000).toFixed(n >= 10000 ? 0 : 2)} s`;
  if (n >= 100) return `${Math.round(n)} ms`;
  if (n >= 10) return `${n.toFixed(1)} ms`;
  return `${n.toFixed(2)} ms`;
}

/** Requests per second. */
export function rate(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1);
}

/** A byte count (`46 MiB`). */
export function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** A ratio as a percentage. */
export function percent(ratio) {
  return typeof ratio === 'number' && Number.isFinite(ratio) ? `${(ratio * 100).toFixed(1)}%` : '–';
}

/** Seconds as `3m 12s`, `5h 8m`, `2d 3h`. */
export function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** How long ago an ISO time was. */
export function ago(iso) {
  const at = typeof iso === 'string' ? Date.parse(iso) : NaN;
  return Number.isNaN(at) ? '–' : `${duration((Date.now() - at) / 1000)} ago`;
}

/** An ISO time as `2026-12-06 04:16 UTC`. */
export function date(iso) {
  const at = typeof iso === 'string' ? new Date(iso) : null;
  return at && !Number.isNaN(at.getTime()) ? at.toISOString().slice(0, 16).replace('T', ' ') + ' UTC' : '–';
}

/** A job's id as shown: a UUID's first 8 characters are enough to tell jobs apart on one page. */
export function shortId(id) {
  const text = String(id);
  return text.length > 12 ? text.slice(0, 8) : text;
}
