/**
 * spamdyke.conf (spamdyke 4 and 5) turned into this plugin's options, for
 * `yubin import qmail`. Every line is mapped, or reported as not mapped with
 * the reason (yubin does it elsewhere, or not at all), or as malformed with
 * its `file:line`: nothing is dropped without a word.
 */
import { numberedLines, type SourceProblem } from '../../core/source-lines.js';
import { RULES, type Rule } from './options.js';

export interface ConfReport extends SourceProblem {
  readonly option: string;
}

export interface SpamdykeImport {
  /** Options for the spamdyke plugin (validated by its schema when the site is checked). */
  readonly options: Record<string, unknown>;
  readonly unmapped: readonly ConfReport[];
  readonly problems: readonly ConfReport[];
}

const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Options kept as lists (`-entry`) or single paths (`-file`), named alike in yubin. */
const LISTS = ['dns-blacklist', 'dns-whitelist', 'rhs-blacklist', 'rhs-whitelist', 'ip-blacklist', 'ip-whitelist', 'rdns-blacklist', 'rdns-whitelist', 'sender-blacklist', 'sender-whitelist', 'recipient-blacklist', 'recipient-whitelist'];
const FLAGS = ['reject-empty-rdns', 'reject-unresolvable-rdns', 'reject-ip-in-cc-rdns'];
const SECONDS = ['greeting-delay-secs', 'idle-timeout-secs', 'connection-timeout-secs', 'max-recipients'];

/** spamdyke options yubin covers another way, and how. */
const ELSEWHERE: Record<string, string> = {
  'qmail-rcpthosts-file': 'relaying is the rcpthosts plugin (imported from control/rcpthosts)',
  'qmail-morercpthosts-cdb': 'relaying is the rcpthosts plugin (imported from control/morercpthosts)',
  'local-domains-file': 'local domains come from localDomains and vpopmail',
  'relay-level': 'relaying is decided by tcprules RELAYCLIENT, SMTP AUTH and rcpthosts',
  'smtp-auth-level': 'SMTP AUTH is the vpopmail plugin on the listener (requireAuth, allowInsecureAuth)',
  'smtp-auth-command': 'SMTP AUTH is the vpopmail plugin on the listener',
  'tls-level': "TLS is the listener's tls setting",
  'tls-certificate-file': "TLS is the listener's cert and key",
  'tls-privatekey-file': "TLS is the listener's cert and key",
  'log-level': 'logging is pino (logLevel)',
  'log-target': 'logging is pino on stdout',
  'full-log-dir': 'every decision is logged as one JSON line',
  'graylist-dir': 'greylist state lives in the store (state.sqlite or Redis); old entries are not carried over, so senders retry once',
  'hostname-file': 'the host name is the config hostname',
  hostname: 'the host name is the config hostname',
  'dns-server-ip': "DNS servers are the config's dns.servers",
  'access-file': 'tcprules (tcp.smtp) decides access per client',
  'policy-url': 'not shown in yubin replies',
  'filter-level': 'filters are chosen by listing plugins',
};

export function fromSpamdykeConf(text: string, file: string): SpamdykeImport {
  const options: Record<string, unknown> = {};
  const unmapped: ConfReport[] = [];
  const problems: ConfReport[] = [];
  const push = (key: string, value: string) => {
    const list = (options[key] ??= []) as string[];
    list.push(value);
  };
  const graylist: Record<string, unknown> = {};
  const replies: Partial<Record<Rule, { text: string }>> = {};

  /** One line, comment and blanks off: mapped, reported as not mapped, or a problem. */
  const readLine = (line: string, where: string): void => {
    const eq = line.indexOf('=');
    const option = (eq < 0 ? line : line.slice(0, eq)).trim().toLowerCase();
    const value = eq < 0 ? undefined : line.slice(eq + 1).trim();
    const bad = (reason: string) => void problems.push({ where, option, reason });
    if (!/^[a-z0-9-]+$/.test(option)) return bad(`${JSON.stringify(line)} is not option=value`);

    const list = /^(.*)-(entry|file)$/.exec(option);
    if (list && LISTS.includes(list[1]!)) {
      if (!value) return bad('needs a value');
      if (list[2] === 'entry') push(camel(option), value);
      else options[camel(option)] = value;
      return;
    }
    if (FLAGS.includes(option)) {
      if (value !== undefined && !/^(1|yes|on|true)$/i.test(value)) return bad(`${JSON.stringify(value)}: the option takes no value`);
      options[camel(option)] = true;
      return;
    }
    if (option === 'reject-sender' || option === 'reject-missing-sender-mx') {
      if (option === 'reject-sender' && value !== 'no-mx') return void unmapped.push({ where, option, reason: `reject-sender=${value ?? ''}: yubin has only no-mx` });
      options.rejectSender = ['no-mx'];
      return;
    }
    if (SECONDS.includes(option)) {
      if (!value || !/^\d+$/.test(value)) return bad(`${JSON.stringify(value ?? '')} is not a number`);
      options[camel(option)] = Number(value);
      return;
    }
    if (option === 'graylist-level') {
      if (!value || !/^(none|always|always-create-dir|only|only-create-dir)$/.test(value)) return bad(`${JSON.stringify(value ?? '')} is not none, always, always-create-dir, only or only-create-dir`);
      graylist.enabled = value !== 'none';
      if (value.startsWith('only')) unmapped.push({ where, option, reason: `graylist-level=${value} greylists only domains with a graylist directory; yubin greylists every local domain` });
      return;
    }
    if (option === 'graylist-min-secs' || option === 'graylist-max-secs') {
      if (!value || !/^\d+$/.test(value)) return bad(`${JSON.stringify(value ?? '')} is not a number`);
      graylist[option === 'graylist-min-secs' ? 'minDelay' : 'retryWindow'] = Number(value);
      return;
    }
    const text = /^rejection-text-(.+)$/.exec(option);
    if (text) {
      const rule = text[1] as Rule;
      if (!RULES.includes(rule)) return void unmapped.push({ where, option, reason: `yubin has no rule ${text[1]}` });
      if (!value) return bad('needs a value');
      replies[rule] = { text: value };
      return;
    }
    if (option === 'config-file' || option === 'config-dir') return void unmapped.push({ where, option, reason: `${option} is not followed: import that file by itself` });
    unmapped.push({ where, option, reason: ELSEWHERE[option] ?? 'yubin has no such option' });
  };
  for (const { text: raw, where } of numberedLines(text, file)) {
    const line = raw.replace(/#.*$/, '').trim();
    if (line) readLine(line, where);
  }
  if (Object.keys(graylist).length) options.graylist = graylist;
  if (Object.keys(replies).length) options.replies = replies;
  return { options, unmapped, problems };
}
