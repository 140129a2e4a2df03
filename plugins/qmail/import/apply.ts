/**
 * Writes a SitePlan: yubin.yaml and the rule files, the vpopmail store, the
 * mailboxes (copied or moved with their names, flags and mtimes, or left in
 * place) and qmail's queued messages into the spool. Running it again is
 * safe: a ledger in var/ remembers what the last run wrote, so files the
 * admin edited since are left alone (the new text goes beside them as
 * `.new`), passwords changed on yubin's side are kept, mail is not copied
 * twice and no queued message is injected twice.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { controlRequest, Spool } from '../../../core/index.js';
import { hashPassword } from '../../vpopmail/passwords.js';
import { SqliteStore } from '../../vpopmail/sqlite-store.js';
import type { MailboxMove, MaildirMode, SitePlan } from './plan.js';
import type { ImportReport } from './report.js';

interface Ledger {
  /** Site file → sha256 of what the last import wrote. */
  files: Record<string, string>;
  /** user@domain → the password field last imported from vpasswd. */
  passwords: Record<string, string>;
  /** Fingerprint of a queued qmail message → the spool id it got. */
  queue: Record<string, string>;
}

export interface ApplyResult {
  readonly written: string[];
  readonly injected: number;
  readonly copiedMessages: number;
}

const sha = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

const HEADER = `# Written by \`yubin import qmail\` from a qmail + vpopmail box. Check it with
#
#     yubin check-config -c yubin.yaml
#
# and start it with \`yubin serve -c yubin.yaml\`. Running the import again
# updates this file only while nobody has edited it (otherwise the new text
# goes to yubin.yaml.new). Relative paths are resolved against this directory.
`;

export function configText(config: Record<string, unknown>): string {
  return HEADER + '\n' + YAML.stringify(config, { lineWidth: 0 });
}

