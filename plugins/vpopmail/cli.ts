/**
 * `yubin domain|user|alias`: the vpopmail commands under one roof
 * (vadddomain, vdeldomain, vdominfo, vadduser, vdeluser, vpasswd, vuserinfo,
 * vsetuserquota, vmoduser, valias), and `yubin store migrate`. They write the
 * store directly; a running server sees the change at its next lookup, without
 * a restart.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import type { Command, Option } from 'commander';
import { CommandError, commandOptions, ensureMaildir, loadConfig } from '../../core/index.js';
import { registerStoreCommands } from './migrate.js';
import { maildirOf, parseAddress, userDir, validDomain } from './names.js';
import { openStore, optionsProblem, storePaths, vpopmailOptions, type StorePaths } from './options.js';
import { hashPassword } from './passwords.js';
import { formatQuota, isUnlimited, parseQuota, readUsage } from './quota.js';
import { catchallText } from './sqlite-store.js';
import { StoreConflict, type Catchall, type DomainRecord, type MailStore, type UserFlag, type UserRecord } from './store.js';
import path from 'node:path';

/** A usage problem: one line on stderr, exit 2. */
export class MailCommandError extends CommandError {}

const usage = (message: string): never => {
  throw new MailCommandError(message);
};

interface Ctx {
  readonly store: MailStore;
  readonly paths: StorePaths;
}

async function withStore<T>(configFile: string, fn: (ctx: Ctx) => Promise<T>): Promise<T> {
  const { config } = await loadConfig(configFile);
  const parsed = vpopmailOptions.safeParse(commandOptions(config, 'vpopmail'));
  if (!parsed.success) usage(optionsProblem(parsed.error));
  const paths = storePaths(parsed.data!, config.dataDir);
  const store = openStore(paths);
  try {
    return await fn({ store, paths });
  } catch (err) {
    if (err instanceof StoreConflict) usage(err.message);
    throw err;
  } finally {
    await store.close();
  }
}

function domainArg(text: string): string {
  const d = text.toLowerCase().replace(/\.$/, '');
  return validDomain(d) ? d : usage(`invalid domain name: ${text}`);
}

function addressArg(text: string): { name: string; domain: string } {
  return parseAddress(text) ?? usage(`invalid address: ${text} (expected user@domain)`);
}

function quotaArg(text: string): string {
  const q = parseQuota(text);
  return q ? formatQuota(q) : usage(`invalid quota: ${text} (use NOQUOTA, 10000000S, 1000C, 10000000S,1000C or 10MB)`);
}

function catchallArg(text: string): Catchall {
  if (text === 'bounce' || text === 'bounce-no-mailbox') return { kind: 'bounce-no-mailbox' };
  if (text === 'delete') return { kind: 'delete' };
  const a = parseAddress(text);
  return a ? { kind: 'forward', address: `${a.name}@${a.domain}` } : usage(`invalid catch-all: ${text} (bounce, delete or an address)`);
}

function onOff(text: string, what: string): boolean {
  if (['on', 'yes', 'true', '1'].includes(text)) return true;
  if (['off', 'no', 'false', '0'].includes(text)) return false;
  return usage(`${what}: expected on or off, got ${text}`);
}

async function needDomain(store: MailStore, name: string): Promise<DomainRecord> {
  return (await store.getDomain(name)) ?? usage(`no such domain: ${name}`);
}

async function needUser(store: MailStore, a: { name: string; domain: string }): Promise<UserRecord> {
  await needDomain(store, a.domain);
  return (await store.getUser(a.domain, a.name)) ?? usage(`no such user: ${a.name}@${a.domain}`);
}

// ---- passwords ----

interface PasswordOpts {
  password?: string;
  passwordStdin?: boolean;
  random?: boolean;
}

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
}

