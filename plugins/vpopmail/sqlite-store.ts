/**
 * The embedded MailStore: one SQLite file in dataDir (better-sqlite3), in WAL
 * mode so the CLI can write while the server reads. The schema carries its
 * version in `PRAGMA user_version`; opening an older file runs the
 * migrations it lacks, in one transaction each.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrateSchema, StatementCache } from '../../core/index.js';
import {
  catchallText,
  flagsToBits,
  StoreConflict,
  type AliasRecord,
  type DomainChanges,
  type DomainDump,
  type DomainRecord,
  type MailStore,
  type NewDomain,
  type NewUser,
  type UserChanges,
  type UserRecord,
} from './store.js';
import { domainFrom, userFrom, type DomainRow, type UserRow } from './store-rows.js';

/** Each entry moves the schema one version up; never edit one that has shipped, add another. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE domains (
     name TEXT PRIMARY KEY,
     catchall TEXT NOT NULL DEFAULT 'bounce-no-mailbox',
     clear_passwords INTEGER NOT NULL DEFAULT 0,
     spam_filing INTEGER NOT NULL DEFAULT 0,
     default_quota TEXT NOT NULL DEFAULT 'NOQUOTA',
     created INTEGER NOT NULL
   );
   CREATE TABLE users (
     domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
     name TEXT NOT NULL,
     password TEXT NOT NULL,
     clear_password TEXT,
     quota TEXT NOT NULL DEFAULT 'NOQUOTA',
     flags INTEGER NOT NULL DEFAULT 0,
     real_name TEXT NOT NULL DEFAULT '',
     spam_filing INTEGER,
     created INTEGER NOT NULL,
     last_auth INTEGER,
     last_auth_ip TEXT,
     last_auth_service TEXT,
     PRIMARY KEY (domain, name)
   );
   CREATE TABLE aliases (
     domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
     name TEXT NOT NULL,
     target TEXT NOT NULL,
     position INTEGER NOT NULL,
     PRIMARY KEY (domain, name, target)
   );
   CREATE INDEX aliases_target ON aliases(domain, target);`,
  // 2: a user's own directory, for mailboxes imported from vpopmail in place.
  `ALTER TABLE users ADD COLUMN dir TEXT;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

// The CLI took it from here before the PostgreSQL store shared it.
export { catchallText };

const bool = (b: boolean | undefined) => (b === undefined ? null : b ? 1 : 0);

export class SqliteStore implements MailStore {
  private readonly db: Database.Database;
  private readonly statements: StatementCache;
  private localChanges = 0;

  constructor(file: string, options: { readonly?: boolean } = {}) {
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    this.statements = new StatementCache(this.db);
    // The server reads while the CLI writes: WAL lets both go on; a writer waits rather than fails.
    this.db.pragma('busy_timeout = 5000');
    if (!options.readonly) {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      migrateSchema(this.db, MIGRATIONS, 'mail store');
    }
    this.db.pragma('foreign_keys = ON');
  }

  private st(sql: string): Database.Statement {
    return this.statements.get(sql);
  }


  changeCounter(): number {
    // data_version moves when another connection commits; our own writes are counted apart.
    return (this.st('PRAGMA data_version').pluck().get() as number) * 1_000_000 + this.localChanges;
  }

  private changed<T>(value: T): T {
    this.localChanges++;
    return value;
  }

  getDomain(name: string): DomainRecord | undefined {
    const row = this.st('SELECT * FROM domains WHERE name = ?').get(name) as DomainRow | undefined;
    return row && domainFrom(row);
  }

  listDomains(): DomainRecord[] {
    return (this.st('SELECT * FROM domains ORDER BY name').all() as DomainRow[]).map(domainFrom);
  }

  domainNames(): string[] {
    return this.st('SELECT name FROM domains ORDER BY name').pluck().all() as string[];
  }

  addDomain(d: NewDomain): DomainRecord {
    try {
      this.st('INSERT INTO domains (name, catchall, clear_passwords, spam_filing, default_quota, created) VALUES (?, ?, ?, ?, ?, ?)').run(
        d.name,
        catchallText(d.catchall ?? { kind: 'bounce-no-mailbox' }),
        d.clearPasswords ? 1 : 0,
        d.spamFiling ? 1 : 0,
        d.defaultQuota ?? 'NOQUOTA',
        Date.now(),
      );
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new StoreConflict(`domain ${d.name} exists`);
      throw err;
    }
    return this.changed(this.getDomain(d.name)!);
  }

  updateDomain(name: string, c: DomainChanges): DomainRecord | undefined {
    const before = this.getDomain(name);
    if (!before) return undefined;
    const next = { ...before, ...c };
    this.st('UPDATE domains SET catchall = ?, clear_passwords = ?, spam_filing = ?, default_quota = ? WHERE name = ?').run(
      catchallText(next.catchall),
      next.clearPasswords ? 1 : 0,
      next.spamFiling ? 1 : 0,
      next.defaultQuota,
      name,
    );
    // Clear passwords are only kept where the domain says so.
    if (before.clearPasswords && !next.clearPasswords) this.st('UPDATE users SET clear_password = NULL WHERE domain = ?').run(name);
    return this.changed(this.getDomain(name));
  }

  deleteDomain(name: string): boolean {
    return this.changed(this.st('DELETE FROM domains WHERE name = ?').run(name).changes > 0);
  }

  getUser(domain: string, name: string): UserRecord | undefined {
    const row = this.st('SELECT * FROM users WHERE domain = ? AND name = ?').get(domain, name) as UserRow | undefined;
    return row && userFrom(row);
  }

  listUsers(domain: string): UserRecord[] {
    return (this.st('SELECT * FROM users WHERE domain = ? ORDER BY name').all(domain) as UserRow[]).map(userFrom);
  }

  countUsers(domain: string): number {
    return this.st('SELECT count(*) FROM users WHERE domain = ?').pluck().get(domain) as number;
  }

  addUser(u: NewUser): UserRecord {
    const domain = this.getDomain(u.domain);
    if (!domain) throw new StoreConflict(`domain ${u.domain} does not exist`);
    try {
      this.st(
        'INSERT INTO users (domain, name, password, clear_password, quota, flags, real_name, dir, spam_filing, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ).run(
        u.domain,
        u.name,
        u.passwordHash,
        domain.clearPasswords ? (u.clearPassword ?? null) : null,
        u.quota ?? domain.defaultQuota,
        flagsToBits(u.flags ?? {}),
        u.realName ?? '',
        u.dir ?? null,
        bool(u.spamFiling),
        Date.now(),
      );
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new StoreConflict(`user ${u.name}@${u.domain} exists`);
      throw err;
    }
    return this.changed(this.getUser(u.domain, u.name)!);
  }

  updateUser(domain: string, name: string, c: UserChanges): UserRecord | undefined {
    const before = this.getUser(domain, name);
    if (!before) return undefined;
    const clearAllowed = this.getDomain(domain)?.clearPasswords ?? false;
    const next = { ...before, ...c, flags: { ...before.flags, ...c.flags } };
    this.st('UPDATE users SET password = ?, clear_password = ?, quota = ?, flags = ?, real_name = ?, dir = ?, spam_filing = ? WHERE domain = ? AND name = ?').run(
      next.passwordHash,
      clearAllowed ? (next.clearPassword ?? null) : null,
      next.quota,
      flagsToBits(next.flags),
      next.realName,
      next.dir ?? null,
      bool(next.spamFiling),
      domain,
      name,
    );
    return this.changed(this.getUser(domain, name));
  }

  deleteUser(domain: string, name: string): boolean {
    return this.changed(this.st('DELETE FROM users WHERE domain = ? AND name = ?').run(domain, name).changes > 0);
  }

  recordLogin(domain: string, name: string, time: number, ip: string, service: string): void {
    // Not counted as a change: a login alters nothing the server caches.
    this.st('UPDATE users SET last_auth = ?, last_auth_ip = ?, last_auth_service = ? WHERE domain = ? AND name = ?').run(time, ip, service, domain, name);
  }

  getAlias(domain: string, name: string): AliasRecord | undefined {
    const targets = this.st('SELECT target FROM aliases WHERE domain = ? AND name = ? ORDER BY position').pluck().all(domain, name) as string[];
    return targets.length ? { domain, name, targets } : undefined;
  }

  listAliases(domain?: string): AliasRecord[] {
    const rows = (
      domain === undefined
        ? this.st('SELECT domain, name, target FROM aliases ORDER BY domain, name, position').all()
        : this.st('SELECT domain, name, target FROM aliases WHERE domain = ? ORDER BY name, position').all(domain)
    ) as Array<{ domain: string; name: string; target: string }>;
    const out: Array<{ domain: string; name: string; targets: string[] }> = [];
    for (const r of rows) {
      const last = out[out.length - 1];
      if (last && last.domain === r.domain && last.name === r.name) last.targets.push(r.target);
      else out.push({ domain: r.domain, name: r.name, targets: [r.target] });
    }
    return out;
  }

  aliasesTargeting(domain: string, address: string): AliasRecord[] {
    const names = this.st('SELECT DISTINCT name FROM aliases WHERE domain = ? AND target = ? COLLATE NOCASE').pluck().all(domain, address) as string[];
    return names.map((n) => this.getAlias(domain, n)!);
  }

  addAliasTarget(domain: string, name: string, target: string): AliasRecord {
    if (!this.getDomain(domain)) throw new StoreConflict(`domain ${domain} does not exist`);
    const position = (this.st('SELECT coalesce(max(position), 0) + 1 FROM aliases WHERE domain = ? AND name = ?').pluck().get(domain, name) as number) ?? 1;
    this.st('INSERT OR IGNORE INTO aliases (domain, name, target, position) VALUES (?, ?, ?, ?)').run(domain, name, target, position);
    return this.changed(this.getAlias(domain, name)!);
  }

  removeAlias(domain: string, name: string, target?: string): boolean {
    const result =
      target === undefined
        ? this.st('DELETE FROM aliases WHERE domain = ? AND name = ?').run(domain, name)
        : this.st('DELETE FROM aliases WHERE domain = ? AND name = ? AND target = ?').run(domain, name, target);
    return this.changed(result.changes > 0);
  }

  importDomains(dumps: readonly DomainDump[], options: { readonly replace: boolean }): void {
    const insertDomain = this.st('INSERT INTO domains (name, catchall, clear_passwords, spam_filing, default_quota, created) VALUES (?, ?, ?, ?, ?, ?)');
    const insertUser = this.st(
      `INSERT INTO users (domain, name, password, clear_password, quota, flags, real_name, dir, spam_filing, created, last_auth, last_auth_ip, last_auth_service)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const insertAlias = this.st('INSERT INTO aliases (domain, name, target, position) VALUES (?, ?, ?, ?)');
    this.db.transaction(() => {
      for (const { domain: d, users, aliases } of dumps) {
        if (this.getDomain(d.name)) {
          if (!options.replace) throw new StoreConflict(`domain ${d.name} exists`);
          this.st('DELETE FROM domains WHERE name = ?').run(d.name);
        }
        insertDomain.run(d.name, catchallText(d.catchall), d.clearPasswords ? 1 : 0, d.spamFiling ? 1 : 0, d.defaultQuota, d.created);
        for (const u of users) {
          insertUser.run(
            d.name,
            u.name,
            u.passwordHash,
            u.clearPassword ?? null,
            u.quota,
            flagsToBits(u.flags),
            u.realName,
            u.dir ?? null,
            bool(u.spamFiling),
            u.created,
            u.lastAuth?.time ?? null,
            u.lastAuth?.ip ?? null,
            u.lastAuth?.service ?? null,
          );
        }
        for (const a of aliases) a.targets.forEach((target, i) => insertAlias.run(d.name, a.name, target, i + 1));
      }
    })();
    this.changed(undefined);
  }

  close(): void {
    this.db.close();
  }
}
