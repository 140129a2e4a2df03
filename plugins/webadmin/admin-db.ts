/**
 * Server admins added with `yubin admin add`, and API tokens. One SQLite file
 * written by the CLI and read by the running server at each request, so a
 * new admin or a revoked token counts at once. Tokens are kept as their
 * sha256 only: the file does not give anyone a working token.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrateSchema, StatementCache } from '../../core/index.js';

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE admins (address TEXT PRIMARY KEY, added INTEGER NOT NULL);
   CREATE TABLE tokens (
     name TEXT PRIMARY KEY,
     address TEXT NOT NULL,
     sha256 TEXT NOT NULL UNIQUE,
     created INTEGER NOT NULL
   );`,
];

export interface TokenRecord {
  readonly name: string;
  readonly address: string;
  readonly created: number;
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export class AdminDb {
  private readonly db: Database.Database;
  private readonly statements: StatementCache;

  constructor(readonly file: string) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.statements = new StatementCache(this.db);
    // The CLI writes while the server reads.
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('journal_mode = WAL');
    migrateSchema(this.db, MIGRATIONS, 'webadmin');
  }

  isAdmin(address: string): boolean {
    return this.statements.get('SELECT 1 FROM admins WHERE address = ?').get(address.toLowerCase()) !== undefined;
  }

  admins(): string[] {
    return (this.statements.get('SELECT address FROM admins ORDER BY address').all() as Array<{ address: string }>).map((r) => r.address);
  }

  /** False when already an admin. */
  addAdmin(address: string): boolean {
    return this.statements.get('INSERT OR IGNORE INTO admins (address, added) VALUES (?, ?)').run(address.toLowerCase(), Date.now()).changes > 0;
  }

  removeAdmin(address: string): boolean {
    return this.statements.get('DELETE FROM admins WHERE address = ?').run(address.toLowerCase()).changes > 0;
  }

  /** A new token for ADDRESS; the text is returned once and only its hash kept. Undefined when NAME is taken. */
  createToken(address: string, name: string): string | undefined {
    const token = `ybn_${randomBytes(32).toString('base64url')}`;
    const r = this.statements.get('INSERT OR IGNORE INTO tokens (name, address, sha256, created) VALUES (?, ?, ?, ?)').run(name, address.toLowerCase(), tokenHash(token), Date.now());
    return r.changes > 0 ? token : undefined;
  }

  revokeToken(name: string): boolean {
    return this.statements.get('DELETE FROM tokens WHERE name = ?').run(name).changes > 0;
  }

  tokens(): TokenRecord[] {
    return this.statements.get('SELECT name, address, created FROM tokens ORDER BY name').all() as TokenRecord[];
  }

  /** The address a presented token acts as; undefined for an unknown or revoked one. */
  tokenAddress(token: string): string | undefined {
    const row = this.statements.get('SELECT address FROM tokens WHERE sha256 = ?').get(tokenHash(token)) as { address: string } | undefined;
    return row?.address;
  }

  close(): void {
    this.db.close();
  }
}
