/**
 * From what was read on the old box to what the new site holds: the
 * yubin.yaml settings, the rule files, the vpopmail store's records, the
 * mailboxes and the queued messages. Every decision is written into the
 * report; nothing here writes to the disk, so --dry-run shows the same
 * report as a real run.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { timeFromName } from '../../../core/index.js';
import type { DotQmailLine } from '../../vpopmail/dot-qmail.js';
import type { AliasRecord, DomainRecord, NewDomain, NewUser, UserFlags } from '../../vpopmail/store.js';
import type { QueuedInQmail } from '../queue.js';
import type { TcpserverService } from '../rc-script.js';
import type { DomainInBox, QmailBox } from './read-box.js';
import type { ImportReport } from './report.js';

export type MaildirMode = 'in-place' | 'copy' | 'move';

export interface PlanOptions {
  readonly mode: MaildirMode;
  /** Added to every listener's port, so the new server can run beside the old one during the move. */
  readonly portOffset: number;
}

export interface SiteFile {
  /** Relative to the site directory. */
  readonly path: string;
  readonly content: string | Buffer;
}

export interface MailboxMove {
  readonly address: string;
  /** The old Maildir. */
  readonly from: string;
  /** Where the site keeps it (the same for in-place). */
  readonly to: string;
}

export interface UserPlan extends NewUser {
  /** A DES-crypt hash that yubin cannot check, to be replaced by a hash of vpopmail's clear-text field when there is one. */
  readonly rehashFromClear?: boolean;
}

export interface SitePlan {
  readonly config: Record<string, unknown>;
  readonly files: readonly SiteFile[];
  readonly domains: ReadonlyArray<NewDomain & Pick<DomainRecord, 'catchall'>>;
  readonly users: readonly UserPlan[];
  readonly aliases: ReadonlyArray<Pick<AliasRecord, 'domain' | 'name' | 'targets'>>;
  readonly mailboxes: readonly MailboxMove[];
  readonly queue: readonly QueuedInQmail[];
  /** Users whose password cannot be checked (DES crypt without a clear-text copy). */
  readonly desUsers: readonly string[];
}

const DATA_DIR = 'var';

const seconds = (n: number) => `${n}s`;
const count = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

