/**
 * Vacation settings per address, and whom each vacation has answered: the
 * one module the deliver hook, `yubin vacation` and a web page all use.
 *
 * One SQLite file in dataDir (better-sqlite3, WAL), so a change the CLI or a
 * web page writes is what the running server reads at its next delivery, with
 * no restart. `synchronous = FULL`: a sender recorded as answered stays
 * recorded through a power cut, so nobody gets a second reply.
 *
 * API: `get(address)`, `set(address, settings)`, `clear(address)`, and for the
 * deliver hook `claimReply` / `releaseReply`. Bad input throws VacationError
 * (the CLI prints it as a usage error, a web page would answer 400 with it).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrateSchema, StatementCache } from '../../core/index.js';

/** What a user sets. Times are milliseconds since the epoch; an absent one is open. */
export interface VacationSettings {
  /** Off keeps the text for later; nothing is answered. */
  readonly enabled: boolean;
  /** Replies from this time on (inclusive); undefined: from now. */
  readonly start?: number | undefined;
  /** No replies from this time on (exclusive); undefined: until turned off. */
  readonly end?: number | undefined;
  /** The reply's Subject; undefined: `Auto: ` and the original subject (RFC 3834). */
  readonly subject?: string | undefined;
  /** The reply's text. */
  readonly body: string;
}

export interface Vacation extends VacationSettings {
  /** `user@domain`, lower case. */
  readonly address: string;
  /** Changes with every `set`: a new period answers each sender once again. */
  readonly period: string;
  /** When it was last set (milliseconds since the epoch). */
  readonly updated: number;
}

export interface ReplyRecord {
  readonly sender: string;
  readonly at: number;
  /** Queue id of the reply; undefined while it is being queued. */
  readonly queueId: string | undefined;
}

/** Where a vacation stands at a given time. */
export type VacationState = 'off' | 'scheduled' | 'active' | 'ended';

/** Input a user can fix: an address, a date, an empty text. */
export class VacationError extends Error {
  override readonly name = 'VacationError';
}

export const MAX_BODY = 64 * 1024;
export const MAX_SUBJECT = 500;

const LOCAL = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$/;
const DOMAIN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

/** `user@domain` in the form the settings are kept under (lower case), or undefined when it is not one. */
export function normalizeAddress(text: string): string | undefined {
  const a = text.trim().replace(/^<(.*)>$/, '$1');
  const at = a.lastIndexOf('@');
  if (at <= 0) return undefined;
  const local = a.slice(0, at).toLowerCase();
  const domain = a.slice(at + 1).toLowerCase().replace(/\.$/, '');
  if (!LOCAL.test(local) || local.startsWith('.') || local.endsWith('.') || local.includes('..')) return undefined;
  return domain.length <= 253 && DOMAIN.test(domain) ? `${local}@${domain}` : undefined;
}

export function vacationState(v: VacationSettings, now: number): VacationState {
  if (!v.enabled) return 'off';
  if (v.start !== undefined && now < v.start) return 'scheduled';
  if (v.end !== undefined && now >= v.end) return 'ended';
  return 'active';
}

/** On, and now within start..end: mail now gets a reply. */
export function isActive(v: VacationSettings, now: number): boolean {
  return vacationState(v, now) === 'active';
}

/** The settings as they will be kept, or VacationError naming what is wrong. */
export function checkSettings(s: VacationSettings): VacationSettings {
  const time = (t: number | undefined, what: string) => {
    if (t !== undefined && !Number.isFinite(t)) throw new VacationError(`${what} is not a time`);
    return t;
  };
  const start = time(s.start, 'start');
  const end = time(s.end, 'end');
  if (start !== undefined && end !== undefined && end <= start) throw new VacationError('the end is not after the start');
  const subject = s.subject?.trim() || undefined;
  if (subject !== undefined) {
    if (/[\0-\x08\x0a-\x1f\x7f]/.test(subject)) throw new VacationError('the subject must be one line');
    if (subject.length > MAX_SUBJECT) throw new VacationError(`the subject is longer than ${MAX_SUBJECT} characters`);
  }
  const body = s.body.replace(/\r\n?/g, '\n').replace(/\s+$/, '') + '\n';
  if (!body.trim()) throw new VacationError('the message text is empty');
  if (body.includes('\0')) throw new VacationError('the message text contains NUL');
  if (Buffer.byteLength(body) > MAX_BODY) throw new VacationError(`the message text is larger than ${MAX_BODY} bytes`);
  return { enabled: s.enabled, start, end, subject, body };
}

