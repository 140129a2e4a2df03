/**
 * The journal's writer: a pino transport, so it runs in its own worker
 * thread and the SMTP path only pays for handing the line over (pino
 * serialises it for stdout anyway). Lines are written in batches, one
 * transaction every 100 ms or 1,000 lines; the journal is pruned at start and
 * every ten minutes.
 *
 * A term is indexed once per connection: `yubin why` turns any line it finds
 * into the whole connection's story, so the client IP on every one of a
 * connection's lines would only be index rows to write and prune.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import build from 'pino-abstract-transport';
import { JournalDb } from './db.js';
import { toEntry, type JournalEntry, type LogRecord } from './entry.js';

export interface JournalTransportOptions {
  readonly file: string;
  readonly maxAgeMs: number;
  readonly maxBytes: number;
}

const BATCH = 1_000;
const FLUSH_MS = 100;
const PRUNE_MS = 10 * 60_000;
const NICE = 10;
/** Connections whose indexed terms are remembered; past this (connections left open for hours), the memory is dropped and terms are indexed again. */
const OPEN_CONNECTIONS = 20_000;

/** Drops from each entry the terms already indexed for its connection. */
function termsOncePerConnection() {
  const seen = new Map<string, Set<string>>();
  return (entry: JournalEntry, rec: LogRecord): JournalEntry => {
    if (!entry.conn) return entry;
    let terms = seen.get(entry.conn);
    if (!terms) {
      if (seen.size >= OPEN_CONNECTIONS) seen.clear();
      seen.set(entry.conn, (terms = new Set()));
    }
    if (rec.event === 'close') seen.delete(entry.conn);
    const fresh = entry.terms.filter((t) => !terms.has(t));
    for (const t of fresh) terms.add(t);
    return fresh.length === entry.terms.length ? entry : { ...entry, terms: fresh };
  };
}

interface ParsedLine {
  readonly line: string;
  readonly rec: LogRecord;
}

/**
 * The journal is background work: on Linux this thread is niced, so when the
 * cores are busy the SMTP path gets them first and the journal catches up in
 * the gaps (its lines wait in memory meanwhile). setpriority() on a thread id
 * affects that thread alone; /proc/thread-self names it.
 */
function lowerThreadPriority(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, NICE);
  } catch {
    // not Linux, or not allowed: the journal runs at normal priority
  }
}

export default function journalTransport(options: JournalTransportOptions) {
  lowerThreadPriority();
  const db = new JournalDb(options.file);
  const prune = () => db.prune(Date.now(), options.maxAgeMs, options.maxBytes);
  prune();
  const newTerms = termsOncePerConnection();
  let batch: JournalEntry[] = [];
  const flush = () => {
    if (!batch.length) return;
    const out = batch;
    batch = [];
    db.insert(out);
  };
  const flusher = setInterval(flush, FLUSH_MS);
  const pruner = setInterval(prune, PRUNE_MS);
  return build(
    async (source: AsyncIterable<ParsedLine>) => {
      for await (const { line, rec } of source) {
        const entry = toEntry(rec, line);
        if (entry) batch.push(newTerms(entry, rec));
        if (batch.length >= BATCH) flush();
      }
    },
    {
      // Both the line and the record: the line is stored as it is, not serialised again.
      parseLine: (line: string): ParsedLine => ({ line, rec: JSON.parse(line) as LogRecord }),
      close: async () => {
        clearInterval(flusher);
        clearInterval(pruner);
        flush();
        db.close();
      },
    },
  );
}