export function planSite(box: QmailBox, o: PlanOptions, siteDir: string, report: ImportReport): SitePlan {
  const c = box.control;
  const files: SiteFile[] = [];
  const pluginOptions: Record<string, Record<string, unknown>> = {};
  const config: Record<string, unknown> = {};

  // ---- control files
  const hostname = c.me ?? c.defaultDomain;
  if (hostname) {
    config.hostname = hostname;
    report.mapped('control/me', `hostname ${hostname}`);
  } else report.attention('control/me', "missing: the hostname is this machine's name");
  config.dataDir = DATA_DIR;

  const vpopmailNames = new Set(box.domains.map((d) => d.name));
  const locals = c.locals.filter((d) => d !== 'localhost');
  config.localDomains = ['localhost', ...locals];
  if (c.locals.length) report.mapped('control/locals', `localDomains: ${['localhost', ...locals].join(', ')}`);
  if (locals.length) report.attention('control/locals', `mail for ${locals.join(', ')} went to system users' home directories; it now goes to var/mail/DOMAIN/USER/Maildir (the maildir plugin): old mail there is not imported`);
  for (const v of c.virtualDomains) {
    if (vpopmailNames.has(v.domain)) report.mapped('control/virtualdomains', `${v.domain} is a vpopmail domain of the store`);
    else report.notMapped('control/virtualdomains', `${v.domain}:${v.prefix} delivers through the qmail user ${v.prefix}'s .qmail files, which yubin does not run: add it with \`yubin domain add ${v.domain}\``);
  }
  if (c.defaultDomain) report.mapped('control/defaultdomain', `yubin sendmail qualifies bare names with the hostname${c.defaultDomain !== hostname ? ` (${hostname}, not ${c.defaultDomain}: set hostname if that matters)` : ''}`);
  if (c.plusDomain) report.notMapped('control/plusdomain', "the `user@host+` shorthand of qmail-inject is not supported; nobody types it any more");

  const smtpLimits: Record<string, unknown> = {};
  if (c.databytes !== undefined) {
    if (c.databytes > 0) {
      smtpLimits.maxMessageSize = c.databytes;
      report.mapped('control/databytes', `limits.maxMessageSize ${c.databytes} on the SMTP listeners`);
    } else report.attention('control/databytes', "0 (no limit) in qmail; yubin keeps its limit of 25M: raise limits.maxMessageSize if you need more");
  }
  if (c.timeoutSmtpd !== undefined) {
    smtpLimits.idleTimeout = seconds(c.timeoutSmtpd);
    report.mapped('control/timeoutsmtpd', `limits.idleTimeout ${c.timeoutSmtpd}s on the SMTP listeners`);
  }
  let greeting: string | undefined;
  if (c.smtpGreeting !== undefined) {
    const [first, ...rest] = c.smtpGreeting.split(' ');
    greeting = `${first === hostname ? rest.join(' ') : c.smtpGreeting} ESMTP`.trim();
    report.mapped('control/smtpgreeting', `greeting "220 ${hostname ?? 'HOSTNAME'} ${greeting}"`);
    if (first !== hostname) report.attention('control/smtpgreeting', 'its first word is not the hostname: yubin always greets with the hostname first');
  }

  const queue: Record<string, unknown> = {};
  const delivery: Record<string, unknown> = { plugins: ['vpopmail', 'maildir'] };
  if (c.concurrencyLocal !== undefined) {
    queue.concurrencyLocal = c.concurrencyLocal;
    report.mapped('control/concurrencylocal', `queue.concurrencyLocal ${c.concurrencyLocal}`);
  }
  if (c.concurrencyRemote !== undefined) {
    queue.concurrencyRemote = c.concurrencyRemote;
    report.mapped('control/concurrencyremote', `queue.concurrencyRemote ${c.concurrencyRemote}`);
  }
  if (c.queueLifetime !== undefined) {
    queue.lifetime = seconds(c.queueLifetime);
    report.mapped('control/queuelifetime', `queue.lifetime ${c.queueLifetime}s`);
  }
  if (c.timeoutRemote !== undefined) {
    delivery.commandTimeout = seconds(c.timeoutRemote);
    report.mapped('control/timeoutremote', `delivery.commandTimeout ${c.timeoutRemote}s`);
  }
  const routes: Record<string, Record<string, unknown>> = {};
  for (const r of c.smtproutes) {
    const relay = { host: r.host, ...(r.port !== undefined ? { port: r.port } : {}) };
    if (r.domain === '') {
      delivery.smarthost = { ...relay, port: r.port ?? 25, tls: 'none' };
      report.mapped('control/smtproutes', `":${r.host}" → delivery.smarthost ${r.host}:${r.port ?? 25}, without TLS as qmail-remote sent`);
      report.attention('control/smtproutes', `the smarthost ${r.host} gets mail in clear as before: set delivery.smarthost.tls to starttls if it offers TLS`);
    } else {
      routes[r.domain] = r.host === '' ? { host: '' } : { ...relay, tls: 'opportunistic' };
      report.mapped('control/smtproutes', `${r.domain} → delivery.routes ${r.host === '' ? 'its own MX' : `${r.host}:${r.port ?? 25}`}`);
    }
  }
  if (Object.keys(routes).length) delivery.routes = routes;

  if (c.rcpthosts.length || c.moreRcpthosts.length) {
    files.push({ path: 'rcpthosts', content: c.rcpthosts.map((d) => `${d}\n`).join('') });
    pluginOptions.rcpthosts = { file: 'rcpthosts' };
    if (c.moreRcpthosts.length) {
      files.push({ path: 'morercpthosts', content: c.moreRcpthosts.map((d) => `${d}\n`).join('') });
      pluginOptions.rcpthosts.moreFile = 'morercpthosts';
    }
    report.mapped('control/rcpthosts', `rcpthosts plugin, ${count(c.rcpthosts.length, 'domain')}${c.moreRcpthosts.length ? ` (+${c.moreRcpthosts.length} from morercpthosts)` : ''} in rcpthosts`);
  } else report.attention('control/rcpthosts', 'missing or empty: only localDomains and vpopmail domains are taken (qmail-smtpd would have been an open relay)');
  if (c.badmailfrom.length) {
    files.push({ path: 'badmailfrom', content: c.badmailfrom.map((d) => `${d}\n`).join('') });
    pluginOptions.badmailfrom = { file: 'badmailfrom' };
    report.mapped('control/badmailfrom', `badmailfrom plugin, ${count(c.badmailfrom.length, 'entry', 'entries')} (553 at RCPT)`);
  }
  if (box.whitelist.length || box.whitelistDir) {
    for (const ip of box.whitelist) files.push({ path: `whitelist/${ip}`, content: '' });
    pluginOptions.whitelist = { dir: 'whitelist' };
    report.mapped(`${box.qmailDir}/whitelist`, `whitelist plugin, dir whitelist/ with ${count(box.whitelist.length, 'IP file')}`);
  }

  // ---- tcprules
  if (box.rules) {
    const text = box.rules.fromCdb ? `# Decompiled from ${box.rules.file} by yubin import qmail.\n${box.rules.text}` : box.rules.text;
    files.push({ path: 'tcp.smtp', content: text });
    pluginOptions.tcprules = { file: 'tcp.smtp' };
    report.mapped(box.rules.file, `tcprules plugin, file tcp.smtp${box.rules.fromCdb ? ' (decompiled from the cdb)' : ''}: RELAYCLIENT, RBLSMTPD and the other variables as before`);
  } else report.attention('tcp.smtp', 'no tcprules source or cdb found (--tcprules): nobody relays without SMTP AUTH');

  // ---- spamdyke
  if (box.spamdyke) {
    const options: Record<string, unknown> = { ...box.spamdyke.options };
    // The list files spamdyke.conf names come along into spamdyke/, so the site does not lean on the old box.
    for (const [key, value] of Object.entries(box.spamdyke.options)) {
      if (!key.endsWith('File') || typeof value !== 'string') continue;
      if (!existsSync(value)) {
        delete options[key];
        report.attention(box.spamdyke.file, `${key} ${value} does not exist: left out`);
        continue;
      }
      const copy = `spamdyke/${path.basename(value)}`;
      files.push({ path: copy, content: readFileSync(value) });
      options[key] = copy;
      report.mapped(value, `copied to ${copy} (spamdyke ${key})`);
    }
    pluginOptions.spamdyke = options;
    report.mapped(box.spamdyke.file, `spamdyke plugin with ${count(Object.keys(options).length, 'option')}`);
    for (const u of box.spamdyke.unmapped) report.notMapped(u.where, `${u.option}: ${u.reason}`);
    report.problems(box.spamdyke.problems);
  }

  // ---- listeners from the start script
  const listeners = planListeners(box.services, { smtpLimits, greeting, portOffset: o.portOffset, hasRules: Boolean(box.rules), pluginOptions, report });

  // ---- vpopmail
  const oldRoot = box.vpopmailDir ? path.join(box.vpopmailDir, 'domains') : undefined;
  const root = o.mode === 'in-place' && oldRoot ? oldRoot : path.join(siteDir, DATA_DIR, 'domains');
  pluginOptions.vpopmail = { ...(o.mode === 'in-place' && oldRoot ? { root: oldRoot } : {}), ...(box.vpopmailDefaultDomain ? { defaultDomain: box.vpopmailDefaultDomain } : {}) };
  if (box.vpopmailDefaultDomain) report.mapped('vpopmail/etc/defaultdomain', `vpopmail defaultDomain ${box.vpopmailDefaultDomain}`);
  const store = planStore(box.domains, { mode: o.mode, root, report });

  config.plugins = pluginOptions;
  config.listeners = listeners;
  if (Object.keys(queue).length) config.queue = queue;
  config.delivery = delivery;

  for (const m of box.queue) report.mapped(`${box.qmailDir}/queue/mess/${m.id}`, `into the spool: from <${m.sender}> to ${m.recipients.join(', ')}`);
  return { config, files, ...store, queue: box.queue };
}

