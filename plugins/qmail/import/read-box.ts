/**
 * Everything `yubin import qmail` reads from a qmail + vpopmail box, in one
 * value: the control files, users/assign, the tcprules source (or its cdb),
 * the start script's tcpserver lines, spamdyke.conf, every vpopmail domain
 * with its users, catch-all, aliases and limits, the whitelist directory and
 * the messages in qmail's queue. Reading changes nothing on the old box.
 * Where a file is missing or malformed the report says so; nothing is guessed.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { CdbError } from '../../../core/cdb.js';
import type { SourceProblem } from '../../../core/source-lines.js';
import { fromSpamdykeConf, type SpamdykeImport } from '../../spamdyke/conf.js';
import { rulesFromCdb } from '../../tcprules/cdb.js';
import { catchallFrom, parseDotQmail, type DotQmailLine } from '../../vpopmail/dot-qmail.js';
import { parseValiasDump } from '../../vpopmail/valias-dump.js';
import { parseVlimits, type DomainLimits } from '../../vpopmail/vlimits.js';
import { parseVpasswd, vpasswdFromCdb, type VpasswdEntry } from '../../vpopmail/vpasswd.js';
import type { Catchall } from '../../vpopmail/store.js';
import { readAssign } from '../assign.js';
import { readControl, type QmailControl } from '../control.js';
import { readQmailQueue, type QueuedInQmail } from '../queue.js';
import { readRcScript, type TcpserverService } from '../rc-script.js';
import type { ImportReport } from './report.js';

export interface ImportSources {
  readonly qmailDir: string;
  /** Unset: the vpopmail user's home from /etc/passwd, then the usual places. */
  readonly vpopmailDir?: string;
  readonly tcprules?: string;
  readonly spamdykeConf?: string;
  readonly rcScripts?: readonly string[];
  /** A mysqldump of vpopmail's valias table. */
  readonly valiasDump?: string;
}

export interface AliasInBox {
  readonly name: string;
  readonly lines: readonly DotQmailLine[];
  readonly source: string;
}

export interface DomainInBox {
  readonly name: string;
  readonly dir: string;
  /** vaddaliasdomain: this name points at another domain's directory. */
  readonly aliasOf: string | undefined;
  readonly users: readonly VpasswdEntry[];
  readonly catchall: Catchall;
  readonly aliases: readonly AliasInBox[];
  readonly limits: DomainLimits | undefined;
}

export interface RulesInBox {
  readonly file: string;
  readonly text: string;
  readonly fromCdb: boolean;
}

export interface QmailBox {
  readonly qmailDir: string;
  readonly vpopmailDir: string | undefined;
  /** ~vpopmail/etc/defaultdomain: vchkpw's domain for logins without one. */
  readonly vpopmailDefaultDomain: string | undefined;
  readonly control: QmailControl;
  readonly rules: RulesInBox | undefined;
  readonly services: readonly TcpserverService[];
  readonly rcScripts: readonly string[];
  readonly spamdyke: (SpamdykeImport & { readonly file: string }) | undefined;
  readonly domains: readonly DomainInBox[];
  /** IPs that /var/qmail/whitelist/ has a file for. */
  readonly whitelist: readonly string[];
  readonly whitelistDir: string | undefined;
  readonly queue: readonly QueuedInQmail[];
}

const firstExisting = (candidates: readonly string[]): string | undefined => candidates.find((c) => existsSync(c));

/** The vpopmail user's home as /etc/passwd has it (the ports put it in /usr/local/vpopmail, Linux packages in /home/vpopmail). */
function vpopmailHome(): string | undefined {
  try {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('vpopmail:'));
    return line?.split(':')[5] || undefined;
  } catch {
    return undefined;
  }
}

const RC_CANDIDATES = ['/usr/local/etc/rc.d/qmail.sh', '/usr/local/etc/rc.d/qmail', '/etc/init.d/qmail', '/etc/rc.d/init.d/qmail'];

function readText(file: string): string {
  return readFileSync(file, 'latin1');
}

