/**
 * The journal's writer: a pino transport, so it runs in its own worker
 * thread and the SMTP path only pays for handing the line over (pino
 * serialises it for stdout anyway). Lines are written in batches, one
 * transaction every 100 ms or 1,000 lines; the journal is pruned at start and
 * every ten minutes.
 */
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

export default function journalTransport(options: JournalTransportOptions) {
  const db = new JournalDb(options.file);
  const prune = () => db.prune(Date.now(), options.maxAgeMs, options.maxBytes);
  prune();
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
    async (source: AsyncIterable<LogRecord>) => {
      for await (const rec of source) {
        const entry = toEntry(rec);
        if (entry) batch.push(entry);
        if (batch.length >= BATCH) flush();
      }
    },
    {
      close: async () => {
        clearInterval(flusher);
        clearInterval(pruner);
        flush();
        db.close();
      },
    },
  );
}
