/**
 * The times a vacation starts and ends, as a person types them (CLI options,
 * a web form's date and datetime-local fields), in the server's time zone
 * unless they name one.
 *
 * - `2026-12-20`: the day. As a start, from its first moment; as an end,
 *   through its last (the vacation ends at the next midnight), so
 *   `--start 2026-12-20 --end 2026-12-31` answers on both days named.
 * - `2026-12-20T09:00`, `2026-12-20 09:00`, with `:SS` or not: that minute.
 * - The same with `Z` or an offset (`+09:00`, `-0500`): that instant.
 * - `now`.
 */

export type Edge = 'start' | 'end';

const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;
const TIME = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?(Z|[+-]\d{2}:?\d{2})?$/i;

/** The parts name a real calendar time (no February 30th, no 24:00), in years a mail server meets. */
function validParts(y: number, mo: number, d: number, h = 0, mi = 0, s = 0): boolean {
  return y >= 1970 && y <= 9999 && mo >= 1 && mo <= 12 && d >= 1 && d <= new Date(Date.UTC(y, mo, 0)).getUTCDate() && h <= 23 && mi <= 59 && s <= 59;
}

/**
 * Milliseconds since the epoch for a start or end as typed, or undefined when
 * the text is none of the forms above.
 */
export function parseWhen(text: string, edge: Edge, now: number = Date.now()): number | undefined {
  const t = text.trim();
  if (t.toLowerCase() === 'now') return now;
  const day = DAY.exec(t);
  if (day) {
    const [y, mo, d] = [Number(day[1]), Number(day[2]), Number(day[3])];
    if (!validParts(y, mo, d)) return undefined;
    // The end of a day is the first moment of the next (by the calendar, not +24 h: DST days differ).
    return new Date(y, mo - 1, edge === 'start' ? d : d + 1).getTime();
  }
  const m = TIME.exec(t);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i] ?? 0)) as [number, number, number, number, number, number];
  if (!validParts(y, mo, d, h, mi, s)) return undefined;
  const zone = m[7];
  // No zone: the server's. A time a DST change skips lands an hour on, as Date puts it.
  if (zone === undefined) return new Date(y, mo - 1, d, h, mi, s).getTime();
  const utc = Date.UTC(y, mo - 1, d, h, mi, s);
  if (zone.toUpperCase() === 'Z') return utc;
  const z = /^([+-])(\d{2}):?(\d{2})$/.exec(zone)!;
  if (Number(z[2]) > 23 || Number(z[3]) > 59) return undefined;
  const offset = (Number(z[2]) * 60 + Number(z[3])) * 60_000;
  return z[1] === '+' ? utc - offset : utc + offset;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** `2026-12-20 09:00` in the server's time zone, with its offset: `2026-12-20 09:00 +09:00`. */
export function formatWhen(ms: number): string {
  const d = new Date(ms);
  const off = -d.getTimezoneOffset();
  const zone = `${off < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())} ${zone}`;
}
