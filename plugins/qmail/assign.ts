/**
 * qmail's users/assign (qmail-users(5)), for `yubin import qmail`: where
 * vpopmail's domains live. vadddomain adds `+domain-:domain:uid:gid:dir:-::`
 * for each domain; `=user:...` lines are single users. The file ends with a
 * line holding a single dot.
 */
import { numberedLines, type SourceProblem } from '../../core/source-lines.js';

export interface AssignEntry {
  /** `+` a prefix (wildcard) assignment, `=` one exact local part. */
  readonly kind: '+' | '=';
  /** The address part as written: `example.jp-` for a vpopmail domain. */
  readonly address: string;
  /** qmail-users' user field (vadddomain writes the domain's name there). */
  readonly user: string;
  readonly uid: number;
  readonly gid: number;
  /** The home directory: a vpopmail domain's directory. */
  readonly dir: string;
  readonly where: string;
}

export function readAssign(text: string, file: string): { entries: AssignEntry[]; problems: SourceProblem[] } {
  const entries: AssignEntry[] = [];
  const problems: SourceProblem[] = [];
  let ended = false;
  for (const { text: line, where } of numberedLines(text, file)) {
    if (line === '.') {
      ended = true;
      break;
    }
    if (line === '') continue;
    const kind = line[0];
    if (kind !== '+' && kind !== '=') {
      problems.push({ where, reason: `expected a line starting with + or =, got ${JSON.stringify(line)}` });
      continue;
    }
    // +address:user:uid:gid:dir:dash:ext:   (=address has no dash/ext meaning, same fields)
    const f = line.slice(1).split(':');
    if (f.length < 5 || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!) || !f[4]!.startsWith('/')) {
      problems.push({ where, reason: `expected ${kind}address:user:uid:gid:/dir:..., got ${JSON.stringify(line)}` });
      continue;
    }
    entries.push({ kind, address: f[0]!.toLowerCase(), user: f[1]!, uid: Number(f[2]), gid: Number(f[3]), dir: f[4]!, where });
  }
  if (!ended) problems.push({ where: file, reason: 'no final line with a single dot: qmail-newu refuses such a file, so it may be cut short' });
  return { entries, problems };
}

/** A vpopmail domain's directory by domain, from the `+domain-` entries. */
export function domainDirs(entries: readonly AssignEntry[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of entries) if (e.kind === '+' && e.address.endsWith('-')) out.set(e.address.slice(0, -1), e.dir);
  return out;
}