interface ListenerEnv {
  readonly smtpLimits: Record<string, unknown>;
  readonly greeting: string | undefined;
  readonly portOffset: number;
  readonly hasRules: boolean;
  readonly pluginOptions: Record<string, Record<string, unknown>>;
  readonly report: ImportReport;
}

const NAMES: Record<number, string> = { 25: 'mx', 587: 'submission', 465: 'submissions', 110: 'pop3', 995: 'pop3s' };

function planListeners(services: readonly TcpserverService[], env: ListenerEnv): Array<Record<string, unknown>> {
  const { report, pluginOptions } = env;
  const out: Array<Record<string, unknown>> = [];
  const used = new Set<string>();
  const plain = [...services];
  if (!plain.length) {
    report.attention('start script', 'none found (--rc-script): listeners are SMTP on 25 and 587 and POP3 on 110, as the seed guide set them up');
    plain.push(
      { where: 'default', host: '0', port: 25, kind: 'smtp', maxConnections: undefined, rulesCdb: undefined, program: ['qmail-smtpd'], rblsmtpd: undefined, vchkpw: true },
      { where: 'default', host: '0', port: 587, kind: 'smtp', maxConnections: undefined, rulesCdb: undefined, program: ['qmail-smtpd'], rblsmtpd: undefined, vchkpw: true },
      { where: 'default', host: '0', port: 110, kind: 'pop3', maxConnections: undefined, rulesCdb: undefined, program: ['qmail-popup'], rblsmtpd: undefined, vchkpw: true },
    );
  }
  for (const s of plain) {
    if (s.kind === 'other') {
      report.notMapped(s.where, `tcpserver on port ${s.port} runs ${s.program[0] ?? '?'}, which is neither qmail-smtpd nor qmail-popup`);
      continue;
    }
    const host = s.host === '0' || s.host === '0.0.0.0' ? '0.0.0.0' : s.host === '::' || s.host === ':' ? '[::]' : s.host;
    if (!/^[\d.]+$/.test(host) && host !== '[::]') {
      report.attention(s.where, `listens on ${s.host}, which is not an IP address: the listener is on every address (0.0.0.0)`);
    }
    const ip = /^[\d.]+$/.test(host) || host === '[::]' ? host : '0.0.0.0';
    let name = NAMES[s.port] ?? `${s.kind}${s.port}`;
    while (used.has(name)) name += '-2';
    used.add(name);
    const plugins: unknown[] = [];
    // tcpserver -x, or the SMTP listeners assumed when there is no start script (the seed's setup).
    const ranRules = s.rulesCdb !== undefined || (s.where === 'default' && s.kind === 'smtp');
    if (ranRules && env.hasRules) plugins.push('tcprules');
    if (s.kind === 'smtp') {
      if (pluginOptions.whitelist) plugins.push('whitelist');
      if (pluginOptions.badmailfrom) plugins.push('badmailfrom');
      plugins.push('rcpthosts');
      if (s.rblsmtpd) {
        const r = s.rblsmtpd;
        const zones = r.order.map((e) => (e.allow ? { zone: e.zone, allow: true } : e.zone));
        const options: Record<string, unknown> = zones.length ? { zones } : { rblsmtpdOnly: true };
        if (r.permanent) options.permanent = true;
        if (!r.ignoreFailures) options.failClosed = true;
        plugins.push({ rblsmtpd: options });
        report.mapped(s.where, `rblsmtpd ${zones.length ? `zones ${zones.map((z) => (typeof z === 'string' ? z : `${z.zone} (allow)`)).join(', ')}` : 'without -r: only RBLSMTPD from tcp.smtp refuses'}${r.permanent ? ', 553 (-b)' : ''}`);
        if (r.timeout !== undefined) report.notMapped(s.where, `rblsmtpd -t ${r.timeout}: yubin answers a refused client at RCPT within the listener's idleTimeout`);
      }
      // spamdyke only where the start script ran it (or on port 25 when there is no script).
      const ranSpamdyke = s.program.some((w) => w === 'spamdyke' || w.endsWith('/spamdyke')) || (s.where === 'default' && s.port === 25);
      if (pluginOptions.spamdyke && ranSpamdyke) plugins.push('spamdyke');
      plugins.push('vpopmail');
    } else plugins.push('vpopmail');
    const limits: Record<string, unknown> = { ...(s.kind === 'smtp' ? env.smtpLimits : {}), maxConnections: s.maxConnections ?? 40 };
    const listener: Record<string, unknown> = {
      name,
      protocol: s.kind,
      listen: `${ip}:${s.port + env.portOffset}`,
      tls: 'starttls',
      ...(s.kind === 'smtp' && env.greeting ? { greeting: env.greeting } : {}),
      limits,
      plugins,
    };
    out.push(listener);
    report.mapped(s.where, `listener ${name} (${s.kind}) on ${listener.listen}, maxConnections ${limits.maxConnections}${s.maxConnections === undefined ? " (tcpserver's default -c 40)" : ''}${s.vchkpw ? ', logins by vpopmail (vchkpw)' : ''}`);
    if (s.vchkpw || s.kind === 'pop3') {
      report.attention(name, `passwords are taken only after STARTTLS/STLS (a certificate is generated into var/tls unless cert and key are set); the old box took them in clear: mail clients must turn TLS on, or set allowInsecureAuth: true on ${name}`);
    }
  }
  return out;
}