/** `.qmail-foo:bar` is the address foo.bar (qmail turns dots into colons in file names). */
const aliasName = (file: string) => file.slice('.qmail-'.length).replace(/:/g, '.').toLowerCase();

export function readBox(sources: ImportSources, report: ImportReport): QmailBox {
  const qmailDir = sources.qmailDir;
  if (!existsSync(path.join(qmailDir, 'control'))) report.attention(qmailDir, 'no control/ directory here: is this the qmail directory? (--qmail-dir)');
  const { control, problems: controlProblems } = readControl(path.join(qmailDir, 'control'));
  report.problems(controlProblems);

  const vpopmailDir = sources.vpopmailDir ?? firstExisting([vpopmailHome() ?? '', '/usr/local/vpopmail', '/home/vpopmail', '/var/vpopmail'].filter(Boolean));
  if (!vpopmailDir) report.attention('vpopmail', 'no vpopmail directory found (--vpopmail-dir): no domains or users imported');

  // The start script(s): what listens where, with which filters.
  const rcScripts = sources.rcScripts?.length
    ? [...sources.rcScripts]
    : [...RC_CANDIDATES, ...['/var/qmail/supervise', '/service', '/etc/service'].flatMap((d) => ['qmail-smtpd', 'qmail-pop3d', 'qmail-submission'].map((s) => path.join(d, s, 'run')))].filter(
        (f) => existsSync(f),
      );
  const services: TcpserverService[] = [];
  for (const file of rcScripts) {
    if (!existsSync(file)) {
      report.attention(file, 'not found');
      continue;
    }
    const read = readRcScript(readText(file), file);
    services.push(...read.services);
    report.problems(read.problems);
  }

  // tcprules: the source where there is one, else the compiled cdb tcpserver reads.
  const cdbFromScript = services.find((s) => s.rulesCdb)?.rulesCdb;
  const ruleCandidates = sources.tcprules
    ? [sources.tcprules]
    : [
        ...(cdbFromScript ? [cdbFromScript.replace(/\.cdb$/, ''), cdbFromScript] : []),
        ...[vpopmailDir && path.join(vpopmailDir, 'etc'), '/etc', '/usr/local/etc'].filter((d): d is string => Boolean(d)).flatMap((d) => [path.join(d, 'tcp.smtp'), path.join(d, 'tcp.smtp.cdb')]),
      ];
  let rules: RulesInBox | undefined;
  const rulesFile = firstExisting(ruleCandidates);
  if (rulesFile) {
    const buf = readFileSync(rulesFile);
    if (rulesFile.endsWith('.cdb') || buf.subarray(0, 2048).includes(0)) {
      try {
        const decoded = rulesFromCdb(buf);
        rules = { file: rulesFile, text: decoded.text, fromCdb: true };
        for (const s of decoded.skipped) report.notMapped(`${rulesFile}[${s.key}]`, s.reason);
      } catch (err) {
        if (!(err instanceof CdbError)) throw err;
        report.attention(rulesFile, `not a cdb tcprules wrote: ${err.message}`);
      }
    } else {
      rules = { file: rulesFile, text: buf.toString('latin1'), fromCdb: false };
      const cdb = `${rulesFile}.cdb`;
      if (existsSync(cdb) && statSync(cdb).mtimeMs < statSync(rulesFile).mtimeMs) {
        report.attention(rulesFile, `is newer than ${cdb}, which tcpserver was reading: the source was imported, with any edit never compiled`);
      }
    }
  } else if (sources.tcprules) report.attention(sources.tcprules, 'not found');

  // spamdyke: the -f of its command line in the start script, else the usual places.
  const spamdykeWord = services.flatMap((s) => s.program).findIndex((w) => w === 'spamdyke' || w.endsWith('/spamdyke'));
  const programWords = services.flatMap((s) => s.program);
  const fromScript = spamdykeWord >= 0 ? configFileArg(programWords.slice(spamdykeWord + 1)) : undefined;
  const spamdykeFile = sources.spamdykeConf ?? firstExisting([fromScript ?? '', '/etc/spamdyke.conf', '/usr/local/etc/spamdyke.conf', '/usr/local/etc/spamdyke/spamdyke.conf'].filter(Boolean));
  let spamdyke: QmailBox['spamdyke'];
  if (spamdykeFile && existsSync(spamdykeFile)) {
    spamdyke = { ...fromSpamdykeConf(readText(spamdykeFile), spamdykeFile), file: spamdykeFile };
    if (services.length && spamdykeWord < 0) report.attention(spamdykeFile, 'the start script does not run spamdyke, yet this file was imported: take spamdyke off the listeners if it was not in use');
  } else if (sources.spamdykeConf) report.attention(sources.spamdykeConf, 'not found');

  const domains = vpopmailDir ? readDomains(qmailDir, vpopmailDir, sources.valiasDump, report) : [];

  const whitelistDir = path.join(qmailDir, 'whitelist');
  const whitelist = existsSync(whitelistDir) ? readdirSync(whitelistDir).filter((n) => !n.startsWith('.')) : [];

  const queueDir = path.join(qmailDir, 'queue');
  const queued = existsSync(queueDir) ? readQmailQueue(queueDir, control.virtualDomains) : { messages: [], problems: [] };
  report.problems(queued.problems);

  const ddFile = vpopmailDir && path.join(vpopmailDir, 'etc', 'defaultdomain');
  const vpopmailDefaultDomain = ddFile && existsSync(ddFile) ? readText(ddFile).split('\n')[0]!.trim().toLowerCase() || undefined : undefined;

  return {
    qmailDir,
    vpopmailDir,
    vpopmailDefaultDomain,
    control,
    rules,
    services,
    rcScripts,
    spamdyke,
    domains,
    whitelist,
    whitelistDir: existsSync(whitelistDir) ? whitelistDir : undefined,
    queue: queued.messages,
  };
}

