/**
 * The embedded KeyValueStore: one table in a SQLite file in dataDir
 * (better-sqlite3), in WAL mode with a busy timeout so several processes
 * (the server, the CLI, a second server on the same host) can share it.
 *
 * Expiry is kept as a number of milliseconds on the injected Clock, so tests
 * move time with a ManualClock. An expired row is treated as absent at once,
 * deleted when it is next touched, and a periodic sweep (an unref'd timer)
 * deletes at most `sweepBatch` expired rows per run so a large backlog never
 * blocks the event loop for long.
 *
 * Every write is one SQL statement (an upsert), so `add` and `incr` are atomic
 * even between processes.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { KeyValueStore } from './store.js';
import type { AbortOptions } from '../abort.js';

export interface SqliteStoreOptions {
  /** How often the sweep runs; 0 turns it off. Default one minute. */
  readonly sweepIntervalMs?: number;
  /** At most this many expired rows are deleted per sweep. Default 1000. */
  readonly sweepBatch?: number;
  /** How long a write waits for another process's lock. Default 5 s. */
  readonly busyTimeoutMs?: number;
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  expires INTEGER
);
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires) WHERE expires IS NOT NULL;`;

/** A row is live when it has no expiry or expires after `now`. */
const LIVE = '(expires IS NULL OR expires > @now)';

export class SqliteKeyValueStore implements KeyValueStore {
  private readonly db: Database.Database;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly sweepBatch: number;
  private closed = false;
  private readonly q: {
    get: Database.Statement;
    deleteExpired: Database.Statement;
    set: Database.Statement;
    add: Database.Statement;
    delete: Database.Statement;
    incr: Database.Statement;
    sweep: Database.Statement;
  };

  constructor(
    readonly file: string,
    private readonly now: () => number = Date.now,
    options: SqliteStoreOptions = {},
  ) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma(`busy_timeout = ${Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000))}`);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
    this.sweepBatch = Math.max(1, Math.trunc(options.sweepBatch ?? 1000));
    this.q = {
      get: this.db.prepare('SELECT value, expires FROM kv WHERE key = ?'),
      deleteExpired: this.db.prepare('DELETE FROM kv WHERE key = @key AND expires IS NOT NULL AND expires <= @now'),
      set: this.db.prepare(
        'INSERT INTO kv (key, value, expires) VALUES (@key, @value, @expires) ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires = excluded.expires',
      ),
      // Replaces an existing row only when it has expired; `changes` tells whether we wrote.
      add: this.db.prepare(
        `INSERT INTO kv (key, value, expires) VALUES (@key, @value, @expires)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires = excluded.expires
         WHERE NOT ${LIVE.replaceAll('expires', 'kv.expires')}`,
      ),
      delete: this.db.prepare('DELETE FROM kv WHERE key = ?'),
      // SET expressions see the old row: an expired row starts again from 1 with the new expiry.
      incr: this.db.prepare(
        `INSERT INTO kv (key, value, expires) VALUES (@key, '1', @expires)
         ON CONFLICT(key) DO UPDATE SET
           value = CASE WHEN ${LIVE.replaceAll('expires', 'kv.expires')} THEN CAST(CAST(kv.value AS INTEGER) + 1 AS TEXT) ELSE '1' END,
           expires = CASE WHEN ${LIVE.replaceAll('expires', 'kv.expires')} THEN kv.expires ELSE excluded.expires END
         RETURNING value`,
      ),
      sweep: this.db.prepare(
        'DELETE FROM kv WHERE rowid IN (SELECT rowid FROM kv WHERE expires IS NOT NULL AND expires <= @now LIMIT @limit)',
      ),
    };
    const every = options.sweepIntervalMs ?? 60_000;
    if (every > 0) {
      this.timer = setInterval(() => {
        try {
          this.sweep();
        } catch {
          // A busy or closing database: the next sweep tries again; reads ignore expired rows anyway.
        }
      }, every);
      this.timer.unref();
    }
  }

  private expiry(ttlMs: number | undefined): number | null {
    return ttlMs === undefined ? null : Math.round(this.now() + ttlMs);
  }

  private open(): void {
    if (this.closed) throw new Error(`store ${this.file} is closed`);
  }

  // SQLite answers synchronously: a signal is only checked before starting.
  async get(key: string, options?: AbortOptions): Promise<string | undefined> {
    options?.signal?.throwIfAborted();
    this.open();
    const row = this.q.get.get(key) as { value: string; expires: number | null } | undefined;
    if (!row) return undefined;
    const now = this.now();
    if (row.expires !== null && row.expires <= now) {
      this.q.deleteExpired.run({ key, now });
      return undefined;
    }
    return row.value;
  }

  async set(key: string, value: string, ttlMs?: number, options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted();
    this.open();
    this.q.set.run({ key, value, expires: this.expiry(ttlMs) });
  }

  async add(key: string, value: string, ttlMs?: number, options?: AbortOptions): Promise<boolean> {
    options?.signal?.throwIfAborted();
    this.open();
    return this.q.add.run({ key, value, expires: this.expiry(ttlMs), now: this.now() }).changes > 0;
  }

  async delete(key: string, options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted();
    this.open();
    this.q.delete.run(key);
  }

  async incr(key: string, ttlMs?: number, options?: AbortOptions): Promise<number> {
    options?.signal?.throwIfAborted();
    this.open();
    const row = this.q.incr.get({ key, expires: this.expiry(ttlMs), now: this.now() }) as { value: string | number };
    return Number(row.value);
  }

  /** Deletes up to `limit` expired rows (default the configured batch); returns how many went. */
  sweep(limit = this.sweepBatch): number {
    this.open();
    return this.q.sweep.run({ now: this.now(), limit }).changes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.db.close();
  }
}