/** Each entry moves the schema one version up; never edit one that has shipped, add another. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE vacations (
     address TEXT PRIMARY KEY,
     enabled INTEGER NOT NULL,
     start_at INTEGER,
     end_at INTEGER,
     subject TEXT,
     body TEXT NOT NULL,
     period TEXT NOT NULL,
     updated INTEGER NOT NULL
   );
   CREATE TABLE replies (
     address TEXT NOT NULL,
     period TEXT NOT NULL,
     sender TEXT NOT NULL,
     at INTEGER NOT NULL,
     queue_id TEXT,
     PRIMARY KEY (address, period, sender)
   );`,
];

interface VacationRow {
  address: string;
  enabled: number;
  start_at: number | null;
  end_at: number | null;
  subject: string | null;
  body: string;
  period: string;
  updated: number;
}

function fromRow(r: VacationRow): Vacation {
  return {
    address: r.address,
    enabled: r.enabled !== 0,
    start: r.start_at ?? undefined,
    end: r.end_at ?? undefined,
    subject: r.subject ?? undefined,
    body: r.body,
    period: r.period,
    updated: r.updated,
  };
}

function addressArg(text: string): string {
  const a = normalizeAddress(text);
  if (!a) throw new VacationError(`invalid address: ${text} (expected user@domain)`);
  return a;
}

export class Vacations {
  private readonly db: Database.Database;
  private readonly statements: StatementCache;

  constructor(
    readonly file: string,
    private readonly now: () => number = Date.now,
  ) {
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.statements = new StatementCache(this.db);
    // The server reads while the CLI writes: WAL lets both go on; a writer waits rather than fails.
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    migrateSchema(this.db, MIGRATIONS, 'autorespond');
  }

  private st(sql: string): Database.Statement {
    return this.statements.get(sql);
  }


  /** The vacation kept for this address, on or off; undefined when none is. */
  get(address: string): Vacation | undefined {
    const row = this.st('SELECT * FROM vacations WHERE address = ?').get(addressArg(address)) as VacationRow | undefined;
    return row && fromRow(row);
  }

  /** Every vacation kept, by address. */
  list(): Vacation[] {
    return (this.st('SELECT * FROM vacations ORDER BY address').all() as VacationRow[]).map(fromRow);
  }

  /**
   * Sets (or replaces) the vacation of an address. It starts a new period:
   * whom the previous settings answered is forgotten, so each sender gets one
   * reply again.
   */
  set(address: string, settings: VacationSettings): Vacation {
    const a = addressArg(address);
    const s = checkSettings(settings);
    const period = randomUUID();
    this.db.transaction(() => {
      this.st(
        `INSERT INTO vacations (address, enabled, start_at, end_at, subject, body, period, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(address) DO UPDATE SET enabled = excluded.enabled, start_at = excluded.start_at, end_at = excluded.end_at,
           subject = excluded.subject, body = excluded.body, period = excluded.period, updated = excluded.updated`,
      ).run(a, s.enabled ? 1 : 0, s.start ?? null, s.end ?? null, s.subject ?? null, s.body, period, this.now());
      this.st('DELETE FROM replies WHERE address = ?').run(a);
    })();
    return this.get(a)!;
  }

  /** Removes the vacation and whom it answered; false when there was none. */
  clear(address: string): boolean {
    const a = addressArg(address);
    return this.db.transaction(() => {
      this.st('DELETE FROM replies WHERE address = ?').run(a);
      return this.st('DELETE FROM vacations WHERE address = ?').run(a).changes > 0;
    })();
  }

  /** The senders this vacation period has answered, oldest first. */
  replies(address: string): ReplyRecord[] {
    const a = addressArg(address);
    const rows = this.st(
      'SELECT r.sender, r.at, r.queue_id FROM replies r JOIN vacations v ON v.address = r.address AND v.period = r.period WHERE r.address = ? ORDER BY r.at, r.sender',
    ).all(a) as Array<{ sender: string; at: number; queue_id: string | null }>;
    return rows.map((r) => ({ sender: r.sender, at: r.at, queueId: r.queue_id ?? undefined }));
  }

  /**
   * Takes the one reply this period owes a sender: true the first time, false
   * when the sender was answered already (or the vacation changed meanwhile).
   * Committed before the reply is queued, so a crash in between means no
   * reply rather than two.
   */
  claimReply(v: Vacation, sender: string, at: number): boolean {
    const r = this.st(
      `INSERT OR IGNORE INTO replies (address, period, sender, at)
       SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM vacations WHERE address = ? AND period = ?)`,
    ).run(v.address, v.period, sender.toLowerCase(), at, v.address, v.period);
    return r.changes > 0;
  }

  /** The reply is queued as this id. */
  recordReply(v: Vacation, sender: string, queueId: string): void {
    this.st('UPDATE replies SET queue_id = ? WHERE address = ? AND period = ? AND sender = ?').run(queueId, v.address, v.period, sender.toLowerCase());
  }

  /** The reply could not be queued: the sender may be answered by the next message. */
  releaseReply(v: Vacation, sender: string): void {
    this.st('DELETE FROM replies WHERE address = ? AND period = ? AND sender = ? AND queue_id IS NULL').run(v.address, v.period, sender.toLowerCase());
  }

  close(): void {
    this.db.close();
  }
}
