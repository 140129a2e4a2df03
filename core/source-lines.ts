/**
 * Line-based input files read for someone (a qmail box being imported, rule
 * files): each line with the place to name in a report, and the report's shape.
 */

/** Something wrong in an input, at `file:line` (or `file[key]` for a cdb record). */
export interface SourceProblem {
  readonly where: string;
  readonly reason: string;
}

export interface SourceLine {
  /** The line without its line end (LF or CRLF). */
  readonly text: string;
  /** `file:line`, counted from 1. */
  readonly where: string;
}

export function numberedLines(text: string, file: string): SourceLine[] {
  return text.split('\n').map((raw, i) => ({ text: raw.replace(/\r$/, ''), where: `${file}:${i + 1}` }));
}