export async function applyPlan(plan: SitePlan, siteDir: string, mode: MaildirMode, report: ImportReport): Promise<ApplyResult> {
  const dataDir = path.join(siteDir, 'var');
  await mkdir(dataDir, { recursive: true, mode: 0o750 });
  const ledgerFile = path.join(dataDir, 'import-qmail.json');
  const ledger: Ledger = existsSync(ledgerFile) ? (JSON.parse(readFileSync(ledgerFile, 'utf8')) as Ledger) : { files: {}, passwords: {}, queue: {} };
  const saveLedger = () => writeFile(ledgerFile, JSON.stringify(ledger, null, 1));
  const written: string[] = [];

  // ---- files: written when new or untouched since the last import
  for (const f of [{ path: 'yubin.yaml', content: configText(plan.config) }, ...plan.files]) {
    const target = path.join(siteDir, f.path);
    await mkdir(path.dirname(target), { recursive: true });
    const now = existsSync(target) ? sha(readFileSync(target)) : undefined;
    const wanted = sha(f.content);
    if (now === wanted) continue;
    if (now !== undefined && now !== ledger.files[f.path]) {
      await writeFile(`${target}.new`, f.content);
      report.attention(f.path, `edited since the last import: left as it is, the imported version is ${f.path}.new`);
      written.push(`${f.path}.new`);
      continue;
    }
    await writeFile(target, f.content);
    ledger.files[f.path] = wanted;
    written.push(f.path);
  }
  await saveLedger();

  // ---- the vpopmail store
  const store = new SqliteStore(path.join(dataDir, 'vpopmail.sqlite'));
  try {
    for (const d of plan.domains) {
      const fields = { catchall: d.catchall, clearPasswords: d.clearPasswords ?? false, ...(d.defaultQuota ? { defaultQuota: d.defaultQuota } : {}) };
      if (store.getDomain(d.name)) store.updateDomain(d.name, fields);
      else store.addDomain({ name: d.name, ...fields });
    }
    for (const u of plan.users) {
      const address = `${u.name}@${u.domain}`;
      const { rehashFromClear, ...record } = u;
      const passwordHash = rehashFromClear && u.clearPassword !== undefined ? await hashPassword(u.clearPassword) : u.passwordHash;
      const existing = store.getUser(u.domain, u.name);
      const fields = { clearPassword: record.clearPassword, quota: record.quota, flags: record.flags, realName: record.realName, dir: record.dir };
      if (!existing) store.addUser({ ...record, passwordHash });
      else if (ledger.passwords[address] !== u.passwordHash || existing.passwordHash === u.passwordHash) store.updateUser(u.domain, u.name, { ...fields, passwordHash });
      // The old box's password is unchanged since the last import, but yubin's is new (re-hashed at a login, or reset): keep yubin's.
      else store.updateUser(u.domain, u.name, fields);
      ledger.passwords[address] = u.passwordHash;
    }
    for (const a of plan.aliases) {
      store.removeAlias(a.domain, a.name);
      for (const target of a.targets) store.addAliasTarget(a.domain, a.name, target);
    }
  } finally {
    store.close();
  }
  await saveLedger();
  written.push('var/vpopmail.sqlite');

  // ---- mailboxes
  let copiedMessages = 0;
  if (mode !== 'in-place') {
    for (const m of plan.mailboxes) copiedMessages += await carryMaildir(m, mode, report);
  }

  // ---- mail in flight
  let injected = 0;
  if (plan.queue.length) {
    const spool = new Spool(path.join(dataDir, 'queue'));
    await spool.init(false);
    for (const m of plan.queue) {
      const content = readFileSync(m.file);
      const print = sha(Buffer.concat([content, Buffer.from(`\0${m.sender}\0${m.recipients.join('\0')}`)]));
      if (ledger.queue[print]) continue;
      // qmail keeps messages with LF line ends; the spool holds them as SMTP carried them.
      const crlf = Buffer.from(content.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
      const id = await spool.inject(crlf, {
        sender: m.sender,
        senderParams: {},
        recipients: m.recipients.map((address) => ({ address, params: {} })),
        received: m.received,
        listener: 'qmail-import',
        remoteIp: '127.0.0.1',
        heloName: undefined,
        authUser: undefined,
        prependHeaders: '',
      });
      ledger.queue[print] = id;
      await saveLedger();
      injected++;
      // A yubin already serving this site (the cutover's second import) delivers it at once.
      await controlRequest(dataDir, { cmd: 'notify', id }, 2_000).catch(() => undefined);
    }
  }
  return { written, injected, copiedMessages };
}

/** The base name a POP3 client knows a message by (its UIDL): the name without `:2,FLAGS`. */
const baseOf = (name: string) => name.replace(/:.*$/, '');

/**
 * One Maildir (and its ++ folders, maildirsize) into the site, names, flags
 * and mtimes kept. A message already there under any flags is not copied
 * again, so a second run only brings what arrived since.
 */
async function carryMaildir(m: MailboxMove, mode: 'copy' | 'move', report: ImportReport): Promise<number> {
  if (!existsSync(m.from)) {
    report.attention(m.address, `no Maildir at ${m.from}: an empty one is made at the first delivery or login`);
    return 0;
  }
  let count = 0;
  const walk = async (from: string, to: string): Promise<void> => {
    await mkdir(to, { recursive: true, mode: 0o700 });
    const entries = await readdir(from, { withFileTypes: true });
    const isMailDir = /\/(new|cur)$/.test(from);
    const present = isMailDir ? new Set(await Promise.all([readdir(path.join(to, '..', 'new')).catch(() => []), readdir(path.join(to, '..', 'cur')).catch(() => [])]).then((l) => l.flat().map(baseOf))) : new Set<string>();
    for (const e of entries) {
      const src = path.join(from, e.name);
      const dst = path.join(to, e.name);
      if (e.isDirectory()) {
        if (e.name === 'tmp') {
          await mkdir(dst, { recursive: true, mode: 0o700 }); // a delivery in progress on the old box is not a message yet
          continue;
        }
        await walk(src, dst);
        continue;
      }
      if (!e.isFile()) continue;
      if (isMailDir && present.has(baseOf(e.name))) continue;
      if (!isMailDir && existsSync(dst)) continue; // maildirsize, subscriptions: the site's copy is newer
      const st = await stat(src);
      if (mode === 'move') {
        await rename(src, dst).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EXDEV') throw err;
          await cp(src, dst, { preserveTimestamps: true });
          await rm(src);
        });
      } else await cp(src, dst, { preserveTimestamps: true });
      await utimes(dst, st.atime, st.mtime);
      if (isMailDir) count++;
    }
  };
  await walk(m.from, m.to);
  report.mapped(m.address, `${count} messages ${mode === 'move' ? 'moved' : 'copied'} to ${m.to}, names, flags and mtimes kept`);
  return count;
}
