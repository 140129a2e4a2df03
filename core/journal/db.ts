/**
 * The decision journal's file: SQLite in dataDir (WAL, so `yubin why` reads
 * while the server writes). Events in arrival order; a term index for the
 * lookups; pruned by age and by size, the oldest first. The space freed by
 * pruning is reused, so the file stops growing at about its size limit.
 * Events are written in time order, so a time is found by bisecting seq:
 * an index on time would be one more B-tree to update per event.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { JournalEntry } from './entry.js';

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, conn TEXT, qid TEXT, record TEXT NOT NULL);
  CREATE INDEX IF NOT EXISTS events_conn ON events(conn) WHERE conn IS NOT NULL;
  CREATE INDEX IF NOT EXISTS events_qid ON events(qid) WHERE qid IS NOT NULL;
  DROP INDEX IF EXISTS events_time;
  CREATE TABLE IF NOT EXISTS terms (term TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (term, seq)) WITHOUT ROWID;
`;

export interface StoredEvent {
  readonly seq: number;
  readonly time: number;
  readonly conn: string | null;
  readonly qid: string | null;
  readonly record: Record<string, unknown>;
}

export class JournalDb {
  private readonly db: Database.Database;

  constructor(
    readonly file: string,
    options: { readonly?: boolean } = {},
  ) {
    if (!options.readonly) mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    this.db.pragma('busy_timeout = 5000');
    if (!options.readonly) {
      this.db.pragma('journal_mode = WAL');
      // The log is not the queue: losing the last second of it in a power cut is acceptable, an fsync per batch is not needed.
      this.db.pragma('synchronous = OFF');
      this.db.exec(SCHEMA);
    }
  }

  insert(entries: readonly JournalEntry[]): void {
    const event = this.db.prepare('INSERT INTO events (time, conn, qid, record) VALUES (?, ?, ?, ?)');
    const term = this.db.prepare('INSERT OR IGNORE INTO terms (term, seq) VALUES (?, ?)');
    this.db.transaction(() => {
      for (const e of entries) {
        const seq = event.run(e.time, e.conn ?? null, e.qid ?? null, e.record).lastInsertRowid;
        for (const t of e.terms) term.run(t, seq);
      }
    })();
  }

  /** Bytes in use (free pages left by pruning do not count: they are reused). */
  usedBytes(): number {
    const pages = this.db.pragma('page_count', { simple: true }) as number;
    const free = this.db.pragma('freelist_count', { simple: true }) as number;
    return (pages - free) * (this.db.pragma('page_size', { simple: true }) as number);
  }

  /** Drops what is older than maxAge, then the oldest tenth at a time while over maxBytes; returns the events removed. */
  prune(now: number, maxAgeMs: number, maxBytes: number): number {
    let removed = this.deleteBefore(this.firstSeqAt(now - maxAgeMs));
    for (let round = 0; round < 10 && this.usedBytes() > maxBytes; round++) {
      const { lo, hi } = this.seqRange();
      if (lo === null || hi === null) break;
      removed += this.deleteBefore(lo + Math.max(1, Math.ceil((hi - lo) / 10)));
    }
    return removed;
  }

  /** The first and last seq; two queries, as SQLite answers min() or max() from the key alone but scans the table for both in one. */
  private seqRange(): { lo: number | null; hi: number | null } {
    return { lo: this.db.prepare('SELECT min(seq) FROM events').pluck().get() as number | null, hi: this.db.prepare('SELECT max(seq) FROM events').pluck().get() as number | null };
  }

  /** The first event at or after `time` (null: none), by bisection over seq. */
  private firstSeqAt(time: number): number | null {
    const at = this.db.prepare('SELECT seq, time FROM events WHERE seq >= ? ORDER BY seq LIMIT 1');
    const { lo, hi } = this.seqRange();
    if (lo === null || hi === null) return null;
    let [low, high] = [lo, hi + 1]; // the answer is in [low, high]; high = none
    while (low < high) {
      const mid = Math.floor((low + high) / 2);
      const row = at.get(mid) as { seq: number; time: number } | undefined;
      if (row && row.time >= time) high = mid;
      else low = row ? row.seq + 1 : high;
    }
    return low > hi ? null : ((at.get(low) as { seq: number } | undefined)?.seq ?? null);
  }

  /** Removes events (and their terms) before seq; null: everything. */
  private deleteBefore(seq: number | null): number {
    return this.db.transaction(() => {
      const limit = seq ?? Number.MAX_SAFE_INTEGER;
      this.db.prepare('DELETE FROM terms WHERE seq < ?').run(limit);
      return this.db.prepare('DELETE FROM events WHERE seq < ?').run(limit).changes;
    })();
  }

  /** Seq numbers of events carrying any of these terms, at or after `since`. */
  find(terms: readonly string[], since: number): number[] {
    const byTerm = this.db.prepare('SELECT seq FROM terms WHERE term = ?').pluck();
    const out = new Set<number>();
    for (const t of terms) for (const seq of byTerm.all(t) as number[]) out.add(seq);
    if (!out.size) return [];
    const firstSeq = this.firstSeqAt(since);
    return [...out].filter((s) => firstSeq !== null && s >= firstSeq).sort((a, b) => a - b);
  }

  events(seqs: readonly number[]): StoredEvent[] {
    const one = this.db.prepare('SELECT seq, time, conn, qid, record FROM events WHERE seq = ?');
    return seqs.map((s) => one.get(s) as { seq: number; time: number; conn: string | null; qid: string | null; record: string } | undefined).flatMap((r) => (r ? [{ ...r, record: JSON.parse(r.record) as Record<string, unknown> }] : []));
  }

  byConnection(conn: string): StoredEvent[] {
    return this.rows(this.db.prepare('SELECT seq, time, conn, qid, record FROM events WHERE conn = ? ORDER BY seq').all(conn));
  }

  byQueueId(qid: string): StoredEvent[] {
    return this.rows(this.db.prepare('SELECT seq, time, conn, qid, record FROM events WHERE qid = ? ORDER BY seq').all(qid));
  }

  /** The latest refusals (reject, defer, disconnect decisions), newest first. */
  refusals(limit: number): StoredEvent[] {
    // Scanned from the end: refusals are common enough that a few thousand rows hold the last ten.
    const rows = this.db.prepare("SELECT seq, time, conn, qid, record FROM events WHERE record LIKE '%\"action\":\"%' ORDER BY seq DESC LIMIT 5000").all();
    return this.rows(rows)
      .filter((e) => ['reject', 'defer', 'disconnect'].includes(String(e.record.action)) && e.record.hook !== undefined)
      .slice(0, limit);
  }

  private rows(rows: unknown[]): StoredEvent[] {
    return (rows as Array<{ seq: number; time: number; conn: string | null; qid: string | null; record: string }>).map((r) => ({ ...r, record: JSON.parse(r.record) as Record<string, unknown> }));
  }

  close(): void {
    this.db.close();
  }
}
