/** Sizes and durations as people write them in a config file: `25M`, `512k`, `30s`, `5m`. */

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, '': 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** Bytes from a number or a string like `25M`; undefined when malformed. */
export function parseSize(value: number | string): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m && SIZE_UNITS[m[2]!.toLowerCase()];
  if (!m || unit == null) return undefined;
  return Math.round(Number(m[1]) * unit);
}

/** Milliseconds from a number of seconds or a string like `30s`, `5m`, `250ms`; undefined when malformed. */
export function parseDuration(value: number | string): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value * 1000) : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m && DURATION_UNITS[m[2]!.toLowerCase()];
  if (!m || unit == null) return undefined;
  return Math.round(Number(m[1]) * unit);
}
