/**
 * vpopmail's `.qmail-default` and `.qmail-ALIAS` files (dot-qmail(5)), for
 * `yubin import qmail`: forwards, Maildir and mbox deliveries, programs, and
 * the vdelivermail line whose argument is the domain's catch-all. What yubin
 * cannot take over (a program, an mbox file) is reported, never dropped
 * silently.
 */
import { numberedLines, type SourceProblem } from '../../core/source-lines.js';
import type { Catchall } from './store.js';

export type DotQmailLine =
  | { readonly kind: 'forward'; readonly address: string; readonly where: string }
  | { readonly kind: 'maildir'; readonly path: string; readonly where: string }
  | { readonly kind: 'mbox'; readonly path: string; readonly where: string }
  /** `| vdelivermail '' ARG`: vpopmail's own delivery; ARG is what happens to unknown users. */
  | { readonly kind: 'vdelivermail'; readonly fallback: string; readonly where: string }
  | { readonly kind: 'program'; readonly command: string; readonly where: string };

/** The words of a shell command line, with '' and "" quoting (enough for vdelivermail lines). */
function words(command: string): string[] {
  const out: string[] = [];
  for (const m of command.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)) out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
}

export function parseDotQmail(text: string, file: string): { lines: DotQmailLine[]; problems: SourceProblem[] } {
  const lines: DotQmailLine[] = [];
  const problems: SourceProblem[] = [];
  for (const { text: raw, where } of numberedLines(text, file)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('|')) {
      const command = line.slice(1).trim();
      const argv = words(command);
      if (argv[0]?.endsWith('/vdelivermail') || argv[0] === 'vdelivermail') {
        if (argv.length < 3) problems.push({ where, reason: `vdelivermail needs two arguments, got ${JSON.stringify(command)}` });
        else lines.push({ kind: 'vdelivermail', fallback: argv[2]!, where });
      } else lines.push({ kind: 'program', command, where });
      continue;
    }
    if (line.startsWith('/') || line.startsWith('.')) {
      lines.push(line.endsWith('/') ? { kind: 'maildir', path: line, where } : { kind: 'mbox', path: line, where });
      continue;
    }
    const address = line.startsWith('&') ? line.slice(1).trim() : line;
    if (/^[^@\s]+@[^@\s]+$/.test(address)) lines.push({ kind: 'forward', address: address.toLowerCase(), where });
    else problems.push({ where, reason: `${JSON.stringify(line)} is not an address, a file, a Maildir or a program` });
  }
  return { lines, problems };
}

/**
 * A domain's catch-all from its `.qmail-default`: vdelivermail's argument
 * (`bounce-no-mailbox`, `delete`, an address, or a mailbox directory, which
 * `userAt` turns into its user's address), or a plain forward.
 */
export function catchallFrom(lines: readonly DotQmailLine[], domain: string, userAt: (dir: string) => string | undefined): Catchall | SourceProblem {
  const v = lines.find((l) => l.kind === 'vdelivermail');
  if (v && v.kind === 'vdelivermail') {
    const arg = v.fallback;
    if (arg === 'bounce-no-mailbox') return { kind: 'bounce-no-mailbox' };
    if (arg === 'delete') return { kind: 'delete' };
    if (/^[^@\s/]+@[^@\s]+$/.test(arg)) return { kind: 'forward', address: arg.toLowerCase() };
    if (arg.startsWith('/')) {
      const user = userAt(arg.replace(/\/+$/, '').replace(/\/Maildir$/, ''));
      return user ? { kind: 'forward', address: `${user}@${domain}` } : { where: v.where, reason: `the catch-all delivers to ${arg}, which is no mailbox of ${domain}` };
    }
    return { where: v.where, reason: `vdelivermail's argument ${JSON.stringify(arg)} is not bounce-no-mailbox, delete, an address or a mailbox` };
  }
  const forwards = lines.filter((l) => l.kind === 'forward');
  if (forwards.length === 1 && forwards[0]!.kind === 'forward') return { kind: 'forward', address: forwards[0]!.address };
  const first = lines[0];
  return { where: first?.where ?? '.qmail-default', reason: 'a .qmail-default without vdelivermail and not one forward: not a catch-all yubin can hold' };
}
