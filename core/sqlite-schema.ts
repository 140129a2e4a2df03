/**
 * What every SQLite file of ours does the same way: a schema versioned in
 * `PRAGMA user_version`, moved up one migration at a time, and prepared
 * statements kept by their SQL. For plugins with a store of their own too.
 */
import type Database from 'better-sqlite3';

/** Runs the migrations the file lacks, one transaction each; a file from a newer yubin is refused rather than damaged. */
export function migrateSchema(db: Database.Database, migrations: readonly string[], what: string): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > migrations.length) throw new Error(`${what} schema version ${current} is newer than this yubin knows (${migrations.length})`);
  for (let v = current; v < migrations.length; v++) {
    db.transaction(() => {
      db.exec(migrations[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

/** Prepared statements, made once per SQL text. */
export class StatementCache {
  private readonly statements = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  get(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }
}