/** spamdyke's `-f FILE` / `--config-file FILE` / `--config-file=FILE`. */
function configFileArg(words: readonly string[]): string | undefined {
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '-f' || w === '--config-file') return words[i + 1];
    if (w.startsWith('--config-file=')) return w.slice('--config-file='.length);
    if (!w.startsWith('-')) return undefined;
  }
  return undefined;
}

function readDomains(qmailDir: string, vpopmailDir: string, valiasDump: string | undefined, report: ImportReport): DomainInBox[] {
  // Where each domain lives: users/assign (vadddomain's +domain- lines), else a scan of ~vpopmail/domains.
  const assignFile = path.join(qmailDir, 'users', 'assign');
  const dirs = new Map<string, { dir: string; owner: string }>();
  if (existsSync(assignFile)) {
    const read = readAssign(readText(assignFile), assignFile);
    report.problems(read.problems);
    for (const e of read.entries) if (e.kind === '+' && e.address.endsWith('-')) dirs.set(e.address.slice(0, -1), { dir: e.dir, owner: e.user.toLowerCase() });
  } else {
    const root = path.join(vpopmailDir, 'domains');
    const scan = (dir: string, depth: number): void => {
      for (const e of existsSync(dir) ? readdirSync(dir, { withFileTypes: true }) : []) {
        if (!e.isDirectory()) continue;
        const p = path.join(dir, e.name);
        if (existsSync(path.join(p, 'vpasswd')) || existsSync(path.join(p, 'vpasswd.cdb'))) dirs.set(e.name.toLowerCase(), { dir: p, owner: e.name.toLowerCase() });
        else if (depth === 0 && e.name.length === 1) scan(p, 1); // dir_control hashes big sites' domains into 0-9, A-Z
      }
    };
    scan(root, 0);
    report.attention(assignFile, `not found: domains taken from the directories under ${root}`);
  }

  const defaultLimits = path.join(vpopmailDir, 'etc', 'vlimits.default');
  const valias = valiasDump ? parseValiasDump(readText(valiasDump), valiasDump) : undefined;
  if (valias) report.problems(valias.problems);

  const out: DomainInBox[] = [];
  for (const [name, { dir, owner }] of [...dirs].sort((a, b) => a[0].localeCompare(b[0]))) {
    if (owner !== name && dirs.has(owner)) {
      out.push({ name, dir, aliasOf: owner, users: [], catchall: { kind: 'bounce-no-mailbox' }, aliases: [], limits: undefined });
      continue;
    }
    if (!existsSync(dir)) {
      report.attention(`${name}`, `its directory ${dir} (users/assign) does not exist: domain skipped`);
      continue;
    }
    // Users: vpasswd, or vpasswd.cdb where only that is left.
    const text = path.join(dir, 'vpasswd');
    const cdb = path.join(dir, 'vpasswd.cdb');
    let users: VpasswdEntry[] = [];
    if (existsSync(text)) {
      const read = parseVpasswd(readText(text), text);
      users = [...read.entries];
      report.problems(read.problems);
    } else if (existsSync(cdb)) {
      try {
        const read = vpasswdFromCdb(readFileSync(cdb), cdb);
        users = [...read.entries];
        report.problems(read.problems);
      } catch (err) {
        if (!(err instanceof CdbError)) throw err;
        report.attention(cdb, `not a vpasswd.cdb: ${err.message}; no users imported for ${name}`);
      }
    } else report.attention(name, `no vpasswd or vpasswd.cdb in ${dir}: users kept in MySQL or LDAP are not imported`);

    // The catch-all and aliases: .qmail-default and .qmail-ALIAS files.
    const userAt = (d: string) => users.find((u) => path.resolve(u.homedir) === path.resolve(d))?.name;
    let catchall: Catchall = { kind: 'bounce-no-mailbox' };
    const aliases: AliasInBox[] = [];
    for (const file of readdirSync(dir).filter((f) => f.startsWith('.qmail-')).sort()) {
      const full = path.join(dir, file);
      const parsed = parseDotQmail(readText(full), full);
      report.problems(parsed.problems);
      if (file === '.qmail-default') {
        const c = catchallFrom(parsed.lines, name, userAt);
        if ('kind' in c) catchall = c;
        else report.attention(c.where, `${c.reason}: the catch-all stays bounce-no-mailbox`);
      } else aliases.push({ name: aliasName(file), lines: parsed.lines, source: full });
    }
    if (!existsSync(path.join(dir, '.qmail-default'))) report.attention(`${dir}/.qmail-default`, 'missing: unknown users bounce (bounce-no-mailbox), as vdelivermail did by default');
    for (const row of valias?.rows.filter((r) => r.domain === name) ?? []) {
      // Each row is one line of its own: name it by the INSERT's place, not a line 1 of nothing.
      const parsed = parseDotQmail(row.line, valiasDump!);
      const at = <T extends { where: string }>(l: T): T => ({ ...l, where: row.where });
      parsed.lines.forEach((l, i) => (parsed.lines[i] = at(l)));
      report.problems(parsed.problems.map(at));
      const have = aliases.find((a) => a.name === row.alias && a.source === valiasDump);
      if (have) (have.lines as DotQmailLine[]).push(...parsed.lines);
      else aliases.push({ name: row.alias, lines: parsed.lines, source: valiasDump! });
    }
    // A user's own .qmail (qmailadmin's forward, with or without a copy kept).
    for (const u of users) {
      const own = path.join(u.homedir, '.qmail');
      if (!existsSync(own)) continue;
      const parsed = parseDotQmail(readText(own), own);
      report.problems(parsed.problems);
      aliases.push({ name: u.name, lines: parsed.lines, source: own });
    }

    const limitsFile = firstExisting([path.join(dir, '.qmailadmin-limits'), defaultLimits]);
    let limits: DomainLimits | undefined;
    if (limitsFile) {
      limits = parseVlimits(readText(limitsFile), limitsFile);
      report.problems(limits.problems);
    }
    out.push({ name, dir, aliasOf: undefined, users, catchall, aliases, limits });
  }
  for (const row of valias?.rows.filter((r) => !dirs.has(r.domain)) ?? []) report.attention(row.where, `valias row for ${row.alias}@${row.domain}: no such vpopmail domain (skipped)`);
  return out;
}
