/**
 * vpopmail's domain limits (`DOMAIN/.qmailadmin-limits`, or
 * `~vpopmail/etc/vlimits.default` for every domain without one), for
 * `yubin import qmail`. Lines are `name: value`; vmoddomlimits writes them.
 * What yubin has a meaning for comes out as values; every other key is
 * returned by name so the report can say it was not carried over.
 */
import { numberedLines, type SourceProblem } from '../../core/source-lines.js';
import type { UserFlag } from './store.js';

/** vlimits' disable_* keys that are one of vpopmail's user flags, applied to every user of the domain. */
const DISABLE_FLAGS: Record<string, UserFlag> = {
  disable_pop: 'noPop',
  disable_imap: 'noImap',
  disable_webmail: 'noWebmail',
  disable_passwordchanging: 'noPasswordChange',
  disable_relay: 'noRelay',
  disable_smtp: 'noSmtp',
};

export interface DomainLimits {
  /** default_quota (bytes) and default_maxmsgcount as a Maildir++ quota string; undefined: not set. */
  readonly defaultQuota: string | undefined;
  /** Flags every user of the domain gets. */
  readonly flags: readonly UserFlag[];
  /** Keys set to something yubin does not enforce, with their values. */
  readonly unmapped: ReadonlyArray<{ readonly key: string; readonly value: string; readonly where: string }>;
  readonly problems: readonly SourceProblem[];
}

export function parseVlimits(text: string, file: string): DomainLimits {
  const values = new Map<string, { value: string; where: string }>();
  const problems: SourceProblem[] = [];
  for (const { text: raw, where } of numberedLines(text, file)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-z_]+)\s*:\s*(.*)$/i.exec(line);
    if (!m) problems.push({ where, reason: `${JSON.stringify(raw)} is not name: value` });
    else values.set(m[1]!.toLowerCase(), { value: m[2]!.trim(), where });
  }
  const number = (key: string): number | undefined => {
    const v = values.get(key);
    if (!v || v.value === '' || v.value === '0' || v.value === '-1') return undefined;
    if (/^\d+$/.test(v.value)) return Number(v.value);
    problems.push({ where: v.where, reason: `${key} ${JSON.stringify(v.value)} is not a number` });
    return undefined;
  };
  const bytes = number('default_quota');
  const count = number('default_maxmsgcount');
  const parts = [bytes === undefined ? '' : `${bytes}S`, count === undefined ? '' : `${count}C`].filter(Boolean);
  const flags: UserFlag[] = [];
  const unmapped: Array<{ key: string; value: string; where: string }> = [];
  for (const [key, { value, where }] of values) {
    if (key === 'default_quota' || key === 'default_maxmsgcount') continue;
    const flag = DISABLE_FLAGS[key];
    if (flag) {
      if (value !== '' && value !== '0') flags.push(flag);
      continue;
    }
    // Zero, -1 and empty are vpopmail's "no limit" / "not set": nothing lost by leaving them out.
    if (value !== '' && value !== '0' && value !== '-1') unmapped.push({ key, value, where });
  }
  return { defaultQuota: parts.length ? parts.join(',') : undefined, flags, unmapped, problems };
}
