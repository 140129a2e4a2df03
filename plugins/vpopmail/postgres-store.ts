/**
 * The MailStore for several nodes: PostgreSQL through a `pg` pool. The same
 * tables and answers as the SQLite store; names, domains and targets are
 * `COLLATE "C"` so comparisons and order are byte-wise as SQLite's are.
 *
 * Every write NOTIFYs one channel inside its transaction (delivered at
 * commit); each store that is asked for its changeCounter keeps a connection
 * LISTENing there, so a CLI change on one node reaches the others' caches in
 * milliseconds. The schema's version is a row of `yubin_schema`; an older
 * database gets the migrations it lacks, a newer one is refused.
 */
import type { ClientConfig, Pool, PoolClient, QueryResultRow } from 'pg';
import type { Logger } from 'pino';
import { pgModule } from './pg-module.js';
import { ChangeListener } from './postgres-listen.js';
import {
  catchallText,
  flagsToBits,
  StoreConflict,
  StoreUnavailable,
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

/** Where writes announce themselves; every node's store LISTENs here. */
export const CHANGE_CHANNEL = 'yubin_vpopmail_changed';

/** This store's row in `yubin_schema` (other yubin stores may share the database). */
const COMPONENT = 'vpopmail';

/** Each entry moves the schema one version up; never edit one that has shipped, add another. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE domains (
     name TEXT COLLATE "C" PRIMARY KEY,
     catchall TEXT NOT NULL DEFAULT 'bounce-no-mailbox',
     clear_passwords BOOLEAN NOT NULL DEFAULT false,
     spam_filing BOOLEAN NOT NULL DEFAULT false,
     default_quota TEXT NOT NULL DEFAULT 'NOQUOTA',
     created BIGINT NOT NULL
   );
   CREATE TABLE users (
     domain TEXT COLLATE "C" NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
     name TEXT COLLATE "C" NOT NULL,
     password TEXT NOT NULL,
     clear_password TEXT,
     quota TEXT NOT NULL DEFAULT 'NOQUOTA',
     flags INTEGER NOT NULL DEFAULT 0,
     real_name TEXT NOT NULL DEFAULT '',
     dir TEXT,
     spam_filing BOOLEAN,
     created BIGINT NOT NULL,
     last_auth BIGINT,
     last_auth_ip TEXT,
     last_auth_service TEXT,
     PRIMARY KEY (domain, name)
   );
   CREATE TABLE aliases (
     domain TEXT COLLATE "C" NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
     name TEXT COLLATE "C" NOT NULL,
     target TEXT COLLATE "C" NOT NULL,
     position INTEGER NOT NULL,
     PRIMARY KEY (domain, name, target)
   );
   -- lower() under "C" folds ASCII only: SQLite's COLLATE NOCASE, for aliasesTargeting.
   CREATE INDEX aliases_target ON aliases (domain, lower(target));`,
];

export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

function aliasesFrom(rows: ReadonlyArray<{ domain: string; name: string; target: string }>): AliasRecord[] {
  const out: Array<{ domain: string; name: string; targets: string[] }> = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && last.domain === r.domain && last.name === r.name) last.targets.push(r.target);
    else out.push({ domain: r.domain, name: r.name, targets: [r.target] });
  }
  return out;
}

/** Host, port and database of a URL, for logs and messages: never its password. */
export function describePostgresUrl(url: string): string {
  try {
    const u = new URL(url);
    const host = u.hostname || u.searchParams.get('host') || 'localhost';
    return `${host}${u.port ? `:${u.port}` : ''}${u.pathname.length > 1 ? u.pathname : ''}`;
  } catch {
    return '(the configured URL)';
  }
}

/**
 * The server cannot be talked to (refused, reset, timed out, shutting down,
 * too many connections), as opposed to a statement that failed: only these
 * become StoreUnavailable, so a bug still shows as what it is.
 */
function isConnectionProblem(err: unknown): boolean {
  if (err instanceof StoreConflict || !(err instanceof Error)) return false;
  if (err instanceof pgModule().DatabaseError) return /^(08|53|57P)/.test(err.code ?? '');
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return true; // ECONNREFUSED, ECONNRESET, ETIMEDOUT, ENOTFOUND...
  // pg's own words for a connection that went or never came.
  return /^(Connection terminated|timeout exceeded when trying to connect|Query read timeout|Cannot use a pool after calling end|Client (was closed|has encountered a connection error))/.test(err.message);
}

const UNIQUE_VIOLATION = '23505';
const FOREIGN_KEY_VIOLATION = '23503';
const codeOf = (err: unknown) => (err instanceof pgModule().DatabaseError ? err.code : undefined);

/** Rows per INSERT ... SELECT FROM unnest(...) when importing: a few MB per statement. */
const IMPORT_BATCH = 5_000;

export interface PostgresStoreOptions {
  /** Where it says that the database went away and came back (once each, not per query). */
  readonly log?: Logger;
  /** Connections in the pool (pg's default is 10). */
  readonly maxConnections?: number;
}

export class PostgresStore implements MailStore {
  private readonly pool: Pool;
  private readonly clientConfig: ClientConfig;
  private readonly log: Logger | undefined;
  /** Host, port and database, for messages. */
  readonly where: string;
  private schemaReady: Promise<void> | undefined;
  private counter = 0;
  private listener: ChangeListener | undefined;
  private readonly listeners = new Set<() => void>();
  private reachable = true;
  /** The schema is newer than ours: said once in the log, then every call is refused quietly. */
  private refusedNewer = false;
  private closed = false;

  constructor(url: string, options: PostgresStoreOptions = {}) {
    this.where = describePostgresUrl(url);
    this.log = options.log;
    this.clientConfig = {
      connectionString: url,
      application_name: 'yubin',
      // A lookup that cannot be answered soon is answered 451 rather than left to the hook's timeout.
      connectionTimeoutMillis: 5_000,
      query_timeout: 15_000,
      keepAlive: true,
    };
    this.pool = new (pgModule().Pool)({ ...this.clientConfig, max: options.maxConnections ?? 10 });
    // An idle connection the server closed: without a listener this would end the process. The next query reconnects.
    this.pool.on('error', () => undefined);
  }

  // ---- plumbing ----

  private unavailable(err: unknown): unknown {
    if (err instanceof StoreUnavailable || !isConnectionProblem(err)) return err;
    const message = (err as Error).message;
    if (this.reachable && !this.closed) this.log?.error({ store: this.where, reason: message }, `mail store: PostgreSQL at ${this.where} unreachable: ${message}`);
    this.reachable = false;
    return new StoreUnavailable(`mail store: PostgreSQL at ${this.where} unreachable: ${message}`);
  }

  private answered(): void {
    if (this.reachable) return;
    this.reachable = true;
    this.log?.info({ store: this.where }, `mail store: PostgreSQL at ${this.where} reachable again`);
  }

  /** Runs the migrations once per store; a failure is retried at the next call (the server may come up later). */
  private schema(): Promise<void> {
    return (this.schemaReady ??= this.migrate().catch((err: unknown) => {
      this.schemaReady = undefined;
      throw this.unavailable(err);
    }));
  }

  private async migrate(): Promise<void> {
    const c = await this.pool.connect();
    let broken = false;
    try {
      for (;;) {
        await c.query('BEGIN');
        // Two nodes starting at once: one migrates, the other waits and then finds nothing to do.
        await c.query(`SELECT pg_advisory_xact_lock(hashtext('yubin_schema ${COMPONENT}'))`);
        await c.query('CREATE TABLE IF NOT EXISTS yubin_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)');
        const row = (await c.query<{ version: number }>('SELECT version FROM yubin_schema WHERE component = $1', [COMPONENT])).rows[0];
        const current = row?.version ?? 0;
        if (current > MIGRATIONS.length) {
          await c.query('ROLLBACK');
          const message = `mail store schema version ${current} is newer than this yubin knows (${MIGRATIONS.length}) in PostgreSQL at ${this.where}`;
          if (!this.refusedNewer) this.log?.error({ store: this.where }, message);
          this.refusedNewer = true;
          throw new StoreUnavailable(message);
        }
        if (current === MIGRATIONS.length) {
          await c.query('COMMIT');
          return;
        }
        await c.query(MIGRATIONS[current]!);
        await c.query(
          'INSERT INTO yubin_schema (component, version) VALUES ($1, $2) ON CONFLICT (component) DO UPDATE SET version = excluded.version',
          [COMPONENT, current + 1],
        );
        await c.query('COMMIT');
      }
    } catch (err) {
      broken = isConnectionProblem(err);
      if (!broken) await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release(broken);
    }
  }

  private async query<R extends QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    await this.schema();
    try {
      const r = await this.pool.query<R>(sql, params);
      this.answered();
      return r.rows;
    } catch (err) {
      throw this.unavailable(err);
    }
  }

  /** A write: one transaction that also NOTIFYs, so every node's caches hear of it at commit. */
  private async write<T>(what: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
    await this.schema();
    let c: PoolClient;
    try {
      c = await this.pool.connect();
    } catch (err) {
      throw this.unavailable(err);
    }
    let broken = false;
    try {
      await c.query('BEGIN');
      const result = await fn(c);
      await c.query('SELECT pg_notify($1, $2)', [CHANGE_CHANNEL, what]);
      await c.query('COMMIT');
      this.answered();
      this.bump();
      return result;
    } catch (err) {
      broken = isConnectionProblem(err);
      if (!broken) await c.query('ROLLBACK').catch(() => undefined);
      throw this.unavailable(err);
    } finally {
      c.release(broken);
    }
  }

  private bump(): void {
    this.counter++;
    for (const l of this.listeners) {
      try {
        l();
      } catch {
        /* one cache's fault is not the store's */
      }
    }
  }

  /** The LISTEN connection, made at the first question about changes: the CLI, which never asks, opens none. */
  private listen(): void {
    if (this.listener || this.closed) return;
    this.listener = new ChangeListener({ client: this.clientConfig, channel: CHANGE_CHANNEL, where: this.where, changed: () => this.bump(), log: this.log });
  }

  /** Whether change notifications arrive now (tests, status). */
  get listening(): boolean {
    return this.listener?.listening ?? false;
  }

  // ---- MailStore ----

  changeCounter(): number {
    this.listen();
    return this.counter;
  }

  onChange(listener: () => void): () => void {
    this.listen();
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  async getDomain(name: string): Promise<DomainRecord | undefined> {
    const [row] = await this.query<DomainRow>('SELECT * FROM domains WHERE name = $1', [name]);
    return row && domainFrom(row);
  }

  async listDomains(): Promise<DomainRecord[]> {
    return (await this.query<DomainRow>('SELECT * FROM domains ORDER BY name')).map(domainFrom);
  }

  async domainNames(): Promise<string[]> {
    return (await this.query<{ name: string }>('SELECT name FROM domains ORDER BY name')).map((r) => r.name);
  }

  async addDomain(d: NewDomain): Promise<DomainRecord> {
    return this.write('domain', async (c) => {
      try {
        const r = await c.query<DomainRow>(
          'INSERT INTO domains (name, catchall, clear_passwords, spam_filing, default_quota, created) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
          [d.name, catchallText(d.catchall ?? { kind: 'bounce-no-mailbox' }), d.clearPasswords ?? false, d.spamFiling ?? false, d.defaultQuota ?? 'NOQUOTA', Date.now()],
        );
        return domainFrom(r.rows[0]!);
      } catch (err) {
        if (codeOf(err) === UNIQUE_VIOLATION) throw new StoreConflict(`domain ${d.name} exists`);
        throw err;
      }
    });
  }

  async updateDomain(name: string, changes: DomainChanges): Promise<DomainRecord | undefined> {
    return this.write('domain', async (c) => {
      const row = (await c.query<DomainRow>('SELECT * FROM domains WHERE name = $1 FOR UPDATE', [name])).rows[0];
      if (!row) return undefined;
      const before = domainFrom(row);
      const next = { ...before, ...changes };
      const r = await c.query<DomainRow>(
        'UPDATE domains SET catchall = $1, clear_passwords = $2, spam_filing = $3, default_quota = $4 WHERE name = $5 RETURNING *',
        [catchallText(next.catchall), next.clearPasswords, next.spamFiling, next.defaultQuota, name],
      );
      // Clear passwords are only kept where the domain says so.
      if (before.clearPasswords && !next.clearPasswords) await c.query('UPDATE users SET clear_password = NULL WHERE domain = $1', [name]);
      return domainFrom(r.rows[0]!);
    });
  }

  async deleteDomain(name: string): Promise<boolean> {
    return this.write('domain', async (c) => ((await c.query('DELETE FROM domains WHERE name = $1', [name])).rowCount ?? 0) > 0);
  }

  async getUser(domain: string, name: string): Promise<UserRecord | undefined> {
    const [row] = await this.query<UserRow>('SELECT * FROM users WHERE domain = $1 AND name = $2', [domain, name]);
    return row && userFrom(row);
  }

  async listUsers(domain: string): Promise<UserRecord[]> {
    return (await this.query<UserRow>('SELECT * FROM users WHERE domain = $1 ORDER BY name', [domain])).map(userFrom);
  }

  async countUsers(domain: string): Promise<number> {
    const [row] = await this.query<{ n: number }>('SELECT count(*)::int AS n FROM users WHERE domain = $1', [domain]);
    return row?.n ?? 0;
  }

  async addUser(u: NewUser): Promise<UserRecord> {
    return this.write('user', async (c) => {
      // FOR KEY SHARE: the domain cannot be deleted under us, and other users can be added at the same time.
      const domainRow = (await c.query<DomainRow>('SELECT * FROM domains WHERE name = $1 FOR KEY SHARE', [u.domain])).rows[0];
      if (!domainRow) throw new StoreConflict(`domain ${u.domain} does not exist`);
      const domain = domainFrom(domainRow);
      try {
        const r = await c.query<UserRow>(
          `INSERT INTO users (domain, name, password, clear_password, quota, flags, real_name, dir, spam_filing, created)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *`,
          [
            u.domain,
            u.name,
            u.passwordHash,
            domain.clearPasswords ? (u.clearPassword ?? null) : null,
            u.quota ?? domain.defaultQuota,
            flagsToBits(u.flags ?? {}),
            u.realName ?? '',
            u.dir ?? null,
            u.spamFiling ?? null,
            Date.now(),
          ],
        );
        return userFrom(r.rows[0]!);
      } catch (err) {
        if (codeOf(err) === UNIQUE_VIOLATION) throw new StoreConflict(`user ${u.name}@${u.domain} exists`);
        if (codeOf(err) === FOREIGN_KEY_VIOLATION) throw new StoreConflict(`domain ${u.domain} does not exist`);
        throw err;
      }
    });
  }

  async updateUser(domain: string, name: string, changes: UserChanges): Promise<UserRecord | undefined> {
    return this.write('user', async (c) => {
      const row = (await c.query<UserRow>('SELECT * FROM users WHERE domain = $1 AND name = $2 FOR UPDATE', [domain, name])).rows[0];
      if (!row) return undefined;
      const before = userFrom(row);
      const clearAllowed = (await c.query<{ clear_passwords: boolean }>('SELECT clear_passwords FROM domains WHERE name = $1', [domain])).rows[0]?.clear_passwords ?? false;
      const next = { ...before, ...changes, flags: { ...before.flags, ...changes.flags } };
      const r = await c.query<UserRow>(
        `UPDATE users SET password = $1, clear_password = $2, quota = $3, flags = $4, real_name = $5, dir = $6, spam_filing = $7
         WHERE domain = $8 AND name = $9 RETURNING *`,
        [
          next.passwordHash,
          clearAllowed ? (next.clearPassword ?? null) : null,
          next.quota,
          flagsToBits(next.flags),
          next.realName,
          next.dir ?? null,
          next.spamFiling ?? null,
          domain,
          name,
        ],
      );
      return userFrom(r.rows[0]!);
    });
  }

  async deleteUser(domain: string, name: string): Promise<boolean> {
    return this.write('user', async (c) => ((await c.query('DELETE FROM users WHERE domain = $1 AND name = $2', [domain, name])).rowCount ?? 0) > 0);
  }

  async recordLogin(domain: string, name: string, time: number, ip: string, service: string): Promise<void> {
    // Not announced: a login alters nothing the server caches.
    await this.query('UPDATE users SET last_auth = $1, last_auth_ip = $2, last_auth_service = $3 WHERE domain = $4 AND name = $5', [time, ip, service, domain, name]);
  }

  async getAlias(domain: string, name: string): Promise<AliasRecord | undefined> {
    const rows = await this.query<{ target: string }>('SELECT target FROM aliases WHERE domain = $1 AND name = $2 ORDER BY position', [domain, name]);
    return rows.length ? { domain, name, targets: rows.map((r) => r.target) } : undefined;
  }

  async listAliases(domain?: string): Promise<AliasRecord[]> {
    const rows =
      domain === undefined
        ? await this.query<{ domain: string; name: string; target: string }>('SELECT domain, name, target FROM aliases ORDER BY domain, name, position')
        : await this.query<{ domain: string; name: string; target: string }>('SELECT domain, name, target FROM aliases WHERE domain = $1 ORDER BY name, position', [domain]);
    return aliasesFrom(rows);
  }

  async aliasesTargeting(domain: string, address: string): Promise<AliasRecord[]> {
    const rows = await this.query<{ domain: string; name: string; target: string }>(
      `SELECT domain, name, target FROM aliases
       WHERE domain = $1 AND name IN (SELECT name FROM aliases WHERE domain = $1 AND lower(target) = lower($2))
       ORDER BY name, position`,
      [domain, address],
    );
    return aliasesFrom(rows);
  }

  async addAliasTarget(domain: string, name: string, target: string): Promise<AliasRecord> {
    return this.write('alias', async (c) => {
      const found = (await c.query('SELECT 1 FROM domains WHERE name = $1 FOR KEY SHARE', [domain])).rowCount;
      if (!found) throw new StoreConflict(`domain ${domain} does not exist`);
      await c.query(
        `INSERT INTO aliases (domain, name, target, position)
         SELECT $1, $2, $3, coalesce(max(position), 0) + 1 FROM aliases WHERE domain = $1 AND name = $2
         ON CONFLICT DO NOTHING`,
        [domain, name, target],
      );
      const rows = await c.query<{ target: string }>('SELECT target FROM aliases WHERE domain = $1 AND name = $2 ORDER BY position', [domain, name]);
      return { domain, name, targets: rows.rows.map((r) => r.target) };
    });
  }

  async removeAlias(domain: string, name: string, target?: string): Promise<boolean> {
    return this.write('alias', async (c) => {
      const r =
        target === undefined
          ? await c.query('DELETE FROM aliases WHERE domain = $1 AND name = $2', [domain, name])
          : await c.query('DELETE FROM aliases WHERE domain = $1 AND name = $2 AND target = $3', [domain, name, target]);
      return (r.rowCount ?? 0) > 0;
    });
  }

  async importDomains(dumps: readonly DomainDump[], options: { readonly replace: boolean }): Promise<void> {
    await this.write('import', async (c) => {
      for (const { domain: d, users, aliases } of dumps) {
        if ((await c.query('SELECT 1 FROM domains WHERE name = $1 FOR UPDATE', [d.name])).rowCount) {
          if (!options.replace) throw new StoreConflict(`domain ${d.name} exists`);
          await c.query('DELETE FROM domains WHERE name = $1', [d.name]);
        }
        await c.query('INSERT INTO domains (name, catchall, clear_passwords, spam_filing, default_quota, created) VALUES ($1, $2, $3, $4, $5, $6)', [
          d.name,
          catchallText(d.catchall),
          d.clearPasswords,
          d.spamFiling,
          d.defaultQuota,
          d.created,
        ]);
        for (let i = 0; i < users.length; i += IMPORT_BATCH) await insertUsers(c, d.name, users.slice(i, i + IMPORT_BATCH));
        const rows = aliases.flatMap((a) => a.targets.map((target, i) => ({ name: a.name, target, position: i + 1 })));
        for (let i = 0; i < rows.length; i += IMPORT_BATCH) {
          const batch = rows.slice(i, i + IMPORT_BATCH);
          await c.query('INSERT INTO aliases (domain, name, target, position) SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[])', [
            d.name,
            batch.map((r) => r.name),
            batch.map((r) => r.target),
            batch.map((r) => r.position),
          ]);
        }
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.listener?.stop();
    await this.pool.end();
  }
}

/** One statement for many users: column arrays unnested into rows (a round trip per user would take minutes for 100,000). */
async function insertUsers(c: PoolClient, domain: string, users: readonly UserRecord[]): Promise<void> {
  await c.query(
    `INSERT INTO users (domain, name, password, clear_password, quota, flags, real_name, dir, spam_filing, created, last_auth, last_auth_ip, last_auth_service)
     SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[], $9::bool[], $10::bigint[], $11::bigint[], $12::text[], $13::text[])`,
    [
      domain,
      users.map((u) => u.name),
      users.map((u) => u.passwordHash),
      users.map((u) => u.clearPassword ?? null),
      users.map((u) => u.quota),
      users.map((u) => flagsToBits(u.flags)),
      users.map((u) => u.realName),
      users.map((u) => u.dir ?? null),
      users.map((u) => u.spamFiling ?? null),
      users.map((u) => u.created),
      users.map((u) => u.lastAuth?.time ?? null),
      users.map((u) => u.lastAuth?.ip ?? null),
      users.map((u) => u.lastAuth?.service ?? null),
    ],
  );
}
