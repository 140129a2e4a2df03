/**
 * The `tcpserver` lines of a qmail start script (the seed's
 * /usr/local/etc/rc.d/qmail.sh, a daemontools `run` file), for `yubin import
 * qmail`: which ports were served, by what (qmail-smtpd, qmail-popup), with
 * which limits, rules file and rblsmtpd options. Only what the script says
 * literally is taken: shell variables and command substitutions are words,
 * not values, and a line that cannot be read is reported with `file:line`.
 */

import type { SourceProblem } from '../../core/source-lines.js';

export interface RblsmtpdArgs {
  /** `-r zone`: DNSBL zones, in order. */
  readonly zones: readonly string[];
  /** `-a zone`: anti-RBL zones (a listed client is let through). */
  readonly allowZones: readonly string[];
  /** `-b`: 553 instead of 451. */
  readonly permanent: boolean;
  /** `-r` and `-a` in the order given: rblsmtpd stops at the first that decides. */
  readonly order: ReadonlyArray<{ readonly zone: string; readonly allow: boolean }>;
  /** `-C` (the default): a lookup failure lets the client through; `-c` answers 451 instead. */
  readonly ignoreFailures: boolean;
  /** `-t N`: seconds to wait for DNS. */
  readonly timeout: number | undefined;
}

export interface TcpserverService {
  readonly where: string;
  readonly host: string;
  readonly port: number;
  readonly kind: 'smtp' | 'pop3' | 'other';
  /** `-c N` */
  readonly maxConnections: number | undefined;
  /** `-x FILE` (the compiled rules). */
  readonly rulesCdb: string | undefined;
  /** The program tcpserver runs, with its arguments. */
  readonly program: readonly string[];
  readonly rblsmtpd: RblsmtpdArgs | undefined;
  /** vchkpw in the chain: SMTP AUTH (qmail-smtpd with the auth patch) or the POP3 login. */
  readonly vchkpw: boolean;
}

/** A line of the script that could not be read. */
export type RcProblem = SourceProblem;

/** /etc/services names tcpserver is given in these scripts. */
const SERVICES: Record<string, number> = { smtp: 25, submission: 587, smtps: 465, urd: 465, pop3: 110, 'pop-3': 110, pop3s: 995 };

/** Shell words: '…', "…", `…` and $(…) kept whole; the command stops at |, &, ;, > or a comment. */
function shellWords(line: string): string[] {
  const out: string[] = [];
  const re = /'[^']*'|"(?:\\.|[^"\\])*"|`[^`]*`|\$\([^)]*\)|[|&;<>]|#.*$|[^\s'"`|&;<>]+(?:\$\([^)]*\))?/g;
  for (const m of line.matchAll(re)) {
    const w = m[0];
    if (/^[|&;<>]$/.test(w) || w.startsWith('#')) break;
    if (/^\d*>/.test(w)) break;
    out.push(w.startsWith("'") || w.startsWith('"') ? w.slice(1, -1) : w);
  }
  return out;
}

/** Options of tcpserver that take an argument. */
const TCPSERVER_ARG = new Set(['c', 'C', 'x', 'u', 'g', 'b', 'l', 't', 'T', 'i', 'B', 'n']);

