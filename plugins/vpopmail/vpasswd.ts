/**
 * Reads a vpopmail domain's `vpasswd` (text) or `vpasswd.cdb`, for
 * `yubin import qmail`. A line is
 * `name:crypted:pwflag:gidflags:gecos:homedir:quota[:clearpass]`; the cdb
 * holds the same line under the key `name`, without `name:` (vpopmail's
 * make_vpasswd_cdb). Hashes are kept exactly as they are. A malformed line
 * is reported with its place and skipped, never guessed at.
 */
import { cdbRecords } from '../../core/cdb.js';
import { numberedLines, type SourceProblem } from '../../core/source-lines.js';
import { validUserName } from './names.js';
import { hashScheme, type HashScheme } from './passwords.js';
import { parseQuota } from './quota.js';
import { flagsFromBits, USER_FLAG_BITS, type UserFlags } from './store.js';

export interface VpasswdEntry {
  /** Local part, as vpopmail keeps it (lower case). */
  readonly name: string;
  /** The crypted password field, unchanged. */
  readonly hash: string;
  readonly scheme: HashScheme;
  /** Field 3: 1 normal, 2 APOP. */
  readonly pwflag: number;
  /** Field 4, the gid flags bit mask, whole. */
  readonly gidFlags: number;
  /** The flags yubin has a meaning for. */
  readonly flags: UserFlags;
  /** Bits of gidFlags yubin has no meaning for (V_USER0-3, NO_SPAMASSASSIN, ...). */
  readonly otherBits: number;
  readonly gecos: string;
  readonly homedir: string;
  /** `NOQUOTA` or a Maildir++ quota string, as written. */
  readonly quota: string;
  /** Field 8, the clear-text password, when vpopmail kept one. */
  readonly clear: string | undefined;
  /** `file:line`, or `file[key]` for a cdb record. */
  readonly where: string;
}

export interface VpasswdRead {
  readonly entries: readonly VpasswdEntry[];
  readonly problems: readonly SourceProblem[];
}

const KNOWN_BITS = Object.values(USER_FLAG_BITS).reduce((a, b) => a | b, 0);

/** One record: the name and the fields after it; a problem in words, or the entry. */
function entry(name: string, rest: string, where: string): VpasswdEntry | string {
  const f = rest.split(':');
  if (f.length < 6) return `expected name:crypted:pwflag:gidflags:gecos:homedir:quota[:clearpass], got ${f.length + 1} fields`;
  if (f.length > 7) return `${f.length + 1} fields: more than vpopmail writes (a ':' in the gecos or clear password?)`;
  const [hash, pw, gid, gecos, homedir, quota, clear] = f as [string, string, string, string, string, string, string | undefined];
  if (!validUserName(name)) return `bad user name ${JSON.stringify(name)}`;
  if (!/^\d+$/.test(pw)) return `pwflag ${JSON.stringify(pw)} is not a number`;
  if (!/^\d+$/.test(gid)) return `gid flags ${JSON.stringify(gid)} are not a number`;
  if (!homedir.startsWith('/')) return `home directory ${JSON.stringify(homedir)} is not an absolute path`;
  if (quota !== 'NOQUOTA' && quota !== '' && !parseQuota(quota)) return `quota ${JSON.stringify(quota)} is neither NOQUOTA nor a Maildir++ quota`;
  const gidFlags = Number(gid);
  return {
    name,
    hash,
    scheme: hashScheme(hash),
    pwflag: Number(pw),
    gidFlags,
    flags: flagsFromBits(gidFlags),
    otherBits: gidFlags & ~KNOWN_BITS,
    gecos,
    homedir,
    quota: quota || 'NOQUOTA',
    clear: clear === undefined || clear === '' ? undefined : clear,
    where,
  };
}

function collect(records: Iterable<{ name: string; rest: string; where: string }>): VpasswdRead {
  const entries: VpasswdEntry[] = [];
  const problems: SourceProblem[] = [];
  const seen = new Set<string>();
  for (const { name, rest, where } of records) {
    const e = entry(name, rest, where);
    if (typeof e === 'string') problems.push({ where, reason: e });
    else if (seen.has(e.name)) problems.push({ where, reason: `user ${e.name} again: the first one is kept` });
    else {
      seen.add(e.name);
      entries.push(e);
    }
  }
  return { entries, problems };
}

/** The text file; `file` names it in every place. */
export function parseVpasswd(text: string, file: string): VpasswdRead {
  const records: Array<{ name: string; rest: string; where: string }> = [];
  const bad: SourceProblem[] = [];
  for (const { text: line, where } of numberedLines(text, file)) {
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0) bad.push({ where, reason: 'no name:fields line' });
    else records.push({ name: line.slice(0, colon), rest: line.slice(colon + 1), where });
  }
  const read = collect(records);
  return { entries: read.entries, problems: [...bad, ...read.problems] };
}

/** vpasswd.cdb: every record in file order (a vpasswd.cdb has one per user). */
export function vpasswdFromCdb(buf: Buffer, file: string): VpasswdRead {
  const records = [...cdbRecords(buf)].map(({ key, data }) => {
    const name = key.toString('latin1');
    return { name, rest: data.toString('latin1'), where: `${file}[${name}]` };
  });
  return collect(records);
}