interface StoreEnv {
  readonly mode: MaildirMode;
  readonly root: string;
  readonly report: ImportReport;
}

function planStore(domains: readonly DomainInBox[], env: StoreEnv): Pick<SitePlan, 'domains' | 'users' | 'aliases' | 'mailboxes' | 'desUsers'> {
  const { report } = env;
  const outDomains: Array<NewDomain & Pick<DomainRecord, 'catchall'>> = [];
  const users: UserPlan[] = [];
  const aliases: Array<Pick<AliasRecord, 'domain' | 'name' | 'targets'>> = [];
  const mailboxes: MailboxMove[] = [];
  const desUsers: string[] = [];
  for (const d of domains) {
    if (d.aliasOf) {
      report.notMapped(d.name, `an alias domain of ${d.aliasOf} (vaddaliasdomain): yubin has none yet; add it with \`yubin domain add ${d.name}\` and aliases, or keep it in rcpthosts and forward`);
      continue;
    }
    const domainFlags: Partial<UserFlags> = Object.fromEntries((d.limits?.flags ?? []).map((f) => [f, true]));
    outDomains.push({
      name: d.name,
      catchall: d.catchall,
      clearPasswords: d.users.some((u) => u.clear !== undefined),
      ...(d.limits?.defaultQuota ? { defaultQuota: d.limits.defaultQuota } : {}),
    });
    report.mapped(d.name, `vpopmail domain, ${count(d.users.length, 'user')}, catch-all ${d.catchall.kind === 'forward' ? `forward to ${d.catchall.address}` : d.catchall.kind}`);
    if (d.limits?.defaultQuota) report.mapped(`${d.name} vlimits`, `default quota ${d.limits.defaultQuota} for new users`);
    if (d.limits?.flags.length) report.mapped(`${d.name} vlimits`, `${d.limits.flags.join(', ')} set on every user, as vpopmail applied them`);
    for (const u of d.limits?.unmapped ?? []) report.notMapped(u.where, `${u.key}: ${u.value}: yubin has no such domain limit`);

    for (const u of d.users) {
      const address = `${u.name}@${d.name}`;
      const defaultDir = path.join(env.root, d.name, u.name);
      const oldMaildir = path.join(u.homedir, 'Maildir');
      const inPlace = env.mode === 'in-place';
      const dir = inPlace && path.resolve(u.homedir) !== path.resolve(defaultDir) ? u.homedir : undefined;
      const passwordHash = u.hash;
      let rehashFromClear = false;
      if (u.scheme === 'des-crypt') {
        if (u.clear !== undefined) {
          rehashFromClear = true;
          report.mapped(address, 'DES crypt password: replaced by an scrypt hash of the clear-text copy vpopmail kept');
        } else {
          desUsers.push(address);
          report.attention(address, `DES crypt password, which yubin cannot check: reset it with \`yubin user passwd ${address}\``);
        }
      } else if (u.scheme === 'unknown' || u.hash === '') report.attention(address, `password field ${u.hash === '' ? 'empty (locked)' : `of an unknown scheme (${u.hash.slice(0, 4)}…)`}: the login fails until it is reset`);
      if (u.otherBits) report.notMapped(address, `gid flag bits 0x${u.otherBits.toString(16)} (V_USER0-3 …) have no meaning in yubin`);
      users.push({
        domain: d.name,
        name: u.name,
        passwordHash,
        clearPassword: u.clear,
        quota: u.quota,
        flags: { ...u.flags, ...domainFlags },
        realName: u.gecos,
        ...(dir ? { dir } : {}),
        ...(rehashFromClear ? { rehashFromClear } : {}),
      });
      const to = inPlace ? oldMaildir : path.join(defaultDir, 'Maildir');
      mailboxes.push({ address, from: oldMaildir, to });
      checkOrder(address, oldMaildir, report);
    }
    for (const a of d.aliases) {
      const targets = aliasTargets(a.lines, d, a.name, report, a.source);
      if (targets.length) {
        aliases.push({ domain: d.name, name: a.name, targets });
        report.mapped(a.source, `alias ${a.name}@${d.name} → ${targets.join(', ')}`);
      }
    }
  }
  return { domains: outDomains, users, aliases, mailboxes, desUsers };
}

