/**
 * Durations and sizes as users write them in a config: `2s`, `500ms`, `1m`, `1h`, `1d`, `1w`, `1y` (365 days); `512KB`, `10MB`, `1GB`.
 * A bare number is seconds for a duration (as in nginx) and bytes for a size. Sizes use powers of 1024.
 */

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?$/;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000, y: 365 * 86_400_000 };

/** Milliseconds for a duration such as `2s` or `500ms`; `undefined` when it is not one. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value * 1000 : undefined;
  const match = DURATION.exec(value.trim());
  if (match === null) return undefined;
  return Math.round(Number(match[1]) * DURATION_MS[match[2] ?? 's']!);
}

const SIZE = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i;
const SIZE_BYTES: Record<string, number> = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** Bytes for a size such as `512KB` or `10MB`; `undefined` when it is not one. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  const match = SIZE.exec(value.trim());
  if (match === null) return undefined;
  const unit = (match[2] ?? 'b').toLowerCase()[0]!;
  return Math.floor(Number(match[1]) * SIZE_BYTES[unit]!);
}
