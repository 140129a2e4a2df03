/**
 * Turns a compiled tcp.smtp.cdb back into rule lines, for a box whose text
 * source was lost (`yubin import qmail` on a box that kept only the cdb).
 *
 * tcprules writes one record per address key, in file order, ranges already
 * expanded (`10.0.0.1-3` is three keys); the data is NUL-terminated items:
 * `D` for deny, `+VAR=value` for each variable, nothing else for a bare allow.
 * tcpserver takes the first record of a key, so later ones are left out.
 */
import { cdbRecords } from '../../core/cdb.js';

export interface DecodedRules {
  /** tcp.smtp text, one line per key, in the cdb's order. */
  readonly text: string;
  readonly rules: number;
  /** Records that are not rules yubin can hold, with the reason (ident rules, unknown items). */
  readonly skipped: ReadonlyArray<{ readonly key: string; readonly reason: string }>;
}

/** Quote characters tried in turn: tcprules takes whatever follows '=' as the quote. */
const QUOTES = ['"', "'", '/', '|', '#', '%', '!'];

function quoted(value: string): string | undefined {
  const q = QUOTES.find((c) => !value.includes(c));
  return q === undefined ? undefined : `${q}${value}${q}`;
}

export function rulesFromCdb(buf: Buffer): DecodedRules {
  const lines: string[] = [];
  const skipped: Array<{ key: string; reason: string }> = [];
  const seen = new Set<string>();
  for (const { key: rawKey, data } of cdbRecords(buf)) {
    const key = rawKey.toString('latin1');
    if (seen.has(key)) continue;
    seen.add(key);
    if (key.includes('@')) {
      skipped.push({ key, reason: 'an ident rule (user@address): yubin does no RFC 1413 lookups' });
      continue;
    }
    let deny = false;
    const vars: string[] = [];
    let problem: string | undefined;
    for (const item of data.toString('latin1').split('\0').slice(0, -1)) {
      if (item === 'D') deny = true;
      else if (item.startsWith('+') && item.indexOf('=') > 1) {
        const eq = item.indexOf('=');
        const value = quoted(item.slice(eq + 1));
        if (value === undefined) problem = `the value of ${item.slice(1, eq)} holds every quote character`;
        else vars.push(`${item.slice(1, eq)}=${value}`);
      } else problem = `unknown item ${JSON.stringify(item)}`;
    }
    if (problem) {
      skipped.push({ key, reason: problem });
      continue;
    }
    lines.push(deny ? `${key}:deny` : [`${key}:allow`, ...vars].join(','));
  }
  const header = '# Rebuilt by yubin from a compiled tcp.smtp.cdb: the original comments and order are not in it.\n';
  return { text: header + lines.map((l) => `${l}\n`).join(''), rules: lines.length, skipped };
}
