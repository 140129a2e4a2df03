/** rblsmtpd's pure parts: the RBLSMTPD variable, reply texts, postscreen-style code filters. */

/** What an RBLSMTPD value from tcprules means: '' = skip the lookups, `-text` = 553, other text = 451. */
export function fromVariable(value: string): { kind: 'skip' } | { kind: 'refuse'; code: 451 | 553; text: string } {
  if (value === '') return { kind: 'skip' };
  if (value.startsWith('-')) return { kind: 'refuse', code: 553, text: cleanText(value.slice(1)) };
  return { kind: 'refuse', code: 451, text: cleanText(value) };
}

/** As rblsmtpd: at most 200 characters, and every byte outside 32..126 becomes `?`. */
export function cleanText(text: string): string {
  return text.slice(0, 200).replace(/[^\x20-\x7e]/g, '?');
}

/**
 * A filter on the 127.x.y.z codes a zone returns, in postscreen's syntax:
 * four dot-separated octets, each a number or a bracketed list of numbers and
 * `a..b` ranges separated by `;` (`127.0.0.[2..11]`, `127.0.[0;1].[2;4..6]`).
 */
export type CodeFilter = (code: string) => boolean;

const OCTET = String.raw`(\d{1,3}|\[[0-9.;]+\])`;
const FILTER = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

function octetMatcher(spec: string): ((n: number) => boolean) | string {
  const items = spec.startsWith('[') ? spec.slice(1, -1).split(';') : [spec];
  const ranges: Array<[number, number]> = [];
  for (const item of items) {
    const m = /^(\d{1,3})(?:\.\.(\d{1,3}))?$/.exec(item);
    if (!m) return `bad octet "${item}"`;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo > 255 || hi > 255 || lo > hi) return `bad octet range "${item}"`;
    ranges.push([lo, hi]);
  }
  return (n) => ranges.some(([lo, hi]) => n >= lo && n <= hi);
}

/** Parses a filter; returns an error text when it does not parse. */
export function parseCodeFilter(pattern: string): CodeFilter | string {
  const m = FILTER.exec(pattern);
  if (!m) return `not a code filter like 127.0.0.[2..11]: ${pattern}`;
  const octets: Array<(n: number) => boolean> = [];
  for (const spec of m.slice(1, 5)) {
    const o = octetMatcher(spec!);
    if (typeof o === 'string') return `${pattern}: ${o}`;
    octets.push(o);
  }
  return (code) => {
    const parts = code.split('.');
    return parts.length === 4 && parts.every((p, i) => /^\d{1,3}$/.test(p) && octets[i]!(Number(p)));
  };
}