/** An alias's or forward's lines as targets; what yubin cannot do is reported. */
function aliasTargets(lines: readonly DotQmailLine[], d: DomainInBox, name: string, report: ImportReport, source: string): string[] {
  const targets: string[] = [];
  const self = `${name}@${d.name}`;
  const userOfMaildir = (p: string): string | undefined => {
    const clean = p.replace(/\/+$/, '');
    if (clean === './Maildir' || clean === 'Maildir') return d.users.some((u) => u.name === name) ? name : undefined;
    return d.users.find((u) => path.resolve(u.homedir, 'Maildir') === path.resolve(clean))?.name;
  };
  for (const l of lines) {
    if (l.kind === 'forward') targets.push(l.address);
    else if (l.kind === 'maildir') {
      const user = userOfMaildir(l.path);
      if (user) targets.push(`${user}@${d.name}`);
      else report.notMapped(l.where, `delivers to ${l.path}, which is no user's Maildir in ${d.name}`);
    } else if (l.kind === 'vdelivermail' && d.users.some((u) => u.name === name)) targets.push(self); // a user's .qmail: deliver as usual too
    else if (l.kind === 'mbox') report.notMapped(l.where, `an mbox file (${l.path}): yubin delivers to Maildirs only`);
    else if (l.kind === 'program') report.notMapped(l.where, `runs |${l.command}: yubin runs no programs from .qmail files (autoresponders and lists are plugins)`);
    else report.notMapped(l.where, 'vdelivermail in an alias without a user of that name');
  }
  const unique = [...new Set(targets)];
  // A user's own .qmail that only delivers to their own Maildir changes nothing.
  if (unique.length === 1 && unique[0] === self) return [];
  if (!unique.length && !lines.length) report.notMapped(source, 'empty: nothing to map');
  return unique;
}

/**
 * qmail-pop3d numbers messages by mtime; yubin by the delivery time in the
 * file name (no stat per message). Where the two orders differ, POP3 message
 * numbers would differ (UIDLs do not): say so.
 */
function checkOrder(address: string, maildir: string, report: ImportReport): void {
  const files: Array<{ name: string; mtime: number; named: number }> = [];
  for (const sub of ['new', 'cur']) {
    let names: string[];
    try {
      names = readdirSync(path.join(maildir, sub));
    } catch {
      continue;
    }
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const mtime = statSync(path.join(maildir, sub, name)).mtimeMs;
      files.push({ name, mtime, named: timeFromName(name) ?? mtime });
    }
  }
  const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const qmail = [...files].sort((a, b) => Math.floor(a.mtime / 1000) - Math.floor(b.mtime / 1000) || byName(a, b)).map((f) => f.name);
  const ours = [...files].sort((a, b) => a.named - b.named || byName(a, b)).map((f) => f.name);
  const moved = qmail.filter((n, i) => ours[i] !== n).length;
  if (moved) report.attention(address, `${moved} of ${files.length} messages have mtimes out of step with the times in their names: POP3 message numbers will differ from qmail-pop3d's (UIDLs stay the same)`);
}