/** Reads a line from the terminal without echoing it. */
async function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  let text = '';
  try {
    return await new Promise<string>((resolve, reject) => {
      const onData = (buf: Buffer) => {
        for (const ch of buf.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            stdin.off('data', onData);
            return resolve(text);
          }
          if (ch === '\u0003') {
            stdin.off('data', onData);
            return reject(new MailCommandError('interrupted'));
          }
          if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
          else text += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
  }
}

/** The new password: --password, --password-stdin, --random, or asked twice on the terminal. */
async function newPassword(opts: PasswordOpts, what: string): Promise<{ password: string; generated: boolean }> {
  const given = [opts.password !== undefined, opts.passwordStdin, opts.random].filter(Boolean).length;
  if (given > 1) usage('give only one of --password, --password-stdin and --random');
  let password: string;
  if (opts.password !== undefined) password = opts.password;
  else if (opts.passwordStdin) password = await readStdinLine();
  else if (opts.random || !process.stdin.isTTY) {
    // No terminal to ask on: a random one, printed once (vpasswd -r).
    return { password: randomBytes(12).toString('base64url'), generated: true };
  } else {
    password = await promptHidden(`password for ${what}: `);
    const again = await promptHidden('again: ');
    if (again !== password) usage('the passwords do not match');
  }
  if (!password) usage('empty password');
  if (/[\0\r\n]/.test(password)) usage('a password cannot contain NUL or line breaks');
  return { password, generated: false };
}

// ---- output ----

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

function json(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

const FLAG_NAMES: Record<string, UserFlag> = {
  pop: 'noPop',
  smtp: 'noSmtp',
  imap: 'noImap',
  webmail: 'noWebmail',
  relay: 'noRelay',
  'password-change': 'noPasswordChange',
};

function userView(u: UserRecord, paths: StorePaths, usage?: { bytes: number; count: number; percent: number }) {
  return {
    address: `${u.name}@${u.domain}`,
    realName: u.realName,
    quota: u.quota,
    usage,
    maildir: maildirOf(paths.root, u),
    passwordScheme: u.passwordHash.startsWith('$') ? u.passwordHash.split('$')[1] : 'clear',
    clearPassword: u.clearPassword !== undefined,
    disabled: Object.entries(FLAG_NAMES)
      .filter(([, flag]) => u.flags[flag])
      .map(([name]) => name),
    bounceMail: u.flags.bounceMail,
    spamFiling: u.spamFiling ?? 'domain',
    created: new Date(u.created).toISOString(),
    lastAuth: u.lastAuth && { ...u.lastAuth, time: new Date(u.lastAuth.time).toISOString() },
  };
}

async function usageOf(u: UserRecord, paths: StorePaths) {
  const quota = parseQuota(u.quota) ?? {};
  const used = await readUsage(maildirOf(paths.root, u), quota).catch(() => ({ bytes: 0, count: 0 }));
  const percent = isUnlimited(quota)
    ? 0
    : Math.max(quota.bytes ? (100 * used.bytes) / quota.bytes : 0, quota.count ? (100 * used.count) / quota.count : 0);
  return { bytes: used.bytes, count: used.count, percent: Math.round(percent) };
}

async function hasMail(maildir: string): Promise<boolean> {
  for (const sub of ['new', 'cur']) {
    const names = await readdir(path.join(maildir, sub)).catch(() => [] as string[]);
    if (names.some((n) => !n.startsWith('.'))) return true;
  }
  return false;
}

// ---- commands ----

export function registerMailCommands(program: Command, configOption: () => Option): void {
  const withPasswordOptions = (cmd: Command) =>
    cmd
      .option('--password <password>', 'the password (visible to ps: prefer the prompt or --password-stdin)')
      .option('--password-stdin', 'read the password from the first line of standard input')
      .option('--random', 'generate a random password and print it');

  // ---- domain ----
  const domain = program.command('domain').description('virtual domains (vadddomain, vdeldomain, vdominfo)');

  withPasswordOptions(
    domain
      .command('add <domain>')
      .description("add a virtual domain and its postmaster; it is local at once (vadddomain)")
      .addOption(configOption())
      .option('--quota <quota>', 'default quota for new users, e.g. 10000000S,1000C', 'NOQUOTA')
      .option('--catchall <what>', 'bounce, delete or an address', 'bounce')
      .option('--clear-passwords', 'keep clear passwords (needed for CRAM-MD5 and APOP)')
      .option('--spam-filing', 'file mail flagged X-Spam-Flag: YES into the spam folder'),
  ).action(async (name: string, opts: PasswordOpts & { config: string; quota: string; catchall: string; clearPasswords?: boolean; spamFiling?: boolean }) => {
    const d = domainArg(name);
    const quota = quotaArg(opts.quota);
    const catchall = catchallArg(opts.catchall);
    await withStore(opts.config, async ({ store, paths }) => {
      if (await store.getDomain(d)) usage(`domain ${d} exists`);
      const pw = await newPassword(opts, `postmaster@${d}`);
      const passwordHash = await hashPassword(pw.password);
      await mkdir(path.join(paths.root, d), { recursive: true, mode: 0o700 });
      await store.addDomain({ name: d, catchall, defaultQuota: quota, clearPasswords: opts.clearPasswords ?? false, spamFiling: opts.spamFiling ?? false });
      await store.addUser({ domain: d, name: 'postmaster', passwordHash, clearPassword: pw.password, realName: 'Postmaster' });
      await ensureMaildir(maildirOf(paths.root, { domain: d, name: 'postmaster' }));
      out(`added domain ${d} with postmaster@${d}${pw.generated ? `, password ${pw.password}` : ''}`);
    });
  });

  domain
    .command('del <domain>')
    .description('remove a domain, its users, aliases and mailboxes (vdeldomain)')
    .addOption(configOption())
    .option('--force', 'also when mailboxes other than an empty postmaster exist')
    .action(async (name: string, opts: { config: string; force?: boolean }) => {
      const d = domainArg(name);
      await withStore(opts.config, async ({ store, paths }) => {
        await needDomain(store, d);
        if (!opts.force) {
          const users = await store.listUsers(d);
          const others = users.filter((u) => u.name !== 'postmaster');
          if (others.length) usage(`domain ${d} has ${others.length} mailbox(es) besides postmaster: use --force to delete them too`);
          if (await hasMail(maildirOf(paths.root, users.find((u) => u.name === 'postmaster') ?? { domain: d, name: 'postmaster' }))) usage(`postmaster@${d} has mail: use --force to delete it too`);
        }
        await store.deleteDomain(d);
        await rm(path.join(paths.root, d), { recursive: true, force: true });
        out(`deleted domain ${d}`);
      });
    });

  domain
    .command('list')
    .description('every virtual domain')
    .addOption(configOption())
    .option('--json', 'as JSON')
    .action(async (opts: { config: string; json?: boolean }) => {
      await withStore(opts.config, async ({ store }) => {
        const domains = await store.listDomains();
        if (opts.json) json(domains.map((d) => d.name));
        else if (domains.length) out(domains.map((d) => d.name).join('\n'));
      });
    });

  domain
    .command('info <domain>')
    .description('settings and counts of a domain (vdominfo)')
    .addOption(configOption())
    .option('--json', 'as JSON')
    .action(async (name: string, opts: { config: string; json?: boolean }) => {
      const d = domainArg(name);
      await withStore(opts.config, async ({ store, paths }) => {
        const rec = await needDomain(store, d);
        const info = {
          domain: rec.name,
          dir: path.join(paths.root, rec.name),
          users: await store.countUsers(d),
          aliases: (await store.listAliases(d)).length,
          catchall: catchallText(rec.catchall),
          defaultQuota: rec.defaultQuota,
          clearPasswords: rec.clearPasswords,
          spamFiling: rec.spamFiling,
          created: new Date(rec.created).toISOString(),
        };
        if (opts.json) return json(info);
        out(Object.entries(info).map(([k, v]) => `${k}: ${String(v)}`).join('\n'));
      });
    });

  domain
    .command('catchall <domain> <what>')
    .description("mail for unknown users: bounce (550 at RCPT), delete (accepted, dropped) or an address (forwarded)")
    .addOption(configOption())
    .action(async (name: string, what: string, opts: { config: string }) => {
      const d = domainArg(name);
      const catchall = catchallArg(what);
      await withStore(opts.config, async ({ store }) => {
        await needDomain(store, d);
        await store.updateDomain(d, { catchall });
        out(`catch-all of ${d}: ${catchallText(catchall)}`);
      });
    });

  domain
    .command('mod <domain>')
    .description('change domain settings (vmoddomlimits)')
    .addOption(configOption())
    .option('--quota <quota>', 'default quota for new users')
    .option('--clear-passwords <on|off>', 'keep clear passwords (CRAM-MD5, APOP); off erases the stored ones')
    .option('--spam-filing <on|off>', 'file flagged spam into the spam folder')
    .action(async (name: string, opts: { config: string; quota?: string; clearPasswords?: string; spamFiling?: string }) => {
      const d = domainArg(name);
      const changes = {
        ...(opts.quota !== undefined ? { defaultQuota: quotaArg(opts.quota) } : {}),
        ...(opts.clearPasswords !== undefined ? { clearPasswords: onOff(opts.clearPasswords, '--clear-passwords') } : {}),
        ...(opts.spamFiling !== undefined ? { spamFiling: onOff(opts.spamFiling, '--spam-filing') } : {}),
      };
      if (!Object.keys(changes).length) usage('nothing to change: give --quota, --clear-passwords or --spam-filing');
      await withStore(opts.config, async ({ store }) => {
        await needDomain(store, d);
        await store.updateDomain(d, changes);
        out(`changed domain ${d}`);
      });
    });

  // ---- user ----
  const user = program.command('user').description('mailboxes (vadduser, vdeluser, vpasswd, vuserinfo, vsetuserquota, vmoduser)');

  withPasswordOptions(
    user
      .command('add <address>')
      .description('add a mailbox (vadduser)')
      .addOption(configOption())
      .option('--quota <quota>', "quota, e.g. 10000000S,1000C (default: the domain's)")
      .option('--name <realName>', 'real name (gecos)', ''),
  ).action(async (address: string, opts: PasswordOpts & { config: string; quota?: string; name: string }) => {
    const a = addressArg(address);
    const quota = opts.quota === undefined ? undefined : quotaArg(opts.quota);
    await withStore(opts.config, async ({ store, paths }) => {
      await needDomain(store, a.domain);
      if (await store.getUser(a.domain, a.name)) usage(`user ${a.name}@${a.domain} exists`);
      const pw = await newPassword(opts, `${a.name}@${a.domain}`);
      await store.addUser({ domain: a.domain, name: a.name, passwordHash: await hashPassword(pw.password), clearPassword: pw.password, quota, realName: opts.name });
      await ensureMaildir(maildirOf(paths.root, a));
      out(`added ${a.name}@${a.domain}${pw.generated ? `, password ${pw.password}` : ''}`);
    });
  });

  user
    .command('del <address>')
    .description('remove a mailbox and its mail (vdeluser)')
    .addOption(configOption())
    .action(async (address: string, opts: { config: string }) => {
      const a = addressArg(address);
      await withStore(opts.config, async ({ store, paths }) => {
        const user = await needUser(store, a);
        await store.deleteUser(a.domain, a.name);
        await rm(userDir(paths.root, user), { recursive: true, force: true });
        out(`deleted ${a.name}@${a.domain}`);
      });
    });

  withPasswordOptions(user.command('passwd <address>').description('set a password (vpasswd)').addOption(configOption())).action(
    async (address: string, opts: PasswordOpts & { config: string }) => {
      const a = addressArg(address);
      await withStore(opts.config, async ({ store }) => {
        await needUser(store, a);
        const pw = await newPassword(opts, `${a.name}@${a.domain}`);
        await store.updateUser(a.domain, a.name, { passwordHash: await hashPassword(pw.password), clearPassword: pw.password });
        out(`password of ${a.name}@${a.domain} changed${pw.generated ? ` to ${pw.password}` : ''}`);
      });
    },
  );

  user
    .command('info <address>')
    .description('a mailbox: quota and usage, flags, last login (vuserinfo)')
    .addOption(configOption())
    .option('--json', 'as JSON')
    .action(async (address: string, opts: { config: string; json?: boolean }) => {
      const a = addressArg(address);
      await withStore(opts.config, async ({ store, paths }) => {
        const u = await needUser(store, a);
        const view = userView(u, paths, await usageOf(u, paths));
        if (opts.json) return json(view);
        out(
          [
            `name: ${view.address}`,
            `real name: ${view.realName}`,
            `password: ${view.passwordScheme}${view.clearPassword ? ' (clear password kept)' : ''}`,
            `quota: ${view.quota}`,
            `usage: ${view.usage!.percent}% (${view.usage!.bytes} bytes, ${view.usage!.count} messages)`,
            `maildir: ${view.maildir}`,
            `disabled: ${view.disabled.join(', ') || 'nothing'}${view.bounceMail ? ' (bounces all mail)' : ''}`,
            `spam filing: ${String(view.spamFiling)}`,
            `last auth: ${view.lastAuth ? `${view.lastAuth.time} from ${view.lastAuth.ip} (${view.lastAuth.service})` : 'never'}`,
          ].join('\n'),
        );
      });
    });

  user
    .command('list <domain>')
    .description('the mailboxes of a domain (vuserinfo -D)')
    .addOption(configOption())
    .option('--json', 'as JSON')
    .action(async (name: string, opts: { config: string; json?: boolean }) => {
      const d = domainArg(name);
      await withStore(opts.config, async ({ store, paths }) => {
        await needDomain(store, d);
        const users = await store.listUsers(d);
        if (opts.json) return json(users.map((u) => userView(u, paths)));
        if (users.length) out(users.map((u) => `${u.name}@${u.domain}\t${u.quota}${u.realName ? `\t${u.realName}` : ''}`).join('\n'));
      });
    });

  user
    .command('quota <address> <quota>')
    .description('set a quota: NOQUOTA, 10000000S, 1000C, 10000000S,1000C (vsetuserquota)')
    .addOption(configOption())
    .action(async (address: string, text: string, opts: { config: string }) => {
      const a = addressArg(address);
      const quota = quotaArg(text);
      await withStore(opts.config, async ({ store }) => {
        await needUser(store, a);
        await store.updateUser(a.domain, a.name, { quota });
        out(`quota of ${a.name}@${a.domain}: ${quota}`);
      });
    });

  user
    .command('mod <address>')
    .description(`change a mailbox (vmoduser); services: ${Object.keys(FLAG_NAMES).join(', ')}`)
    .addOption(configOption())
    .option('--disable <service...>', 'take a service away, e.g. --disable pop smtp')
    .option('--enable <service...>', 'give a service back')
    .option('--bounce-mail <on|off>', 'refuse all mail for this mailbox')
    .option('--spam-filing <on|off|domain>', "file flagged spam into the spam folder; domain: follow the domain's setting")
    .option('--name <realName>', 'real name')
    .option('--quota <quota>', 'quota')
    .action(
      async (
        address: string,
        opts: { config: string; disable?: string[]; enable?: string[]; bounceMail?: string; spamFiling?: string; name?: string; quota?: string },
      ) => {
        const a = addressArg(address);
        const flags: Partial<Record<UserFlag, boolean>> = {};
        for (const [list, value] of [
          [opts.disable, true],
          [opts.enable, false],
        ] as const) {
          for (const s of list ?? []) flags[FLAG_NAMES[s] ?? usage(`unknown service: ${s} (${Object.keys(FLAG_NAMES).join(', ')})`)] = value;
        }
        if (opts.bounceMail !== undefined) flags.bounceMail = onOff(opts.bounceMail, '--bounce-mail');
        const spamFiling = opts.spamFiling === undefined ? undefined : opts.spamFiling === 'domain' ? null : onOff(opts.spamFiling, '--spam-filing');
        const changes = {
          flags,
          ...(opts.name !== undefined ? { realName: opts.name } : {}),
          ...(opts.quota !== undefined ? { quota: quotaArg(opts.quota) } : {}),
          ...(spamFiling !== undefined ? { spamFiling: spamFiling ?? undefined } : {}),
        };
        if (!Object.keys(flags).length && Object.keys(changes).length === 1) usage('nothing to change');
        await withStore(opts.config, async ({ store }) => {
          await needUser(store, a);
          await store.updateUser(a.domain, a.name, changes);
          out(`changed ${a.name}@${a.domain}`);
        });
      },
    );

  // ---- alias ----
  const alias = program.command('alias').description('aliases and forwards (valias)');

  alias
    .command('add <alias> <target>')
    .description('forward alias@domain to target (repeat for more targets; an existing user then forwards too)')
    .addOption(configOption())
    .action(async (name: string, target: string, opts: { config: string }) => {
      const a = addressArg(name);
      const t = addressArg(target);
      await withStore(opts.config, async ({ store }) => {
        await needDomain(store, a.domain);
        await store.addAliasTarget(a.domain, a.name, `${t.name}@${t.domain}`);
        out(`${a.name}@${a.domain} -> ${t.name}@${t.domain}`);
      });
    });

  alias
    .command('del <alias> [target]')
    .description('remove one target, or the whole alias')
    .addOption(configOption())
    .action(async (name: string, target: string | undefined, opts: { config: string }) => {
      const a = addressArg(name);
      const t = target === undefined ? undefined : addressArg(target);
      await withStore(opts.config, async ({ store }) => {
        await needDomain(store, a.domain);
        const removed = await store.removeAlias(a.domain, a.name, t && `${t.name}@${t.domain}`);
        if (!removed) usage(`no such alias: ${a.name}@${a.domain}${t ? ` -> ${t.name}@${t.domain}` : ''}`);
        out(`removed ${a.name}@${a.domain}${t ? ` -> ${t.name}@${t.domain}` : ''}`);
      });
    });

  alias
    .command('list [domain]')
    .description('aliases, as alias -> target lines')
    .addOption(configOption())
    .option('--json', 'as JSON')
    .action(async (name: string | undefined, opts: { config: string; json?: boolean }) => {
      const d = name === undefined ? undefined : domainArg(name);
      await withStore(opts.config, async ({ store }) => {
        if (d) await needDomain(store, d);
        const aliases = await store.listAliases(d);
        if (opts.json) return json(aliases.map((a) => ({ alias: `${a.name}@${a.domain}`, targets: a.targets })));
        const lines = aliases.flatMap((a) => a.targets.map((t) => `${a.name}@${a.domain} -> ${t}`));
        if (lines.length) out(lines.join('\n'));
      });
    });

  // ---- store ----
  registerStoreCommands(program, configOption);
}
