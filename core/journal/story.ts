/**
 * `yubin why`: the journal's events for a query (an IP, an address, a
 * domain, a queue id, a Message-ID) gathered into stories, one per
 * connection and one per message, each told in time order in plain words:
 * who connected and what each plugin said, whether a message was accepted,
 * each delivery attempt with the remote server's reply, and where the
 * message is now.
 */
import type { JournalDb, StoredEvent } from './db.js';
import { termsFor } from './entry.js';

export interface Story {
  readonly kind: 'connection' | 'message';
  /** The connection id or the queue id. */
  readonly key: string;
  readonly start: number;
  /** One sentence: what happened in the end. */
  readonly summary: string;
  readonly lines: ReadonlyArray<{ readonly time: number; readonly text: string }>;
}

type Rec = Record<string, unknown>;

/** Local time, as an admin reads a log: 2026-12-04 09:20:52. */
export function clock(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

const WHERE: Record<string, string> = { connect: 'at connect', helo: 'at HELO', mail: 'at MAIL', rcpt: 'at RCPT', data: 'after DATA', queue: 'at queueing', auth: 'at login', deliver: 'at delivery' };
const DONE: Record<string, string> = { accept: 'accepted', reject: 'refused', defer: 'temporarily refused', disconnect: 'disconnected', discard: 'taken and dropped' };

/** Fields every line has, or that a sentence already says: the rest are details worth showing. */
const PLAIN = new Set(['level', 'msg', 'listener', 'conn', 'ip', 'hook', 'plugin', 'action', 'code', 'reason', 'event', 'id', 'rcpt', 'sender', 'from', 'to', 'user', 'component', 'time']);

/** Extra fields of a line, leaving out what its message already says. */
function details(rec: Rec, said = ''): string {
  const parts = Object.entries(rec)
    .filter(([k, v]) => !PLAIN.has(k) && v !== undefined && v !== null && typeof v !== 'object' && !said.includes(String(v)))
    .map(([k, v]) => `${k} ${String(v)}`);
  return parts.length ? ` (${parts.join(', ')})` : '';
}

/** One event in words; undefined for bookkeeping nobody asked about. */
export function sentence(rec: Rec): string | undefined {
  const event = str(rec.event);
  const hook = str(rec.hook);
  const action = str(rec.action);
  if (event === 'connect') return `${str(rec.ip) ?? 'a client'} connected to ${str(rec.listener) ?? 'a listener'}${str(rec.local) ? ` (${String(rec.local)})` : ''}`;
  if (event === 'close') return 'connection closed';
  if (event === 'queued') {
    const to = Array.isArray(rec.to) ? (rec.to as string[]).join(', ') : `${String(rec.rcpts)} recipients`;
    return `message accepted as ${String(rec.id)}: from <${String(rec.from ?? '')}> to ${to}${str(rec.messageId) ? `, Message-ID ${String(rec.messageId)}` : ''}, ${String(rec.size)} bytes`;
  }
  if (event === 'delivery') {
    const what = rec.result === 'success' ? 'delivered' : rec.result === 'deferral' ? `deferred (next try ${clock(Date.parse(String(rec.next)))})` : 'failed for good';
    return `delivery to ${String(rec.rcpt)} (${String(rec.channel)}, attempt ${String(rec.attempt)}): ${what}: ${String(rec.text ?? '').replace(/\n/g, ' ')}`;
  }
  if (event === 'bounce') return rec.result === 'discarded' ? `a failed double bounce, discarded` : `bounce for ${(rec.rcpts as string[] | undefined)?.join(', ') ?? '?'} sent to <${String(rec.to ?? '')}> as ${String(rec.bounceId)}`;
  if (event === 'delay-notice') return `delay notice sent to <${String(rec.to ?? '')}> as ${String(rec.bounceId)}`;
  if (event === 'forward') return `forwarded to ${(rec.to as string[] | undefined)?.join(', ') ?? '?'} as ${String(rec.forwardId)}`;
  if (event === 'send') return `a deliver plugin sent a new message from <${String(rec.sender ?? '')}> to ${(rec.to as string[] | undefined)?.join(', ') ?? '?'} as ${String(rec.sentId)}`;
  if (event === 'queue-end') return 'finished: no longer in the queue';
  if (event === 'queue-delete') return 'deleted from the queue by the administrator';
  if (event === 'auth') return `logged in as ${String(rec.user)}`;
  if (hook && action) {
    const who = hook === 'rcpt' || hook === 'deliver' ? ` for ${String(rec.rcpt ?? '?')}` : hook === 'auth' ? ` as ${String(rec.user ?? '?')}` : hook === 'mail' ? ` from <${String(rec.from ?? rec.sender ?? '')}>` : '';
    const text = str(rec.reason) ? `: ${String(rec.code ?? '')} ${String(rec.reason)}`.replace(/: undefined /, ': ') : '';
    return `${DONE[action] ?? action} ${WHERE[hook] ?? hook}${who} by ${String(rec.plugin ?? 'core')}${text}${details(rec)}`;
  }
  if (str(rec.plugin)) {
    const plugin = String(rec.plugin);
    const raw = String(rec.msg ?? '');
    // "rblsmtpd: 451 ..." or "spamdyke refused: ...": the plugin's name is said once.
    const msg = raw.startsWith(`${plugin}:`) || raw.startsWith(`${plugin} `) ? raw.slice(plugin.length + 1).trimStart() : raw;
    return `${plugin}: ${msg}${details(rec, msg)}`;
  }
  return str(rec.msg) && (rec.level as number) >= 40 ? String(rec.msg) : undefined;
}

function connectionSummary(events: readonly StoredEvent[]): string {
  const first = events[0]?.record ?? {};
  const ip = str(first.ip) ?? '?';
  const listener = str(first.listener) ?? '?';
  const refusal = events.find((e) => ['reject', 'defer', 'disconnect'].includes(String(e.record.action)) && e.record.hook !== undefined);
  const queued = events.filter((e) => e.record.event === 'queued').map((e) => String(e.record.id));
  const parts: string[] = [];
  if (refusal) {
    const r = refusal.record;
    parts.push(`${ip} was ${DONE[String(r.action)] ?? String(r.action)} ${WHERE[String(r.hook)] ?? String(r.hook)}${r.rcpt ? ` (${String(r.rcpt)})` : ''} by ${String(r.plugin)}: ${String(r.code)} ${String(r.reason ?? '')}`.trim());
  }
  if (queued.length) parts.push(`${refusal ? 'it' : ip} sent ${queued.length === 1 ? `message ${queued[0]}` : `${queued.length} messages (${queued.join(', ')})`} through ${listener}`);
  if (!parts.length) parts.push(`${ip} connected to ${listener} and sent nothing`);
  return parts.join('; ');
}

function messageSummary(events: readonly StoredEvent[]): string {
  const last = new Map<string, Rec>();
  for (const e of events) if (e.record.event === 'delivery') last.set(String(e.record.rcpt), e.record);
  const queued = events.find((e) => e.record.event === 'queued')?.record;
  const rcpts = queued && Array.isArray(queued.to) ? (queued.to as string[]) : [...last.keys()];
  const ended = events.some((e) => e.record.event === 'queue-end' || e.record.event === 'queue-delete');
  const state = rcpts.map((r) => {
    const d = last.get(r);
    if (!d) return `${r}: ${ended ? 'not delivered' : 'queued, not tried yet'}`;
    if (d.result === 'success') return `${r}: delivered (${String(d.text)})`;
    if (d.result === 'failure') return `${r}: failed and bounced (${String(d.text).split('\n')[0]})`;
    return `${r}: still queued, next try ${clock(Date.parse(String(d.next)))} (last: ${String(d.text)})`;
  });
  return `${queued ? `from <${String(queued.from ?? '')}>; ` : ''}${state.join('; ') || (ended ? 'finished' : 'in the queue')}`;
}

function told(events: readonly StoredEvent[]): Story['lines'] {
  return events.flatMap((e) => {
    const text = sentence(e.record);
    return text ? [{ time: e.time, text }] : [];
  });
}

/** Every story the query touches, oldest first. */
export function stories(db: JournalDb, query: string, since: number): Story[] {
  const seeds = db.events(db.find(termsFor(query), since));
  const conns = new Set<string>();
  const qids = new Set<string>();
  for (const e of seeds) {
    if (e.conn) conns.add(e.conn);
    if (e.qid) qids.add(e.qid);
    for (const k of ['bounceId', 'forwardId', 'sentId']) if (str(e.record[k])) qids.add(String(e.record[k]));
  }
  const byConn = new Map<string, StoredEvent[]>();
  for (const c of conns) {
    const evs = db.byConnection(c);
    byConn.set(c, evs);
    for (const e of evs) if (e.record.event === 'queued') qids.add(String(e.record.id));
  }
  const byQid = new Map<string, StoredEvent[]>();
  for (const q of [...qids]) {
    const evs = db.byQueueId(q);
    byQid.set(q, evs);
    for (const e of evs) {
      // A message's story starts with who handed it over; a bounce or forward it made is a story of its own.
      if (e.record.event === 'queued' && e.conn && !byConn.has(e.conn)) byConn.set(e.conn, db.byConnection(e.conn));
      for (const k of ['bounceId', 'forwardId', 'sentId']) {
        const child = str(e.record[k]);
        // The line that made it starts its story (a bounce names the message it reports).
        if (child && !byQid.has(child)) byQid.set(child, [e, ...db.byQueueId(child)]);
      }
    }
  }
  const out: Story[] = [];
  for (const [key, evs] of byConn) if (evs.length) out.push({ kind: 'connection', key, start: evs[0]!.time, summary: connectionSummary(evs), lines: told(evs) });
  for (const [key, evs] of byQid) if (evs.length) out.push({ kind: 'message', key, start: evs[0]!.time, summary: messageSummary(evs), lines: told(evs) });
  return out.sort((a, b) => a.start - b.start || (a.kind === b.kind ? 0 : a.kind === 'connection' ? -1 : 1));
}


/** The stories as text, in the machine's local time. */
export function tell(list: readonly Story[]): string {
  return list
    .map((s) => [`${s.kind === 'connection' ? 'connection' : 'message'} ${s.key}: ${s.summary}`, ...s.lines.map((l) => `  ${clock(l.time)}  ${l.text}`)].join('\n'))
    .join('\n\n');
}
