/**
 * What the decision journal keeps of one pino log line: the line itself
 * (minus pino's own bookkeeping), the connection and queue id it belongs to,
 * and the search terms `yubin why` finds it by: client IP, addresses and
 * their domains, queue ids, Message-ID. Terms carry a one-letter namespace so
 * one index serves every kind of query.
 */

export interface JournalEntry {
  /** Milliseconds since the epoch. */
  readonly time: number;
  readonly conn: string | undefined;
  readonly qid: string | undefined;
  readonly terms: readonly string[];
  /** The log line as JSON, without time, pid and hostname. */
  readonly record: string;
}

export type LogRecord = Record<string, unknown>;

const INFO = 30;

/** `ip:`, `a:` (address), `d:` (domain), `q:` (queue id), `m:` (Message-ID without <>). */
export function termsFor(query: string): string[] {
  const q = query.trim().toLowerCase();
  const bare = q.replace(/^<(.*)>$/, '$1');
  return [`ip:${q}`, `a:${bare}`, `d:${q.replace(/^@/, '')}`, `q:${q}`, `m:${bare}`];
}

function addresses(value: unknown): string[] {
  if (typeof value === 'string') return value === '' ? [] : [value];
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string' && v !== '');
  return [];
}

/** pino's line starts with level, time and pid, in that order (our logger has no other base fields). */
const BOOKKEEPING = /^\{"level":(\d+),"time":"[^"]*","pid":\d+,/;

/** The record as stored: the line pino wrote when given (cheaper than serialising the record again), less time and pid. */
function stored(rec: LogRecord, line: string | undefined): string {
  if (line !== undefined && BOOKKEEPING.test(line)) return line.trimEnd().replace(BOOKKEEPING, '{"level":$1,');
  const { time: _time, pid: _pid, hostname: _hostname, ...rest } = rec;
  return JSON.stringify(rest);
}

export function toEntry(rec: LogRecord, line?: string): JournalEntry | undefined {
  if (typeof rec.level !== 'number' || rec.level < INFO) return undefined;
  const conn = typeof rec.conn === 'string' ? rec.conn : undefined;
  // In a session, `id` names the transaction from MAIL on; it is a queue id only once the message is queued.
  const qid = typeof rec.id === 'string' && (!conn || rec.event === 'queued') ? rec.id : undefined;
  // Lines that belong to no connection or message (listen, ready, alarms) are not stories.
  if (!conn && !qid && typeof rec.event !== 'string') return undefined;
  const terms = new Set<string>();
  if (typeof rec.ip === 'string') terms.add(`ip:${rec.ip.toLowerCase()}`);
  if (qid) terms.add(`q:${qid.toLowerCase()}`);
  for (const key of ['bounceId', 'forwardId', 'sentId']) if (typeof rec[key] === 'string') terms.add(`q:${(rec[key] as string).toLowerCase()}`);
  for (const key of ['from', 'sender', 'rcpt', 'to', 'user', 'account', 'rcpts']) {
    for (const a of addresses(rec[key])) {
      const address = a.toLowerCase();
      terms.add(`a:${address}`);
      const at = address.lastIndexOf('@');
      if (at >= 0) terms.add(`d:${address.slice(at + 1)}`);
    }
  }
  if (typeof rec.messageId === 'string') terms.add(`m:${rec.messageId.trim().replace(/^<(.*)>$/, '$1').toLowerCase()}`);
  const time = rec.time;
  const when = typeof time === 'number' ? time : typeof time === 'string' ? Date.parse(time) : Date.now();
  return { time: Number.isFinite(when) ? when : Date.now(), conn, qid, terms: [...terms], record: stored(rec, line) };
}
