/**
 * Reads /var/qmail/control as qmail 1.03 / netqmail do, for `yubin import
 * qmail`: one value per file or one entry per line, trailing blanks ignored,
 * `#` comments where qmail allows them. A value qmail would refuse is reported
 * with `file:line` and left out, never guessed at; a file that is not there
 * is simply absent (qmail's defaults apply).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { cdbRecords } from '../../core/cdb.js';
import { numberedLines, type SourceLine, type SourceProblem } from '../../core/source-lines.js';

export interface SmtpRoute {
  /** Empty: every other domain (qmail's `:relay`), a smarthost. */
  readonly domain: string;
  /** Empty: deliver by MX as usual (a route that undoes a wider one). */
  readonly host: string;
  readonly port: number | undefined;
}

export interface QmailControl {
  readonly me?: string;
  readonly defaultDomain?: string;
  readonly plusDomain?: string;
  readonly locals: readonly string[];
  readonly rcpthosts: readonly string[];
  /** morercpthosts, and morercpthosts.cdb where only that is there. */
  readonly moreRcpthosts: readonly string[];
  /** `domain:prefix` lines (`example.jp:example.jp` is a vpopmail domain). */
  readonly virtualDomains: ReadonlyArray<{ readonly domain: string; readonly prefix: string }>;
  readonly badmailfrom: readonly string[];
  /** Bytes; 0 is qmail's "no limit". */
  readonly databytes?: number;
  readonly smtpGreeting?: string;
  /** Seconds. */
  readonly timeoutSmtpd?: number;
  readonly timeoutRemote?: number;
  readonly concurrencyLocal?: number;
  readonly concurrencyRemote?: number;
  /** Seconds. */
  readonly queueLifetime?: number;
  readonly smtproutes: readonly SmtpRoute[];
}

const DOMAIN = /^\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

export function readControl(controlDir: string): { control: QmailControl; problems: SourceProblem[] } {
  const problems: SourceProblem[] = [];
  const bad = (l: SourceLine, reason: string) => void problems.push({ where: l.where, reason });

  /** The file's lines, trailing blanks off, empty ones dropped; comments too where qmail allows them. */
  const all = (name: string): SourceLine[] | undefined => {
    const file = path.join(controlDir, name);
    if (!existsSync(file)) return undefined;
    return numberedLines(readFileSync(file, 'latin1'), file).map((l) => ({ ...l, text: l.text.replace(/[ \t]+$/, '') }));
  };
  const lines = (name: string, comments: boolean): SourceLine[] | undefined =>
    all(name)?.filter((l) => l.text !== '' && !(comments && l.text.startsWith('#')));
  /** qmail's control_readline: the first line only. */
  const first = (name: string): SourceLine | undefined => all(name)?.[0];
  const name = (file: string): string | undefined => {
    const l = first(file);
    if (!l) return undefined;
    const v = l.text.toLowerCase();
    if (!DOMAIN.test(v.replace(/^\./, ''))) return void bad(l, `${JSON.stringify(l.text)} is not a host name`);
    return v;
  };
  const number = (file: string): number | undefined => {
    const l = first(file);
    if (!l) return undefined;
    if (!/^\d+$/.test(l.text.trim())) return void bad(l, `${JSON.stringify(l.text)} is not a number`);
    return Number(l.text.trim());
  };
  const domains = (file: string, comments: boolean): string[] => {
    const out: string[] = [];
    for (const l of lines(file, comments) ?? []) {
      const d = l.text.trim().toLowerCase();
      if (DOMAIN.test(d)) out.push(d);
      else bad(l, `${JSON.stringify(l.text)} is not a domain`);
    }
    return out;
  };

  let moreRcpthosts = domains('morercpthosts', true);
  const mrhCdb = path.join(controlDir, 'morercpthosts.cdb');
  if (!moreRcpthosts.length && existsSync(mrhCdb)) {
    try {
      moreRcpthosts = [...cdbRecords(readFileSync(mrhCdb))].map((r) => r.key.toString('latin1'));
    } catch (err) {
      problems.push({ where: mrhCdb, reason: (err as Error).message });
    }
  }

  const virtualDomains: Array<{ domain: string; prefix: string }> = [];
  for (const l of lines('virtualdomains', false) ?? []) {
    const m = /^([^:]*):(.+)$/.exec(l.text.trim());
    if (!m) bad(l, `expected domain:prefix, got ${JSON.stringify(l.text)}`);
    else virtualDomains.push({ domain: m[1]!.toLowerCase(), prefix: m[2]! });
  }

  const badmailfrom: string[] = [];
  for (const l of lines('badmailfrom', true) ?? []) {
    const v = l.text.trim();
    if (/^[^@\s]*@[^@\s]+$/.test(v)) badmailfrom.push(v.toLowerCase());
    else bad(l, `${JSON.stringify(l.text)} is neither an address nor @domain`);
  }

  const smtproutes: SmtpRoute[] = [];
  for (const l of lines('smtproutes', false) ?? []) {
    // domain:relay[:port]; relay may be [1.2.3.4]; an empty relay means "use MX".
    const m = /^([^:]*):(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(l.text.trim());
    if (!m) bad(l, `expected domain:relay[:port], got ${JSON.stringify(l.text)}`);
    else smtproutes.push({ domain: m[1]!.toLowerCase(), host: m[2]!.replace(/^\[|\]$/g, ''), port: m[3] === undefined ? undefined : Number(m[3]) });
  }

  const greeting = first('smtpgreeting');
  const control: QmailControl = {
    me: name('me'),
    defaultDomain: name('defaultdomain'),
    plusDomain: name('plusdomain'),
    locals: domains('locals', false),
    rcpthosts: domains('rcpthosts', true),
    moreRcpthosts,
    virtualDomains,
    badmailfrom,
    databytes: number('databytes'),
    smtpGreeting: greeting?.text,
    timeoutSmtpd: number('timeoutsmtpd'),
    timeoutRemote: number('timeoutremote'),
    concurrencyLocal: number('concurrencylocal'),
    concurrencyRemote: number('concurrencyremote'),
    queueLifetime: number('queuelifetime'),
    smtproutes,
  };
  return { control, problems };
}
