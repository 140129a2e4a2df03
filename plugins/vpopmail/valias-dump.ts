/**
 * The `valias` table of vpopmail's MySQL backend, from a dump file
 * (`mysqldump vpopmail valias > valias.sql`), for `yubin import qmail`. Each
 * row is (alias, domain, valias_line); the line means what it would in a
 * `.qmail-ALIAS` file. Rows are read from INSERT statements, with or without
 * a column list; anything else in the dump is ignored.
 */
import { numberedLines, type SourceProblem } from '../../core/source-lines.js';

export interface ValiasRow {
  readonly alias: string;
  readonly domain: string;
  readonly line: string;
  readonly where: string;
}

/** One SQL value: a quoted string ('' and backslash escapes) or a bare word (NULL, a number). */
const VALUE = /\s*(?:'((?:[^'\\]|\\.|'')*)'|([^,)\s]+))\s*/y;

function unescape(s: string): string {
  return s.replace(/''/g, "'").replace(/\\(.)/g, (_, c: string) => ({ n: '\n', r: '\r', t: '\t', '0': '\0' })[c] ?? c);
}

/** The tuples after VALUES, each a list of values; undefined where the syntax is not what mysqldump writes. */
function tuples(text: string, start: number): string[][] | undefined {
  const out: string[][] = [];
  let i = start;
  for (;;) {
    while (/\s/.test(text[i] ?? '')) i++;
    if (text[i] !== '(') return undefined;
    i++;
    const row: string[] = [];
    for (;;) {
      VALUE.lastIndex = i;
      const m = VALUE.exec(text);
      if (!m) return undefined;
      row.push(m[1] !== undefined ? unescape(m[1]) : m[2]!);
      i = VALUE.lastIndex;
      if (text[i] === ',') i++;
      else if (text[i] === ')') break;
      else return undefined;
    }
    out.push(row);
    i++;
    while (/\s/.test(text[i] ?? '')) i++;
    if (text[i] === ',') i++;
    else if (text[i] === ';' || i >= text.length) return out;
    else return undefined;
  }
}

export function parseValiasDump(text: string, file: string): { rows: ValiasRow[]; problems: SourceProblem[] } {
  const rows: ValiasRow[] = [];
  const problems: SourceProblem[] = [];
  for (const { text: line, where } of numberedLines(text, file)) {
    const m = /^\s*INSERT\s+INTO\s+`?valias`?\s*(?:\(([^)]*)\))?\s*VALUES\s*/i.exec(line);
    if (!m) continue;
    const columns = m[1] ? m[1].split(',').map((c) => c.trim().replace(/`/g, '').toLowerCase()) : ['alias', 'domain', 'valias_line'];
    const at = (name: string) => columns.indexOf(name);
    if (at('alias') < 0 || at('domain') < 0 || at('valias_line') < 0) {
      problems.push({ where, reason: `columns ${columns.join(', ')}: expected alias, domain and valias_line` });
      continue;
    }
    const found = tuples(line, m[0].length);
    if (!found) {
      problems.push({ where, reason: 'an INSERT whose values could not be read' });
      continue;
    }
    for (const row of found) {
      if (row.length !== columns.length) {
        problems.push({ where, reason: `a row of ${row.length} values for ${columns.length} columns` });
        continue;
      }
      rows.push({ alias: row[at('alias')]!.toLowerCase(), domain: row[at('domain')]!.toLowerCase(), line: row[at('valias_line')]!, where });
    }
  }
  return { rows, problems };
}