export function readRcScript(text: string, file: string): { services: TcpserverService[]; problems: RcProblem[] } {
  const services: TcpserverService[] = [];
  const problems: RcProblem[] = [];
  // Join backslash continuations, remembering where each command started.
  const logical: Array<{ text: string; line: number }> = [];
  let buf = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    if (!buf) start = i + 1;
    const line = raw.replace(/\r$/, '');
    if (/\\\s*$/.test(line)) buf += line.replace(/\\\s*$/, ' ');
    else {
      logical.push({ text: buf + line, line: start });
      buf = '';
    }
  });
  if (buf) logical.push({ text: buf, line: start });

  for (const { text: cmd, line } of logical) {
    const words = shellWords(cmd.trim());
    const at = words.findIndex((w) => w === 'tcpserver' || w.endsWith('/tcpserver'));
    if (at < 0) continue;
    const where = `${file}:${line}`;
    const args = words.slice(at + 1);
    let maxConnections: number | undefined;
    let rulesCdb: string | undefined;
    let i = 0;
    let bad: string | undefined;
    while (i < args.length && args[i]!.startsWith('-') && args[i] !== '-') {
      const opt = args[i]!;
      i++;
      // Clustered flags (-qv, -HR), possibly ending in one that takes an argument (-l0, -c100).
      for (let k = 1; k < opt.length; k++) {
        const c = opt[k]!;
        if (!TCPSERVER_ARG.has(c)) continue;
        const value = opt.length > k + 1 ? opt.slice(k + 1) : args[i++];
        if (value === undefined) bad = `tcpserver -${c} without its argument`;
        else if (c === 'c') {
          if (/^\d+$/.test(value)) maxConnections = Number(value);
          else bad = `-c ${value}: not a number`;
        } else if (c === 'x') rulesCdb = value;
        break;
      }
    }
    const [host, portWord, ...program] = args.slice(i);
    if (bad) {
      problems.push({ where, reason: bad });
      continue;
    }
    if (host === undefined || portWord === undefined || !program.length) {
      problems.push({ where, reason: 'tcpserver without host, port and program' });
      continue;
    }
    const port = /^\d+$/.test(portWord) ? Number(portWord) : SERVICES[portWord];
    if (port === undefined || port < 1 || port > 65535) {
      problems.push({ where, reason: `port ${JSON.stringify(portWord)} is not a number or a service name yubin knows (${Object.keys(SERVICES).join(', ')})` });
      continue;
    }
    let rest = program;
    let rblsmtpd: RblsmtpdArgs | undefined;
    if (rest[0] === 'rblsmtpd' || rest[0]!.endsWith('/rblsmtpd')) {
      const zones: string[] = [];
      const allowZones: string[] = [];
      let permanent = false;
      const order: Array<{ zone: string; allow: boolean }> = [];
      let ignoreFailures = true;
      let timeout: number | undefined;
      let j = 1;
      for (; j < rest.length && rest[j]!.startsWith('-'); j++) {
        const o = rest[j]!;
        const value = () => (o.length > 2 ? o.slice(2) : rest[++j]);
        if (o.startsWith('-r')) {
          const zone = value() ?? '';
          zones.push(zone);
          order.push({ zone, allow: false });
        } else if (o.startsWith('-a')) {
          const zone = value() ?? '';
          allowZones.push(zone);
          order.push({ zone, allow: true });
        }
        else if (o.startsWith('-t')) timeout = Number(value());
        else if (o === '-b') permanent = true;
        else if (o === '-B') permanent = false;
        else if (o === '-C') ignoreFailures = true;
        else if (o === '-c') ignoreFailures = false;
        else problems.push({ where, reason: `rblsmtpd option ${o} is not known; left out` });
      }
      // rblsmtpd with no -r uses RBLSMTPD from tcprules only (and its built-in default list in ucspi-tcp 0.88).
      rblsmtpd = { zones, allowZones, order, permanent, ignoreFailures, timeout: timeout !== undefined && Number.isFinite(timeout) ? timeout : undefined };
      rest = rest.slice(j);
    }
    // The server may sit behind other wrappers (spamdyke -f FILE qmail-smtpd ...): look along the chain.
    const names = rest.map((w) => w.split('/').pop() ?? '');
    const kind = names.includes('qmail-smtpd') ? 'smtp' : names.includes('qmail-popup') ? 'pop3' : 'other';
    const vchkpw = rest.some((w) => w === 'vchkpw' || w.endsWith('/vchkpw'));
    services.push({ where, host, port, kind, maxConnections, rulesCdb, program: rest, rblsmtpd, vchkpw });
  }
  return { services, problems };
}
